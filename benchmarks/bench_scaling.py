"""Throughput with 1 and 2 local dask workers against a single process, same run, same bytes.

    python benchmarks/bench_scaling.py [--n-galaxies 256] [--embed-maps 8192]

* ``galexplore sample``: `build_universe` of a compact universe (2 views per galaxy) in this
  process (the baseline), then on a LocalCluster of 1 and of 2 single-threaded workers;
  maps per second, and whether the files are byte-identical.
* ``galexplore embed``: `run_model` of the Dawson CAE over a compact dataset of mock-like
  maps in this process (all cores, the baseline), then with ``on_workers`` on a LocalCluster
  of 1 and of 2 workers; maps per second, and whether the outputs are byte-identical.

Cluster start-up is timed separately and not counted in the throughput; a real cluster
starts once for many jobs. For ``sample`` the CPU time per map spent in this process and on
the workers is printed too: what this process does (planning, writing bytes) bounds how far
workers can scale, whatever else the machine is running. The load average is printed: on a
shared 2-core machine, 2 workers can at best double one worker's throughput, and only when
two cores are free. The single process runs its numerical libraries on all cores; each dask
worker on one.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_embed import synthetic_dataset  # noqa: E402
from bench_universe import tree_digest  # noqa: E402

from galexplore.analysis.inference import on_workers, run_model  # noqa: E402
from galexplore.data.dataset import open_dataset  # noqa: E402
from galexplore.mock.universe import UniverseConfig, build_universe  # noqa: E402
from galexplore.models.cae import DawsonCAE  # noqa: E402
from galexplore.models.checkpoint import ModelCard  # noqa: E402
from galexplore.parallel import SerialEngine, open_engine  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-galaxies", type=int, default=256)
    parser.add_argument("--embed-maps", type=int, default=8192)
    args = parser.parse_args()
    config = UniverseConfig(n_galaxies=args.n_galaxies, views=2, seed=1, storage="compact")
    torch.manual_seed(0)
    model = DawsonCAE()
    card = ModelCard(name="bench", architecture="dawson2020_cae", hyperparameters={}, channels=["mom1"],
                     recipe="dawson2020", latent_names=["a", "b", "c"])
    maps = config.n_galaxies * config.views
    rows = []
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        dataset = open_dataset(synthetic_dataset(tmp, args.embed_maps, "compact"))
        digests, outputs = {}, {}
        for label, workers in (("single process", None), ("1 dask worker", 1), ("2 dask workers", 2)):
            start = time.perf_counter()
            engine_context = open_engine(workers, "local") if workers else _serial()
            with engine_context as engine:
                startup = time.perf_counter() - start
                cpu = _cpu_seconds(engine)
                start = time.perf_counter()
                build_universe(config, tmp / label, workers=1) if workers is None else \
                    _build_on(engine, config, tmp / label)
                t_sample = time.perf_counter() - start
                sample_cpu = _cpu_seconds(engine) - cpu
                start = time.perf_counter()
                with on_workers(engine):
                    outputs[label] = run_model(model, card, dataset, device="cpu")
                t_embed = time.perf_counter() - start
            digests[label] = tree_digest(tmp / label)
            rows.append((label, startup, maps / t_sample, args.embed_maps / t_embed, sample_cpu / maps))
    base_sample, base_embed = rows[0][2], rows[0][3]
    print(f"sample: {args.n_galaxies} galaxies x 2 views = {maps} maps (compact); embed: {args.embed_maps} maps")
    print(f"load average before / after: {load[0]:.1f} / {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'':16s} {'start-up':>9s} {'sample maps/s':>14s} {'ratio':>6s} {'CPU ms/map here + workers':>26s} "
          f"{'embed maps/s':>13s} {'ratio':>6s}")
    for label, startup, sample_rate, embed_rate, cpu in rows:
        print(f"{label:16s} {startup:8.1f}s {sample_rate:14.1f} {sample_rate / base_sample:5.2f}x "
              f"{cpu[0] * 1e3:12.1f} + {cpu[1] * 1e3:10.1f}  {embed_rate:13,.0f} {embed_rate / base_embed:5.2f}x")
    same_files = len(set(digests.values())) == 1
    same_outputs = all(outputs[k][name].tobytes() == outputs["single process"][name].tobytes()
                       for k in outputs for name in outputs["single process"])
    print(f"identical universe files: {same_files}; identical embedding outputs: {same_outputs}")


def _cpu_seconds(engine) -> np.ndarray:
    """CPU seconds used so far by this process (children excluded) and by the engine's workers."""
    here = resource.getrusage(resource.RUSAGE_SELF)
    workers = 0.0
    if hasattr(engine, "client"):
        workers = sum(engine.client.run(time.process_time).values())
    return np.array([here.ru_utime + here.ru_stime, workers])


class _serial:
    def __enter__(self) -> SerialEngine:
        return SerialEngine()

    def __exit__(self, *exc) -> None:
        return None


def _build_on(engine, config: UniverseConfig, out: Path) -> None:
    """`build_universe` on the already running cluster of ``engine``."""
    build_universe(config, out, scheduler=engine.client.scheduler.address)


if __name__ == "__main__":
    main()
