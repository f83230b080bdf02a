"""Lasso selection speed on 10^5, 10^6 and 10^7 clustered points against matplotlib.

For each size: a Gaussian mixture of points and a concave 50-vertex lasso covering ~20 % of
them. Times (best of several runs) of
  * baseline: ``matplotlib.path.Path(poly).contains_points`` (one run for 10^7, it is slow),
  * ``points_in_polygon`` (one pass, no index),
  * ``PointIndex`` first lasso (index build + selection) and repeated lassos,
  * ``PointIndex.select_box`` repeated, against ``points_in_box``,
with each figure's speed-up over the baseline measured in the same run, and a check that the
masks agree with matplotlib. Numba compilation is timed once, separately.

Run: ``python benchmarks/bench_selection.py [--sizes 100000 1000000 10000000]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from matplotlib.path import Path


def clustered_points(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A 2-D mixture of 12 anisotropic Gaussians, like a UMAP/PCA latent scatter."""
    k = 12
    centres = rng.uniform(-10, 10, size=(k, 2))
    scales = rng.uniform(0.3, 2.0, size=(k, 2))
    comp = rng.choice(k, size=n, p=rng.dirichlet(np.full(k, 2.0)))
    xy = centres[comp] + rng.standard_normal((n, 2)) * scales[comp]
    return np.ascontiguousarray(xy[:, 0]), np.ascontiguousarray(xy[:, 1])


def wobbly_lasso(x, y, n_vertices: int, fraction: float, rng) -> np.ndarray:
    """A concave star-shaped lasso around the data median, scaled to hold ``fraction`` of points."""
    from galexplore.analysis.selection import points_in_polygon

    angle = np.linspace(0, 2 * np.pi, n_vertices, endpoint=False) + rng.uniform(0, 0.05, n_vertices)
    shape = 1.0 + 0.35 * np.sin(3 * angle) + 0.1 * rng.standard_normal(n_vertices)
    cx, cy = np.median(x), np.median(y)
    sub = slice(0, min(len(x), 100_000))
    lo, hi = 0.0, 40.0
    for _ in range(40):  # bisection on the lasso's scale
        r = 0.5 * (lo + hi)
        poly = np.column_stack([cx + r * shape * np.cos(angle), cy + r * shape * np.sin(angle)])
        if points_in_polygon(x[sub], y[sub], poly).mean() < fraction:
            lo = r
        else:
            hi = r
    return poly


CPU_SECONDS: dict[int, float] = {}  # id(result) -> CPU time of the best run


def best_of(fn, repeats: int) -> tuple[float, object]:
    """Best wall time of ``repeats`` runs (other processes share the 2 cores) and the result.

    The same run's CPU time of this thread is kept in CPU_SECONDS, keyed by the result's id:
    on a loaded machine it is the steadier figure.
    """
    best, result, cpu = np.inf, None, np.inf
    for _ in range(repeats):
        c = time.thread_time()
        t = time.perf_counter()
        result = fn()
        wall = time.perf_counter() - t
        if wall < best:
            best, cpu = wall, time.thread_time() - c
    CPU_SECONDS[id(result)] = cpu
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    t = time.perf_counter()
    from galexplore.analysis.selection import PointIndex, points_in_box, points_in_polygon

    tiny = np.linspace(0, 1, 64)
    tri = np.array([[0, 0], [1, 0], [0, 1.0]])
    PointIndex(tiny, tiny).select_polygon(tri)
    PointIndex(tiny, tiny).select_box(0, 1, 0, 1)
    points_in_polygon(tiny, tiny, tri)
    points_in_box(tiny, tiny, 0, 1, 0, 1)
    print(f"import + numba compile/cache load: {time.perf_counter() - t:.2f} s\n")

    header = f"{'N':>9} {'what':<36} {'time [s]':>9} {'speed-up vs matplotlib':>23}"
    print(header)
    print("-" * len(header))
    for n in args.sizes:
        rng = np.random.default_rng(args.seed)
        x, y = clustered_points(n, rng)
        poly = wobbly_lasso(x, y, 50, 0.20, rng)
        xy = np.column_stack([x, y])
        path = Path(poly)
        t_base, ref = best_of(lambda: path.contains_points(xy), 1 if n >= 5_000_000 else 3)

        t_direct, direct = best_of(lambda: points_in_polygon(x, y, poly), 3)

        def first_lasso():
            index = PointIndex(x, y)
            return index, index.select_polygon(poly)

        t_first, (index, first) = best_of(first_lasso, 2)
        t_build, _ = best_of(lambda: PointIndex(x, y), 2)
        t_repeat, repeat = best_of(lambda: index.select_polygon(poly), 5)

        bx = (np.quantile(x, 0.3), np.quantile(x, 0.7), np.quantile(y, 0.3), np.quantile(y, 0.7))
        t_box_base, box_ref = best_of(
            lambda: (x >= bx[0]) & (x <= bx[1]) & (y >= bx[2]) & (y <= bx[3]), 3)
        t_box, box_direct = best_of(lambda: points_in_box(x, y, *bx), 3)
        t_box_idx, box_idx = best_of(lambda: index.select_box(*bx), 5)

        mismatch = int(np.count_nonzero(direct != ref))
        assert np.array_equal(direct, first) and np.array_equal(direct, repeat)
        assert np.array_equal(box_ref, box_direct) and np.array_equal(box_ref, box_idx)
        rows = [
            ("matplotlib Path.contains_points", t_base, t_base),
            ("points_in_polygon (no index)", t_direct, t_base),
            ("PointIndex build only", t_build, t_base),
            ("PointIndex first lasso (build+select)", t_first, t_base),
            ("PointIndex repeated lasso", t_repeat, t_base),
        ]
        for what, seconds, base in rows:
            print(f"{n:>9} {what:<36} {seconds:>9.4f} {base / seconds:>22.1f}x")
        print(f"{n:>9} {'numpy box mask (box baseline)':<36} {t_box_base:>9.4f} {'1.0x':>23}")
        print(f"{n:>9} {'points_in_box':<36} {t_box:>9.4f} {t_box_base / t_box:>22.1f}x")
        print(f"{n:>9} {'PointIndex repeated box':<36} {t_box_idx:>9.4f} {t_box_base / t_box_idx:>22.1f}x")
        print(f"{n:>9} selected {direct.mean():.1%} of points; masks differing from matplotlib: "
              f"{mismatch}; grid {index.grid_size}^2 cells\n")


if __name__ == "__main__":
    main()
