"""10^7 maps end to end: make the dataset, embed a slice and project the whole, explore it.

    python benchmarks/bench_scale.py [--n-maps 10000000] [--embed-maps 100000] [--keep DIR] [--skip-embedding]

1. **Dataset.** A 10^7-row dataset in the format `galexplore sample` writes: the catalogue
   of the shipped sample universe (48 columns) repeated with new ids, in Parquet parts of
   2^20 rows; compact (zstd) map chunks encoded from the sample's maps, 16 distinct chunk
   files hard-linked over and over (synthetic at this size; the decoder does the same work);
   the sample's cached ``cae_mom1`` embedding repeated to 10^7 rows, where `galexplore embed`
   caches it. Timed, with its size on disk.
2. **Embedding** (``--skip-embedding`` leaves it out). The shipped ``cae_mom1`` on a slice of
   ``--embed-maps`` maps with `run_model` (read, decode, recipe, model), and the projected
   time of all 10^7 on one process; baseline in the same run: `run_model` as it was before
   (encode twice, NCHW, no read-ahead; `bench_embed.run_model_before`) on 5,000 of those maps.
3. **The explorer at 10^7**, in a fresh process, as the server runs it: the page of one
   session (`galexplore.ui.layout.build_app`: the server's bundle of the dataset and its
   cached embedding, the map's first render), a re-render of every map layer after a zoom,
   a lasso of 50 vertices (twice: the first builds the projection's point index), a click
   to the nearest galaxy and its detail (maps, reconstruction, properties, latent
   neighbours). Resident memory (RSS) after each step and at its peak, and the columns
   held. Baseline: the bytes of the columns the map needs (x, y, colour in float32), i.e.
   the table the target of <= 1.5 GB allows for.
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
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_embed import run_model_before  # noqa: E402

from galexplore.analysis.embed import LoadedModel, cache_candidates  # noqa: E402
from galexplore.analysis.inference import run_model  # noqa: E402
from galexplore.data.dataset import CATALOG_DIR, FORMAT_NAME, FORMAT_VERSION, MANIFEST, MAPS_DIR, open_dataset  # noqa: E402
from galexplore.data.mapstore import COMPACT_CHUNK_MAPS, encode_chunk  # noqa: E402
from galexplore.mock.universe import COMPACT_QUANTISATION  # noqa: E402
from galexplore.models.checkpoint import read_card  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data" / "universe"
MODEL = REPO / "assets" / "models" / "cae_mom1"
#: The model the explorer shows first (`galexplore.explorer.sources.default_model`).
EXPLORER_MODEL = REPO / "assets" / "models" / "cae_free_mom1"
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
    embedding of `EXPLORER_MODEL` repeated with new ids (so that the explorer finds it and runs
    no inference), with the sample's projector in its metadata."""
    card = read_card(EXPLORER_MODEL)
    dataset = open_dataset(dataset_path)
    source = cache_candidates(EXPLORER_MODEL, card, open_dataset(SAMPLE))[0]
    if not source.is_file():
        raise SystemExit(f"the sample has no cached embedding of {EXPLORER_MODEL.name}; run "
                         f"`galexplore embed {EXPLORER_MODEL} {SAMPLE}` first")
    template = pq.read_table(source)
    target = cache_candidates(EXPLORER_MODEL, card, dataset)[0]
    target.parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(target, template.schema) as writer:
        for start in range(0, n_maps, PART_ROWS):
            n = min(PART_ROWS, n_maps - start)
            table = template.take(pa.array(np.arange(start, start + n) % len(template)))
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
import json, sys, tempfile, time
import numpy as np
sys.path.insert(0, {bench_dir!r})

def rss_mb():
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) for l in fh if l.startswith("VmRSS")) / 1024

def peak_mb():
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) for l in fh if l.startswith("VmHWM")) / 1024

