"""Dataset speed and memory: a 1,000,000-map float16 store, and the compact codec's size.

Run: ``python benchmarks/bench_dataset.py [--n-maps 1000000]``. Every figure is printed with
its ratio against a baseline measured in the same run:

* open_dataset (time, memory added) vs pandas.read_parquet of the whole catalogue;
* 1,000 random maps vs 1,000 contiguous maps, and vs reading every chunk file that holds them
  (timed on a sample of 20 of those files and scaled);
* compact storage size vs the float32 store of the same maps (smooth and noisy mock-like fields).

The 1M-map store is synthetic: chunk files are sparse (``os.truncate``), so it needs no disk
space and reads back as zeros; the catalogue is real Parquet of realistic width.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from galexplore.data import create_dataset, open_dataset
from galexplore.data.dataset import CATALOG_DIR, FORMAT_NAME, FORMAT_VERSION, MANIFEST, MAPS_DIR
from galexplore.data.mapstore import CHUNK_SUFFIX, default_chunk_maps

CHANNELS = ["mom0", "mom1", "mom2", "env"]
UNITS = {"mom0": "Jy/beam km/s", "mom1": "km/s", "mom2": "km/s", "env": "counts"}


def build_synthetic(path: Path, n_maps: int) -> None:
    """Write a float16 dataset of n_maps sparse maps and a 30-column catalogue."""
    shape = (4, 64, 64)
    per_chunk = default_chunk_maps("float16", shape)
    (path / MAPS_DIR).mkdir(parents=True)
    (path / CATALOG_DIR).mkdir()
    chunks = []
    for start in range(0, n_maps, per_chunk):
        n = min(per_chunk, n_maps - start)
        name = f"{MAPS_DIR}/chunk-{start:010d}{CHUNK_SUFFIX['float16']}"
        with open(path / name, "wb") as fh:
            fh.truncate(n * int(np.prod(shape)) * 2)
        chunks.append({"file": name, "start": start, "n_maps": n})
    rng = np.random.default_rng(0)
    ids = np.arange(n_maps, dtype=np.int64)
    columns = {"id": ids, "galaxy_id": ids // 8, "view": ids % 8,
               "disturbance": pd.Categorical.from_codes(rng.integers(0, 4, n_maps),
                                                        ["none", "merger", "bar", "stripping"])}
    for k in range(26):
        columns[f"property_{k:02d}"] = rng.normal(size=n_maps)
    table = pa.Table.from_pandas(pd.DataFrame(columns), preserve_index=False)
    fields = [f.with_metadata({b"unit": b"km/s"}) if f.name.startswith("property") else f
              for f in table.schema]
    table = table.cast(pa.schema(fields))
    part = f"{CATALOG_DIR}/part-{0:010d}.parquet"
    pq.write_table(table, path / part)
    manifest = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "n_maps": n_maps,
                "map_shape": list(shape), "channels": [{"name": c, "unit": UNITS[c]} for c in CHANNELS],
                "storage": {"kind": "float16", "chunk_maps": per_chunk, "quantisation": None},
                "chunks": chunks, "catalog_parts": [{"file": part, "start": 0, "n_rows": n_maps}],
                "provenance": {"generator": "benchmarks/bench_dataset.py"}}
    (path / MANIFEST).write_text(json.dumps(manifest))


_PROBE = """
import json, time, tracemalloc
{imports}
def rss_mb():
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) for l in fh if l.startswith("VmRSS")) / 1024
before = rss_mb()
tracemalloc.start()
t = time.perf_counter()
{action}
elapsed = time.perf_counter() - t
peak = tracemalloc.get_traced_memory()[1] / 2**20
print(json.dumps({{"seconds": elapsed, "rss_added_mb": rss_mb() - before, "traced_peak_mb": peak}}))
"""


def probe(imports: str, action: str) -> dict:
    """Time and memory of ``action`` in a fresh interpreter (imports done beforehand)."""
    out = subprocess.run([sys.executable, "-c", _PROBE.format(imports=imports, action=action)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def smooth_fields(n: int, rng: np.random.Generator, noise: bool) -> np.ndarray:
    """Mock-like (n, 4, 64, 64) maps: exponential discs, arctan rotation curves, Poisson env."""
    y, x = np.mgrid[0:64, 0:64] - 31.5
    out = np.full((n, 4, 64, 64), np.nan, dtype=np.float32)
    for i in range(n):
        pa_, inc = rng.uniform(0, 2 * np.pi), rng.uniform(0.1, 1.4)
        xr = x * np.cos(pa_) + y * np.sin(pa_)
        yr = (-x * np.sin(pa_) + y * np.cos(pa_)) / np.cos(inc)
        r = np.hypot(xr, yr)
        rt, vmax = rng.uniform(1, 6), rng.uniform(80, 320)
        disc = r < rng.uniform(8, 30)
        mom0 = rng.uniform(1, 30) * np.exp(-r / rng.uniform(3, 10))
        mom1 = vmax * np.sin(inc) * 2 / np.pi * np.arctan(r / rt) * xr / np.maximum(r, 1e-6)
        mom2 = 8 + 40 * np.exp(-r / rt)
        if noise:
            mom0 = mom0 * (1 + rng.normal(0, 0.05, mom0.shape))
            mom1 = mom1 + rng.normal(0, 5, mom1.shape)
            mom2 = mom2 + np.abs(rng.normal(0, 3, mom2.shape))
        out[i, 0][disc], out[i, 1][disc], out[i, 2][disc] = mom0[disc], mom1[disc], mom2[disc]
        out[i, 3] = rng.poisson(rng.uniform(0.05, 2.0) * np.exp(-np.hypot(x, y) / 30.0))
    return out


def bench_store(tmp: Path, n_maps: int) -> None:
    path = tmp / "million"
    t = time.perf_counter()
    build_synthetic(path, n_maps)
    print(f"built synthetic float16 store of {n_maps:,} maps in {time.perf_counter() - t:.1f} s")

    imp = "from galexplore.data import open_dataset; import pandas as pd"
    opened = probe(imp, f"ds = open_dataset({str(path)!r}); n = len(ds)")
    base = probe(imp, f"cat = pd.read_parquet({str(path / CATALOG_DIR)!r})")
    print(f"open_dataset + len:        {opened['seconds'] * 1e3:8.1f} ms, +{opened['rss_added_mb']:6.1f} MB RSS, "
          f"{opened['traced_peak_mb']:6.2f} MB traced")
    print(f"baseline read_parquet:     {base['seconds'] * 1e3:8.1f} ms, +{base['rss_added_mb']:6.1f} MB RSS, "
          f"{base['traced_peak_mb']:6.2f} MB traced")
    print(f"  ratio open / baseline:   time {opened['seconds'] / base['seconds']:.4f}, "
          f"RSS {opened['rss_added_mb'] / max(base['rss_added_mb'], 1e-9):.4f}")
    first = probe(imp + f"\nds = open_dataset({str(path)!r})", "cat = ds.catalog")
    print(f"first .catalog access:     {first['seconds'] * 1e3:8.1f} ms "
          f"(ratio to read_parquet {first['seconds'] / base['seconds']:.2f})")

    ds = open_dataset(path)
    rng = np.random.default_rng(1)
    idx = rng.choice(n_maps, 1000, replace=False)
    t = time.perf_counter()
    ds.maps[idx]
    t_random = time.perf_counter() - t
    touched = ds.maps.chunks_read
    ds2 = open_dataset(path)
    t = time.perf_counter()
    ds2.maps[n_maps // 2: n_maps // 2 + 1000]
    t_contig = time.perf_counter() - t
    chunk_files = sorted({ds.manifest["chunks"][int(c)]["file"] for c in
                          np.searchsorted(ds.maps._reader.starts, idx, side="right") - 1})
    sample = chunk_files[:: max(1, len(chunk_files) // 20)]  # reading all would take a minute
    t = time.perf_counter()
    for f in sample:
        np.fromfile(path / f, dtype="<f2")
    t_whole = (time.perf_counter() - t) * len(chunk_files) / len(sample)
    total = len(ds.manifest["chunks"])
    print(f"1,000 random maps:         {t_random * 1e3:8.1f} ms, {touched} of {total} chunk files opened")
    print(f"baseline 1,000 contiguous: {t_contig * 1e3:8.1f} ms  ratio random / contiguous "
          f"{t_random / t_contig:.2f}")
    print(f"baseline read whole chunks:{t_whole * 1e3:8.1f} ms (from {len(sample)} of {len(chunk_files)} files)"
          f"  ratio random / whole-chunk reads "
          f"{t_random / t_whole:.4f}")


def bench_compact(tmp: Path, n_maps: int) -> None:
    for noise in (False, True):
        maps = smooth_fields(n_maps, np.random.default_rng(2), noise)
        sizes, times = {}, {}
        for storage in ("float32", "float16", "compact"):
            out = tmp / f"{storage}-{noise}"
            t = time.perf_counter()
            with create_dataset(out, CHANNELS, UNITS, storage=storage) as writer:
                writer.append(maps, pd.DataFrame({"id": np.arange(n_maps)}))
            times[storage] = time.perf_counter() - t
            sizes[storage] = sum(f.stat().st_size for f in (out / MAPS_DIR).iterdir())
            shutil.rmtree(out)
        label = "noisy (5 km/s, 5 %)" if noise else "smooth (noiseless)"
        per_map = sizes["compact"] / n_maps
        print(f"compact, {label}: {per_map / 1e3:.2f} kB/map (4 channels), ratio vs float32 "
              f"{sizes['float32'] / sizes['compact']:.1f}x, vs float16 {sizes['float16'] / sizes['compact']:.1f}x; "
              f"4,500 maps -> {4500 * per_map / 1e6:.1f} MB; write {times['compact'] / n_maps * 1e3:.1f} ms/map "
              f"(float32 {times['float32'] / n_maps * 1e3:.2f} ms/map)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-maps", type=int, default=1_000_000)
    parser.add_argument("--compact-maps", type=int, default=512)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_dataset_"))
    try:
        bench_store(tmp, args.n_maps)
        bench_compact(tmp, args.compact_maps)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
