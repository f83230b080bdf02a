"""10^7 maps end to end: make the dataset, embed a slice and project the whole, explore it.

    python benchmarks/bench_scale.py [--n-maps 10000000] [--embed-maps 100000] [--keep DIR]

1. **Dataset.** A 10^7-row dataset in the format `galexplore sample` writes: the catalogue
   of the shipped sample universe (48 columns) repeated with new ids, in Parquet parts of
   2^20 rows; compact (zstd) map chunks encoded from the sample's maps, 16 distinct chunk
   files hard-linked over and over (synthetic at this size; the decoder does the same work).
   Timed, with its size on disk.
2. **Embedding.** The shipped ``cae_mom1`` on a slice of ``--embed-maps`` maps with
   `run_model` (read, decode, recipe, model), and the projected time of all 10^7 on one
   process and per worker; baseline in the same run: `run_model` as it was before (encode
   twice, NCHW, no read-ahead; `bench_embed.run_model_before`) on 5,000 of those maps.
3. **The explorer at 10^7**, with the explorer code as it is (``galexplore.ui``), in a fresh
   process: resident memory (RSS) after loading the bundle the server holds (`load_bundle`:
   catalogue joined with a 10^7-row embedding table, cached where `galexplore embed` caches
   it), after the first lasso (its point index) and the latent neighbours (the click's
   detail); render (800 x 800 rasterize after a zoom), lasso (50 vertices) and click times.
   Baseline: the bytes of the columns the map needs (x, y, colour: float32), i.e. the
   table the target of <= 1.5 GB allows for.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_embed import run_model_before  # noqa: E402

from galexplore.analysis.embed import LoadedModel, cache_candidates  # noqa: E402
from galexplore.analysis.inference import run_model  # noqa: E402
from galexplore.data.dataset import CATALOG_DIR, FORMAT_NAME, FORMAT_VERSION, MANIFEST, MAPS_DIR, open_dataset  # noqa: E402
from galexplore.data.mapstore import COMPACT_CHUNK_MAPS, encode_chunk  # noqa: E402
from galexplore.mock.universe import COMPACT_QUANTISATION  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data" / "universe"
MODEL = REPO / "assets" / "models" / "cae_mom1"
PART_ROWS = 1 << 20
DISTINCT_CHUNKS = 16


def make_dataset(path: Path, n_maps: int) -> None:
    """The 10^7-row dataset of step 1 (see the module docstring)."""
    sample = open_dataset(SAMPLE)
    channels = sample.channels
    quantisation = [COMPACT_QUANTISATION[c] for c in channels]
    per_chunk = COMPACT_CHUNK_MAPS
    source = sample.maps[:DISTINCT_CHUNKS * per_chunk]
    (path / MAPS_DIR).mkdir(parents=True)
    (path / CATALOG_DIR).mkdir()
    distinct = [encode_chunk(source[k * per_chunk:(k + 1) * per_chunk], "compact", quantisation, channels,
                             codec="zstd") for k in range(DISTINCT_CHUNKS)]
    chunks = []
    for k, start in enumerate(range(0, n_maps, per_chunk)):
        n = min(per_chunk, n_maps - start)
        name = f"{MAPS_DIR}/chunk-{start:010d}.zst"
        if n < per_chunk:
            (path / name).write_bytes(encode_chunk(source[:n], "compact", quantisation, channels, codec="zstd"))
        elif k < DISTINCT_CHUNKS:
            (path / name).write_bytes(distinct[k])
        else:
            os.link(path / chunks[k % DISTINCT_CHUNKS]["file"], path / name)
        chunks.append({"file": name, "start": start, "n_maps": n})
    template = pa.concat_tables([pq.read_table(SAMPLE / p["file"]) for p in sample.manifest["catalog_parts"]])
    parts = []
    for start in range(0, n_maps, PART_ROWS):
        n = min(PART_ROWS, n_maps - start)
        rows = np.arange(start, start + n) % len(sample)
        table = template.take(pa.array(rows))
        table = table.set_column(0, "id", pa.array(np.arange(start, start + n, dtype=np.int64)))
        table = table.set_column(1, "galaxy_id", pa.array(np.arange(start, start + n, dtype=np.int64) // 2))
        name = f"{CATALOG_DIR}/part-{start:010d}.parquet"
        pq.write_table(table, path / name)
        parts.append({"file": name, "start": start, "n_rows": n})
    storage = {"kind": "compact", "chunk_maps": per_chunk, "quantisation": quantisation, "codec": "zstd"}
    manifest = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "n_maps": n_maps,
                "map_shape": list(sample.map_shape),
                "channels": [{"name": c, "unit": sample.units[c]} for c in channels], "storage": storage,
                "chunks": chunks, "catalog_parts": parts,
                "provenance": {"generator": "benchmarks/bench_scale.py", "from": str(SAMPLE)}}
    (path / MANIFEST).write_text(json.dumps(manifest))


def write_embedding(dataset_path: Path, n_maps: int) -> Path:
    """A 10^7-row embedding table where `galexplore embed` caches it: the sample's cached
    ``cae_mom1`` embedding repeated with new ids (so that the explorer finds it and runs no inference)."""
    model = LoadedModel(MODEL, device="cpu")
    dataset = open_dataset(dataset_path)
    sample = open_dataset(SAMPLE)
    cached = pd.read_parquet(cache_candidates(model, sample)[0])
    target = cache_candidates(model, dataset)[0]
    target.parent.mkdir(parents=True, exist_ok=True)
    template = pa.Table.from_pandas(cached, preserve_index=False)
    with pq.ParquetWriter(target, template.schema) as writer:
        for start in range(0, n_maps, PART_ROWS):
            n = min(PART_ROWS, n_maps - start)
            table = template.take(pa.array(np.arange(start, start + n) % len(cached)))
            writer.write_table(table.set_column(0, "id", pa.array(np.arange(start, start + n, dtype=np.int64))))
    return target


def disk_mb(path: Path) -> float:
    """Bytes on disk (hard links counted once) in MB."""
    seen, total = set(), 0
    for p in path.rglob("*"):
        st = p.stat()
        if p.is_file() and st.st_ino not in seen:
            seen.add(st.st_ino)
            total += st.st_blocks * 512
    return total / 1e6


_EXPLORER_PROBE = r"""
import json, os, sys, tempfile, time
import numpy as np
sys.path.insert(0, {bench_dir!r})

