"""The explorer's speed, each figure against a baseline measured in the same run.

* Start-up: launch of ``galexplore serve`` on the sample until a usable page in headless
  Chromium (the latent map shows its points), each server started twice; the lines the
  server prints while it starts (Datashader compiles its kernels in every new process).
  Baseline: a bare Panel + HoloViews/Datashader page
  (``rasterize`` + ``dynspread`` of the same points), launched and measured the same way.
* Page load: CPU seconds the server process spends per page load (20 requests of ``/``,
  from /proc), for both servers.
* Re-render after a zoom, 4,400 points (the sample) and 10^7 (synthetic): the map's own
  ``LatentMap._render`` (Datashader raster and spread, selection, hover and marker layers);
  baseline: Datashader's ``Canvas.points`` + ``dynspread`` alone on the same points (compiled
  beforehand).
* Lasso (50 vertices): ``galexplore.explorer.selections.lasso``; baseline matplotlib.
* Click to detail: the maps (``galaxy_detail`` + ``detail_png``), then everything (saliency,
  neighbours, traversal); baseline: one Matplotlib figure of it all.
* Gradient-boosting boundary on the sample's full latents, BLAS/OpenMP limited to the
  server's one thread (as the server runs it) against every thread, interleaved.

Run: ``python benchmarks/bench_app.py [--dataset D --model M] [--skip-browser] [--big N]``
(needs the ``bench`` extra: holoviews).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_selection import best_of, clustered_points, wobbly_lasso  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--headless=new", "--no-first-run"]
TICKS = os.sysconf("SC_CLK_TCK")

BARE_PAGE = r'''
import sys
import holoviews as hv
import panel as pn
from holoviews.operation.datashader import dynspread, rasterize

from galexplore.explorer.bundles import build_bundle

bundle = build_bundle(sys.argv[1], sys.argv[2])
x, y = bundle.xy("folded (r, h)")
points = hv.Points((x, y, bundle.column("kappa")), vdims=["kappa"])
hv.extension("bokeh")


def page():
    shaded = dynspread(rasterize(points, aggregator="mean", width=500, height=460)).opts(
        cmap="bgy", colorbar=True, width=640, height=560, tools=["lasso_select"])
    return pn.Column(pn.pane.Markdown("## bare Panel + Datashader"), pn.pane.HoloViews(shaded))


port = int(sys.argv[3])
print("listening", flush=True)
pn.serve({"/": page}, port=port, address="localhost", show=False, websocket_origin=[f"localhost:{port}"])
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def _coloured_fraction(png: bytes) -> float:
    import io

    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)
    centre = rgb[rgb.shape[0] // 5: -rgb.shape[0] // 5, rgb.shape[1] // 5: -rgb.shape[1] // 3]
    return float(np.mean(centre.max(axis=-1) - centre.min(axis=-1) > 60))


def _usable(page, port: int, selector: str, timeout: float = 300.0) -> None:
    """Once the server listens on ``port``, load its page until ``selector`` shows its points.
    (The port is polled with a socket: Chromium backs off between refused connections.)"""
    deadline = time.perf_counter() + timeout
    while True:
        with socket.socket() as s:
            if s.connect_ex(("localhost", port)) == 0:
                break
        if time.perf_counter() > deadline:
            raise RuntimeError(f"nothing listens on port {port} after {timeout} s")
        time.sleep(0.02)
    page.goto(f"http://localhost:{port}/", timeout=timeout * 1000, wait_until="commit")
    page.locator(selector).first.wait_for(timeout=timeout * 1000)
    while _coloured_fraction(page.locator(selector).first.screenshot()) < 0.01:
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{selector} showed no points within {timeout} s")
        page.wait_for_timeout(20)


def _start(kind: str, dataset: str, model: str, chromium) -> dict:
    """Launch one server, time it to a usable page, then its CPU time per page load."""
    port = _free_port()
    if kind == "galexplore":
        command = [sys.executable, "-m", "galexplore", "serve", "--dataset", dataset, "--model", model,
                   "--port", str(port), "--no-browser"]
        selector = ".latent-figure"
    else:
        command = [sys.executable, "-c", BARE_PAGE, dataset, model, str(port)]
        selector = "canvas"
    started = time.perf_counter()
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONWARNINGS": "ignore"})
    try:
        page = chromium.new_page(viewport={"width": 1400, "height": 1000})
        _usable(page, port, selector)
        usable = time.perf_counter() - started
        page.close()
        cpu_before = _cpu_seconds(server.pid)
        loads = 20
        for _ in range(loads):
            urllib.request.urlopen(f"http://localhost:{port}/", timeout=120).read()
        per_page = (_cpu_seconds(server.pid) - cpu_before) / loads
    finally:
        server.terminate()
        _, err = server.communicate(timeout=60)
    said = [line for line in err.splitlines() if line.startswith("galexplore: [")]
    return {"usable": usable, "page_cpu": per_page, "said": said}


def startup(dataset: str, model: str) -> None:
    from playwright.sync_api import sync_playwright

    print(f"== start to a usable page, and server CPU per page load ({dataset}) ==")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        runs = {kind: [_start(kind, dataset, model, chromium) for _ in range(2)] for kind in ("galexplore", "bare")}
        chromium.close()
    g, b = runs["galexplore"], runs["bare"]
    print(f"  {'what':<52} {'galexplore':>11} {'bare page':>11} {'ratio':>8}")
    for label, k in (("first start: launch to usable page [s]", 0), ("second start: launch to usable page [s]", 1)):
        print(f"  {label:<52} {g[k]['usable']:>11.2f} {b[k]['usable']:>11.2f} {b[k]['usable'] / g[k]['usable']:>7.2f}x")
    cpu_g = statistics.mean(r["page_cpu"] for r in g)
    cpu_b = statistics.mean(r["page_cpu"] for r in b)
    print(f"  {'server CPU per page load [s]':<52} {cpu_g:>11.3f} {cpu_b:>11.3f} {cpu_b / cpu_g:>7.2f}x")
    print("  what `galexplore serve` printed on its second start:")
    for line in g[1]["said"]:
        print(f"    {line}")
    print("  ratio = bare page / galexplore: > 1 means galexplore is faster\n")


# ---------------------------------------------------------------------------- server side
def _render_time(bundle, rng) -> tuple[float, float, int]:
    """Seconds of the map's re-render after a zoom (median of 5) and of Datashader's
    Canvas.points + dynspread of the same points and pixels (median of 5)."""
    import datashader as ds
    import datashader.transfer_functions as tf
    import pandas as pd

    from galexplore.ui.latent_view import FRAME_HEIGHT, FRAME_WIDTH, LatentMap
    from galexplore.ui.state import FittedBoundary, MapState, Messages, SelectionState, Source

    source = Source(bundle=bundle)
    map_state = MapState(source=source)
    view = LatentMap(map=map_state, selection=SelectionState(map=map_state), boundary=FittedBoundary(source=source),
                     messages=Messages())
    x, y = bundle.xy(map_state.projection)
    value = bundle.column("kappa")
    (x0, x1), (y0, y1) = bundle.extent(map_state.projection)
    zooms = [(x0 + f * (x1 - x0), x1 - f * (x1 - x0), y0 + f * (y1 - y0), y1 - f * (y1 - y0))
             for f in (0.02, 0.05, 0.08, 0.11, 0.14)]
    ours = []
    for ranges in zooms:
        t = time.perf_counter()
        view._render(ranges)
        ours.append(time.perf_counter() - t)
    frame = pd.DataFrame({"x": x, "y": y, "value": value})
    canvas = ds.Canvas(FRAME_WIDTH, FRAME_HEIGHT, x_range=zooms[0][:2], y_range=zooms[0][2:])
    tf.dynspread(canvas.points(frame, "x", "y", ds.mean("value")), threshold=0.6, max_px=3)  # compile first
    theirs = []
    for r in zooms:
        t = time.perf_counter()
        agg = ds.Canvas(FRAME_WIDTH, FRAME_HEIGHT, x_range=r[:2], y_range=r[2:]).points(frame, "x", "y",
                                                                                       ds.mean("value"))
        tf.dynspread(agg, threshold=0.6, max_px=3)
        theirs.append(time.perf_counter() - t)
    return float(np.median(ours)), float(np.median(theirs)), len(x)


def _synthetic(n: int, seed: int):
    import pandas as pd

    from galexplore.explorer.bundles import Bundle

    rng = np.random.default_rng(seed)
    x, y = clustered_points(n, rng)
    table = pd.DataFrame({"id": np.arange(n, dtype=np.int64), "latent_0": x.astype(np.float32),
                          "latent_1": y.astype(np.float32), "kappa": rng.uniform(0, 1, n).astype(np.float32)})
    return Bundle(dataset=None, model=None, table=table, column_units={"kappa": ""})


def server_side(dataset: str, model: str, big: int, seed: int) -> None:
    from matplotlib.path import Path as MplPath

    from galexplore.explorer import selections
    from galexplore.explorer.bundles import build_bundle
    from galexplore.ui.layout import configure_panel, warm_up

    configure_panel()
    warm_up()
    rng = np.random.default_rng(seed)
    print("== re-render after a zoom, and lasso ==")
    print(f"  {'N':>10} {'what':<46} {'galexplore':>11} {'baseline':>11} {'ratio':>8}")
    for name, bundle in (("sample", build_bundle(dataset, model)), ("synthetic", _synthetic(big, seed))):
        ours, theirs, n = _render_time(bundle, rng)
        print(f"  {n:>10,} {'map re-render [s] vs Datashader points+dynspread':<46} {ours:>11.4f} {theirs:>11.4f} "
              f"{theirs / ours:>7.2f}x")
        projection = list(bundle.projections)[0]
        x, y = bundle.xy(projection)
        polygon = wobbly_lasso(np.asarray(x, float), np.asarray(y, float), 50, 0.2, np.random.default_rng(seed + 1))
        selections.lasso(bundle, projection, selections.Selection(), polygon)  # builds the index once
        ours_s, _, chosen = best_of(lambda: selections.lasso(bundle, projection, selections.Selection(), polygon), 3)
        mpl_s, _, inside = best_of(lambda: MplPath(polygon).contains_points(np.column_stack([x, y])), 1)
        agree = np.array_equal(np.flatnonzero(inside), chosen.rows)
        print(f"  {n:>10,} {'lasso, 50 vertices [s] vs matplotlib':<46} {ours_s:>11.4f} {mpl_s:>11.4f} "
              f"{mpl_s / ours_s:>7.2f}x  (same {chosen.size:,} rows: {agree})")
    print("  ratio = baseline / galexplore: > 1 means faster than the baseline\n")


# ---------------------------------------------------------------------------- click to detail
def naive_detail(bundle, row: int, neighbours: int) -> None:
    """The naive click: every panel and the saliency in one Matplotlib figure, then each
    neighbour's map read and drawn with Matplotlib on its own."""
    import io

    from matplotlib.figure import Figure

    from galexplore.explorer.detail import detail_panels, galaxy_detail, galaxy_saliency

    detail = galaxy_detail(bundle, row, neighbours)
    saliency = np.abs(galaxy_saliency(bundle, row, "vanilla", "latent_0")).sum(axis=0)
    panels = [(p.image, p.title, p.unit_label) for p in detail_panels(detail, bundle.model.card.recipe)]
    panels.append((saliency, "saliency", "|gradient|"))
    figure = Figure(figsize=(9.2, 4.0), dpi=90, layout="constrained")
    for ax, (image, title, label) in zip(figure.subplots(2, 4).ravel(), panels):
        artist = ax.imshow(image, origin="lower", interpolation="nearest")
        ax.set_title(title, fontsize=9)
        figure.colorbar(artist, ax=ax).set_label(label, fontsize=7)
    figure.savefig(io.BytesIO(), format="png")
    channel = bundle.dataset.channel_index(bundle.model.card.channels[0])
    for neighbour in detail.neighbours:
        small = Figure(figsize=(1.4, 1.4), dpi=90)
        small.add_subplot().imshow(np.asarray(bundle.dataset.maps[int(neighbour)])[channel], origin="lower")
        small.savefig(io.BytesIO(), format="png")


