"""The published Dawson et al. 2020 CAE: opt-in import, zoo cache, and its published outputs
on the 30 real ALMA velocity maps (../shared/real/dawson2020)."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from galexplore.cli import main as cli_main
from galexplore.data.fits_io import read_velocity_map
from galexplore.data.recipes import get_recipe
from galexplore.errors import ModelError
from galexplore.models import zoo
from galexplore.models.cae import DawsonCAE
from galexplore.models.checkpoint import load_checkpoint

# Dawson et al. 2020 / SpaceMeerkat/CAE: class 0 (kappa < 0.5) where the folded radius
# sqrt(p0^2 + p1^2) of the PCA-rotated latent vector is below this value.
PUBLISHED_BOUNDARY_R = 2.960960960960961
ORIGINALS = ("CAE_Epoch_300.pt", "PCA_routine.pkl")


@pytest.fixture(scope="module")
def source(shared_real):
    return shared_real / "dawson2020"


@pytest.fixture(scope="module")
def converted(source, tmp_path_factory):
    return zoo.import_dawson2020(source, out=tmp_path_factory.mktemp("zoo") / "dawson2020", trust_pickle=True)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GALEXPLORE_DATA_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_import_without_trust_refuses_and_writes_nothing(source, tmp_path):
    out = tmp_path / "ckpt"
    with pytest.raises(ModelError, match="arbitrary code.*--trust-pickle"):
        zoo.import_dawson2020(source, out=out)
    assert not out.exists()


def test_cli_import_without_trust_flag_fails_with_message(source, tmp_path, capsys):
    assert cli_main(["zoo", "import-dawson2020", str(source), "--out", str(tmp_path / "ckpt")]) == 2
    assert "--trust-pickle" in capsys.readouterr().err
    assert not (tmp_path / "ckpt").exists()


def test_import_refuses_files_that_are_not_the_published_ones(source, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ORIGINALS:
        shutil.copyfile(source / name, copy / name)
    with open(copy / "PCA_routine.pkl", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ModelError, match="not the published"):
        zoo.import_dawson2020(copy, out=tmp_path / "ckpt", trust_pickle=True)
    (copy / "PCA_routine.pkl").unlink()
    with pytest.raises(ModelError, match="PCA_routine.pkl"):
        zoo.import_dawson2020(copy, out=tmp_path / "ckpt", trust_pickle=True)


def test_converted_checkpoint_card(converted, source):
    model, card = load_checkpoint(converted)
    assert isinstance(model, DawsonCAE)
    assert sorted(p.name for p in converted.iterdir()) == ["LICENSE", "card.json", "model.safetensors"]
    assert (card.architecture, card.recipe, card.channels) == ("dawson2020_cae", "dawson2020", ["mom1"])
    assert card.input_size == 64
    assert card.latent_names == ["latent_0", "latent_1", "latent_2"]
    assert card.extras["boundary"] == {"folded_r": PUBLISHED_BOUNDARY_R, "kappa_threshold": 0.5}
    assert card.extras["licence"] == "MIT, SpaceMeerkat/CAE"
    for name in ORIGINALS:
        assert card.extras["source"]["files"][name]["sha256"] == _sha256(source / name)
    components = np.array(card.extras["pca"]["components"])
    assert components.shape == (3, 3) and len(card.extras["pca"]["mean"]) == 3
    # A fitted PCA's components are orthonormal rows.
    np.testing.assert_allclose(components @ components.T, np.eye(3), atol=1e-10)


def test_published_latents_and_classes_on_the_30_alma_maps(converted, source):
    """THE KEY TEST: the converted model reproduces the published outputs on real data."""
    published = pd.read_csv(source / "published_results.csv")
    assert len(published) == 30
    recipe = get_recipe("dawson2020")
    inputs = []
    for name in published["name"]:
        _, velocity_map = read_velocity_map(source / "fits" / f"{name}.fits", hdu=1)
        inputs.append(recipe(velocity_map[None, None])[0])
    model, card = load_checkpoint(converted)
    with torch.no_grad():
        latents = model.encode(torch.from_numpy(np.stack(inputs))).double().numpy()

    expected = published[["latent_0", "latent_1", "latent_2"]].to_numpy()
    max_abs_diff = float(np.abs(latents - expected).max())
    print(f"max |latent - published latent| over 30 maps x 3 = {max_abs_diff:.3g}")
    # The CSV gives 7 significant digits of values up to ~15: rounding alone is <= 5e-6.
    assert max_abs_diff < 1e-4

    # Published inference: PCA rotation (sklearn: (z - mean) @ components.T), fold, cut.
    pca = card.extras["pca"]
    rotated = (latents - np.array(pca["mean"])) @ np.array(pca["components"]).T
    folded_r = np.sqrt(rotated[:, 0] ** 2 + rotated[:, 1] ** 2)
    classes = np.where(folded_r < PUBLISHED_BOUNDARY_R, 0, 1)
    matches = int((classes == published["published_class"].to_numpy()).sum())
    print(f"classes equal to the published ones: {matches} / 30")
    assert matches == 30


def test_resolve_model_and_describe_zoo(cache, source, tmp_path):
    with pytest.raises(ModelError, match=r"galexplore zoo import-dawson2020 .* --trust-pickle") as info:
        zoo.resolve_model("dawson2020")
    assert "galexplore zoo fetch dawson2020" in str(info.value)
    assert "not installed" in zoo.describe_zoo()
    with pytest.raises(ModelError, match="neither a checkpoint directory nor a zoo model"):
        zoo.resolve_model("no_such_model")

    installed = zoo.import_dawson2020(source, trust_pickle=True)
    assert installed == cache / "models" / "dawson2020"
    assert zoo.resolve_model("dawson2020") == installed
    assert zoo.resolve_model(str(installed)) == installed
    assert f"installed at {installed}" in zoo.describe_zoo()


def test_download_verifies_sha256_on_a_local_url(source, tmp_path):
    original = source / "PCA_routine.pkl"
    good = zoo.download_file(original.as_uri(), tmp_path / "good.pkl", _sha256(original))
    assert good.read_bytes() == original.read_bytes()
    wrong = "0" * 64
    with pytest.raises(ModelError, match="not the published file"):
        zoo.download_file(original.as_uri(), tmp_path / "bad.pkl", wrong)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.pkl"]
    with pytest.raises(ModelError, match="cannot download"):
        zoo.download_file((tmp_path / "absent").as_uri(), tmp_path / "x", wrong)


def test_fetch_from_local_urls_then_import(cache, source, monkeypatch):
    entry = zoo.ZOO["dawson2020"]
    local = tuple(dataclasses.replace(f, url=(source / f.name).as_uri()) for f in entry.files)
    monkeypatch.setitem(zoo.ZOO, "dawson2020", dataclasses.replace(entry, files=local))
    downloaded = zoo.fetch("dawson2020")
    assert downloaded == cache / "downloads" / "dawson2020"
    for item in entry.files:
        assert _sha256(downloaded / item.name) == _sha256(source / item.name)
    checkpoint = zoo.import_dawson2020(downloaded, trust_pickle=True)
    assert zoo.resolve_model("dawson2020") == checkpoint


def test_the_pa_calibration_recovers_the_pa_of_regular_kinms_discs(converted, tmp_path):
    """Regular exponential discs made with KinMS directly (not with galexplore.mock), written
    and read back as FITS, get their PA from the published model within 15 degrees."""
    from referees import kinms_disc_map, write_velocity_map_fits

    from galexplore.analysis.embed import LoadedModel, load_or_compute_embedding
    from galexplore.data.fits_io import maps_to_dataset

    rng = np.random.default_rng(7)  # not the seed the calibration was measured with
    pa, inc = rng.uniform(0.0, 360.0, 24), rng.uniform(25.0, 85.0, 24)
    files = []
    for k, (p, i) in enumerate(zip(pa, inc)):
        files.append(tmp_path / f"disc{k:02d}.fits")
        write_velocity_map_fits(files[-1], kinms_disc_map(p, i, rng.uniform(3.0, 10.0), rng.uniform(100.0, 300.0),
                                                          seed=100 + k))
    dataset = maps_to_dataset(files, tmp_path / "discs")
    table = load_or_compute_embedding(LoadedModel(converted, device="cpu"), dataset, umap=False)
    error = (table["pa_latent"].to_numpy() - pa + 180.0) % 360.0 - 180.0
    assert np.all(np.abs(error) < 15.0), np.round(error, 1)
    assert (table["folded_r"] > PUBLISHED_BOUNDARY_R).all()  # and all are called kappa > 0.5
