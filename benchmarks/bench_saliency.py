"""Saliency speed for one 64 x 64 map through the Dawson et al. (2020) CAE encoder, on the CPU.

Each figure is printed with its ratio to the baseline timed in the same run: SmoothGrad
computed as an unbatched loop (one forward/backward per noisy copy). Target: vanilla and
batched SmoothGrad (n = 25) at about 0.1 s per map.

    python benchmarks/bench_saliency.py [--repeats 7] [--threads 1 2]

torch's intra-op threads matter: on a busy 2-core machine two threads can be several times
slower than one, so the figures are printed for each thread count asked for.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from galexplore.analysis.saliency import saliency, target_function
from galexplore.models.registry import build_model

N_SAMPLES, NOISE_LEVEL = 25, 0.15


def smoothgrad_unbatched(fn, x: np.ndarray, seed: int = 0) -> np.ndarray:
    """Baseline: SmoothGrad as a plain loop of single-map gradients."""
    generator = torch.Generator().manual_seed(seed)
    x_t = torch.from_numpy(x)
    value_range = (x_t.amax(dim=(1, 2)) - x_t.amin(dim=(1, 2))).view(-1, 1, 1)
    total = torch.zeros_like(x_t)
    for _ in range(N_SAMPLES):
        noisy = (x_t + torch.randn(x_t.shape, generator=generator) * NOISE_LEVEL * value_range)[None]
        noisy.requires_grad_(True)
        fn(noisy).sum().backward()
        total += noisy.grad[0]
    return (total / N_SAMPLES).numpy()


def median_seconds(call, repeats: int) -> float:
    call()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    for threads in args.threads:
        torch.set_num_threads(threads)
        run(args.repeats, threads)


def run(repeats: int, threads: int) -> None:
    """Time the four variants with ``threads`` intra-op threads and print them."""
    torch.manual_seed(0)
    model = build_model("dawson2020_cae")
    fn = target_function(model, "latent_0")
    yy, xx = np.mgrid[0:64, 0:64] - 31.5
    x = np.where(np.hypot(xx, yy) < 28, np.tanh(xx / 8.0), 0.0).astype(np.float32)[None]  # a rotating disc

    baseline = median_seconds(lambda: smoothgrad_unbatched(fn, x), repeats)
    rows = [
        ("smoothgrad n=25, unbatched loop (baseline)", baseline),
        ("vanilla gradient", median_seconds(lambda: saliency(fn, x, "vanilla"), repeats)),
        ("smoothgrad n=25, batched", median_seconds(
            lambda: saliency(fn, x, "smoothgrad", n_samples=N_SAMPLES, noise_level=NOISE_LEVEL), repeats)),
        ("integrated gradients, 32 steps", median_seconds(
            lambda: saliency(fn, x, "integrated_gradients", steps=32), repeats)),
    ]
    print(f"saliency of latent_0, DawsonCAE, one 64x64 map, CPU, {threads} thread(s), median of {repeats}")
    for label, seconds in rows:
        print(f"  {label:44s} {seconds * 1000:8.1f} ms   ratio to baseline {seconds / baseline:6.3f}")


if __name__ == "__main__":
    main()
