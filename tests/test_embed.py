"""Embeddings: the published encoder end to end on real maps, the cache, and clear refusals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from galexplore.analysis import embed as embed_module
from galexplore.analysis.embed import LoadedModel, cache_path, load_or_compute_embedding
from galexplore.cli import main as cli_main
from galexplore.data.dataset import create_dataset, open_dataset
from galexplore.data.fits_io import maps_to_dataset
from galexplore.errors import ModelError
from galexplore.models import zoo
from galexplore.models.cae import IndexFreeCAE
from galexplore.models.checkpoint import ModelCard, save_checkpoint


@pytest.fixture(scope="module")
def alma(shared_real, tmp_path_factory):
    """The 30 real ALMA maps as a dataset, and the published CAE converted to a checkpoint."""
    root = tmp_path_factory.mktemp("alma")
    fits_files = sorted((shared_real / "dawson2020" / "fits").glob("*.fits"))
    dataset = maps_to_dataset(fits_files, root / "alma", channel="mom1")
    model = zoo.import_dawson2020(shared_real / "dawson2020", out=root / "dawson2020", trust_pickle=True)
    published = pd.read_csv(shared_real / "dawson2020" / "published_results.csv")
    return open_dataset(dataset), model, published


def test_published_encoder_reproduces_published_latents_and_classes(alma):
    dataset, model, published = alma
    table = load_or_compute_embedding(model, dataset, umap=False)
    joined = dataset.catalog[["id", "name"]].merge(table, on="id").merge(published, on="name",
                                                                         suffixes=("", "_published"))
    assert len(joined) == 30
    for k in range(3):
        np.testing.assert_allclose(joined[f"latent_{k}"], joined[f"latent_{k}_published"], atol=1e-4)
    assert (joined["pred_class"] == joined["published_class"]).all()
    assert {"pca_0", "pca_1", "pca_2", "folded_r", "folded_h", "pa_latent", "recon_mse"} <= set(table.columns)
    assert table["pa_latent"].between(0, 360).all()


def test_second_call_reads_the_cache_without_inference(alma, monkeypatch):
    dataset, model, _ = alma
    first = load_or_compute_embedding(model, dataset, umap=False)
    assert cache_path(LoadedModel(model), dataset).parent == dataset.path / "embeddings"

    def no_inference(*args, **kwargs):
        raise AssertionError("inference ran although the embedding is cached")

    monkeypatch.setattr(embed_module, "run_model", no_inference)
    pd.testing.assert_frame_equal(load_or_compute_embedding(model, dataset, umap=False), first)
    # asking for UMAP later fits it on the cached latents: still no inference
    with_umap = load_or_compute_embedding(model, dataset)
    pd.testing.assert_frame_equal(with_umap[first.columns], first)
    assert np.isfinite(with_umap[["umap_0", "umap_1"]].to_numpy()).all()


def test_cli_embed_writes_the_cached_table(alma, capsys):
    dataset, model, _ = alma
    assert cli_main(["embed", str(model), str(dataset.path), "--force"]) == 0
    written = capsys.readouterr().out.strip().removeprefix("wrote ")
    table = pd.read_parquet(written)
    assert list(table["id"]) == list(dataset.catalog["id"])
    assert {"umap_0", "umap_1"} <= set(table.columns)


def test_model_that_does_not_fit_the_dataset_is_refused_before_inference(alma, tmp_path, monkeypatch):
    _, model, _ = alma
    with create_dataset(tmp_path / "env_only", ["env"], {"env": "counts"}) as writer:
        writer.append(np.zeros((4, 1, 64, 64), np.float32),
                      pd.DataFrame({"id": range(4), "galaxy_id": range(4), "view": 0}))
    monkeypatch.setattr(embed_module, "run_model", lambda *a, **k: pytest.fail("inference ran"))
    with pytest.raises(ModelError, match="mom1"):
        load_or_compute_embedding(model, tmp_path / "env_only")


def test_unwritable_dataset_directory_falls_back_to_the_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GALEXPLORE_DATA_DIR", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    with create_dataset(tmp_path / "ds", ["mom1"], {"mom1": "km/s"}) as writer:
        writer.append(rng.normal(0, 100, (12, 1, 64, 64)).astype(np.float32),
                      pd.DataFrame({"id": np.arange(12) * 10, "galaxy_id": range(12), "view": 0}))
    torch.manual_seed(0)
    card = ModelCard(name="free", architecture="cae_free", hyperparameters={}, channels=["mom1"],
                     recipe="dawson2020", latent_names=["z0", "z1", "z2"], outputs=[])
    save_checkpoint(IndexFreeCAE(), card, tmp_path / "model")
    (tmp_path / "ds" / "embeddings").write_text("not a directory: the cache cannot go beside the dataset")
    table = load_or_compute_embedding(tmp_path / "model", tmp_path / "ds", umap=False)
    assert list(table["id"]) == list(np.arange(12) * 10)
    assert "pred_class" not in table.columns, "no boundary in the card: no class prediction"
    assert len(list((tmp_path / "cache" / "embeddings").glob("*.parquet"))) == 1


def test_recipe_override_encodes_noisy_maps_as_the_paper_and_caches_apart(alma):
    from galexplore.data.recipes import dawson2020_noisy
    from galexplore.errors import ParameterError

    dataset, model, _ = alma
    plain = LoadedModel(model, device="cpu")
    noisy = LoadedModel(model, device="cpu", recipe="dawson2020_noisy")
    assert noisy.card.recipe == "dawson2020_noisy" and plain.card.recipe == "dawson2020"
    table = load_or_compute_embedding(noisy, dataset, umap=False)
    assert cache_path(noisy, dataset) != cache_path(plain, dataset)
    maps = np.asarray(dataset.maps[:], dtype=np.float32)[:, [dataset.channel_index("mom1")]]
    with torch.inference_mode():
        expected = noisy.model.encode(torch.from_numpy(dawson2020_noisy(maps))).numpy()
    np.testing.assert_allclose(table[["latent_0", "latent_1", "latent_2"]].to_numpy(), expected, atol=1e-4)
    assert not np.allclose(load_or_compute_embedding(plain, dataset, umap=False)["latent_0"], table["latent_0"])
    with pytest.raises(ParameterError, match="unknown recipe"):
        LoadedModel(model, device="cpu", recipe="no_such_recipe")
