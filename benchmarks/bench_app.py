"""The explorer's speed and memory, each figure with its ratio against a baseline run here.

Server side, for 10^5, 10^6 and 10^7 synthetic clustered points (the generator of
bench_selection.py), each size in a fresh process so that its peak memory is its own:
  * re-render of the latent map (800 x 800) after a zoom, through the app's own
    HoloViews/Datashader pipeline (`LatentView`: rasterize + dynspread of the colour layer,
    the selection layer and the hover layer), and the bytes of the two images sent; baseline: a
    plain Bokeh scatter, i.e. serialising every point (bench_render.py's `bokeh_payload`);
  * lasso through `ExplorerState.select_polygon` (first one builds the `PointIndex`);
    baseline: ``matplotlib.path.Path.contains_points``;
  * the nearest galaxy to a click; baseline: a brute-force numpy distance scan;
  * peak resident memory (RSS) of the process; baseline: the bytes of the table itself.
With the sample data (or --dataset/--model):
  * click to detail view (torch on `SERVER_TORCH_THREADS` threads, as the server runs it):
    the maps of the clicked galaxy (`galaxy_detail` + `detail_png`), then the deferred part (saliency, 8 neighbour thumbnails); baseline: the naive path
    (everything, saliency included, drawn as one Matplotlib figure, neighbours drawn one
    by one with Matplotlib);
  * in headless Chromium (Playwright) against a freshly started `galexplore serve`: start to
    first render (navigation until the latent map shows coloured pixels) and the lasso
    latency (mouse release until the selection count changes); baseline: the same two
    measurements on a plain Bokeh server page with a scatter of the same points and
    Bokeh's client-side lasso reporting its count to the server.

Run: ``python benchmarks/bench_app.py [--sizes ...] [--dataset D --model M] [--skip-browser]``
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_render import bokeh_payload  # noqa: E402
from bench_selection import best_of, clustered_points, wobbly_lasso  # noqa: E402

PLOT_SIZE = 800
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--headless=new", "--no-first-run"]
COUNT_PATTERN = re.compile(r"([\d,]+) selected of [\d,]+ galaxies")


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ---------------------------------------------------------------------------- one size
def measure_size(n: int, seed: int) -> dict:
    """All server-side figures for ``n`` synthetic points (run in a fresh process)."""
    import holoviews as hv
    import pandas as pd
    from matplotlib.path import Path as MplPath

    from galexplore.ui.bundle import Bundle
    from galexplore.ui.latent_view import LatentView
    from galexplore.ui.layout import warm_up
    from galexplore.ui.state import ExplorerState

    hv.extension("bokeh")
    warm_up()
    rss_start = peak_rss_mb()
    rng = np.random.default_rng(seed)
    x, y = clustered_points(n, rng)
    table = pd.DataFrame({"id": np.arange(n, dtype=np.int64), "latent_0": x, "latent_1": y,
                          "kappa": rng.uniform(0.0, 1.0, n)})
    table_mb = table.memory_usage(index=False).sum() / 1e6
    out: dict = {"n": n, "table_mb": table_mb}
    with tempfile.TemporaryDirectory() as scratch:
        state = ExplorerState(Bundle(dataset=None, model=None, table=table, column_units={"kappa": ""}),
                              selections_dir=scratch)
        view = LatentView(state, width=PLOT_SIZE, height=PLOT_SIZE)
        t = time.perf_counter()
        plot = hv.renderer("bokeh").get_plot(view.overlay)
        out["first_render_s"] = time.perf_counter() - t
        range_streams = [s for s in plot.streams if isinstance(s, hv.streams.RangeXY)]
        x_lo, x_hi = np.percentile(x, [1, 99])
        y_lo, y_hi = np.percentile(y, [1, 99])

        def zoom(k: int):
            shrink = 0.02 * k
            xr = (x_lo + shrink * (x_hi - x_lo), x_hi - shrink * (x_hi - x_lo))
            yr = (y_lo + shrink * (y_hi - y_lo), y_hi - shrink * (y_hi - y_lo))
            for stream in range_streams:
                stream.update(x_range=xr, y_range=yr)
            hv.streams.Stream.trigger(range_streams)

        times = []
        for k in range(1, 4):
            t = time.perf_counter()
            zoom(k)
            times.append(time.perf_counter() - t)
        out["rerender_s"] = min(times)
        images = [subplot.handles["source"].data["image"][0] for key, subplot in plot.subplots.items()
                  if key[0] == "Image"]  # the colour layer and the selection layer
        out["rerender_bytes"] = bokeh_payload({"image": images})
        out["image_shape"] = list(np.shape(images[0]))
        t = time.perf_counter()
        out["bokeh_bytes"] = bokeh_payload({"x": x, "y": y})
        out["bokeh_s"] = time.perf_counter() - t

        poly = wobbly_lasso(x, y, 50, 0.2, np.random.default_rng(seed + 1))
        t = time.perf_counter()
        selected = state.select_polygon(poly)
        out["lasso_first_s"] = time.perf_counter() - t
        index = state.bundle.point_index(state.projection)
        out["lasso_index_s"], _, _ = best_of(lambda: index.select_polygon(poly), 3)
        out["lasso_s"], _, selected = best_of(lambda: state.select_polygon(poly), 3)
        mpl_s, _, inside = best_of(lambda: MplPath(poly).contains_points(np.column_stack([x, y])), 1)
        out["mpl_lasso_s"] = mpl_s
        out["lasso_agrees"] = bool(np.array_equal(np.flatnonzero(inside), selected))
        out["selected"] = int(selected.size)

        click = (float(np.median(x)), float(np.median(y)))
        xr, yr = (x_lo, x_hi), (y_lo, y_hi)
        out["click_s"], _, row = best_of(lambda: state.click(*click, x_range=xr, y_range=yr), 3)

        def brute():
            d2 = ((x - click[0]) / (xr[1] - xr[0])) ** 2 + ((y - click[1]) / (yr[1] - yr[0])) ** 2
            return int(np.argmin(d2))

        out["brute_click_s"], _, brute_row = best_of(brute, 3)
        out["click_agrees"] = bool(row == brute_row)
    out["rss_start_mb"] = rss_start
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def server_side(sizes: list[int], seed: int) -> None:
    print("== latent map, lasso, click and memory (synthetic points, one process per size) ==")
    header = f"{'N':>9} {'what':<52} {'value':>12} {'baseline':>12} {'ratio':>9}"
    print(header)
    print("-" * len(header))
    for n in sizes:
        done = subprocess.run([sys.executable, __file__, "--one-size", str(n), "--seed", str(seed)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{n:>9} failed: {done.stderr.strip().splitlines()[-1] if done.stderr else done.returncode}")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        rows = [
            ("re-render after zoom, 800x800 [s] vs Bokeh serialise", r["rerender_s"], r["bokeh_s"]),
            ("bytes sent per render vs Bokeh scatter", r["rerender_bytes"], r["bokeh_bytes"]),
            ("first lasso incl. index build [s] vs matplotlib", r["lasso_first_s"], r["mpl_lasso_s"]),
            ("repeated lasso, PointIndex only [s] vs matplotlib", r["lasso_index_s"], r["mpl_lasso_s"]),
            ("repeated lasso + selection layer redrawn [s] vs mpl", r["lasso_s"], r["mpl_lasso_s"]),
            ("click: nearest galaxy [s] vs numpy scan", r["click_s"], r["brute_click_s"]),
            ("peak RSS growth over imports [MB] vs table bytes", r["peak_rss_mb"] - r["rss_start_mb"],
             r["table_mb"]),
        ]
        for what, value, base in rows:
            print(f"{n:>9} {what:<52} {value:>12.4g} {base:>12.4g} {base / value:>8.2f}x")
        print(f"{n:>9} first render of the map {r['first_render_s']:.3f} s; lasso selected {r['selected']:,} "
              f"(agrees with matplotlib: {r['lasso_agrees']}); click agrees with the scan: {r['click_agrees']}; "
              f"RSS after imports {r['rss_start_mb']:.0f} MB, peak RSS {r['peak_rss_mb']:.0f} MB\n")
    print("ratio = baseline / value: > 1 means faster / fewer bytes than the baseline "
          "(for RSS: the table's bytes / the growth; < 1 means copies and indices beyond the table)\n")


# ---------------------------------------------------------------------------- detail view
def naive_detail(bundle, row: int, neighbours: int) -> tuple[bytes, list[bytes]]:
    """The naive click: every panel and the saliency in one Matplotlib figure, then each
    neighbour's map read and drawn with Matplotlib on its own."""
    import io

    from matplotlib.figure import Figure

    from galexplore.ui.detail import galaxy_detail, galaxy_saliency
    from galexplore.ui.detail_view import detail_panels

    detail = galaxy_detail(bundle, row, neighbours)
    saliency = np.abs(galaxy_saliency(bundle, row, "vanilla", "latent_0")).sum(axis=0)
    panels = [(p.image, p.cmap, p.title, p.unit_label) for p in detail_panels(detail, bundle.model.card.recipe)]
    panels.append((saliency, "inferno", "saliency", "|gradient|"))
    figure = Figure(figsize=(9.2, 4.0), dpi=90, layout="constrained")
    for ax, (image, cmap, title, label) in zip(figure.subplots(2, 4).ravel(), panels):
        artist = ax.imshow(image, origin="lower", cmap=cmap, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        figure.colorbar(artist, ax=ax).set_label(label, fontsize=7)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    channel = bundle.dataset.channel_index(bundle.model.card.channels[0])
    thumbs = []
    for neighbour in detail.neighbours:
        small = Figure(figsize=(1.4, 1.4), dpi=90)
        small.add_subplot().imshow(np.asarray(bundle.dataset.maps[int(neighbour)])[channel], origin="lower")
        thumb = io.BytesIO()
        small.savefig(thumb, format="png")
        thumbs.append(thumb.getvalue())
    return buffer.getvalue(), thumbs


def detail_view(dataset: str, model: str) -> None:
    import holoviews as hv

    from galexplore.ui.bundle import load_bundle
    from galexplore.ui.detail import galaxy_detail
    import torch

    from galexplore.ui.detail_view import N_NEIGHBOURS, DetailView, detail_png
    from galexplore.ui.layout import SERVER_TORCH_THREADS
    from galexplore.ui.state import ExplorerState

    hv.extension("bokeh")
    torch.set_num_threads(SERVER_TORCH_THREADS)  # as `galexplore serve` runs it
    bundle = load_bundle(dataset, model)
    print(f"== click to detail view ({len(bundle.table):,} galaxies of {dataset}, model {bundle.model.name}) ==")
    rows = np.random.default_rng(0).choice(len(bundle.table), 6, replace=False)
    with tempfile.TemporaryDirectory() as scratch:
        state = ExplorerState(bundle, selections_dir=scratch)
        view = DetailView(state)
        galaxy_detail(bundle, int(rows[0]), N_NEIGHBOURS)  # torch's first call
        first, full, naive = [], [], []
        for row in rows[1:]:
            t = time.perf_counter()
            detail_png(galaxy_detail(bundle, int(row), N_NEIGHBOURS), bundle.model.card.recipe)
            first.append(time.perf_counter() - t)
            t = time.perf_counter()
            state.clicked_row = int(row)  # no server here: the deferred part runs at once
            full.append(time.perf_counter() - t)
            assert view.images.object is not None and view.saliency.object is not None
            t = time.perf_counter()
            naive_detail(bundle, int(row), N_NEIGHBOURS)
            naive.append(time.perf_counter() - t)
    base = float(np.median(naive))
    for what, values in (("maps shown (galaxy_detail + detail_png)", first),
                         ("everything (+ saliency, neighbours, traversal)", full),
                         ("naive: one Matplotlib figure + thumbnails", naive)):
        median = float(np.median(values))
        print(f"  {what:<50} median {median:7.3f} s  (min {min(values):.3f})  ratio vs naive {base / median:6.1f}x")
    print()


# ---------------------------------------------------------------------------- browser
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, timeout: float = 180.0) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode}: "
                               f"{process.stderr.read() if process.stderr else ''}")
        with socket.socket() as s:
            if s.connect_ex(("localhost", port)) == 0:
                return time.perf_counter() - start
        time.sleep(0.05)
    raise RuntimeError(f"no server on port {port} after {timeout} s")


