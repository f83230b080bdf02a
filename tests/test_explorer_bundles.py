"""Bundles (one per dataset and model, built once, bounded), the latent projector saved with
each embedding, and the raw-output cache that makes a boundary change cost no inference."""

from __future__ import annotations

import dataclasses
import json
import threading

import numpy as np
import pandas as pd
import pytest

from galexplore.analysis import embed as embed_module
from galexplore.analysis.embed import cache_candidates, load_embedding
from galexplore.analysis.projections import LatentProjector, UMAPProjection
from galexplore.errors import ModelError, ParameterError
from galexplore.explorer import bundles as bundles_module
from galexplore.explorer.bundles import LATENT_UNIT, Bundle, BundleCache, ModelHandle, projection_options
from ui_fixtures import build_ui_fixture


@pytest.fixture(scope="module")
def fixture_paths(tmp_path_factory):
    return build_ui_fixture(tmp_path_factory.mktemp("bundles"), n=120)


def test_projection_options_follow_the_columns():
    options = projection_options(["id", "latent_0", "latent_1", "latent_2", "pca_0", "pca_1", "pca_2",
                                  "folded_r", "folded_h", "umap_0", "umap_1"])
    assert list(options)[0] == "folded (r, h)"  # the headline view first
    assert options["UMAP"] == ("umap_0", "umap_1") and options["PCA 1 vs 2"] == ("pca_1", "pca_2")
    assert options["latent 0 vs 2"] == ("latent_0", "latent_2")
    assert len(options) == 1 + 3 + 1 + 3
    assert "UMAP" not in projection_options(["latent_0", "latent_1"])


def test_a_bundle_counts_galaxies_and_maps_and_labels_columns_with_units(fixture_paths):
    bundle = BundleCache().get(*fixture_paths)
    assert (bundle.n_maps, bundle.n_galaxies) == (120, 60)
    assert bundle.label("pa") == "pa [deg]" and bundle.label("kappa") == "kappa"
    assert bundle.unit("folded_r") == LATENT_UNIT and bundle.unit("pa_latent") == "deg"
    assert bundle.kappa_threshold == 0.5
    (x0, x1), (y0, y1) = bundle.extent("PCA 0 vs 1")
    x, y = bundle.xy("PCA 0 vs 1")
    assert x0 < x.min() and x1 > x.max() and y0 < y.min() < 0 < y.max() < y1


