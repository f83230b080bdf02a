"""Colormaps and default colour ranges for catalogue and embedding columns.

Kappa is shown on its natural 0..1 range, angles (position angles) with a cyclic
colormap on 0..360 deg, latent coordinates with a diverging map, everything else with a
perceptually uniform rainbow whose ends are dark enough to show on the white map.
"""

from __future__ import annotations

import colorcet as cc
import numpy as np

#: Colormaps offered in the sidebar: name -> list of hex colours (Bokeh palettes).
COLORMAPS: dict[str, list[str]] = {
    "rainbow (perceptual)": list(cc.palette["rainbow4"]),
    "fire": list(cc.palette["fire"]),
    "bgy": list(cc.palette["bgy"]),
    "bmy": list(cc.palette["bmy"]),
    "kbc": list(cc.palette["kbc"]),
    "gray": list(cc.palette["gray"]),
    "coolwarm (diverging)": list(cc.palette["coolwarm"]),
    "colorwheel (cyclic)": list(cc.palette["colorwheel"]),
    "CET_C2 (cyclic)": list(cc.palette["CET_C2"]),
}
AUTO = "auto"
SELECTION_COLOUR = "#ff2bd6"
MARKER_COLOUR = "#00b8d4"
#: The model card's kappa boundary (dashed) and the boundary fitted in the session (solid).
MODEL_BOUNDARY_COLOUR = "#222222"
FITTED_BOUNDARY_COLOUR = "#ff7f0e"


def is_angle(column: str) -> bool:
    """True for position-angle columns (degrees east of north, cyclic on [0, 360))."""
    name = column.lower()
    return name == "pa" or name.startswith("pa_") or name.endswith("_pa") or "_pa_" in name


def is_kappa(column: str) -> bool:
    """True for circularity (kappa) columns, whose natural range is 0..1."""
    return "kappa" in column.lower()


def default_colormap(column: str | None, density: bool = False) -> str:
    """The colormap name used when the user leaves the choice on 'auto'."""
    if density or column is None:
        return "fire"
    if is_angle(column):
        return "colorwheel (cyclic)"
    if column.startswith("latent_") or column.startswith("pca_"):
        return "coolwarm (diverging)"
    return "rainbow (perceptual)"  # no near-white end: every value shows on the white map


def default_range(column: str | None, values: np.ndarray | None = None) -> tuple[float, float] | None:
    """Natural colour range of a column: (0, 1) for kappa, (0, 360) for angles, else the
    1st-99th percentile of ``values`` (None when there are no finite values)."""
    if column is not None and is_kappa(column):
        return (0.0, 1.0)
    if column is not None and is_angle(column):
        return (0.0, 360.0)
    if values is None:
        return None
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return None
    lo, hi = np.percentile(finite, [1.0, 99.0])
    if column is not None and (column.startswith("latent_") or column.startswith("pca_")):
        bound = max(abs(lo), abs(hi))
        return (-float(bound), float(bound))
    if hi <= lo:
        hi = lo + 1.0
    return (float(lo), float(hi))