def _coloured_fraction(png: bytes) -> float:
    """Fraction of saturated (coloured, not grey) pixels of a screenshot."""
    import io

    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)
    return float(np.mean(rgb.max(axis=-1) - rgb.min(axis=-1) > 60))


def _first_render(page, url: str, selector: str, timeout: float = 120.0) -> float:
    """Seconds from navigation until ``selector`` shows coloured pixels."""
    start = time.perf_counter()
    page.goto(url, timeout=timeout * 1000, wait_until="commit")
    page.locator(selector).first.wait_for(timeout=timeout * 1000)
    while time.perf_counter() - start < timeout:
        if _coloured_fraction(page.locator(selector).first.screenshot()) > 0.01:
            return time.perf_counter() - start
        page.wait_for_timeout(20)
    raise RuntimeError(f"{selector} showed no coloured pixels within {timeout} s")


def _count(page) -> int:
    text = page.get_by_text(COUNT_PATTERN).first.inner_text()
    return int(COUNT_PATTERN.search(text).group(1).replace(",", ""))


def _lasso_latency(page, plot_selector: str, timeout: float = 60.0) -> tuple[float, int]:
    """Seconds from releasing a lasso drag over the plot until the count changes, and the count."""
    page.locator(".bk-tool-icon-lasso-select").first.click()
    box = page.locator(plot_selector).first.bounding_box()
    cx, cy = box["x"] + 0.45 * box["width"], box["y"] + 0.5 * box["height"]
    rx, ry = 0.25 * box["width"], 0.3 * box["height"]
    path = [(cx + rx * np.cos(t), cy + ry * np.sin(t)) for t in np.linspace(0, 2 * np.pi, 24)]
    before = _count(page)
    page.mouse.move(*path[0])
    page.mouse.down()
    for point in path[1:]:
        page.mouse.move(*point, steps=2)
    page.mouse.up()
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        count = _count(page)
        if count != before:
            return time.perf_counter() - start, count
        page.wait_for_timeout(10)
    raise RuntimeError("the selection count did not change after the lasso")


