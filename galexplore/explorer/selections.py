"""Selections in the latent map: filters, lasso and box gestures combined by mode, clicks,
and named selections kept per user or shared on purpose.

Everything works on row positions of a `Bundle`'s table; the saved form uses catalogue
ids, so a selection outlives a model switch on the same dataset.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from galexplore.analysis.selection import MODES, NamedSelections
from galexplore.errors import ColumnError, ParameterError, SelectionError
from galexplore.explorer.bundles import Bundle

#: Where a named selection lives: only its user sees "mine"; everyone sees "shared".
PRIVATE, SHARED = "mine", "shared"
#: A browser's user token: letters, digits and '-' (a UUID, as the page makes it).
_TOKEN = re.compile(r"[A-Za-z0-9-]{16,64}")


@dataclass(frozen=True)
class Selection:
    """Selected rows (sorted), the last lasso or box outline, and the steps that made it.

    ``history`` steps are dicts with ``mode``, ``projection`` (its two columns),
    ``filters`` and ``polygon`` or ``box`` in data units, as saved with named selections
    and written to an export's provenance.
    """

    rows: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    polygon: np.ndarray | None = None
    history: tuple[dict, ...] = ()

    @property
    def size(self) -> int:
        return int(self.rows.size)


def visible_mask(bundle: Bundle, filters: dict[str, tuple[float, float]]) -> np.ndarray | None:
    """Rows passing every ``column: (low, high)`` filter (None when there are none)."""
    if not filters:
        return None
    mask = np.ones(bundle.n_maps, dtype=bool)
    for column, (low, high) in filters.items():
        if column not in bundle.columns:
            raise ColumnError(f"cannot filter on unknown column {column!r}")
        values = np.asarray(bundle.column(column), dtype=np.float64)
        mask &= (values >= low) & (values <= high)
    return mask


def check_filter(bundle: Bundle, column: str, low: float, high: float) -> tuple[float, float]:
    """The range ``(low, high)`` of a new filter, checked."""
    if column not in bundle.columns:
        raise ColumnError(f"cannot filter on unknown column {column!r}; choose one from the list")
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ParameterError(f"filter on {column}: the limits must be finite numbers")
    if not low <= high:
        raise ParameterError(f"filter on {column}: low {low} is above high {high}; swap them")
    return float(low), float(high)


def _combine(bundle: Bundle, current: Selection, mask: np.ndarray, mode: str,
             filters: dict, steps: list[dict], polygon: np.ndarray | None) -> Selection:
    if mode not in MODES:
        raise ParameterError(f"unknown selection mode {mode!r}; use one of {', '.join(MODES)}")
    visible = visible_mask(bundle, filters)
    if visible is not None:
        mask = mask & visible
    chosen = np.zeros(bundle.n_maps, dtype=bool)
    chosen[current.rows] = True
    combined = {"new": mask, "add": chosen | mask, "subtract": chosen & ~mask, "intersect": chosen & mask}[mode]
    history = tuple(steps) if mode == "new" else (*current.history, *steps)
    return Selection(np.flatnonzero(combined).astype(np.int64), polygon, history)


def _step(bundle: Bundle, projection: str, mode: str, filters: dict, **shape) -> dict:
    return {"mode": mode, "projection": list(bundle.axes(projection)),
            "filters": {k: list(v) for k, v in filters.items()}, **shape}


def lasso(bundle: Bundle, projection: str, current: Selection, polygon, mode: str = "new",
          filters: dict | None = None) -> Selection:
    """Combine the visible rows inside ``polygon`` ((n, 2) vertices in data units) with
    ``current`` by ``mode`` (exact test: `galexplore.analysis.selection.PointIndex`)."""
    polygon = np.asarray(polygon, dtype=np.float64)
    if polygon.ndim != 2 or polygon.shape[1] != 2 or len(polygon) < 3 or not np.isfinite(polygon).all():
        raise SelectionError("a lasso needs at least three finite vertices; draw a larger shape")
    filters = filters or {}
    mask = bundle.point_index(projection).select_polygon(polygon)
    step = _step(bundle, projection, mode, filters, polygon=polygon.tolist())
    return _combine(bundle, current, mask, mode, filters, [step], polygon)


def box(bundle: Bundle, projection: str, current: Selection, x0: float, y0: float, x1: float, y1: float,
        mode: str = "new", filters: dict | None = None) -> Selection:
    """Combine the visible rows inside the closed box with ``current`` by ``mode``."""
    if not np.isfinite([x0, y0, x1, y1]).all():
        raise SelectionError("the box has a corner outside the plot; draw it again")
    filters = filters or {}
    mask = bundle.point_index(projection).select_box(x0, x1, y0, y1)
    outline = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)
    step = _step(bundle, projection, mode, filters, box=[x0, x1, y0, y1])
    return _combine(bundle, current, mask, mode, filters, [step], outline)


def nearest_visible(bundle: Bundle, projection: str, x: float, y: float, x_range=None, y_range=None,
                    filters: dict | None = None) -> int | None:
    """Row of the visible galaxy nearest on screen to a click at (x, y), or None when no
    galaxy is visible. ``x_range``/``y_range`` are the plot's visible ranges, so that
    "nearest" is measured in fractions of the plot's width and height."""
    index = bundle.point_index(projection)
    visible = visible_mask(bundle, filters or {})
    if visible is None:
        rows = index.nearest(x, y, k=1, x_range=x_range, y_range=y_range)
        return int(rows[0]) if rows.size else None
    if not visible.any():
        return None
    k = 1
    while True:  # widen until a visible galaxy is among the k nearest
        rows = index.nearest(x, y, k=k, x_range=x_range, y_range=y_range)
        hits = rows[visible[rows]]
        if hits.size:
            return int(hits[0])
        if k >= index.n_finite:
            return None
        k = min(4 * k, index.n_finite)


