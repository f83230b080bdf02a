"""Dataset speed and memory at 10^6 maps in every storage mode, and bytes per map of each codec.

Run: ``python benchmarks/bench_dataset.py [--n-maps 1000000]``. Every figure is printed with
its baseline measured in the same run:

* open_dataset (time, memory added) vs pandas.read_parquet of the whole catalogue;
* 1,000 random maps of a 10^6-map store in each storage mode (float32, float16, compact with
  the zstd codec, and compact with the lzma codec of older datasets), as one batch and as
  1,000 single reads (clicks), vs reading (raw) or decoding (compact) the whole chunk files
  that hold them;
* bytes per map of each codec on the maps of the shipped sample universe (real mock maps)
  and on noisy synthetic fields, vs float32.

The 10^6-map stores are cheap to make: raw chunk files are sparse (``truncate``: no disk
space, reads return zeros from the page cache); compact stores hold 16 distinct chunk files
encoded from the sample's maps, hard-linked over and over (so their pages are cached after
a first read, as raw pages are). Both measure decoding, not the disk.
"""

from __future__ import annotations

import argparse
import json
import os
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

from galexplore.data import open_dataset
from galexplore.data.dataset import CATALOG_DIR, FORMAT_NAME, FORMAT_VERSION, MANIFEST, MAPS_DIR
from galexplore.data.mapstore import CODEC_SUFFIX, CHUNK_SUFFIX, decode_chunk, default_chunk_maps, encode_chunk
from galexplore.mock.universe import COMPACT_QUANTISATION

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data" / "universe"
CHANNELS = ["mom0", "mom1", "mom2", "env"]
UNITS = {"mom0": "Jy/beam km/s", "mom1": "km/s", "mom2": "km/s", "env": "counts"}
QUANTISATION = [COMPACT_QUANTISATION[c] for c in CHANNELS]
#: Distinct compact chunk files of a 10^6-map store (the rest are hard links to them).
DISTINCT_CHUNKS = 16
MODES = ("float32", "float16", "compact zstd", "compact lzma")


def write_catalog(path: Path, n_maps: int) -> str:
    """A 30-column catalogue of n_maps rows (one Parquet part); returns the part's name."""
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
    part = f"{CATALOG_DIR}/part-{0:010d}.parquet"
    (path / CATALOG_DIR).mkdir(parents=True)
    pq.write_table(table.cast(pa.schema(fields)), path / part)
    return part


def build_store(path: Path, n_maps: int, mode: str, source: np.ndarray, part: str) -> None:
    """A dataset of n_maps maps in ``mode``, sharing the catalogue part of ``part``'s directory."""
    shape = (4, 64, 64)
    kind, _, codec = mode.partition(" ")
    per_chunk = default_chunk_maps(kind, shape)
    (path / MAPS_DIR).mkdir(parents=True)
    (path / CATALOG_DIR).mkdir()
    os.link(path.parent / "catalog-home" / part, path / part)
    storage = {"kind": kind, "chunk_maps": per_chunk, "quantisation": QUANTISATION if codec else None}
    if codec:
        storage["codec"] = codec
        distinct = [encode_chunk(source[(k * per_chunk) % len(source):][:per_chunk], "compact", QUANTISATION,
                                 CHANNELS, codec=codec) for k in range(DISTINCT_CHUNKS)]
    chunks = []
    for k, start in enumerate(range(0, n_maps, per_chunk)):
        n = min(per_chunk, n_maps - start)
        suffix = CODEC_SUFFIX[codec] if codec else CHUNK_SUFFIX[kind]
        name = f"{MAPS_DIR}/chunk-{start:010d}{suffix}"
        if not codec:
            with open(path / name, "wb") as fh:
                fh.truncate(n * int(np.prod(shape)) * (4 if kind == "float32" else 2))
        elif n == per_chunk and k >= DISTINCT_CHUNKS:
            os.link(path / chunks[k % DISTINCT_CHUNKS]["file"], path / name)
        else:
            (path / name).write_bytes(distinct[k % DISTINCT_CHUNKS] if n == per_chunk else encode_chunk(
                source[:n], "compact", QUANTISATION, CHANNELS, codec=codec))
        chunks.append({"file": name, "start": start, "n_maps": n})
    manifest = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "n_maps": n_maps,
                "map_shape": list(shape), "channels": [{"name": c, "unit": UNITS[c]} for c in CHANNELS],
                "storage": storage, "chunks": chunks,
                "catalog_parts": [{"file": part, "start": 0, "n_rows": n_maps}],
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


