"""Inference over datasets: one encoder pass per map, the same numbers as the plain calls,
chunk-aligned batches, read-ahead errors surfacing, the caller's model and threads untouched."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from galexplore.analysis.inference import batch_bounds, prepare_inputs, run_model
from galexplore.data.dataset import create_dataset, open_dataset
from galexplore.data.recipes import dawson2020
from galexplore.errors import DatasetError
from galexplore.models.cae import DawsonCAE, IndexFreeCAE
from galexplore.models.checkpoint import ModelCard
from galexplore.models.regressor import CNNRegressor
from galexplore.models.vae import EnvironmentVAE

CHANNELS = ["mom0", "mom1", "env"]
UNITS = {"mom0": "Jy/beam km/s", "mom1": "km/s", "env": "counts"}


def disc_maps(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:64, 0:64] - 31.5
    r = np.hypot(x, y)
    out = np.full((n, 3, 64, 64), np.nan, dtype=np.float32)
    for i in range(n):
        disc = r < rng.uniform(8, 30)
        pa = rng.uniform(0, 2 * np.pi)
        out[i, 0][disc] = (rng.uniform(1, 9) * np.exp(-r / 7))[disc]
        out[i, 1][disc] = (220 * np.tanh(r / 4) * (x * np.cos(pa) + y * np.sin(pa)) / (r + 1e-3))[disc]
        out[i, 2] = rng.poisson(1.5, (64, 64))
    return out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """37 maps in chunks of 10 (neither divides the batch sizes used below)."""
    path = tmp_path_factory.mktemp("inference") / "ds"
    with create_dataset(path, CHANNELS, UNITS, chunk_maps=10) as writer:
        writer.append(disc_maps(37), pd.DataFrame({"id": np.arange(37)}))
    return open_dataset(path)


def card_for(model: torch.nn.Module, channels: list[str], recipe: str, outputs=()) -> ModelCard:
    return ModelCard(name="t", architecture="x", hyperparameters={}, channels=channels, recipe=recipe,
                     latent_names=[f"z{i}" for i in range(model.latent_dim)], outputs=list(outputs))


def models():
    torch.manual_seed(0)
    regressor = CNNRegressor(in_channels=2, outputs=["log_mstar", "distance"], latent_dim=8)
    regressor.set_target_scaling([10.0, 50.0], [0.5, 20.0])
    return {
        "dawson": (DawsonCAE(), ["mom1"], "dawson2020"),
        "index_free": (IndexFreeCAE(in_channels=2), ["mom0", "mom1"], "dawson2020"),
        "vae": (EnvironmentVAE(latent_dim=4), ["env"], "physical"),
        "regressor": (regressor, ["mom0", "mom1"], "physical"),
    }


@pytest.mark.parametrize("name", ["dawson", "index_free", "vae"])
def test_encode_and_reconstruct_equals_encode_then_reconstruct(dataset, name):
    model, channels, recipe = models()[name]
    model.eval()
    x = torch.from_numpy(prepare_inputs(card_for(model, channels, recipe), dataset, slice(0, 12)))
    with torch.no_grad():
        z, recon = model.encode_and_reconstruct(x)
        torch.testing.assert_close(z, model.encode(x), rtol=0, atol=0)
        torch.testing.assert_close(recon, model.reconstruct(x), rtol=0, atol=0)


def test_regressor_predicts_from_its_latents_as_from_its_inputs(dataset):
    model, channels, recipe = models()["regressor"]
    model.eval()
    x = torch.from_numpy(prepare_inputs(card_for(model, channels, recipe), dataset, slice(0, 12)))
    with torch.no_grad():
        from_latent = model.predict_from_latent(model.encode(x))
        for name, value in model.predict(x).items():
            torch.testing.assert_close(from_latent[name], value, rtol=0, atol=0)


@pytest.fixture(scope="module")
def reference(dataset):
    """Per model: the model, its card and its outputs from plain NCHW calls, one map at a time."""
    out = {}
    for name, (model, channels, recipe) in models().items():
        model.eval()
        card = card_for(model, channels, recipe, getattr(model, "outputs", ()))
        x = torch.from_numpy(prepare_inputs(card, dataset, slice(None)))
        with torch.no_grad():
            expected = {"latent": torch.cat([model.encode(m[None]) for m in x]).numpy()}
            if name != "regressor":
                expected["recon_mse"] = torch.cat([((model.reconstruct(m[None]) - m[None]) ** 2).mean(dim=(1, 2, 3))
                                                   for m in x]).numpy()
            else:
                for target in model.outputs:
                    expected[f"pred_{target}"] = torch.cat([model.predict(m[None])[target] for m in x]).numpy()
        out[name] = model, card, expected
    return out


@pytest.mark.parametrize("name", ["dawson", "index_free", "vae", "regressor"])
@pytest.mark.parametrize("batch_size", [1, 16, 256])
def test_run_model_matches_the_plain_calls_on_every_map(dataset, reference, name, batch_size):
    model, card, expected = reference[name]
    calls = []
    got = run_model(model, card, dataset, device="cpu", batch_size=batch_size,
                    progress_callback=lambda done, total: calls.append((done, total)))
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key].shape == value.shape and got[key].dtype == np.float32
        np.testing.assert_allclose(got[key], value, rtol=1e-4, atol=1e-5, err_msg=key)
    assert calls[-1] == (37, 37) and [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_run_model_on_a_slice_of_rows(dataset):
    model, channels, recipe = models()["dawson"]
    card = card_for(model, channels, recipe)
    whole = run_model(model, card, dataset, device="cpu")
    part = run_model(model, card, dataset, device="cpu", batch_size=4, rows=slice(13, 31))
    np.testing.assert_allclose(part["latent"], whole["latent"][13:31], rtol=1e-5, atol=1e-6)


def test_batches_follow_chunk_files(dataset):
    # chunks of 10 maps: [0, 10) [10, 20) [20, 30) [30, 37)
    assert batch_bounds(dataset, 256) == [(0, 37)]
    assert batch_bounds(dataset, 25) == [(0, 20), (20, 37)]
    assert batch_bounds(dataset, 10) == [(0, 10), (10, 20), (20, 30), (30, 37)]
    assert batch_bounds(dataset, 4) == [(0, 4), (4, 8), (8, 10), (10, 14), (14, 18), (18, 20),
                                        (20, 24), (24, 28), (28, 30), (30, 34), (34, 37)]
    assert batch_bounds(dataset, 25, rows=slice(5, 33)) == [(5, 30), (30, 33)]
    assert batch_bounds(dataset, 100, rows=slice(7, 7)) == []


def test_the_callers_model_and_torch_threads_are_left_as_they_were(dataset):
    model, channels, recipe = models()["dawson"]
    model.train()
    threads = torch.get_num_threads()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    run_model(model, card_for(model, channels, recipe), dataset, device="cpu")
    assert model.training and torch.get_num_threads() == threads
    for k, v in model.state_dict().items():
        assert v.is_contiguous() and torch.equal(v, before[k])  # safetensors needs contiguous weights


def test_a_read_error_in_the_reader_thread_reaches_the_caller(dataset, tmp_path):
    path = tmp_path / "ds"
    with create_dataset(path, CHANNELS, UNITS, chunk_maps=10) as writer:
        writer.append(disc_maps(30), pd.DataFrame({"id": np.arange(30)}))
    (path / "maps" / "chunk-0000000020.f32").unlink()
    model, channels, recipe = models()["dawson"]
    with pytest.raises(DatasetError, match="chunk-0000000020.*missing"):
        run_model(model, card_for(model, channels, recipe), open_dataset(path), device="cpu", batch_size=10)


def test_dawson2020_recipe_equals_numpy_percentiles_map_by_map():
    maps = disc_maps(20, seed=3)[:, :2]
    rng = np.random.default_rng(1)
    maps[3] = rng.normal(size=maps[3].shape)
    maps[4] = np.nan
    maps[5, 0] = 7.0                         # constant: 98th percentile of x - p2 is 0
    maps[6] = np.nan
    maps[6, 1, 10, 10] = 2.0                 # a single finite pixel
    maps[7, 0, :5] = np.inf
    expected = np.zeros(maps.shape, dtype=np.float32)
    for i in range(len(maps)):
        for c in range(maps.shape[1]):
            x = maps[i, c].astype(np.float64)
            finite = np.isfinite(x)
            if not finite.any():
                continue
            x = x - np.percentile(x[finite], 2)
            with np.errstate(divide="ignore", invalid="ignore"):
                y = x / np.percentile(x[finite], 98) * 2.0 - 1.0
            expected[i, c] = np.where(np.isfinite(y) & (np.abs(y) <= 1.0), y, 0.0)
    np.testing.assert_array_equal(dawson2020(maps), expected)
