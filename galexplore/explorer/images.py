"""Maps drawn as PNG images with numpy colour tables and Pillow, for the detail view and
galleries: a few milliseconds per panel, where a Matplotlib figure takes about a second.

Every map is shown with row 0 at the bottom (``origin="lower"``: north up, east left),
nearest-neighbour enlarged, NaN (blank) pixels in light grey, and a colourbar whose end
values and unit are written beside it.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFont

#: Entries of each colour table.
TABLE_SIZE = 256
BLANK_RGBA = (221, 221, 221, 255)
BACKGROUND = (255, 255, 255, 255)
TEXT_COLOUR = (20, 20, 20, 255)
FONT_SIZE = 11
COLOURBAR_WIDTH = 10
TITLE_HEIGHT = 16
LABEL_HEIGHT = 16
TICK_WIDTH = 52
MARGIN = 6


def _palettes() -> dict[str, tuple[str, ...]]:
    from bokeh import palettes

    return {"inferno": palettes.Inferno256, "viridis": palettes.Viridis256, "magma": palettes.Magma256,
            "gray": palettes.Greys256, "RdBu_r": palettes.RdBu11}  # RdBu11 runs blue to red


@functools.cache
def colour_table(cmap: str) -> np.ndarray:
    """(TABLE_SIZE, 4) uint8 RGBA of a colormap ("inferno", "viridis", "magma", "gray",
    "RdBu_r": Bokeh's palettes of the Matplotlib maps), linearly interpolated."""
    colours = _palettes()[cmap]
    rgb = np.array([[int(c[i:i + 2], 16) for i in (1, 3, 5)] for c in colours], dtype=np.float64)
    at = np.linspace(0.0, len(rgb) - 1.0, TABLE_SIZE)
    table = np.column_stack([np.interp(at, np.arange(len(rgb)), rgb[:, k]) for k in range(3)])
    return np.column_stack([np.round(table), np.full(TABLE_SIZE, 255.0)]).astype(np.uint8)


@functools.cache
def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default(size=FONT_SIZE)


def map_limits(image: np.ndarray, symmetric: bool = False, percentile: float | None = None) -> tuple[float, float]:
    """Colour limits of a map: its finite min and max, or +-max|value| (``symmetric``, zero in
    the middle); ``percentile`` (e.g. 99) clips outliers instead of using the extremes."""
    finite = np.asarray(image, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return (-1.0, 1.0) if symmetric else (0.0, 1.0)
    if symmetric:
        bound = float(np.percentile(np.abs(finite), percentile)) if percentile else float(np.abs(finite).max())
        bound = bound or 1.0
        return -bound, bound
    if percentile:
        lo, hi = (float(v) for v in np.percentile(finite, [100.0 - percentile, percentile]))
    else:
        lo, hi = float(finite.min()), float(finite.max())
    return (lo, hi) if hi > lo else (lo - 0.5, lo + 0.5)


def colourise(image: np.ndarray, cmap: str, limits: tuple[float, float], scale: int = 1,
              blank: tuple[int, int, int, int] = BLANK_RGBA) -> np.ndarray:
    """(H*scale, W*scale, 4) uint8 RGBA of a map, row 0 at the bottom, NaN painted ``blank``."""
    image = np.asarray(image, dtype=np.float64)
    lo, hi = limits
    finite = np.isfinite(image)
    level = np.clip((np.where(finite, image, lo) - lo) / ((hi - lo) or 1.0), 0.0, 1.0)
    rgba = colour_table(cmap)[np.round(level * (TABLE_SIZE - 1)).astype(np.intp)]
    rgba[~finite] = blank
    rgba = rgba[::-1]
    if scale > 1:
        rgba = np.repeat(np.repeat(rgba, scale, axis=0), scale, axis=1)
    return np.ascontiguousarray(rgba)


def pixel_to_canvas(col: float, row: float, height: int, scale: int) -> tuple[float, float]:
    """Canvas (x, y) of the centre of map pixel (col, row) once flipped (row 0 at the bottom)
    and enlarged ``scale`` times."""
    return (col + 0.5) * scale, (height - row - 0.5) * scale


@dataclass
class Arrow:
    """An arrow drawn on a map from pixel (col0, row0) to (col1, row1), with a label at its tip."""

    start: tuple[float, float]
    end: tuple[float, float]
    colour: str
    label: str = ""


@dataclass
class MapPanel:
    """One map with its title, colour scale and unit, ready to draw.

    ``underlay`` (optional, same shape) is drawn in grey below ``image``; NaN pixels of
    ``image`` then let it show through (used for saliency over the model input).
    """

    image: np.ndarray
    cmap: str
    title: str
    unit_label: str
    limits: tuple[float, float]
    arrows: Sequence[Arrow] = field(default_factory=tuple)
    underlay: np.ndarray | None = None
    alpha: float = 1.0


def _fit(text: str, width: int) -> str:
    font = _font()
    while text and font.getlength(text) > width:
        text = text[:-2] + "…" if len(text) > 2 else ""
    return text


def _tick(value: float) -> str:
    return f"{value:.3g}"


def render_panel(panel: MapPanel, scale: int = 3) -> Image.Image:
    """The panel as an RGBA image: title, map, colourbar with end values, unit label."""
    height, width = panel.image.shape
    map_w, map_h = width * scale, height * scale
    canvas = Image.new("RGBA", (MARGIN + map_w + 4 + COLOURBAR_WIDTH + TICK_WIDTH,
                                TITLE_HEIGHT + map_h + LABEL_HEIGHT), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = _font()
    draw.text((MARGIN, 1), _fit(panel.title, canvas.width - MARGIN), fill=TEXT_COLOUR, font=font)

    if panel.underlay is not None:
        base = Image.fromarray(colourise(panel.underlay, "gray", map_limits(panel.underlay), scale))
        top = colourise(panel.image, panel.cmap, panel.limits, scale, blank=(0, 0, 0, 0))
        top[..., 3] = (top[..., 3].astype(np.float64) * panel.alpha).astype(np.uint8)
        tile = Image.alpha_composite(base, Image.fromarray(top))
    else:
        tile = Image.fromarray(colourise(panel.image, panel.cmap, panel.limits, scale))
    canvas.paste(tile, (MARGIN, TITLE_HEIGHT))

    for arrow in panel.arrows:
        x0, y0 = pixel_to_canvas(*arrow.start, height, scale)
        x1, y1 = pixel_to_canvas(*arrow.end, height, scale)
        x0, x1, y0, y1 = x0 + MARGIN, x1 + MARGIN, y0 + TITLE_HEIGHT, y1 + TITLE_HEIGHT
        draw.line([(x0, y0), (x1, y1)], fill=arrow.colour, width=2)
        angle = np.arctan2(y1 - y0, x1 - x0)
        head = [(x1, y1)] + [(x1 - 9 * np.cos(angle + s), y1 - 9 * np.sin(angle + s)) for s in (0.4, -0.4)]
        draw.polygon(head, fill=arrow.colour)
        if arrow.label:
            draw.text((x1 + 2, y1 - FONT_SIZE), arrow.label, fill=arrow.colour, font=font)

    bar_x = MARGIN + map_w + 4
    ramp = colour_table(panel.cmap)[::-1][np.linspace(0, TABLE_SIZE - 1, map_h).astype(np.intp)]
    bar = np.repeat(ramp[:, None, :], COLOURBAR_WIDTH, axis=1)
    canvas.paste(Image.fromarray(np.ascontiguousarray(bar)), (bar_x, TITLE_HEIGHT))
    lo, hi = panel.limits
    text_x = bar_x + COLOURBAR_WIDTH + 2
    draw.text((text_x, TITLE_HEIGHT), _tick(hi), fill=TEXT_COLOUR, font=font)
    draw.text((text_x, TITLE_HEIGHT + map_h // 2 - FONT_SIZE // 2), _tick(0.5 * (lo + hi)), fill=TEXT_COLOUR,
              font=font)
    draw.text((text_x, TITLE_HEIGHT + map_h - FONT_SIZE), _tick(lo), fill=TEXT_COLOUR, font=font)
    draw.text((MARGIN, TITLE_HEIGHT + map_h + 2), _fit(panel.unit_label, canvas.width - MARGIN),
              fill=TEXT_COLOUR, font=font)
    return canvas


def grid_png(panels: Sequence[MapPanel], columns: int = 4, scale: int = 3) -> bytes:
    """The panels laid out in rows of ``columns``, as one PNG."""
    tiles = [render_panel(p, scale) for p in panels]
    if not tiles:
        raise ValueError("grid_png needs at least one panel")
    tile_w = max(t.width for t in tiles)
    tile_h = max(t.height for t in tiles)
    rows = -(-len(tiles) // columns)
    sheet = Image.new("RGBA", (tile_w * min(columns, len(tiles)), tile_h * rows), BACKGROUND)
    for k, tile in enumerate(tiles):
        sheet.paste(tile, ((k % columns) * tile_w, (k // columns) * tile_h))
    return png_bytes(sheet)


def png_bytes(image: Image.Image) -> bytes:
    """An image encoded as PNG (fast zlib level: these images are small and short-lived)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def strip_png(images: Sequence[np.ndarray], labels: Sequence[str], cmap: str,
              limits: Sequence[tuple[float, float]], columns: int = 4, scale: int = 1) -> bytes:
    """Small maps in rows of ``columns``, each with a caption under it (no colourbar): a
    gallery of neighbours or a latent traversal as one PNG. Row 0 of each map at the
    bottom, NaN pixels transparent."""
    if not images:
        raise ValueError("strip_png needs at least one image")
    height, width = np.shape(images[0])
    tile_w, tile_h = width * scale + 2 * MARGIN, height * scale + LABEL_HEIGHT + 4
    rows = -(-len(images) // columns)
    sheet = Image.new("RGBA", (tile_w * min(columns, len(images)), tile_h * rows), (255, 255, 255, 0))
    draw = ImageDraw.Draw(sheet)
    for k, (image, label, lim) in enumerate(zip(images, labels, limits)):
        x, y = (k % columns) * tile_w + MARGIN, (k // columns) * tile_h
        sheet.paste(Image.fromarray(colourise(image, cmap, lim, scale, blank=(0, 0, 0, 0))), (x, y))
        draw.text((x, y + height * scale + 2), _fit(label, tile_w - MARGIN), fill=TEXT_COLOUR, font=_font())
    return png_bytes(sheet)