def click_to_detail(dataset: str, model: str) -> None:
    from galexplore.explorer import detail as details
    from galexplore.explorer.bundles import build_bundle
    from galexplore.explorer.sources import limit_server_threads
    from galexplore.ui.detail_view import N_NEIGHBOURS, TRAVERSAL_STEPS

    limit_server_threads()  # as `galexplore serve` runs
    bundle = build_bundle(dataset, model)
    print(f"== click to detail ({bundle.n_maps:,} maps, model {bundle.name}) ==")
    rows = np.random.default_rng(0).choice(bundle.n_maps, 6, replace=False)
    details.galaxy_detail(bundle, int(rows[0]), N_NEIGHBOURS)  # loads the model, torch's first call
    maps, everything, naive = [], [], []
    for row in map(int, rows[1:]):
        t = time.perf_counter()
        detail = details.galaxy_detail(bundle, row, N_NEIGHBOURS)
        details.detail_png(detail, bundle.model.card.recipe)
        maps.append(time.perf_counter() - t)
        values = details.galaxy_saliency(bundle, row, "vanilla gradient", "latent_0")
        details.saliency_png(detail, values, "latent_0", "vanilla gradient")
        details.neighbours_png(bundle, detail.neighbours)
        if details.can_traverse(bundle):
            details.traversal_png(*details.latent_traversal(bundle, row, 0, steps=TRAVERSAL_STEPS))
        everything.append(time.perf_counter() - t)
        t = time.perf_counter()
        naive_detail(bundle, row, N_NEIGHBOURS)
        naive.append(time.perf_counter() - t)
    base = float(np.median(naive))
    for what, values in (("the maps (galaxy_detail + detail_png)", maps),
                         ("everything (+ saliency, neighbours, traversal)", everything),
                         ("naive: one Matplotlib figure + thumbnails", naive)):
        median = float(np.median(values))
        print(f"  {what:<50} median {median:7.3f} s  ratio vs naive {base / median:6.1f}x")
    print()