def test_the_same_pair_is_built_once_however_many_sessions_ask(fixture_paths, monkeypatch):
    calls = []
    real = bundles_module.build_bundle

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(bundles_module, "build_bundle", counting)
    cache = BundleCache()
    got = []
    threads = [threading.Thread(target=lambda: got.append(cache.get(*fixture_paths))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(got) == 6 and all(b is got[0] for b in got)


def test_bundles_are_bounded_and_failures_are_not_cached(fixture_paths, tmp_path, monkeypatch):
    cache = BundleCache(max_bundles=2)
    made = []
    monkeypatch.setattr(bundles_module, "build_bundle", lambda d, m, *a: made.append((d, m)) or object())
    for k in range(5):
        cache.get(tmp_path / f"d{k}", fixture_paths[1])
    assert len(cache) == 2 and len(made) == 5
    cache.get(tmp_path / "d4", fixture_paths[1])
    assert len(made) == 5  # still cached

    def failing(*args):
        raise ModelError("broken")

    monkeypatch.setattr(bundles_module, "build_bundle", failing)
    with pytest.raises(ModelError):
        cache.get(tmp_path / "bad", fixture_paths[1])
    assert len(cache) == 2
    with pytest.raises(ParameterError):
        BundleCache(max_bundles=0)


def test_a_derived_table_shares_the_indices_and_leaves_the_shared_one_alone(fixture_paths):
    bundle = BundleCache().get(*fixture_paths)
    index = bundle.point_index("folded (r, h)")
    derived = bundle.with_columns({"score": np.arange(120.0)}, units={"score": "dex"})
    assert "score" in derived.columns and "score" not in bundle.columns
    assert derived.point_index("folded (r, h)") is index and derived.unit("score") == "dex"
    with pytest.raises(ParameterError, match="projections or ids"):
        bundle.with_columns({"folded_r": np.zeros(120)})


def test_the_model_is_loaded_into_torch_only_when_first_needed(fixture_paths):
    bundle = bundles_module.build_bundle(*fixture_paths)
    assert isinstance(bundle.model, ModelHandle) and not bundle.model.is_loaded
    assert bundle.model.name == "test-cae"
    assert bundle.model.loaded().model is bundle.model.loaded().model
    assert bundle.model.is_loaded


# ----------------------------------------------------------------------------- the projector
def _latents(n=200, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 3)) * [3.0, 2.0, 0.5] + [1.0, -2.0, 0.3]


def test_projector_takes_the_cards_parts_and_fits_the_others():
    z = _latents()
    kappa = np.linspace(0.0, 1.0, len(z))
    pa = np.random.default_rng(1).uniform(0, 360, len(z))
    fitted = LatentProjector(umap=False).fit(z, kappa=kappa, pa=pa)
    assert fitted.sources_ == {"pca": "fitted on 200 rows", "boundary": "fitted on 200 rows",
                               "pa_calibration": "fitted on 200 rows"}
    extras = fitted.card_extras()
    card = LatentProjector(umap=False).fit(z, extras={**extras, "boundary": {"folded_r": 1.5, "kappa_threshold": 0.7}})
    assert card.sources_ == {"pca": "model card", "boundary": "model card", "pa_calibration": "model card"}
    assert card.kappa_threshold_ == 0.7 and card.boundary_r == 1.5
    columns = card.transform(z)
    r = np.hypot(columns["pca_0"], columns["pca_1"])
    np.testing.assert_allclose(columns["folded_r"], r)
    np.testing.assert_array_equal(columns["pred_class"], (r >= 1.5).astype(np.int8))
    np.testing.assert_allclose(columns["pca_0"], fitted.transform(z)["pca_0"])
    with pytest.raises(ParameterError, match="dimensions"):
        card.transform(np.zeros((2, 4)))


def test_projector_round_trips_through_strict_json():
    z = _latents()
    projector = LatentProjector(umap=False).fit(z, kappa=np.linspace(0, 1, len(z)))
    text = json.dumps(projector.to_dict(), allow_nan=False)
    again = LatentProjector.from_dict(json.loads(text))
    for name, values in projector.transform(z).items():
        np.testing.assert_allclose(again.transform(z)[name], values)
    with pytest.raises(ParameterError, match="not a saved LatentProjector"):
        LatentProjector.from_dict({"format": "something else"})


def test_umap_rebuilt_from_its_reference_places_new_points_exactly_as_the_original():
    rng = np.random.default_rng(0)
    z = np.r_[rng.normal(0.0, 1.0, (60, 3)), rng.normal(6.0, 1.0, (60, 3))]
    projector = LatentProjector(umap_neighbors=10).fit(z, ids=np.arange(120) + 100)
    assert projector.umap_ids_.tolist() == list(range(100, 220))
    new = rng.normal(6.0, 1.0, (4, 3))
    expected = projector.umap_.transform(new)
    rebuilt = UMAPProjection.from_reference(*projector.umap_reference_, **projector.umap_settings)
    np.testing.assert_allclose(rebuilt.transform(new), expected, atol=1e-6)
    restored = LatentProjector.from_dict(projector.to_dict(), umap_reference=projector.umap_reference_)
    got = restored.transform(new)
    np.testing.assert_allclose(np.column_stack([got["umap_0"], got["umap_1"]]), expected, atol=1e-6)
    # coordinates read back from a table's two columns come column-major
    latents, coords = projector.umap_reference_
    from_columns = UMAPProjection.from_reference(latents, np.asfortranarray(coords), **projector.umap_settings)
    np.testing.assert_allclose(from_columns.transform(new), expected, atol=1e-6)


# ----------------------------------------------------------------------------- the output cache
def test_a_boundary_saved_into_a_copy_of_the_model_costs_no_inference(fixture_paths, tmp_path, monkeypatch):
    from galexplore.models.checkpoint import load_checkpoint, save_checkpoint

    dataset, model_dir = fixture_paths
    first = load_embedding(model_dir, dataset, umap=False)
    model, card = load_checkpoint(model_dir)
    r = first.column("folded_r")
    position = float(np.median(r))
    copy = save_checkpoint(model, dataclasses.replace(
        card, name="copy with a boundary", checksum="",
        extras={**card.extras, "boundary": {"folded_r": position, "kappa_threshold": 0.6}}), tmp_path / "copy")
    monkeypatch.setattr(embed_module, "run_model", lambda *a, **k: pytest.fail("inference ran"))
    second = load_embedding(copy, dataset, umap=False)
    assert second.path == first.path  # one cache file: keyed by what the model computes, not its card
    np.testing.assert_array_equal(second.column("latent_0"), first.column("latent_0"))
    np.testing.assert_array_equal(second.column("pred_class"), (r >= position).astype(np.int8))
    assert second.projector.kappa_threshold_ == 0.6 and second.projector.boundary_r == position
    from galexplore.data import open_dataset

    handle = ModelHandle(copy)
    assert cache_candidates(handle.path, handle.card, open_dataset(dataset))[0] == first.path


def test_concurrent_writers_of_one_cache_never_clobber_each_other(fixture_paths, tmp_path):
    """Each writer uses its own temporary file; the cache ends whole and no temporary is left."""
    import shutil

    dataset, model_dir = fixture_paths
    copy = tmp_path / "universe"
    shutil.copytree(dataset, copy, ignore=shutil.ignore_patterns("embeddings"))
    errors = []

    def write():
        try:
            load_embedding(model_dir, copy, umap=False, force=True)
        except Exception as error:  # noqa: BLE001 -- collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=write) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    files = sorted(p.name for p in (copy / "embeddings").iterdir())
    assert len(files) == 1 and files[0].endswith(".parquet")
    assert len(pd.read_parquet(copy / "embeddings" / files[0])) == 120


def test_a_plain_table_bundle_for_benchmarks():
    table = pd.DataFrame({"id": np.arange(5), "latent_0": np.arange(5.0), "latent_1": np.ones(5)})
    bundle = Bundle(dataset=None, model=None, table=table, column_units={})
    assert bundle.kappa_threshold == 0.5 and bundle.boundary_r is None and bundle.name == "table"
    assert list(bundle.projections) == ["latent 0 vs 1"]
