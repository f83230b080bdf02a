"""Maps drawn with numpy colour tables and Pillow: orientation, blanks, limits, arrows."""

from __future__ import annotations

import io

import matplotlib
import numpy as np
import pytest
from PIL import Image

from galexplore.explorer.detail import thumbnail_png
from galexplore.explorer.images import (
    BLANK_RGBA,
    Arrow,
    MapPanel,
    colourise,
    map_limits,
    pixel_to_canvas,
    render_panel,
)


def _rgba(cmap: str, level: float) -> np.ndarray:
    """Matplotlib's colour at ``level``: the reference the tables (from Bokeh's copies of the
    same palettes) must match to one unit of 8-bit rounding."""
    return np.round(np.asarray(matplotlib.colormaps[cmap](level)) * 255).astype(np.uint8)


def assert_colour(actual, expected) -> None:
    np.testing.assert_allclose(np.asarray(actual, dtype=int), np.asarray(expected, dtype=int), atol=1)


@pytest.mark.parametrize("cmap", ["inferno", "viridis", "magma", "gray", "RdBu_r"])
def test_colour_tables_match_matplotlib(cmap):
    from galexplore.explorer.images import TABLE_SIZE, colour_table

    table = colour_table(cmap)
    for k in (0, 37, 128, 200, TABLE_SIZE - 1):
        assert_colour(table[k], _rgba(cmap, k / (TABLE_SIZE - 1)))


def test_row_zero_is_drawn_at_the_bottom_with_the_colormap_ends():
    image = np.zeros((4, 3))
    image[0] = -1.0  # south edge: lowest value
    image[-1] = 1.0  # north edge: highest value
    rgba = colourise(image, "RdBu_r", (-1.0, 1.0))
    assert_colour(rgba[-1, 0], _rgba("RdBu_r", 0.0))  # bottom of the picture
    assert_colour(rgba[0, 0], _rgba("RdBu_r", 1.0))  # top of the picture


def test_blank_pixels_and_enlargement():
    image = np.ones((2, 2))
    image[1, 0] = np.nan  # north-west pixel (row 1 = north, col 0 = east is left on screen)
    rgba = colourise(image, "viridis", (0.0, 1.0), scale=3)
    assert rgba.shape == (6, 6, 4)
    assert tuple(rgba[0, 0]) == BLANK_RGBA and tuple(rgba[2, 2]) == BLANK_RGBA
    assert_colour(rgba[5, 5], _rgba("viridis", 1.0))


def test_limits():
    assert map_limits(np.array([-3.0, 1.0, np.nan]), symmetric=True) == (-3.0, 3.0)
    assert map_limits(np.array([2.0, 5.0, np.nan])) == (2.0, 5.0)
    assert map_limits(np.full(3, np.nan)) == (0.0, 1.0)
    lo, hi = map_limits(np.arange(101.0), percentile=99.0)
    assert (lo, hi) == pytest.approx((1.0, 99.0))


def test_pixel_centres_on_the_canvas():
    assert pixel_to_canvas(0, 0, 64, 2) == (1.0, 127.0)  # south-east pixel: bottom left
    assert pixel_to_canvas(63, 63, 64, 2) == (127.0, 1.0)


@pytest.mark.parametrize("pa, side", [(90.0, "left"), (270.0, "right"), (0.0, "up")])
def test_position_angle_arrows_point_east_of_north(pa, side):
    from galexplore.explorer.detail import pa_arrow_end

    panel = MapPanel(np.zeros((64, 64)), "gray", "", "", (-1.0, 1.0),
                     arrows=[Arrow((31.5, 31.5), pa_arrow_end(pa), "#00ff00")])
    rgb = np.asarray(render_panel(panel, scale=2).convert("RGB"), dtype=int)
    ys, xs = np.nonzero((rgb[..., 1] > 200) & (rgb[..., 0] < 60) & (rgb[..., 2] < 60))
    centre_x, centre_y = pixel_to_canvas(31.5, 31.5, 64, 2)
    centre_x, centre_y = centre_x + 6, centre_y + 16  # margin and title above the map
    dx, dy = xs.mean() - centre_x, ys.mean() - centre_y
    if side == "left":
        assert dx < -10 and abs(dy) < 3
    elif side == "right":
        assert dx > 10 and abs(dy) < 3
    else:
        assert dy < -10 and abs(dx) < 3


def test_thumbnail_keeps_north_up_and_blank_transparent():
    image = np.zeros((64, 64))
    image[:32] = -5.0
    image[32:] = 5.0
    image[0, 0] = np.nan
    png = np.asarray(Image.open(io.BytesIO(thumbnail_png(image, "RdBu_r", symmetric=True, scale=1))))
    assert png.shape == (64, 64, 4)
    assert_colour(png[0, 10], _rgba("RdBu_r", 1.0))  # north (high) at the top
    assert_colour(png[60, 10], _rgba("RdBu_r", 0.0))
    assert png[63, 0, 3] == 0  # the blank south-east pixel is transparent