BOKEH_BASELINE = r'''
import sys
import numpy as np
from bokeh.layouts import column
from bokeh.models import ColumnDataSource, Div
from bokeh.plotting import figure
from bokeh.server.server import Server
from galexplore.ui.bundle import load_bundle

bundle = load_bundle(sys.argv[1], sys.argv[2])
x, y = bundle.xy("folded (r, h)" if "folded (r, h)" in bundle.projections else list(bundle.projections)[0])
n = len(x)

def app(doc):
    source = ColumnDataSource({"x": x, "y": y})
    plot = figure(width=640, height=560, tools="lasso_select,wheel_zoom,pan,reset")
    plot.scatter("x", "y", source=source, size=3, color="#1f77b4")
    count = Div(text=f"0 selected of {n:,} galaxies")
    source.selected.on_change("indices", lambda attr, old, new: setattr(
        count, "text", f"{len(new):,} selected of {n:,} galaxies"))
    plot.css_classes = ["baseline-plot"]
    doc.add_root(column(plot, count))

port = int(sys.argv[3])
server = Server({"/": app}, port=port, address="localhost", allow_websocket_origin=[f"localhost:{port}"])
server.start()
server.io_loop.start()
'''


def browser(dataset: str, model: str) -> None:
    from playwright.sync_api import sync_playwright

    print(f"== in headless Chromium ({dataset}, model {Path(model).name}) ==")
    results = {}
    for kind in ("bokeh", "galexplore"):
        port = _free_port()
        if kind == "galexplore":
            command = [sys.executable, "-m", "galexplore", "serve", "--dataset", dataset, "--model", model,
                       "--port", str(port), "--no-browser"]
            selector = ".latent-map"
        else:
            command = [sys.executable, "-c", BOKEH_BASELINE, dataset, model, str(port)]
            selector = ".baseline-plot"
        start = time.perf_counter()
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            listening = _wait_for_port(port, server)
            time.sleep(0.5)
            with sync_playwright() as p:
                chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = chromium.new_page(viewport={"width": 1700, "height": 1100})
                first = _first_render(page, f"http://localhost:{port}/", selector)
                page.wait_for_timeout(1000)
                latency, count = _lasso_latency(page, selector)
                second_page = chromium.new_page(viewport={"width": 1700, "height": 1100})
                second = _first_render(second_page, f"http://localhost:{port}/", selector)
                chromium.close()
            results[kind] = {"listening": listening, "first": first, "second": second,
                             "lasso": latency, "count": count, "total": time.perf_counter() - start}
        finally:
            server.terminate()
            server.wait(timeout=30)
    g, b = results["galexplore"], results["bokeh"]
    rows = [("server start (process launch to listening) [s]", "listening"),
            ("start to first render, fresh server [s]", "first"),
            ("first render, second session [s]", "second"),
            ("lasso: mouse release to count updated [s]", "lasso")]
    print(f"  {'what':<50} {'galexplore':>11} {'plain Bokeh':>12} {'ratio':>8}")
    for what, key in rows:
        print(f"  {what:<50} {g[key]:>11.3f} {b[key]:>12.3f} {b[key] / g[key]:>7.2f}x")
    print(f"  lasso selected: galexplore {g['count']:,}, Bokeh {b['count']:,} (different shapes on different axes)")
    print("  ratio = plain Bokeh / galexplore: > 1 means galexplore is faster\n")


def main() -> None:
    from galexplore.paths import SAMPLE_DATASET

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dataset", default=str(SAMPLE_DATASET))
    parser.add_argument("--model", default=None, help="default: the app's default sample model")
    parser.add_argument("--skip-browser", action="store_true")
    parser.add_argument("--skip-sizes", action="store_true")
    parser.add_argument("--one-size", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_size is not None:
        print(json.dumps(measure_size(args.one_size, args.seed)))
        return
    if args.model is None:
        from galexplore.ui.layout import default_model

        args.model = default_model()
    if not args.skip_sizes:
        server_side(args.sizes, args.seed)
    detail_view(args.dataset, args.model)
    if not args.skip_browser:
        browser(args.dataset, args.model)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