def whole_chunk_reads(ds, idx: np.ndarray, limit: int) -> tuple[float, int]:
    """Seconds to read (raw) or decode (compact) every chunk file holding ``idx``, timed on up to
    ``limit`` of them and scaled; and how many files that is."""
    reader = ds.maps._reader
    chunks = sorted({int(c) for c in np.searchsorted(reader.starts, idx, side="right") - 1})
    sample = chunks[:: max(1, len(chunks) // limit)]
    start = time.perf_counter()
    for c in sample:
        data = (ds.path / reader.files[c]).read_bytes()
        if reader.storage == "compact" and reader.codec == "lzma":
            decode_chunk(data, int(reader.counts[c]), reader.map_shape, reader.quantisation, ds.path)
        elif reader.storage == "compact":
            reader._zstd_maps(c, np.arange(reader.counts[c]))
    return (time.perf_counter() - start) * len(chunks) / len(sample), len(chunks)


def bench_store(tmp: Path, n_maps: int, source: np.ndarray) -> None:
    home = tmp / "catalog-home"
    part = write_catalog(home, n_maps)
    stores = {}
    for mode in MODES:
        t = time.perf_counter()
        stores[mode] = tmp / mode.replace(" ", "-")
        build_store(stores[mode], n_maps, mode, source, part)
        print(f"built a {mode} store of {n_maps:,} maps in {time.perf_counter() - t:.1f} s")

    path = stores["float16"]
    imp = "from galexplore.data import open_dataset; import pandas as pd"
    opened = probe(imp, f"ds = open_dataset({str(path)!r}); n = len(ds)")
    base = probe(imp, f"cat = pd.read_parquet({str(path / CATALOG_DIR)!r})")
    print(f"open_dataset + len:        {opened['seconds'] * 1e3:8.1f} ms, +{opened['rss_added_mb']:6.1f} MB RSS, "
          f"{opened['traced_peak_mb']:6.2f} MB traced")
    print(f"baseline read_parquet:     {base['seconds'] * 1e3:8.1f} ms, +{base['rss_added_mb']:6.1f} MB RSS, "
          f"{base['traced_peak_mb']:6.2f} MB traced")
    print(f"  ratio open / baseline:   time {opened['seconds'] / base['seconds']:.4f}, "
          f"RSS {opened['rss_added_mb'] / max(base['rss_added_mb'], 1e-9):.4f}")

    rng = np.random.default_rng(1)
    idx = rng.choice(n_maps, 1000, replace=False)
    print(f"1,000 random maps of {n_maps:,} (target <= 1 s):")
    print(f"  {'storage':14s} {'one batch':>10s} {'1,000 reads':>12s} {'whole chunks':>13s} {'ratio':>7s}")
    for mode in MODES:
        ds = open_dataset(stores[mode])
        lzma = mode.endswith("lzma")
        sub = idx[:50] if lzma else idx  # lzma decodes a whole chunk per read: 50 reads, scaled
        t = time.perf_counter()
        ds.maps[sub]
        t_batch = (time.perf_counter() - t) * len(idx) / len(sub)
        ds = open_dataset(stores[mode])
        t = time.perf_counter()
        for i in sub:
            ds.maps[int(i)]
        t_single = (time.perf_counter() - t) * len(idx) / len(sub)
        t_whole, files = whole_chunk_reads(open_dataset(stores[mode]), idx, 20)
        note = " (from 50 maps, scaled)" if lzma else ""
        print(f"  {mode:14s} {t_batch:9.3f}s {t_single:11.3f}s {t_whole:12.2f}s {t_batch / t_whole:7.4f}"
              f"  {files} chunk files{note}")


def codec_sizes(tmp: Path, sample_maps: np.ndarray, noisy_maps: np.ndarray) -> None:
    print("bytes per 4-channel map (64 x 64), and what 4,400 sample maps take:")
    for label, maps in (("sample universe maps", sample_maps), ("noisy synthetic fields", noisy_maps)):
        sizes, times = {}, {}
        for mode in ("float32", "float16", "compact zstd", "compact lzma"):
            kind, _, codec = mode.partition(" ")
            t = time.perf_counter()
            size = sum(len(encode_chunk(maps[s:s + 128], kind, QUANTISATION, CHANNELS, codec=codec or "zstd"))
                       for s in range(0, len(maps), 128))
            times[mode], sizes[mode] = time.perf_counter() - t, size / len(maps)
        for mode, per_map in sizes.items():
            print(f"  {label:24s} {mode:13s} {per_map:8.0f} B/map  {sizes['float32'] / per_map:5.1f}x smaller "
                  f"than float32  4,400 maps: {4400 * per_map / 1e6:6.1f} MB  encode "
                  f"{times[mode] / len(maps) * 1e3:6.2f} ms/map")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-maps", type=int, default=1_000_000)
    parser.add_argument("--codec-maps", type=int, default=1024, help="sample maps used for the codec sizes")
    args = parser.parse_args()
    sample = open_dataset(SAMPLE)
    source = sample.maps[:max(args.codec_maps, DISTINCT_CHUNKS * 128)]
    tmp = Path(tempfile.mkdtemp(prefix="bench_dataset_"))
    try:
        bench_store(tmp, args.n_maps, source)
        codec_sizes(tmp, source[:args.codec_maps], smooth_fields(256, np.random.default_rng(2), noise=True))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
