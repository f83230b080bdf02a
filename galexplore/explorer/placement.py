"""Which labels of markers on a plot can be drawn without overlapping one another."""

from __future__ import annotations

import numpy as np

#: Approximate width of one character of the map's label font, in screen pixels.
CHAR_PX = 6.5
LABEL_HEIGHT_PX = 13.0


def visible_labels(x_px: np.ndarray, y_px: np.ndarray, texts: list[str], inside: np.ndarray | None = None,
                   gap_px: float = 2.0) -> np.ndarray:
    """Boolean mask of the labels that can be drawn, in order of priority (first wins).

    Each label occupies a box starting just right of its point, ``CHAR_PX`` per character
    wide and `LABEL_HEIGHT_PX` high; a label is drawn when its box overlaps no box drawn
    before it. ``inside``: points outside the plot are never labelled.
    """
    x_px, y_px = np.asarray(x_px, dtype=float), np.asarray(y_px, dtype=float)
    keep = np.zeros(len(texts), dtype=bool)
    boxes: list[tuple[float, float, float, float]] = []
    for k, text in enumerate(texts):
        if (inside is not None and not inside[k]) or not (np.isfinite(x_px[k]) and np.isfinite(y_px[k])):
            continue
        box = (x_px[k] + 6.0, x_px[k] + 6.0 + CHAR_PX * len(text), y_px[k] - LABEL_HEIGHT_PX / 2,
               y_px[k] + LABEL_HEIGHT_PX / 2)
        if all(box[1] + gap_px < b[0] or b[1] + gap_px < box[0] or box[3] + gap_px < b[2] or b[3] + gap_px < box[2]
               for b in boxes):
            boxes.append(box)
            keep[k] = True
    return keep
