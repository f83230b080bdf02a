"""Does the explorer stay responsive while a CAE trains in the background on the CPU?

On the shipped sample universe (4,400 maps) with a small CAE checkpoint written to a
temporary directory, this measures, through the code the app runs:
  * latent-map re-render: the session's `LatentMap` layers (raster kernels and spreading of
    every galaxy, the selection, boundary, hover and marker layers) drawn into its Bokeh
    figure, alternating the colour column so each render re-aggregates;
  * click-to-detail: `nearest_visible` (the galaxy nearest on screen) followed by
    `galaxy_detail` (model input, reconstruction, latent neighbours);
idle and while a `TrainingJob` trains a Dawson CAE in its own process with the job defaults
on the CPU (niceness 10, every core but one: `cpu_threads`), or optionally with every core.

Idle and busy measurements are interleaved so that drifts in the machine's load hit both
equally: one training process runs throughout and is paused (SIGSTOP) for each idle
measurement and resumed (SIGCONT) for each busy one, alternating which comes first and
which colour column each uses. Each figure is the median of ``--repeats`` pairs, printed
with its ratio to the idle median (target: <= 1.5x) and the median of the per-pair ratios.
POSIX only (the pause uses signals).

Run: ``python benchmarks/bench_training_responsiveness.py [--repeats 25] [--all-cores]``
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

TARGET_RATIO = 1.5


def make_model(root: Path) -> Path:
    """An untrained Dawson CAE checkpoint (fixed seed); its cost per map is what matters here."""

    from galexplore.models.checkpoint import ModelCard, save_checkpoint
    from galexplore.models.registry import build_model

    torch.manual_seed(0)
    card = ModelCard(name="bench-cae", architecture="cae_free", hyperparameters={"in_channels": 1, "latent_dim": 3},
                     channels=["mom1"], recipe="dawson2020", latent_names=["z0", "z1", "z2"])
    return save_checkpoint(build_model("cae_free", in_channels=1, latent_dim=3), card, root / "bench-cae")


#: Seconds a resumed training process gets to be back at full speed before a busy measurement.
RESUME_SETTLE_S = 0.3


def measure_once(state, view, colour: str, rng: np.random.Generator) -> dict[str, float]:
    """Seconds of one latent-map re-render (colour column changed) and one click-to-detail."""
    from galexplore.explorer.detail import galaxy_detail
    from galexplore.explorer.selections import nearest_visible

    x, y = state.bundle.xy(state.projection)
    state.param.update(color_by=colour)  # the view re-renders at once: no document to wait for
    start = time.perf_counter()
    view._render(view._ranges())
    render = time.perf_counter() - start
    k = int(rng.integers(len(x)))
    start = time.perf_counter()
    row = nearest_visible(state.bundle, state.projection, float(x[k]), float(y[k]))
    galaxy_detail(state.bundle, row, 8)
    return {"latent-map re-render": render, "click-to-detail": time.perf_counter() - start}


def colours_of(state) -> list[str]:
    return [c for c in ("kappa", "inc", "pa", "log_mstar") if c in state.param.color_by.objects][:2]


def interleaved(state, view, repeats: int, root: Path, dataset: Path, num_threads: int | None):
    """Pairs of (idle, busy) measurements around one background CAE run, paused for the idle ones.

    Returns the idle and busy samples (what -> list of seconds), the job's thread count and
    the epochs it ran.
    """
    from galexplore.training.jobs import TrainingJob, cpu_threads
    from galexplore.training.loops import TrainConfig

    config = TrainConfig(kind="cae", epochs=100_000, images_per_epoch=320, device="cpu", num_threads=num_threads)
    job = TrainingJob(config, dataset, root / "user-models")
    job.start()
    pid = job.process.pid
    colours, rng = colours_of(state), np.random.default_rng(0)
    samples = {"idle": {}, "busy": {}}
    try:
        deadline = time.monotonic() + 300
        while not job.events:  # measure once the run is past loading the maps and is training
            if job.done or time.monotonic() > deadline:
                raise RuntimeError(f"the training job did not start training: {job.message}")
            time.sleep(0.2)
        for i in range(repeats):
            order = ("idle", "busy") if i % 2 == 0 else ("busy", "idle")
            for k, condition in enumerate(order):
                if condition == "idle":
                    os.kill(pid, signal.SIGSTOP)
                else:
                    os.kill(pid, signal.SIGCONT)
                time.sleep(RESUME_SETTLE_S)
                figures = measure_once(state, view, colours[k], rng)
                for what, seconds in figures.items():
                    samples[condition].setdefault(what, []).append(seconds)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
        job.cancel(grace_s=5.0)  # drains the progress events sent meanwhile
    epochs = len(job.events)
    return samples, cpu_threads(config), epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--all-cores", action="store_true", help="also train with every core (no core left free)")
    args = parser.parse_args()

    from galexplore.analysis.embed import load_or_compute_embedding
    from galexplore.explorer.bundles import build_bundle
    from galexplore.paths import SAMPLE_DATASET
    from galexplore.ui.latent_view import LatentMap
    from galexplore.ui.layout import warm_up
    from galexplore.ui.state import FittedBoundary, MapState, Messages, SelectionState, Source

    warm_up()  # the server's thread limits (one torch, BLAS and OpenMP thread) and the map's kernels
    root = Path(tempfile.mkdtemp(prefix="galexplore-bench-"))
    try:
        dataset = Path(shutil.copytree(SAMPLE_DATASET, root / "universe"))  # the embedding cache goes beside it
        model = make_model(root)
        load_or_compute_embedding(model, dataset, device="cpu", umap=False)
        source = Source(bundle=build_bundle(dataset, model))
        state = MapState(source=source)
        view = LatentMap(map=state, selection=SelectionState(map=state), boundary=FittedBoundary(source=source),
                         messages=Messages())
        rng = np.random.default_rng(1)
        for colour in colours_of(state) * 2:  # first renders load kernels and fill caches
            measure_once(state, view, colour, rng)

        print(f"{os.cpu_count()} CPU cores; {source.bundle.n_maps:,} maps; "
              f"median of {args.repeats} interleaved idle/busy pairs\n")
        runs = [("job default", None)] + ([("every core", os.cpu_count())] if args.all_cores else [])
        header = f"{'what':<22} {'condition':<40} {'seconds':>9} {'ratio to idle':>14} {'median pair ratio':>18}"
        print(header)
        print("-" * len(header))
        for label, threads in runs:
            samples, used, epochs = interleaved(state, view, args.repeats, root, dataset, threads)
            for what, idle in samples["idle"].items():
                busy = samples["busy"][what]
                ratio = statistics.median(busy) / statistics.median(idle)
                pairs = statistics.median(b / a for a, b in zip(idle, busy))
                flag = "" if ratio <= TARGET_RATIO else f"  (above the {TARGET_RATIO}x target)"
                print(f"{what:<22} {'idle (training paused)':<40} {statistics.median(idle):>9.4f} {1.0:>13.2f}x")
                print(f"{what:<22} {f'training, {label} ({used} thread(s), nice)':<40} "
                      f"{statistics.median(busy):>9.4f} {ratio:>13.2f}x {pairs:>17.2f}x{flag}")
            print(f"{'':<22} (the job ran {epochs} epoch(s) of 320 maps meanwhile)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
