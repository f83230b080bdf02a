"""The latent map's pixels, rendered by Datashader: scatter points binned into a grid,
counted or averaged (``Canvas.points`` with ``count`` or ``mean``), and isolated pixels
spread so that they stay visible (``transfer_functions.dynspread``).

Datashader compiles its kernels with Numba on first use, which takes seconds (10-20 s on a
busy 2-core machine); `warm_up` does it once per process, and the server runs it in a
background thread while it already answers (`galexplore.ui.layout.serve`).

Conventions (Datashader's): a grid of ``width`` x ``height`` pixels covers ``x_range`` x
``y_range``; the upper edges of the ranges belong to the last pixel; row 0 is at the low end
of ``y_range`` (the bottom, as Bokeh's ``image`` glyph draws it). Empty pixels are NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from galexplore.errors import ParameterError

#: Largest spread of an isolated pixel, in pixels on each side.
MAX_SPREAD_PX = 3
#: Spreading stops before more than this fraction of the non-empty pixels would touch
#: another one (the threshold of Datashader's ``dynspread``).
SPREAD_THRESHOLD = 0.6


@dataclass(frozen=True)
class Raster:
    """One rendered grid.

    Attributes
    ----------
    image : (height, width) float32, NaN where empty; counts, or the mean value per pixel.
    x_range, y_range : the data ranges the grid covers.
    spread_px : how far isolated pixels were spread.
    n_points : points that fell into the grid.
    """

    image: np.ndarray
    x_range: tuple[float, float]
    y_range: tuple[float, float]
    spread_px: int
    n_points: int


def rasterize(x: np.ndarray, y: np.ndarray, x_range: tuple[float, float], y_range: tuple[float, float],
              width: int, height: int, values: np.ndarray | None = None, keep: np.ndarray | None = None,
              max_spread_px: int = MAX_SPREAD_PX, threshold: float = SPREAD_THRESHOLD,
              spread_px: int | None = None) -> Raster:
    """Bin points into a ``width`` x ``height`` grid over the given ranges.

    Parameters
    ----------
    x, y : (n,) coordinates (float32 or float64; NaN and inf are left out).
    x_range, y_range : (low, high) data limits of the grid; low < high.
    values : (n,) optional; the image is then the mean of the finite values per pixel,
        else the number of points per pixel.
    keep : (n,) bool, optional; only these points are drawn.
    max_spread_px, threshold : isolated pixels are spread by the largest distance px (up to
        ``max_spread_px``) for which at most ``threshold`` of the filled pixels have another
        within 2 px, i.e. before spread points would run into each other (Datashader's
        ``dynspread``).
    spread_px : spread by exactly this distance instead (e.g. a layer drawn over another).

    Returns
    -------
    Raster
    """
    x_lo, x_hi = (float(v) for v in x_range)
    y_lo, y_hi = (float(v) for v in y_range)
    if not (np.isfinite([x_lo, x_hi, y_lo, y_hi]).all() and x_hi > x_lo and y_hi > y_lo):
        raise ParameterError(f"the map's ranges must be finite with low < high, got x {x_range} and y {y_range}")
    if width < 1 or height < 1:
        raise ParameterError(f"the map needs at least 1 x 1 pixels, got {width} x {height}")
    import datashader as ds
    import datashader.transfer_functions as tf

    columns = {"x": _floating(x)}
    columns["y"] = np.asarray(y, dtype=columns["x"].dtype)
    if values is not None:
        columns["value"] = _floating(values)
    if keep is not None:
        keep = np.asarray(keep, dtype=np.bool_)
        columns = {name: column[keep] for name, column in columns.items()}
    points = pd.DataFrame(columns, copy=False)
    canvas = ds.Canvas(plot_width=int(width), plot_height=int(height), x_range=(x_lo, x_hi), y_range=(y_lo, y_hi))
    counts = canvas.points(points, "x", "y", agg=ds.count("value") if values is not None else ds.count())
    if values is not None:
        aggregate = canvas.points(points, "x", "y", agg=ds.mean("value"))
    else:
        aggregate = counts.astype(np.float32).where(counts > 0)
    if spread_px is None:
        spread_px = _dynamic_spread(counts, max_spread_px, threshold, tf)
    image = _spread(aggregate, spread_px, tf).to_numpy().astype(np.float32, copy=False)
    return Raster(image, (x_lo, x_hi), (y_lo, y_hi), spread_px, int(counts.sum()))


def _dynamic_spread(counts, max_px: int, threshold: float, tf) -> int:
    """How far Datashader's ``dynspread`` spreads the count grid ``counts`` (0 to ``max_px``):
    the distance whose plain ``spread`` gives the same grid."""
    spread_out = tf.dynspread(counts, threshold=threshold, max_px=max_px, how="max").to_numpy()
    for px in range(max_px + 1):
        if np.array_equal(_spread(counts, px, tf).to_numpy(), spread_out):
            return px
    return max_px


def _spread(aggregate, px: int, tf):
    """Datashader's ``spread`` of a float grid by ``px`` (0: the grid itself): empty pixels
    within ``px`` of filled ones take the largest of their values."""
    return aggregate if px <= 0 else tf.spread(aggregate, px=int(px), how="max")


def spread(image: np.ndarray, px: int) -> np.ndarray:
    """``image`` (NaN where empty) spread by ``px`` pixels as the map spreads its points
    (``px`` = 0: ``image`` itself)."""
    if px <= 0:
        return image
    import datashader.transfer_functions as tf
    import xarray as xr

    grid = xr.DataArray(np.asarray(image), dims=("y", "x"))
    return _spread(grid, px, tf).to_numpy().astype(image.dtype, copy=False)


def _floating(array) -> np.ndarray:
    """``array`` as float32 or float64 (other types become float64), without a copy when it is one."""
    array = np.asarray(array)
    return array if array.dtype in (np.float32, np.float64) else array.astype(np.float64)


def warm_up() -> None:
    """Compile Datashader's kernels for every type the map passes them (once per process)."""
    for coordinates in (np.float32, np.float64):
        x = np.array([0.0, 1.0, 0.5], dtype=coordinates)
        for values in (None, np.float32, np.float64):
            rasterize(x, x, (0.0, 1.0), (0.0, 1.0), 8, 8, values=None if values is None else x.astype(values),
                      keep=np.ones(3, bool), max_spread_px=1, threshold=1.0)
