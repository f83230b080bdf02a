"""Speed of the environment code, each figure with its ratio to a baseline timed in the same run.

Baseline for maps and measures: a direct numpy count (every target against every galaxy,
no tree), timed on a subset of targets and scaled per target.

Run: python benchmarks/bench_environment.py
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from galexplore.mock.environment import (
    clustered_volume,
    environment_from_catalog,
    environment_maps,
    environment_measures,
)

GWGC = Path(__file__).resolve().parents[2] / "shared" / "real" / "gwgc" / "gwgc_good.csv"


def _timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def _direct_maps(volume, targets):
    """Baseline: each target against all galaxies with numpy, no spatial index."""
    box, s = volume.box_mpc_h, volume.redshift_positions
    maps = np.zeros((len(targets), 64, 64), dtype=np.float32)
    for i, t in enumerate(targets):
        d = (s - s[t] + box / 2) % box - box / 2
        row = np.floor((d[:, 1] + 5.0) / 0.15625).astype(int)
        col = np.floor((5.0 - d[:, 0]) / 0.15625).astype(int)
        keep = (np.abs(d[:, 2]) < 10.0) & (row >= 0) & (row < 64) & (col >= 0) & (col < 64)
        keep[t] = False
        np.add.at(maps[i], (row[keep], col[keep]), 1)
    return maps


def main() -> None:
    volume, t_volume = _timed(clustered_volume, 30000, np.random.default_rng(0))
    targets = np.arange(0, 30000, 10)  # 3000 targets
    maps, t_maps = _timed(environment_maps, volume, targets)
    _, t_measures = _timed(environment_measures, volume, targets)
    baseline_targets = targets[:300]
    direct, t_direct = _timed(_direct_maps, volume, baseline_targets)
    assert np.array_equal(direct, maps[:300])
    t_direct_per_target = t_direct / baseline_targets.size
    per_target = t_maps / targets.size
    print(f"clustered_volume(30000, 100 h^-1 Mpc, 128^3 grid): {t_volume:.2f} s")
    print(f"environment_maps, 3000 targets: {t_maps:.3f} s = {1e3 * per_target:.3f} ms/target; "
          f"direct numpy baseline {1e3 * t_direct_per_target:.3f} ms/target; "
          f"speed-up x{t_direct_per_target / per_target:.0f}")
    print(f"environment_measures, 3000 targets: {t_measures:.3f} s "
          f"(ratio to maps: {t_measures / t_maps:.2f})")
    if GWGC.is_file():
        table = pd.read_csv(GWGC)
        _, t_gwgc = _timed(environment_from_catalog, table, n_targets=2000, seed=0)
        print(f"GWGC (47,177 galaxies), 2000 targets, maps + measures: {t_gwgc:.2f} s "
              f"(ratio to the mock's maps + measures for 3000: {t_gwgc / (t_maps + t_measures):.1f})")


if __name__ == "__main__":
    main()
