"""Mock-universe generation throughput: all cores against one process, same code, same run.

    python benchmarks/bench_universe.py [--n-galaxies 120] [--views 2]

Prints maps per second for ``workers=1`` (the baseline) and ``workers=os.cpu_count()``, their
ratio, and checks that both runs wrote identical bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from pathlib import Path

from galexplore.mock.universe import UniverseConfig, build_universe


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def timed_build(config: UniverseConfig, out: Path, workers: int) -> float:
    start = time.perf_counter()
    build_universe(config, out, workers=workers)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-galaxies", type=int, default=120)
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--storage", default="compact")
    args = parser.parse_args()
    config = UniverseConfig(n_galaxies=args.n_galaxies, views=args.views, seed=1, storage=args.storage)
    cores = os.cpu_count() or 1
    maps = args.n_galaxies * args.views
    with tempfile.TemporaryDirectory() as tmp:
        t_serial = timed_build(config, Path(tmp) / "serial", 1)
        t_parallel = timed_build(config, Path(tmp) / "parallel", cores)
        identical = tree_digest(Path(tmp) / "serial") == tree_digest(Path(tmp) / "parallel")
    print(f"{args.n_galaxies} galaxies x {args.views} views = {maps} maps, storage {args.storage}")
    print(f"1 process (baseline): {maps / t_serial:6.1f} maps/s ({t_serial:.1f} s)")
    print(f"{cores} processes:          {maps / t_parallel:6.1f} maps/s ({t_parallel:.1f} s)")
    print(f"speed-up: {t_serial / t_parallel:.2f}x on {cores} cores; identical bytes: {identical}")


if __name__ == "__main__":
    main()