def row_of_id(bundle: Bundle, galaxy_id: int) -> int:
    """Table row of a catalogue id (SelectionError when it is not in the table)."""
    rows = np.flatnonzero(bundle.column("id") == galaxy_id)
    if rows.size == 0:
        raise SelectionError(f"no galaxy with id {galaxy_id} in this dataset")
    return int(rows[0])


def restore(bundle: Bundle, current: Selection, saved, mode: str = "new") -> tuple[Selection, int]:
    """Combine a `NamedSelection` with ``current``; returns the selection and how many of
    its ids are not in this table (skipped)."""
    mask = np.isin(bundle.column("id"), saved.ids)
    missing = int(len(saved.ids) - mask.sum())
    steps = [{**step, "restored_from": saved.name} for step in saved.history]
    return _combine(bundle, current, mask, mode, {}, steps, None), missing


def user_key(token: str | None) -> str | None:
    """A directory name for a browser's user token (None for a missing or malformed token)."""
    if not token or not _TOKEN.fullmatch(token):
        return None
    return hashlib.sha256(token.encode()).hexdigest()[:24]


class SelectionStore:
    """Named selections of one user, and the shared ones.

    The explorer has no accounts: a user is a browser profile, identified by a random token
    the page keeps in the browser's local storage. A selection saved as "mine" lives under
    ``root/users/<hash of the token>`` and only that browser lists it; one saved as
    "shared" lives under ``root/shared`` and every user of the server sees it.

    Parameters
    ----------
    root : directory holding every user's selections.
    token : the browser's token; None (before the page has sent it) stores nothing as "mine".
    """

    def __init__(self, root: str | Path, token: str | None = None):
        self.root = Path(root)
        self.token = token
        key = user_key(token)
        self._stores = {SHARED: NamedSelections(self.root / "shared")}
        if key is not None:
            self._stores[PRIVATE] = NamedSelections(self.root / "users" / key)

    def _store(self, scope: str) -> NamedSelections:
        if scope not in (PRIVATE, SHARED):
            raise ParameterError(f"unknown selection scope {scope!r}; use {PRIVATE!r} or {SHARED!r}")
        if scope not in self._stores:
            raise SelectionError("this page has not identified its browser yet; reload it, or save the "
                                 "selection as shared")
        return self._stores[scope]

    def entries(self) -> list[tuple[str, str]]:
        """(scope, name) of every selection this user can load: theirs first, then shared ones."""
        return [(scope, name) for scope in (PRIVATE, SHARED) if scope in self._stores
                for name in self._stores[scope].names()]

    def save(self, name: str, ids, history=(), *, scope: str = PRIVATE, dataset_fingerprint: str | None = None,
             overwrite: bool = False) -> Path:
        return self._store(scope).save(name, ids, history, dataset_fingerprint=dataset_fingerprint,
                                       overwrite=overwrite)

    def load(self, name: str, scope: str = PRIVATE):
        return self._store(scope).load(name)
