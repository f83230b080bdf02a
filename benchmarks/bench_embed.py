"""Embedding throughput: galexplore's batched inference against a naive eager loop, same maps, same run.

Also reports the encoder's achieved FLOP rate as a fraction of this machine's measured
float32 matmul peak (torch.mm of 2048 x 2048 matrices).

    python benchmarks/bench_embed.py [--maps 4096]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from galexplore.analysis.embed import prepare_inputs, run_model
from galexplore.data.dataset import create_dataset, open_dataset
from galexplore.models.cae import DawsonCAE
from galexplore.models.checkpoint import ModelCard


def synthetic_dataset(root: Path, n: int) -> Path:
    """Rotating-disc-like velocity maps (km/s) with blank corners: realistic input for the recipe."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:64, 0:64] - 31.5
    path = root / "bench"
    with create_dataset(path, ["mom1"], {"mom1": "km/s"}) as writer:
        for start in range(0, n, 1024):
            m = min(1024, n - start)
            pa = rng.uniform(0, 2 * np.pi, m)[:, None, None]
            vmax = rng.uniform(100, 300, m)[:, None, None]
            r = np.hypot(xx, yy)[None]
            v = vmax * np.tanh(r / 6) * (-np.sin(pa) * xx + np.cos(pa) * yy) / np.maximum(r, 1e-6)
            v[:, r[0] > 28] = np.nan
            import pandas as pd

            cat = pd.DataFrame({"id": np.arange(start, start + m), "galaxy_id": np.arange(start, start + m),
                                "view": 0})
            writer.append(v[:, None].astype(np.float32), cat)
    return path


def model_flops(model: torch.nn.Module) -> float:
    """Multiply-adds x 2 of encoding and reconstructing one 64 x 64 map, counted from the layers' shapes."""
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
        x = torch.zeros(1, 1, 64, 64)
        model.encode(x)
        model.reconstruct(x)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--maps", type=int, default=4096)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = DawsonCAE().eval()
    card = ModelCard(name="bench", architecture="dawson2020_cae", hyperparameters={}, channels=["mom1"],
                     recipe="dawson2020", latent_names=["z0", "z1", "z2"], outputs=[])
    with tempfile.TemporaryDirectory() as tmp:
        ds = open_dataset(synthetic_dataset(Path(tmp), args.maps))

        start = time.perf_counter()
        naive = []
        for i in range(len(ds)):
            x = torch.from_numpy(prepare_inputs(card, ds, [i]))
            naive.append(model.encode(x).detach())
            ((model.reconstruct(x) - x) ** 2).mean().item()
        t_naive = time.perf_counter() - start

        run_model(model, card, ds, device="cpu", batch_size=256)  # warm-up
        start = time.perf_counter()
        fast = run_model(model, card, ds, device="cpu", batch_size=256)
        t_fast = time.perf_counter() - start
    assert np.allclose(np.concatenate([z.numpy() for z in naive]), fast["latent"], atol=1e-4)

    peak = matmul_peak_gflops()
    achieved = model_flops(model) * args.maps / t_fast / 1e9
    print(f"maps: {args.maps}")
    print(f"naive eager loop (batch 1, autograd on, encode + reconstruct): {args.maps / t_naive:10.0f} maps/s")
    print(f"galexplore run_model (batch 256, inference_mode, + reconstruction): {args.maps / t_fast:10.0f} maps/s")
    print(f"ratio: {t_naive / t_fast:.1f}x the naive loop (target >= 3x)")
    print(f"encode + reconstruct: {model_flops(model) / 1e6:.1f} MFLOP/map; achieved {achieved:.2f} GFLOP/s "
          f"= {100 * achieved / peak:.1f}% of the measured matmul peak {peak:.1f} GFLOP/s")


if __name__ == "__main__":
    main()
