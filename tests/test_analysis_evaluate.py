"""`galexplore evaluate` on a fake embedding whose metrics are known by construction."""

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from galexplore.analysis import embed
from galexplore.analysis.evaluate import evaluate_embedding, evaluate_model, format_report
from galexplore.data.dataset import create_dataset

N_GALAXIES, VIEWS = 200, 2
TEST_GALAXIES = np.arange(50)


def _catalog() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = N_GALAXIES * VIEWS
    galaxy = np.repeat(np.arange(N_GALAXIES), VIEWS)
    kappa = np.repeat(rng.uniform(0.0, 1.0, N_GALAXIES), VIEWS)
    distance = np.repeat(rng.uniform(50.0, 100.0, N_GALAXIES), VIEWS)
    return pd.DataFrame({
        "id": np.arange(n, dtype=np.int64), "galaxy_id": galaxy, "view": np.tile(np.arange(VIEWS), N_GALAXIES),
        "kappa": kappa, "pa": rng.uniform(0.0, 360.0, n), "inc": rng.uniform(5.0, 85.0, n),
        "log_mstar": np.repeat(rng.uniform(9.5, 11.5, N_GALAXIES), VIEWS),
        "log_mdm_00": rng.uniform(9.0, 10.0, n), "log_mdm_01": rng.uniform(10.0, 11.0, n),
        "distance": distance, "distance_z": distance + 2.0,
    })


def _cae_embedding(catalog: pd.DataFrame) -> pd.DataFrame:
    """Folded radius r = 2 + 2 kappa (kappa = 0.5 at r = 3) and clockwise latent angle = PA + 30."""
    r = 2.0 + 2.0 * catalog["kappa"].to_numpy()
    theta = np.radians(catalog["pa"].to_numpy() + 30.0)
    z = np.random.default_rng(1).normal(0.0, 0.1, len(catalog))
    xyz = np.column_stack([r * np.cos(theta), -r * np.sin(theta), z])
    table = pd.DataFrame({"id": catalog["id"]})
    for k in range(3):
        table[f"latent_{k}"] = xyz[:, k]
        table[f"pca_{k}"] = xyz[:, k]
    table["folded_r"], table["folded_h"] = r, np.abs(z)
    table["recon_mse"] = 0.01
    return table


CAE_CARD = SimpleNamespace(
    name="fake-cae", architecture="dawson2020_cae",
    extras={"boundary": {"folded_r": 3.0, "kappa_threshold": 0.5}},
    training_data={"test_ids": [int(i) for i in np.flatnonzero(np.isin(_catalog()["galaxy_id"], TEST_GALAXIES))]},
)


def test_cae_report_by_construction():
    catalog = _catalog()
    report = evaluate_embedding(CAE_CARD, catalog, _cae_embedding(catalog), n_bootstrap=20)
    assert report["split"] == "test" and report["n_scored"] == len(TEST_GALAXIES) * VIEWS
    # the classes are separable at r = 3: the card's boundary classifies every test galaxy right
    c = report["classification"]
    assert c["boundary_source"] == "card"
    np.testing.assert_allclose(c["confusion_matrix"], [[1.0, 0.0], [0.0, 1.0]])
    assert c["mean_recall"] == 1.0
    # fitted on the training rows: TP = TN = 1 between the largest low-kappa r and the smallest high-kappa r
    train = catalog[~catalog["galaxy_id"].isin(TEST_GALAXIES)]
    r = 2.0 + 2.0 * train["kappa"]
    expected = 0.5 * (r[train["kappa"] <= 0.5].max() + r[train["kappa"] > 0.5].min())
    assert report["boundary"]["fitted_position"] == pytest.approx(expected)
    assert report["boundary"]["fitted_on"] == "train"
    # PA = latent angle - 30 exactly
    p = report["position_angle"]
    assert p["sense"] == 1 and p["offset_deg"] == pytest.approx(330.0)
    assert p["sigma_deg"] < 1e-6
    assert sum(row["n"] for row in p["by_inclination"]) == report["n_scored"]
    test_inc = catalog.loc[catalog["galaxy_id"].isin(TEST_GALAXIES), "inc"]
    assert [(row["inc_lo"], row["inc_hi"], row["n"]) for row in p["by_inclination_range"]] == [
        (30.0, 40.0, int(test_inc.between(30, 40, inclusive="left").sum())),
        (40.0, 60.0, int(test_inc.between(40, 60, inclusive="left").sum())),
        (60.0, 90.0, int((test_inc >= 60).sum()))]
    assert report["reconstruction"]["recon_mse_mean"] == pytest.approx(0.01)
    stats = pd.DataFrame(report["latent_property_statistics"]).set_index(["latent", "property"])
    assert {"id", "galaxy_id", "view"}.isdisjoint(stats.index.get_level_values("property"))
    assert len(stats) == 3 * 8  # 3 latents x (kappa, pa, inc, log_mstar, 2 x log_mdm, distance, distance_z)
    text = format_report(report)
    assert "mean recall 1" in text and "r = 3" in text
    assert report["latent_classifier"]["scored_by"] == "train -> test"
    assert report["latent_classifier"]["mean_recall"] > 0.8  # kappa > 0.5 is a circle r = 3 in the latents