out = {{}}
from bench_selection import wobbly_lasso
from galexplore.explorer import detail as details
from galexplore.explorer.selections import nearest_visible
from galexplore.ui import layout
layout.configure_panel()
layout.warm_up()
out["rss_imports_mb"] = rss_mb()
with tempfile.TemporaryDirectory() as scratch:
    t = time.perf_counter()
    page = layout.build_app({dataset!r}, {model!r}, selections_dir=f"{{scratch}}/selections",
                            models_dir=f"{{scratch}}/models", real_overlay=False)
    out["load_s"] = time.perf_counter() - t
    session, latent = page.session, page.latent
    bundle = session.bundle
    out["rss_loaded_mb"], out["peak_loaded_mb"] = rss_mb(), peak_mb()
    out["columns"], out["n_maps"] = len(bundle.columns), bundle.n_maps
    out["colour"] = session.map.color_by
    x, y = bundle.xy(session.map.projection)
    x_lo, x_hi = np.nanpercentile(x, [1, 99])
    y_lo, y_hi = np.nanpercentile(y, [1, 99])
    times = []
    for k in range(1, 4):  # zoom in three times; each re-renders every layer
        shrink = 0.02 * k
        ranges = (x_lo + shrink * (x_hi - x_lo), x_hi - shrink * (x_hi - x_lo),
                  y_lo + shrink * (y_hi - y_lo), y_hi - shrink * (y_hi - y_lo))
        latent.figure.x_range.update(start=ranges[0], end=ranges[1])
        latent.figure.y_range.update(start=ranges[2], end=ranges[3])
        t = time.perf_counter()
        latent._render(latent._ranges())
        times.append(time.perf_counter() - t)
    out["rerender_s"] = min(times)
    out["rss_render_mb"] = rss_mb()
    poly = wobbly_lasso(x, y, 50, 0.2, np.random.default_rng(1))
    t = time.perf_counter()
    session.selection.lasso(poly)  # the first builds the projection's point index
    out["lasso_first_s"] = time.perf_counter() - t
    t = time.perf_counter()
    selected = session.selection.lasso(poly)
    out["lasso_s"] = time.perf_counter() - t
    out["selected"] = selected.size
    out["rss_lasso_mb"] = rss_mb()
    clicks = []
    for k in range(3):
        cx, cy = float(np.nanmedian(x)) + 0.01 * k * (x_hi - x_lo), float(np.nanmedian(y))
        t = time.perf_counter()
        row = nearest_visible(bundle, session.map.projection, cx, cy, (x_lo, x_hi), (y_lo, y_hi), session.map.filters)
        clicks.append(time.perf_counter() - t)
    out["click_s"] = min(clicks)
    t = time.perf_counter()
    detail = details.galaxy_detail(bundle, row)  # maps, reconstruction, properties, latent neighbours
    details.detail_png(detail, bundle.model.card.recipe)
    details.neighbours_png(bundle, detail.neighbours)
    out["detail_first_s"] = time.perf_counter() - t
    t = time.perf_counter()
    details.galaxy_detail(bundle, row)
    out["detail_s"] = time.perf_counter() - t
    out["rss_click_mb"] = rss_mb()
    out["held"] = {{name: bundle.column(name).nbytes / 1e6 for name in bundle.table.held()}}
out["peak_mb"] = peak_mb()
print(json.dumps(out))
"""


def explore(dataset: Path) -> dict:
    code = _EXPLORER_PROBE.format(bench_dir=str(Path(__file__).resolve().parent), dataset=str(dataset),
                                  model=str(EXPLORER_MODEL))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-maps", type=int, default=10_000_000)
    parser.add_argument("--embed-maps", type=int, default=100_000)
    parser.add_argument("--keep", type=Path, default=None, help="build (or reuse) the dataset here and keep it")
    parser.add_argument("--skip-embedding", action="store_true", help="skip step 2 (embedding a slice)")
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
        if not args.skip_embedding:
            embed_slice(path, args.n_maps, args.embed_maps)
        result = explore(path)
        if "error" in result:
            print(f"3. the explorer could not hold {args.n_maps:,} rows: {result['error']}")
            return
        report_explorer(result, args.n_maps)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


def embed_slice(path: Path, n_maps: int, embed_maps: int) -> None:
    """Step 2: `run_model` on the first ``embed_maps`` maps against the code it replaced."""
    dataset = open_dataset(path)
    model = LoadedModel(MODEL, device="cpu")
    n = min(embed_maps, n_maps)
    t = time.perf_counter()
    run_model(model.model, model.card, dataset, device="cpu", rows=slice(0, n))
    rate = n / (time.perf_counter() - t)
    base_n = min(5000, n)
    t = time.perf_counter()
    run_model_before(model.model, model.card, _Rows(open_dataset(path), base_n))
    base_rate = base_n / (time.perf_counter() - t)
    print(f"2. embedded {n:,} maps at {rate:,.0f} maps/s (run_model, {os.cpu_count()} cores): all "
          f"{n_maps:,} would take {n_maps / rate / 3600:.1f} h here; before: {base_rate:,.0f} maps/s "
          f"-> {n_maps / base_rate / 3600:.1f} h ({rate / base_rate:.1f}x)")


def report_explorer(result: dict, n_maps: int) -> None:
    """Step 3's lines: resident memory at each step against the x, y and colour columns in float32."""
    minimal = n_maps * 3 * 4 / 1e6
    print(f"3. the explorer at {n_maps:,} rows ({result['columns']} columns, coloured by {result['colour']}):")
    print(f"   RSS after imports {result['rss_imports_mb']:,.0f} MB; after loading the bundle and the first "
          f"render ({result['load_s']:.1f} s) {result['rss_loaded_mb']:,.0f} MB; after a zoom "
          f"{result['rss_render_mb']:,.0f} MB; after the lasso {result['rss_lasso_mb']:,.0f} MB; after the click "
          f"and its detail {result['rss_click_mb']:,.0f} MB; peak {result['peak_mb']:,.0f} MB (target <= 1,500 MB)")
    grown = result["rss_click_mb"] - result["rss_imports_mb"]
    held = ", ".join(f"{name} {mb:,.0f}" for name, mb in result["held"].items())
    print(f"   columns held (MB): {held}")
    print(f"   RSS growth over imports {grown:,.0f} MB; baseline, the x, y and colour columns in float32: "
          f"{minimal:,.0f} MB (growth / baseline {grown / minimal:.1f}x)")
    print(f"   re-render after a zoom {result['rerender_s']:.2f} s, lasso {result['lasso_s']:.2f} s (first, with "
          f"its index: {result['lasso_first_s']:.2f} s; {result['selected']:,} selected), click to nearest "
          f"{result['click_s'] * 1e3:.1f} ms, detail with latent neighbours {result['detail_s']:.2f} s "
          f"(first: {result['detail_first_s']:.2f} s)")


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