# ---------------------------------------------------------------------------- boundary fit
def boundary_fit(dataset: str, model: str, repeats: int) -> None:
    from threadpoolctl import threadpool_limits

    from galexplore.explorer import boundaries as bounds
    from galexplore.explorer.bundles import build_bundle, latent_columns

    bundle = build_bundle(dataset, model)
    rows, labels, text = bounds.labelled_by_threshold(bundle, "kappa", bundle.kappa_threshold)
    features = latent_columns(bundle.columns)
    print(f"== gradient-boosting boundary on the full latents ({len(rows):,} maps, {len(features)} latents), "
          f"{os.cpu_count()} cores ==")
    one, every = [], []
    for _ in range(repeats):
        for limit, out in ((1, one), (None, every)):
            with threadpool_limits(limits=limit):
                t = time.perf_counter()
                fit = bounds.fit_on_bundle(bundle, "gradient_boosting", features, rows, labels, text, None)
                out.append(time.perf_counter() - t)
    a, b = float(np.median(one)), float(np.median(every))
    print(f"  one OpenMP/BLAS thread (the server's setting): median {a:.2f} s; every thread: median {b:.2f} s "
          f"({repeats} interleaved pairs); ratio {b / a:.2f}x; mean recall {fit.mean_recall:.3f}\n")


def main() -> None:
    from galexplore.paths import SAMPLE_DATASET

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=str(SAMPLE_DATASET))
    parser.add_argument("--model", default=None, help="default: the app's default sample model")
    parser.add_argument("--big", type=int, default=10_000_000, help="synthetic points of the large re-render")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved pairs of boundary fits")
    parser.add_argument("--skip-browser", action="store_true")
    args = parser.parse_args()
    if args.model is None:
        from galexplore.explorer.sources import default_model

        args.model = default_model()
    if not args.skip_browser:
        startup(args.dataset, args.model)
    server_side(args.dataset, args.model, args.big, args.seed)
    click_to_detail(args.dataset, args.model)
    boundary_fit(args.dataset, args.model, args.repeats)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