def rss_mb():
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) for l in fh if l.startswith("VmRSS")) / 1024

def peak_mb():
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) for l in fh if l.startswith("VmHWM")) / 1024

out = {{}}
import holoviews as hv
from galexplore.ui.bundle import load_bundle
from galexplore.ui.latent_view import LatentView
from galexplore.ui.state import ExplorerState
from bench_selection import wobbly_lasso
hv.extension("bokeh")
out["rss_imports_mb"] = rss_mb()
t = time.perf_counter()
bundle = load_bundle({dataset!r}, {model!r})
out["load_s"] = time.perf_counter() - t
out["rss_loaded_mb"], out["peak_loaded_mb"] = rss_mb(), peak_mb()
out["table_mb"] = float(bundle.table.memory_usage(index=False, deep=True).sum() / 1e6)
out["columns"] = len(bundle.columns)
with tempfile.TemporaryDirectory() as scratch:
    state = ExplorerState(bundle, selections_dir=scratch)
    x, y = bundle.xy(state.projection)
    view = LatentView(state, width=800, height=800)
    t = time.perf_counter()
    plot = hv.renderer("bokeh").get_plot(view.overlay)
    out["first_render_s"] = time.perf_counter() - t
    streams = [s for s in plot.streams if isinstance(s, hv.streams.RangeXY)]
    x_lo, x_hi = np.nanpercentile(x, [1, 99])
    y_lo, y_hi = np.nanpercentile(y, [1, 99])
    times = []
    for k in range(1, 4):
        shrink = 0.02 * k
        t = time.perf_counter()
        for s in streams:
            s.update(x_range=(x_lo + shrink * (x_hi - x_lo), x_hi - shrink * (x_hi - x_lo)),
                     y_range=(y_lo + shrink * (y_hi - y_lo), y_hi - shrink * (y_hi - y_lo)))
        hv.streams.Stream.trigger(streams)
        times.append(time.perf_counter() - t)
    out["rerender_s"] = min(times)
    poly = wobbly_lasso(x, y, 50, 0.2, np.random.default_rng(1))
    t = time.perf_counter()
    state.select_polygon(poly)
    out["lasso_first_s"] = time.perf_counter() - t
    t = time.perf_counter()
    selected = state.select_polygon(poly)
    out["lasso_s"] = time.perf_counter() - t
    out["selected"] = int(len(selected))
    out["rss_lasso_mb"] = rss_mb()
    t = time.perf_counter()
    row = state.click(float(np.nanmedian(x)), float(np.nanmedian(y)), x_range=(x_lo, x_hi), y_range=(y_lo, y_hi))
    out["click_s"] = time.perf_counter() - t
    t = time.perf_counter()
    bundle.neighbours_of_latent(bundle.table[[c for c in bundle.columns if c.startswith("latent_")]]
                                .iloc[[int(row)]].to_numpy(), 8)
    out["neighbours_first_s"] = time.perf_counter() - t
    out["rss_neighbours_mb"] = rss_mb()
