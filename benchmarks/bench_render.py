"""Server-side Datashader rendering versus shipping every point to a plain Bokeh scatter.

For 10^5, 10^6 and 10^7 clustered points (the generator of bench_selection.py):
  * baseline: serialising a Bokeh ``ColumnDataSource`` of the x, y columns the way a Bokeh
    server sends it (JSON document plus binary buffers): time and bytes;
  * Datashader: ``Canvas(800, 800).points`` + ``transfer_functions.shade`` (eq_hist), then
    serialising the shaded 800 x 800 RGBA image with the same serialiser: time and bytes.
Each figure is printed with its ratio against the baseline measured in the same run. The
browser's own cost of drawing 10^7 glyphs (the real bottleneck of the baseline) is not
measured here; the "100 Mbit/s" column is the bytes' transfer time on such a link
(arithmetic, not measured).

Run: ``python benchmarks/bench_render.py [--sizes 100000 1000000 10000000]``
"""

from __future__ import annotations

import argparse
import json
import time

import datashader as ds
import datashader.transfer_functions as tf
import numpy as np
import pandas as pd
from bokeh.core.serialization import Serializer
from bokeh.models import ColumnDataSource

from bench_selection import clustered_points

WIDTH = HEIGHT = 800
LINK_BITS_PER_S = 100e6


def bokeh_payload(data: dict) -> int:
    """Bytes a Bokeh server sends for a ColumnDataSource holding ``data``."""
    serialized = Serializer().serialize(ColumnDataSource(data=data))
    content = json.dumps(serialized.content, default=lambda b: b.ref).encode()
    return len(content) + sum(len(b.to_bytes()) for b in serialized.buffers)


def render(frame: pd.DataFrame, x_range, y_range) -> np.ndarray:
    canvas = ds.Canvas(plot_width=WIDTH, plot_height=HEIGHT, x_range=x_range, y_range=y_range)
    return tf.shade(canvas.points(frame, "x", "y"), how="eq_hist").data


def best_of(fn, repeats: int):
    best, result = np.inf, None
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    warm = pd.DataFrame({"x": np.random.default_rng(1).random(1000), "y": np.linspace(0, 1, 1000)})
    t = time.perf_counter()
    render(warm, (0, 1), (0, 1))
    print(f"datashader first call (numba compile): {time.perf_counter() - t:.2f} s\n")

    header = (f"{'N':>9} {'what':<44} {'time [s]':>9} {'bytes':>12} {'100 Mbit/s':>10} "
              f"{'time ratio':>10} {'bytes ratio':>11}")
    print(header)
    print("-" * len(header))
    for n in args.sizes:
        x, y = clustered_points(n, np.random.default_rng(args.seed))
        frame = pd.DataFrame({"x": x, "y": y})
        x_range, y_range = (float(x.min()), float(x.max())), (float(y.min()), float(y.max()))
        repeats = 1 if n >= 5_000_000 else 3

        t_base, n_base = best_of(lambda: bokeh_payload({"x": x, "y": y}), repeats)
        t_shade, image = best_of(lambda: render(frame, x_range, y_range), repeats)
        t_send, n_image = best_of(lambda: bokeh_payload({"image": [image]}), 3)
        t_ds = t_shade + t_send
        rows = [
            ("Bokeh scatter: serialise x, y (baseline)", t_base, n_base),
            ("Datashader: aggregate + shade 800x800", t_shade, None),
            ("Datashader: + serialise the RGBA image", t_ds, n_image),
        ]
        for what, seconds, size in rows:
            size_text = (f"{size:>12,d} {size * 8 / LINK_BITS_PER_S:>9.2f}s" if size is not None
                         else f"{'':>23}")
            bytes_ratio = f"{n_base / size:>10.1f}x" if size is not None else f"{'':>11}"
            print(f"{n:>9} {what:<44} {seconds:>9.4f} {size_text} {t_base / seconds:>9.2f}x {bytes_ratio}")
        print()
    print("ratios > 1: the baseline took longer / sent more bytes than this row")


if __name__ == "__main__":
    main()
