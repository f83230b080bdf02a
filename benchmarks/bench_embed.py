"""Embedding throughput against this machine's compute ceiling, every figure from the same run.

The ceiling is the measured float32 matmul peak (torch.mm of 2048 x 2048 matrices, all
threads) divided by the FLOP one map needs: one encoder pass plus one decoder pass of the
Dawson et al. (2020) CAE, counted from the layer shapes. Printed next to it, each the best of
``--repeats`` interleaved rounds (the machine is shared; the best round is the least disturbed):

* the model alone on preprocessed maps in memory, batches of 128 on torch's threads: eager
  NCHW, eager channels-last, TorchScript (trace + freeze) and, with ``--compile``,
  ``torch.compile``; and channels-last in slices of 32 maps on one Python thread per core
  with single-threaded ops (what `run_model` does on the CPU);
* `run_model` before this change (encode, then encode again inside ``reconstruct``, NCHW,
  no read-ahead), re-created here as the baseline;
* `galexplore.analysis.inference.run_model` end to end (read, decode, recipe, model) on a
  float32 and a compact (zstd) dataset of the same maps, and its share of the ceiling
  (target >= 40 %).

    python benchmarks/bench_embed.py [--maps 4096] [--repeats 3] [--compile]
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from galexplore.analysis.inference import prepare_inputs, run_model
from galexplore.data.dataset import create_dataset, open_dataset
from galexplore.models.cae import DawsonCAE
from galexplore.models.checkpoint import ModelCard


def synthetic_dataset(root: Path, n: int, storage: str) -> Path:
    """Rotating-disc-like velocity maps (km/s) with blank corners: realistic input for the recipe."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:64, 0:64] - 31.5
    path = root / storage
    with create_dataset(path, ["mom1"], {"mom1": "km/s"}, storage=storage) as writer:
        for start in range(0, n, 1024):
            m = min(1024, n - start)
            pa = rng.uniform(0, 2 * np.pi, m)[:, None, None]
            vmax = rng.uniform(100, 300, m)[:, None, None]
            r = np.hypot(xx, yy)[None]
            v = vmax * np.tanh(r / 6) * (-np.sin(pa) * xx + np.cos(pa) * yy) / np.maximum(r, 1e-6)
            v[:, r[0] > 28] = np.nan
            cat = pd.DataFrame({"id": np.arange(start, start + m), "galaxy_id": np.arange(start, start + m),
                                "view": 0})
            writer.append(v[:, None].astype(np.float32), cat)
    return path


def model_flops(model: DawsonCAE) -> float:
    """FLOP (2 x multiply-adds) of one encoder and one decoder pass for one 64 x 64 map."""
    flops = 0.0

    def count(module, inputs, output):
        nonlocal flops
        if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels
            flops += 2.0 * k * output.numel()
        elif isinstance(module, torch.nn.Linear):
            flops += 2.0 * module.in_features * module.out_features

    hooks = [m.register_forward_hook(count) for m in model.modules()
             if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear))]
    with torch.no_grad():
        model.encode_and_reconstruct(torch.zeros(1, 1, 64, 64))
    for h in hooks:
        h.remove()
    return flops


def matmul_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2.0 * n**3 * repeats / (time.perf_counter() - start) / 1e9


@torch.inference_mode()
def run_model_before(model, card, dataset, batch_size: int = 256) -> dict[str, np.ndarray]:
    """`run_model` as it was: NCHW, encode, then reconstruct (a second encoder pass), no read-ahead."""
    latents, mse = [], []
    for start in range(0, len(dataset), batch_size):
        x = torch.from_numpy(prepare_inputs(card, dataset, slice(start, start + batch_size)))
        latents.append(model.encode(x).numpy())
        mse.append(((model.reconstruct(x) - x) ** 2).mean(dim=(1, 2, 3)).numpy())
    return {"latent": np.concatenate(latents), "recon_mse": np.concatenate(mse)}


class _Both(torch.nn.Module):
    def __init__(self, model: DawsonCAE) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor):
        return self.model.encode_and_reconstruct(x)


