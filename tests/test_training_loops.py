"""Training runs on a tiny analytic dataset: losses, checkpoints, seeds, progress, stopping,
NaN handling, and background jobs in a separate process."""

from __future__ import annotations

import json
import multiprocessing
import threading
import time

import numpy as np
import pandas as pd
import pytest
import torch

from galexplore.data import create_dataset, open_dataset
from galexplore.errors import ColumnError, ParameterError, TrainingError
from galexplore.models.checkpoint import load_checkpoint, read_card
from galexplore.training.jobs import CANCELLED, FAILED, FINISHED, QUEUED, RUNNING, JobManager, TrainingJob
from galexplore.training.loops import TrainConfig, train
from galexplore.training.samplers import split_by_galaxy, split_train_validation_test

N_GALAXIES, N_VIEWS = 32, 2


def _write_tiny_universe(path) -> None:
    """64 maps of 32 galaxies: rotating discs (mom1 = v(r) sin i cos(phi - PA)) with random
    motions growing as kappa falls, exponential mom0, mom2, Poisson neighbour counts."""
    rng = np.random.default_rng(42)
    yy, xx = np.mgrid[0:64, 0:64] - 31.5
    maps, rows = [], []
    kappa = np.concatenate([rng.uniform(0.05, 0.5, 8), rng.uniform(0.5, 0.98, 24)])
    for g in range(N_GALAXIES):
        vmax = rng.uniform(100, 300)
        distance = rng.uniform(20, 100)
        density = rng.uniform(0.02, 0.3)
        for view in range(N_VIEWS):
            pa, inc = rng.uniform(0, 360), rng.uniform(30, 80)
            # a unit vector at PA points along (d_col, d_row) = (-sin PA, cos PA)
            along = -xx * np.sin(np.radians(pa)) + yy * np.cos(np.radians(pa))
            across = xx * np.cos(np.radians(pa)) + yy * np.sin(np.radians(pa))
            r = np.hypot(along, across / np.cos(np.radians(inc)))
            v = vmax * np.tanh(r / 6) * np.sin(np.radians(inc)) * along / np.maximum(r, 1e-6)
            v += (1 - kappa[g]) * vmax * rng.normal(size=v.shape)
            blank = r > 24
            mom0 = np.exp(-r / 8)
            mom2 = np.full_like(r, 10 + 40 * (1 - kappa[g]))
            for m in (v, mom0, mom2):
                m[blank] = np.nan
            env = rng.poisson(density, size=(64, 64)).astype(np.float32)
            maps.append(np.stack([mom0, v, mom2, env]))
            rows.append({"id": len(rows), "galaxy_id": 1000 + g, "view": view, "kappa": kappa[g],
                         "snr": np.nan, "log_mstar": 8.5 + vmax / 150, "distance": distance,
                         "distance_z": distance + rng.normal(0, 6)})
    units = {"mom0": "Jy/beam km/s", "mom1": "km/s", "mom2": "km/s", "env": "counts"}
    with create_dataset(path, ["mom0", "mom1", "mom2", "env"], units) as writer:
        writer.append(np.asarray(maps, dtype=np.float32), pd.DataFrame(rows),
                      column_units={"log_mstar": "dex", "distance": "Mpc", "distance_z": "Mpc"})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("universe") / "tiny"
    _write_tiny_universe(path)
    return path


def _config(**kw) -> TrainConfig:
    defaults = dict(kind="cae", epochs=2, batch_size=8, images_per_epoch=16, seed=0, device="cpu")
    return TrainConfig(**{**defaults, **kw})