def test_latent_classifier_finds_kappa_off_the_folded_radius():
    """kappa carried by the sign of latent_2 only: the vertical boundary is at chance, the
    classifier on the full latents is not (cross-validated by galaxy without a card split)."""
    catalog = _catalog()
    rng = np.random.default_rng(2)
    high = catalog["kappa"].to_numpy() > 0.5
    xyz = rng.normal(0.0, 1.0, (len(catalog), 3))
    xyz[:, 2] = np.where(high, 1.0, -1.0) * (0.5 + rng.uniform(0.0, 1.0, len(catalog)))
    table = pd.DataFrame({"id": catalog["id"], **{f"latent_{k}": xyz[:, k] for k in range(3)},
                          **{f"pca_{k}": xyz[:, k] for k in range(3)}})
    table["folded_r"], table["folded_h"] = np.hypot(xyz[:, 0], xyz[:, 1]), np.abs(xyz[:, 2])
    card = SimpleNamespace(name="no-split", architecture="dawson2020_cae", extras={}, training_data={})
    report = evaluate_embedding(card, catalog, table, n_bootstrap=10)
    assert report["split"] == "all"
    assert report["classification"]["mean_recall"] < 0.65
    assert report["latent_classifier"]["scored_by"].startswith("5-fold")
    assert report["latent_classifier"]["mean_recall"] > 0.95
    json.dumps(report, default=float)


def test_regressor_report_by_construction():
    catalog = _catalog()
    sign = np.where(np.arange(len(catalog)) % 2 == 0, 1.0, -1.0)
    table = pd.DataFrame({
        "id": catalog["id"], "latent_0": np.random.default_rng(2).normal(size=len(catalog)),
        "pred_log_mstar": catalog["log_mstar"] + 0.1,
        "pred_log_mdm_00": catalog["log_mdm_00"] + 0.1 * sign,
        "pred_log_mdm_01": catalog["log_mdm_01"] - 0.3,
        "pred_distance": catalog["distance"] + 1.0,
    })
    card = SimpleNamespace(name="fake-regressor", architecture="regressor", extras={}, training_data={})
    report = evaluate_embedding(card, catalog, table)
    assert report["split"] == "all" and "boundary" not in report
    assert report["regression"]["log_mstar"]["bias"] == pytest.approx(0.1)
    assert report["regression"]["log_mstar"]["scatter"] == pytest.approx(0.0, abs=1e-9)
    assert "log_mdm_00" not in report["regression"]
    np.testing.assert_allclose(report["dm_profile"]["delta_mse"], [0.1, 0.3])
    np.testing.assert_allclose(report["dm_profile"]["delta_mae"], [0.1, 0.3])
    d = report["distance"]["distance"]
    # D_pred - D = 1 Mpc; v_p,pred - v_p,true = H0 (D - D_pred) = -70 km/s
    assert d["rms_mpc"] == pytest.approx(1.0) and d["vp_rms_error_kms"] == pytest.approx(70.0)
    assert "dark-matter profile" in format_report(report)


def test_evaluate_model_reads_the_dataset_and_the_embedding(tmp_path, monkeypatch):
    catalog = _catalog()
    maps = np.zeros((len(catalog), 1, 64, 64), dtype=np.float32)
    with create_dataset(tmp_path / "ds", ["mom1"], {"mom1": "km/s"}) as writer:
        writer.append(maps, catalog)

    class FakeLoadedModel:
        def __init__(self, path, device="auto", recipe=None):
            self.card = CAE_CARD

    seen = {}

    def fake_embedding(model, dataset, device="auto", **kwargs):
        seen["ids"] = dataset.catalog["id"].to_numpy()
        return _cae_embedding(dataset.catalog)

    monkeypatch.setattr(embed, "LoadedModel", FakeLoadedModel)
    monkeypatch.setattr(embed, "load_or_compute_embedding", fake_embedding)
    report = evaluate_model("fake-cae", tmp_path / "ds", device="cpu")
    np.testing.assert_array_equal(seen["ids"], catalog["id"])
    assert report["dataset"] == str(tmp_path / "ds")
    assert report["classification"]["mean_recall"] == 1.0