def model_only_variants(model: DawsonCAE, x: torch.Tensor, compile_too: bool) -> dict:
    """name -> callable running the model over x in batches of 128 (inputs already in memory)."""
    cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        traced = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(_Both(model).eval(), x[:128])))

    def over(fn, inputs):
        def go():
            with torch.inference_mode():  # thread-local
                for s in range(0, len(inputs), 128):
                    fn(inputs[s:s + 128])
        return go

    def per_core(fn, inputs):
        """Slices of 32 maps on one Python thread per core, each op single-threaded (as run_model does)."""
        def go():
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                with ThreadPoolExecutor(threads) as pool:
                    list(pool.map(lambda part: over(fn, part)(), inputs.split(32)))
            finally:
                torch.set_num_threads(threads)
        return go

    variants = {
        "encoder only, eager NCHW (the issue's 'bare encoder')": over(model.encode, x),
        "encode + reconstruct, eager NCHW": over(model.encode_and_reconstruct, x),
        "encode + reconstruct, eager channels-last": over(cl.encode_and_reconstruct, x_cl),
        "encode + reconstruct, TorchScript trace + freeze": over(traced, x),
        "encode + reconstruct, channels-last, a thread per core": per_core(cl.encode_and_reconstruct, x_cl),
    }
    if compile_too:
        compiled = torch.compile(cl.encode_and_reconstruct)
        start = time.perf_counter()
        with torch.inference_mode():
            compiled(x_cl[:128])
        print(f"torch.compile start-up: {time.perf_counter() - start:.1f} s")
        variants["encode + reconstruct, torch.compile channels-last"] = over(compiled, x_cl)
    return variants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maps", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow to start)")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = DawsonCAE().eval()
    card = ModelCard(name="bench", architecture="dawson2020_cae", hyperparameters={}, channels=["mom1"],
                     recipe="dawson2020", latent_names=["z0", "z1", "z2"], outputs=[])
    flop = model_flops(model)
    print(f"{args.maps} maps, {torch.get_num_threads()} torch threads, {os.cpu_count()} cores; "
          f"one encoder + one decoder pass = {flop / 1e6:.1f} MFLOP per map")
    with tempfile.TemporaryDirectory() as tmp:
        datasets = {s: open_dataset(synthetic_dataset(Path(tmp), args.maps, s)) for s in ("float32", "compact")}
        x = torch.from_numpy(prepare_inputs(card, datasets["float32"], slice(None)))
        timed = {name: fn for name, fn in model_only_variants(model, x, args.compile).items()}
        timed["run_model before (encode twice, NCHW, no read-ahead), float32 dataset"] = \
            lambda: run_model_before(model, card, datasets["float32"])
        for storage, ds in datasets.items():
            timed[f"run_model end to end, {storage} dataset"] = \
                lambda ds=ds: run_model(model, card, ds, device="cpu")
        best = dict.fromkeys(timed, np.inf)
        peak = 0.0
        for _ in range(args.repeats):
            peak = max(peak, matmul_peak_gflops())
            for name, fn in timed.items():
                start = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - start)
        reference = run_model_before(model, card, datasets["float32"])
        fast = run_model(model, card, datasets["float32"], device="cpu")
    for key in ("latent", "recon_mse"):  # float32 sums in another order: equal to ~1e-6
        np.testing.assert_allclose(fast[key], reference[key], rtol=1e-4, atol=1e-5, err_msg=key)

    ceiling = peak * 1e9 / flop
    print(f"load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (other processes share them)")
    print(f"matmul peak {peak:.1f} GFLOP/s -> compute ceiling {ceiling:,.0f} maps/s")
    before = args.maps / best["run_model before (encode twice, NCHW, no read-ahead), float32 dataset"]
    print(f"{'':72s} {'maps/s':>8s} {'of ceiling':>10s} {'vs before':>9s}")
    for name, seconds in best.items():
        rate = args.maps / seconds
        print(f"{name:72s} {rate:8,.0f} {100 * rate / ceiling:9.1f}% {rate / before:8.2f}x")


if __name__ == "__main__":
    main()