out["peak_mb"] = peak_mb()
print(json.dumps(out))
"""


def explore(dataset: Path) -> dict:
    code = _EXPLORER_PROBE.format(bench_dir=str(Path(__file__).resolve().parent), dataset=str(dataset),
                                  model=str(MODEL))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-maps", type=int, default=10_000_000)
    parser.add_argument("--embed-maps", type=int, default=100_000)
    parser.add_argument("--keep", type=Path, default=None, help="build (or reuse) the dataset here and keep it")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench_scale_"))
    path = root / f"scale-{args.n_maps}"
    try:
        if not (path / MANIFEST).is_file():
            t = time.perf_counter()
            make_dataset(path, args.n_maps)
            embedding = write_embedding(path, args.n_maps)
            print(f"1. made a {args.n_maps:,}-map dataset in {time.perf_counter() - t:.0f} s: "
                  f"{disk_mb(path):,.0f} MB on disk (maps hard-linked), embedding cache "
                  f"{embedding.stat().st_size / 1e6:,.0f} MB")
        dataset = open_dataset(path)
        model = LoadedModel(MODEL, device="cpu")
        n = min(args.embed_maps, args.n_maps)
        t = time.perf_counter()
        run_model(model.model, model.card, dataset, device="cpu", rows=slice(0, n))
        rate = n / (time.perf_counter() - t)
        base_n = min(5000, n)
        first = open_dataset(path)
        sliced = _Rows(first, base_n)
        t = time.perf_counter()
        run_model_before(model.model, model.card, sliced)
        base_rate = base_n / (time.perf_counter() - t)
        print(f"2. embedded {n:,} maps at {rate:,.0f} maps/s (run_model, {os.cpu_count()} cores): all "
              f"{args.n_maps:,} would take {args.n_maps / rate / 3600:.1f} h here; before: {base_rate:,.0f} maps/s "
              f"-> {args.n_maps / base_rate / 3600:.1f} h ({rate / base_rate:.1f}x)")
        result = explore(path)
        if "error" in result:
            print(f"3. the explorer could not hold {args.n_maps:,} rows: {result['error']}")
            return
        minimal = args.n_maps * 3 * 4 / 1e6
        print(f"3. the explorer (galexplore.ui as it is) at {args.n_maps:,} rows, {result['columns']} columns:")
        print(f"   load_bundle {result['load_s']:.1f} s; RSS after imports {result['rss_imports_mb']:,.0f} MB, "
              f"after loading {result['rss_loaded_mb']:,.0f} MB (peak {result['peak_loaded_mb']:,.0f} MB), "
              f"after the first lasso {result['rss_lasso_mb']:,.0f} MB, after the latent neighbours "
              f"{result['rss_neighbours_mb']:,.0f} MB; peak {result['peak_mb']:,.0f} MB (target <= 1,500 MB)")
        grown = result['rss_neighbours_mb'] - result['rss_imports_mb']
        print(f"   the table itself: {result['table_mb']:,.0f} MB; RSS growth over imports {grown:,.0f} MB; baseline, "
              f"the x, y and colour columns in float32: {minimal:,.0f} MB (growth / baseline {grown / minimal:.1f}x)")
        print(f"   first render {result['first_render_s']:.2f} s, re-render after a zoom {result['rerender_s']:.2f} s, "
              f"lasso {result['lasso_s']:.2f} s (first, with its index: {result['lasso_first_s']:.2f} s; "
              f"{result['selected']:,} selected), click {result['click_s'] * 1e3:.1f} ms, first latent "
              f"neighbours {result['neighbours_first_s']:.1f} s")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


class _Rows:
    """The first ``n`` rows of a dataset, for the baseline loop (which reads ``len`` and slices)."""

    def __init__(self, dataset, n: int) -> None:
        self._dataset, self._n = dataset, n
        self.maps = dataset.maps

    def __len__(self) -> int:
        return self._n

    def channel_index(self, name: str) -> int:
        return self._dataset.channel_index(name)


if __name__ == "__main__":
    main()