def test_cae_training_lowers_the_loss_and_writes_a_full_card(tiny, tmp_path):
    out = train(_config(epochs=2, images_per_epoch=32), tiny, tmp_path / "cae")
    model, card = load_checkpoint(out)
    assert card.architecture == "dawson2020_cae" and card.recipe == "dawson2020"
    assert card.channels == ["mom1"] and card.latent_names == ["z0", "z1", "z2"]
    history = card.metrics["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert card.metrics["best_val_loss"] == min(h["val_loss"] for h in history)
    data = card.training_data
    assert data["dataset_fingerprint"] == open_dataset(tiny).fingerprint
    assert data["n_train"] + data["n_validation"] + data["n_test"] == N_GALAXIES * N_VIEWS
    assert data["n_train_galaxies"] + data["n_validation_galaxies"] + data["n_test_galaxies"] == N_GALAXIES
    assert data["n_validation_galaxies"] >= 1 and data["n_test_galaxies"] >= 1
    assert data["sampler"] == "kappa_balanced" and data["split_seed"] == 0
    pca = card.extras["pca"]
    assert np.asarray(pca["components"]).shape == (3, 3)
    # PCA axes are orthonormal
    np.testing.assert_allclose(np.asarray(pca["components"]) @ np.asarray(pca["components"]).T, np.eye(3),
                               atol=1e-6)
    assert card.extras["boundary"]["kappa_threshold"] == 0.5
    assert np.isfinite(card.extras["boundary"]["folded_r"])
    assert model.encode(torch.zeros(2, 1, 64, 64)).shape == (2, 3)
    json.loads((out / "card.json").read_text())  # plain JSON


def test_same_seed_gives_identical_weights(tiny, tmp_path):
    config = _config(kind="cae-free", epochs=1)
    a = train(config, tiny, tmp_path / "a")
    b = train(config, tiny, tmp_path / "b")
    c = train(_config(kind="cae-free", epochs=1, seed=1), tiny, tmp_path / "c")
    weights = [(p / "model.safetensors").read_bytes() for p in (a, b, c)]
    assert weights[0] == weights[1]
    assert weights[0] != weights[2]


def test_progress_events_and_stop_event(tiny, tmp_path):
    events, stop = [], threading.Event()

    def on_epoch(event):
        events.append(event)
        stop.set()  # ask to stop as soon as the first epoch is reported

    out = train(_config(epochs=5), tiny, tmp_path / "stopped", callback=on_epoch, stop_event=stop)
    assert len(events) == 1
    event = events[0]
    assert {"epoch", "epochs", "train_loss", "val_loss", "elapsed_s", "eta_s", "device"} <= set(event)
    assert event["epoch"] == 1 and event["epochs"] == 5 and event["device"] == "cpu"
    card = read_card(out)
    assert card.metrics["stopped_early"] and card.metrics["epochs_run"] == 1


def test_stop_before_the_first_batch_ends_still_writes_a_checkpoint(tiny, tmp_path):
    stop = threading.Event()
    stop.set()
    events = []
    out = train(_config(epochs=5), tiny, tmp_path / "early", callback=events.append, stop_event=stop)
    assert len(events) == 1 and events[0]["partial"]
    load_checkpoint(out)


def test_keyboard_interrupt_keeps_the_best_checkpoint(tiny, tmp_path):
    def interrupt(event):
        if event["epoch"] == 2:
            raise KeyboardInterrupt

    out = train(_config(epochs=4), tiny, tmp_path / "interrupted", callback=interrupt)
    card = read_card(out)
    assert card.metrics["epochs_run"] == 2 and card.metrics["stopped_early"]


def test_nan_loss_raises_training_error(tiny, tmp_path):
    with pytest.raises(TrainingError, match=r"epoch 1.*lower the learning rate"):
        train(_config(learning_rate=1e30), tiny, tmp_path / "nan")
    assert not (tmp_path / "nan" / "card.json").exists()


def test_vae_trains_on_raw_counts_and_ranks_its_latents(tiny, tmp_path):
    out = train(_config(kind="vae", epochs=1, images_per_epoch=64, latent_dim=4), tiny, tmp_path / "vae")
    model, card = load_checkpoint(out)
    assert card.architecture == "environment_vae" and card.channels == ["env"] and card.recipe == "physical"
    assert sorted(card.extras["latent_ranking"]) == [0, 1, 2, 3]
    info = card.extras["latent_informativeness"]
    assert info[card.extras["latent_ranking"][0]] == max(info)
    assert model.decode(torch.zeros(1, 4)).shape == (1, 1, 64, 64)


def test_regressor_trains_on_noisy_distances_and_stores_its_scalings(tiny, tmp_path):
    config = _config(kind="regressor", epochs=1, images_per_epoch=64, targets=["log_mstar", "distance"],
                     noisy_labels=True, latent_dim=8)
    model, card = load_checkpoint(train(config, tiny, tmp_path / "reg"))
    assert card.outputs == ["log_mstar", "distance"]
    assert card.output_units == {"log_mstar": "dex", "distance": "Mpc"}
    assert card.training_data["label_columns"] == {"log_mstar": "log_mstar", "distance": "distance_z"}
    assert card.channels == ["mom0", "mom1", "mom2"] and card.latent_names[0] == "h0"
    catalog = open_dataset(tiny).catalog
    train_rows, _, _ = split_train_validation_test(catalog["galaxy_id"].to_numpy(), 0.1, 0.2, seed=0)
    # the distance output is standardised with the statistics of D_z, not of D
    labels = catalog[["log_mstar", "distance_z"]].to_numpy()[train_rows]
    np.testing.assert_allclose(model.target_mean.numpy(), labels.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(model.target_std.numpy(), labels.std(axis=0), rtol=1e-4)
    assert model.input_scale[1].item() == 300.0 and model.input_scale[2].item() == 300.0
    assert set(card.metrics["test"]) == {"log_mstar", "distance"}
    assert card.metrics["test"]["distance"]["unit"] == "Mpc"


def _with_test_maps_replaced(source, destination, test_fraction: float = 0.2, seed: int = 0):
    """A copy of the dataset ``source`` whose held-out test galaxies (the test split of
    `split_by_galaxy`, which training uses) have other maps: noise instead of discs."""
    dataset = open_dataset(source)
    catalog = dataset.catalog
    _, test_rows = split_by_galaxy(catalog["galaxy_id"].to_numpy(), test_fraction, seed)
    maps = dataset.maps[np.arange(len(dataset))]
    maps[test_rows] = np.random.default_rng(1).normal(0.0, 300.0, maps[test_rows].shape).astype(np.float32)
    maps[test_rows, 3] = np.abs(np.round(maps[test_rows, 3]))  # env stays counts
    with create_dataset(destination, dataset.channels, dataset.units) as writer:
        writer.append(maps, catalog, column_units={k: v for k, v in dataset.column_units.items() if v})
    return destination, test_rows


@pytest.mark.parametrize("kind", ["cae", "regressor"])
def test_training_never_reads_the_test_split(tiny, tmp_path, kind):
    """Changing every map of the test galaxies changes no trained weight, no chosen epoch and
    nothing fitted for the card (boundary, PCA, scalings): only the test figures."""
    altered, test_rows = _with_test_maps_replaced(tiny, tmp_path / "altered")
    extra = dict(targets=["log_mstar"], latent_dim=8) if kind == "regressor" else {}
    config = _config(kind=kind, epochs=3, images_per_epoch=32, **extra)
    first = train(config, tiny, tmp_path / "first")
    second = train(config, altered, tmp_path / "second")
    assert (first / "model.safetensors").read_bytes() == (second / "model.safetensors").read_bytes()
    card_a, card_b = read_card(first), read_card(second)
    assert card_a.metrics["history"] == card_b.metrics["history"]  # same validation losses, same epoch kept
    assert card_a.extras == card_b.extras
    assert card_a.metrics["test"] != card_b.metrics["test"]  # the test figures did see the change
    assert card_a.training_data["n_test"] == len(test_rows)


def test_configuration_errors(tiny, tmp_path):
    with pytest.raises(ColumnError, match="no_such_column"):
        train(_config(kind="regressor", targets=["no_such_column"]), tiny, tmp_path / "x")
    with pytest.raises(ParameterError, match="distance"):
        train(_config(kind="regressor", targets=["log_mstar"], noisy_labels=True), tiny, tmp_path / "x")
    with pytest.raises(ParameterError, match="kind"):
        train(_config(kind="gan"), tiny, tmp_path / "x")
    with pytest.raises(ParameterError, match="images_per_epoch must be an integer of at most"):
        train(_config(images_per_epoch=10**11), tiny, tmp_path / "x")
    with pytest.raises(ParameterError, match="validation_fraction"):
        train(_config(validation_fraction=0.85, test_fraction=0.2), tiny, tmp_path / "x")
    out = train(_config(epochs=1, images_per_epoch=16), tiny, tmp_path / "once")
    with pytest.raises(ParameterError, match="already holds a checkpoint"):
        train(_config(epochs=1, images_per_epoch=16), tiny, out)


def _no_leftovers(job: TrainingJob, models_dir) -> None:
    assert not job.process.is_alive()
    assert job.process not in multiprocessing.active_children()
    assert not [p for p in models_dir.iterdir() if p.name.startswith(".training-")]


def test_training_job_runs_in_a_subprocess_and_reports_progress(tiny, tmp_path):
    models = tmp_path / "models"
    job = TrainingJob(_config(epochs=2), tiny, models, name="bg")
    assert job.status == QUEUED
    job.start()
    assert job.wait(timeout=120) == FINISHED, job.error
    assert [e["epoch"] for e in job.events] == [1, 2]
    assert job.result == models / "bg"
    load_checkpoint(job.result)
    _no_leftovers(job, models)
    with pytest.raises(ParameterError, match="already exists"):
        TrainingJob(_config(), tiny, models, name="bg")


def test_cancelled_and_failed_jobs_leave_nothing_behind(tiny, tmp_path):
    models = tmp_path / "models"
    manager = JobManager(models)
    long_job = manager.submit(_config(epochs=500), tiny, name="long")
    broken = manager.submit(_config(epochs=1), tmp_path / "no_such_dataset", name="broken")
    assert long_job.status == RUNNING
    assert broken.status == QUEUED and "queued" in broken.message and "at most 1" in broken.message
    deadline = time.monotonic() + 120
    while not long_job.events and time.monotonic() < deadline:
        time.sleep(0.05)
        long_job.poll()
    assert long_job.events, "no progress event arrived from the training process"
    manager.cancel(long_job, grace_s=20)
    assert long_job.status == CANCELLED
    assert not long_job.process.is_alive()
    assert len(long_job.events) < 500
    # the queued job starts once the slot is free, and its failure is reported, not raised
    assert broken.wait(timeout=120) == FAILED
    assert "DatasetError" in broken.error and "no_such_dataset" in broken.error
    _no_leftovers(long_job, models)
    _no_leftovers(broken, models)
    assert not (models / "broken").exists()
    manager.shutdown()
    # this manager's processes are gone (other tests' worker pools may still be alive)
    ours = {job.process for job in (long_job, broken) if job.process is not None}
    assert ours and ours.isdisjoint(multiprocessing.active_children())


def test_cli_train_writes_a_checkpoint(tiny, tmp_path, capsys):
    from galexplore.cli import main

    out = tmp_path / "from_cli"
    assert main(["train", "cae-free", str(tiny), str(out), "--epochs", "1", "--batch-size", "8",
                 "--images-per-epoch", "16", "--device", "cpu", "--seed", "5"]) == 0
    card = read_card(out)
    assert card.architecture == "cae_free" and card.training_data["config"]["seed"] == 5
    assert main(["train", "regressor", str(tiny), str(tmp_path / "bad"), "--device", "cpu"]) == 2
    assert "--target" in capsys.readouterr().err
