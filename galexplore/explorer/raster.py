"""The latent map's pixels: scatter points binned into a grid, counted or averaged, and
isolated pixels spread so that they stay visible.

This is the reduction Datashader performs (``Canvas.points`` with ``count`` or ``mean``,
then ``dynspread``), written as three Numba kernels that are compiled once and cached on
disk (``cache=True``). Datashader generates its kernels at run time and compiles its
compositing operators on import, so Numba cannot cache them: every server start paid
10-30 s of compilation before the first map. Loading these kernels from the cache takes
well under a second.

Conventions: a grid of ``width`` x ``height`` pixels covers ``x_range`` x ``y_range``;
pixel (row, col) covers ``[x0 + col dx, x0 + (col + 1) dx)`` and likewise in y, the upper
edges of the range belong to the last pixel; row 0 is at ``y0`` (the bottom, as Bokeh's
``image`` glyph draws it). Empty pixels are NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from galexplore.errors import ParameterError

#: Largest spread of an isolated pixel, in pixels on each side.
MAX_SPREAD_PX = 3
#: Spreading stops before more than this fraction of the non-empty pixels would touch
#: another one (Datashader's ``dynspread`` rule and threshold).
SPREAD_THRESHOLD = 0.6


@numba.njit(cache=True, nogil=True)
def _bin(x, y, values, keep, x0, y0, sx, sy, width, height, counts, sums):
    """Add every kept point with finite coordinates to ``counts`` (and its non-NaN value to ``sums``)."""
    n = x.shape[0]
    use_values = values.shape[0] == n
    use_keep = keep.shape[0] == n
    for i in range(n):
        if use_keep and not keep[i]:
            continue
        fx = (np.float64(x[i]) - x0) * sx
        fy = (np.float64(y[i]) - y0) * sy
        if not (0.0 <= fx <= width and 0.0 <= fy <= height):  # also False for NaN and inf
            continue
        col = min(int(fx), width - 1)
        row = min(int(fy), height - 1)
        if use_values:
            v = np.float64(values[i])
            if v != v:  # NaN
                continue
            sums[row, col] += v
        counts[row, col] += 1


@numba.njit(cache=True, nogil=True)
def _neighbour_fraction(filled, radius):
    """Fraction of filled pixels with another filled pixel within ``radius`` (in rows and
    columns); 1.0 when none is filled."""
    height, width = filled.shape
    total = 0
    with_neighbours = 0
    for r in range(height):
        for c in range(width):
            if not filled[r, c]:
                continue
            total += 1
            found = False
            for rr in range(max(0, r - radius), min(height, r + radius + 1)):
                for cc in range(max(0, c - radius), min(width, c + radius + 1)):
                    if (rr != r or cc != c) and filled[rr, cc]:
                        found = True
                        break
                if found:
                    break
            if found:
                with_neighbours += 1
    return 1.0 if total == 0 else with_neighbours / total


@numba.njit(cache=True, nogil=True)
def _spread(image, px, out):
    """Copy ``image`` to ``out`` and paint every empty pixel within a disc of radius ``px``
    of a filled one with the value of the nearest filled pixel (ties: the first in row order)."""
    height, width = image.shape
    best = np.full((height, width), np.inf)
    for r in range(height):
        for c in range(width):
            out[r, c] = image[r, c]
            if not np.isnan(image[r, c]):
                best[r, c] = 0.0
    limit = px * px + px  # a disc that includes the four edge-adjacent pixels at distance px
    for r in range(height):
        for c in range(width):
            value = image[r, c]
            if np.isnan(value):
                continue
            for dr in range(-px, px + 1):
                rr = r + dr
                if rr < 0 or rr >= height:
                    continue
                for dc in range(-px, px + 1):
                    cc = c + dc
                    d2 = dr * dr + dc * dc
                    if cc < 0 or cc >= width or d2 > limit or d2 >= best[rr, cc]:
                        continue
                    best[rr, cc] = d2
                    out[rr, cc] = value


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
    x = _floating(x)
    y = np.asarray(y, dtype=x.dtype)
    values = np.empty(0, dtype=np.float32) if values is None else _floating(values)
    keep = np.empty(0, dtype=np.bool_) if keep is None else np.asarray(keep, dtype=np.bool_)
    counts = np.zeros((height, width), dtype=np.int64)
    sums = np.zeros((height, width), dtype=np.float64)
    _bin(x, y, values, keep, x_lo, y_lo, width / (x_hi - x_lo), height / (y_hi - y_lo), width, height, counts, sums)
    filled = counts > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        image = np.where(filled, sums / counts if values.size else counts, np.nan).astype(np.float32)
    if spread_px is None:
        spread_px = max_spread_px
        for px in range(1, max_spread_px + 1):
            if _neighbour_fraction(filled, 2 * px) > threshold:
                spread_px = px - 1
                break
    return Raster(spread(image, spread_px), (x_lo, x_hi), (y_lo, y_hi), spread_px, int(counts.sum()))


def spread(image: np.ndarray, px: int) -> np.ndarray:
    """``image`` with every empty (NaN) pixel within ``px`` of a filled one painted with the
    value of the nearest filled pixel (``px`` = 0: ``image`` itself)."""
    if px <= 0:
        return image
    out = np.empty_like(image)
    _spread(image, int(px), out)
    return out


def _floating(array) -> np.ndarray:
    """``array`` as float32 or float64 (other types become float64), without a copy when it is one."""
    array = np.asarray(array)
    return array if array.dtype in (np.float32, np.float64) else array.astype(np.float64)


def warm_up() -> None:
    """Load (or, the first time, compile) the kernels for every type the map passes them."""
    for coordinates in (np.float32, np.float64):
        x = np.array([0.0, 1.0, 0.5], dtype=coordinates)
        for values in (None, np.float32, np.float64):
            rasterize(x, x, (0.0, 1.0), (0.0, 1.0), 8, 8, values=None if values is None else x.astype(values),
                      keep=np.ones(3, bool), max_spread_px=1, threshold=1.0)
