"""Does the explorer stay responsive while a CAE trains in the background on the CPU?

On the shipped sample universe (4,400 maps) with a small CAE checkpoint written to a
temporary directory, this measures, through the code the app runs:
  * latent-map re-render: the session's `LatentView` overlay (Datashader rasterize +
    dynspread of every galaxy, the selection, boundary, hover layers) turned into Bokeh
    models by HoloViews' renderer, alternating the colour column so each render re-aggregates;
  * click-to-detail: `ExplorerState.click` (nearest galaxy on screen) followed by
    `galaxy_detail` (model input, reconstruction, latent neighbours);
first idle, then while a `TrainingJob` trains a Dawson CAE in its own process with the job
default on the CPU (every core but one: `cpu_threads`), and optionally with every core.
Each figure is the median of ``--repeats`` runs, printed with its ratio to the idle value
measured in the same run (target: <= 1.5x).

Run: ``python benchmarks/bench_training_responsiveness.py [--repeats 15] [--all-cores]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

TARGET_RATIO = 1.5


def make_model(root: Path) -> Path:
    """An untrained Dawson CAE checkpoint (fixed seed); its cost per map is what matters here."""
    import torch

    from galexplore.models.checkpoint import ModelCard, save_checkpoint
    from galexplore.models.registry import build_model

    torch.manual_seed(0)
    card = ModelCard(name="bench-cae", architecture="cae_free", hyperparameters={"in_channels": 1, "latent_dim": 3},
                     channels=["mom1"], recipe="dawson2020", latent_names=["z0", "z1", "z2"])
    return save_checkpoint(build_model("cae_free", in_channels=1, latent_dim=3), card, root / "bench-cae")


def measure(state, view, renderer, repeats: int) -> dict[str, float]:
    """Median seconds of a latent-map render and of a click-to-detail."""
    from galexplore.ui.detail import galaxy_detail

    colours = [c for c in ("kappa", "inc", "pa", "log_mstar") if c in state.param.color_by.objects][:2]
    x, y = state.xy()
    rng = np.random.default_rng(0)
    render, detail = [], []
    for i in range(repeats):
        state.color_by = colours[i % len(colours)]
        start = time.perf_counter()
        renderer.get_plot(view.overlay)
        render.append(time.perf_counter() - start)
        k = int(rng.integers(len(x)))
        start = time.perf_counter()
        row = state.click(float(x[k]), float(y[k]))
        galaxy_detail(state.bundle, row, 8)
        detail.append(time.perf_counter() - start)
    return {"latent-map re-render": statistics.median(render), "click-to-detail": statistics.median(detail)}


def under_training(state, view, renderer, repeats: int, root: Path, dataset: Path, num_threads: int | None):
    """`measure` while a CAE trains in a background `TrainingJob`; returns figures and the job's thread count."""
    from galexplore.training.jobs import TrainingJob, cpu_threads
    from galexplore.training.loops import TrainConfig

    config = TrainConfig(kind="cae", epochs=1000, images_per_epoch=640, device="cpu", num_threads=num_threads)
    job = TrainingJob(config, dataset, root / "user-models")
    job.start()
    try:
        deadline = time.monotonic() + 300
        while not job.events:  # measure once the run is past loading the maps and is training
            if job.done or time.monotonic() > deadline:
                raise RuntimeError(f"the training job did not start training: {job.message}")
            time.sleep(0.2)
        figures = measure(state, view, renderer, repeats)
        epochs = len(job.events)
    finally:
        job.cancel(grace_s=5.0)
    return figures, cpu_threads(config), epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--all-cores", action="store_true", help="also train with every core (no core left free)")
    args = parser.parse_args()

    import holoviews as hv

    from galexplore.analysis.embed import load_or_compute_embedding
    from galexplore.paths import SAMPLE_DATASET
    from galexplore.ui.bundle import load_bundle
    from galexplore.ui.latent_view import LatentView
    from galexplore.ui.layout import warm_up
    from galexplore.ui.state import ExplorerState

    hv.extension("bokeh")
    renderer = hv.renderer("bokeh")
    root = Path(tempfile.mkdtemp(prefix="galexplore-bench-"))
    try:
        dataset = Path(shutil.copytree(SAMPLE_DATASET, root / "universe"))  # the embedding cache goes beside it
        model = make_model(root)
        load_or_compute_embedding(model, dataset, device="cpu", umap=False)
        warm_up()
        state = ExplorerState(load_bundle(dataset, model), selections_dir=root / "selections")
        view = LatentView(state)
        measure(state, view, renderer, 2)  # first renders compile kernels and fill caches

        print(f"{os.cpu_count()} CPU cores; {len(state.table):,} galaxies; median of {args.repeats} runs\n")
        idle = measure(state, view, renderer, args.repeats)
        runs = [("training, job default", None)] + ([("training, every core", os.cpu_count())] if args.all_cores else [])
        header = f"{'what':<22} {'condition':<34} {'seconds':>9} {'ratio to idle':>14}"
        print(header)
        print("-" * len(header))
        for what, seconds in idle.items():
            print(f"{what:<22} {'idle (baseline)':<34} {seconds:>9.4f} {1.0:>13.2f}x")
        for label, threads in runs:
            figures, used, epochs = under_training(state, view, renderer, args.repeats, root, dataset, threads)
            for what, seconds in figures.items():
                ratio = seconds / idle[what]
                flag = "" if ratio <= TARGET_RATIO else f"  (above the {TARGET_RATIO}x target)"
                print(f"{what:<22} {f'{label} ({used} torch threads)':<34} {seconds:>9.4f} {ratio:>13.2f}x{flag}")
            print(f"{'':<22} (the job ran {epochs} epoch(s) of 640 maps meanwhile)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
