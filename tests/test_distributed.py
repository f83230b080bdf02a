"""Work on dask.distributed: the same bytes as one process, datasets as dask collections,
and nothing left running or complete-looking after a kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
import torch

from galexplore.analysis.inference import on_workers, run_model
from galexplore.cli import main as cli_main
from galexplore.data.dataset import create_dataset, open_dataset
from galexplore.errors import DatasetError
from galexplore.mock import universe
from galexplore.mock.universe import UniverseConfig, build_universe
from galexplore.models.cae import DawsonCAE
from galexplore.models.checkpoint import ModelCard, save_checkpoint
from galexplore.parallel import open_engine
from test_universe import tree_digest

REPO = Path(__file__).resolve().parents[1]
CONFIG = dict(n_galaxies=8, views=1, seed=4, storage="compact")


@pytest.fixture(scope="module")
def cluster():
    """One two-worker LocalCluster for the module (starting one takes seconds)."""
    with open_engine(workers=2, scheduler="local") as engine:
        assert engine.workers == 2
        yield engine


def velocity_maps(n: int) -> np.ndarray:
    rng = np.random.default_rng(5)
    y, x = np.mgrid[0:64, 0:64] - 31.5
    r = np.hypot(x, y)
    pa = rng.uniform(0, 2 * np.pi, n)[:, None, None]
    v = 200 * np.tanh(r / 5) * (x * np.cos(pa) + y * np.sin(pa)) / (r + 1e-3)
    v[:, r > rng.uniform(12, 30)] = np.nan
    return v[:, None].astype(np.float32)


def test_sample_on_two_dask_workers_writes_the_bytes_of_one_process(tmp_path, monkeypatch):
    monkeypatch.setattr(universe, "UNIVERSE_CHUNK_MAPS", 2)  # 4 chunk files, 4 worker tasks
    build_universe(UniverseConfig(**CONFIG), tmp_path / "one", workers=1)
    build_universe(UniverseConfig(**CONFIG), tmp_path / "two", workers=2, scheduler="local")
    assert len(open_dataset(tmp_path / "two").manifest["chunks"]) == 4
    assert tree_digest(tmp_path / "two") == tree_digest(tmp_path / "one")


def test_embed_on_two_dask_workers_gives_the_bytes_of_one_process(tmp_path, cluster):
    with create_dataset(tmp_path / "ds", ["mom1"], {"mom1": "km/s"}, chunk_maps=8) as writer:
        writer.append(velocity_maps(45), pd.DataFrame({"id": np.arange(45)}))
    dataset = open_dataset(tmp_path / "ds")
    torch.manual_seed(3)
    model = DawsonCAE()
    card = ModelCard(name="t", architecture="dawson2020_cae", hyperparameters={}, channels=["mom1"],
                     recipe="dawson2020", latent_names=["a", "b", "c"])
    here = run_model(model, card, dataset, device="cpu", batch_size=16)
    seen = []
    with on_workers(cluster):
        there = run_model(model, card, dataset, device="cpu", batch_size=16,
                          progress_callback=lambda done, total: seen.append((done, total)))
    assert set(there) == {"latent", "recon_mse"} == set(here)
    for key in here:
        assert there[key].tobytes() == here[key].tobytes()
    assert seen[-1] == (45, 45) and len(seen) > 1  # several partitions

    checkpoint = save_checkpoint(model, card, tmp_path / "model")
    assert cli_main(["embed", str(checkpoint), str(dataset.path), "--scheduler", "local", "--workers", "2"]) == 0
    (cached,) = (dataset.path / "embeddings").iterdir()
    table = pd.read_parquet(cached)
    assert table[["latent_0", "latent_1", "latent_2"]].to_numpy().tobytes() == here["latent"].tobytes()
    assert table["recon_mse"].to_numpy().tobytes() == here["recon_mse"].tobytes()


def test_a_dataset_as_dask_collections(tmp_path):
    maps = velocity_maps(30)
    with create_dataset(tmp_path / "ds", ["mom1"], {"mom1": "km/s"}, storage="compact", chunk_maps=7) as writer:
        writer.append(maps[:12], pd.DataFrame({"id": np.arange(12) + 100, "kappa": np.linspace(0, 1, 12)}))
        writer.append(maps[12:], pd.DataFrame({"id": np.arange(12, 30) + 100, "kappa": np.linspace(0, 1, 18)}))
    dataset = open_dataset(tmp_path / "ds")
    dask_maps, dask_catalog = dataset.to_dask()
    assert dask_maps.shape == (30, 1, 64, 64) and dask_maps.dtype == np.float32
    assert dask_maps.chunks[0] == (7, 7, 7, 7, 2)  # one block per chunk file
    np.testing.assert_array_equal(dask_maps[3:25].compute(), dataset.maps[3:25])
    np.testing.assert_array_equal(dask_maps.compute(scheduler="processes", num_workers=2), dataset.maps[:])
    catalog = dask_catalog.compute()
    assert list(catalog.index) == list(range(30))
    pd.testing.assert_frame_equal(catalog.reset_index(drop=True), dataset.catalog)
    disturbed = dask_catalog[dask_catalog.kappa < 0.5].index.compute()
    np.testing.assert_array_equal(disturbed, np.flatnonzero(dataset.catalog["kappa"] < 0.5))


def test_a_killed_sample_leaves_no_process_running_and_no_dataset(tmp_path):
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "galexplore", "sample", str(out), "--n-galaxies", "400", "--views", "1",
               "--workers", "2", "--storage", "compact", "--seed", "1"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parent = psutil.Process(proc.pid)
    deadline = time.monotonic() + 180
    children: list[psutil.Process] = []
    while time.monotonic() < deadline and not any(tmp_path.glob(".killed.partial-*/maps/*")):
        children = parent.children(recursive=True) or children
        time.sleep(0.2)
    children = parent.children(recursive=True) or children
    assert any(tmp_path.glob(".killed.partial-*/maps/*")), "sample never wrote a chunk"
    assert len(children) >= 2, "the workers run in processes of their own"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    gone, alive = psutil.wait_procs(children, timeout=60)
    assert not alive, f"processes left running after kill -9: {[p.cmdline() for p in alive]}"
    assert not out.exists()  # the dataset appears only when complete
    with pytest.raises(DatasetError, match="does not exist"):
        open_dataset(out)
    assert cli_main(["sample", str(out), "--n-galaxies", "2", "--views", "1", "--workers", "1"]) == 0
    assert len(open_dataset(out)) == 2
