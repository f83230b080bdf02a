"""The state of one browser session of the explorer.

`ExplorerState` holds what the user has chosen (dataset, model, projection, colouring,
filters, selection, clicked galaxy) and turns user gestures (lasso, box, click, export)
into calls to the core packages. Views read it and never touch files or torch themselves.
"""

from __future__ import annotations

import datetime as _dt
import os
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import param

from galexplore.errors import GalexploreError, ParameterError, SelectionError
from galexplore.ui.bundle import Bundle, load_bundle
from galexplore.ui.colours import AUTO, COLORMAPS, default_colormap, default_range

DENSITY = "density (counts)"
SELECTION_MODES = ["new", "add", "subtract", "intersect"]


class ExplorerState(param.Parameterized):
    """Everything one session of the explorer has chosen, and the gestures that change it.

    Parameters
    ----------
    bundle : the (dataset, model, table) being explored; see `galexplore.ui.bundle`.
    allowed_dirs : directories the user configured; only files below them can be opened
        from the page (uploads are handled in memory and always allowed).
    """

    projection = param.Selector(objects=[], doc="label of the projection shown in the latent map")
    color_by = param.Selector(objects=[], doc=f"column that colours the map, or '{DENSITY}'")
    colormap = param.Selector(objects=[AUTO, *COLORMAPS], default=AUTO)
    color_range = param.Range(default=None, allow_None=True, doc="colour limits; None = natural range")
    filters = param.Dict(default={}, doc="column -> (low, high): rows outside any range are hidden")
    selection_mode = param.Selector(objects=SELECTION_MODES, default="new")
    selection = param.Array(default=np.empty(0, dtype=np.int64), doc="selected row indices, sorted")
    polygon = param.Array(default=None, allow_None=True, doc="last lasso polygon (n, 2) in plot coordinates")
    clicked_row = param.Integer(default=None, allow_None=True, doc="row of the galaxy in the detail view")
    markers = param.DataFrame(default=None, allow_None=True,
                              doc="imported galaxies: name, latent and projection columns, neighbours")
    message = param.String(default="", doc="last error or notice shown to the user")
    message_level = param.Selector(objects=["danger", "warning", "info", "success"], default="info")
    bundle_version = param.Integer(default=0, doc="bumped whenever a new bundle is loaded")
    saved_version = param.Integer(default=0, doc="bumped whenever a named selection is saved")

    def __init__(self, bundle: Bundle, allowed_dirs: list[str | os.PathLike] | None = None,
                 selections_dir: str | os.PathLike | None = None, **params):
        from galexplore.analysis.selection import NamedSelections
        from galexplore.paths import data_dir

        super().__init__(**params)
        self.allowed_dirs = [Path(d).resolve() for d in (allowed_dirs or [])]
        self._store = NamedSelections(selections_dir or data_dir() / "selections")
        self.history: list[dict] = []
        self.previous_bundles: list[Bundle] = []
        self.set_bundle(bundle)

    # ------------------------------------------------------------------ loading
    def set_bundle(self, bundle: Bundle) -> None:
        """Explore another (dataset, model) bundle; the selection, filters and markers are reset."""
        self.bundle = bundle
        projections = list(bundle.projections)
        if not projections:
            raise GalexploreError("the embedding has no projection columns (latent_*, pca_*, folded_*, umap_*); "
                                  "recompute it with `galexplore embed MODEL DATASET --force`")
        colour_columns = [DENSITY, *bundle.numeric_columns]
        default_projection = "folded (r, h)" if "folded (r, h)" in projections else projections[0]
        default_colour = "kappa" if "kappa" in colour_columns else DENSITY
        with param.parameterized.batch_call_watchers(self):
            self.param.projection.objects = projections
            self.param.color_by.objects = colour_columns
            self.projection = default_projection
            self.color_by = default_colour
            self.filters = {}
            self.selection = np.empty(0, dtype=np.int64)
            self.polygon = None
            self.clicked_row = None
            self.markers = None
            self.color_range = None
            self.history = []
            self.bundle_version += 1

    def swap_model(self, bundle: Bundle) -> None:
        """Explore ``bundle`` (e.g. a model just trained) and remember the current one for
        `back_to_previous_model`."""
        self.previous_bundles.append(self.bundle)
        self.set_bundle(bundle)

    def back_to_previous_model(self) -> Bundle:
        """Return to the bundle explored before the last `swap_model`; returns it."""
        if not self.previous_bundles:
            raise ParameterError("there is no previous model to go back to in this session")
        self.set_bundle(self.previous_bundles.pop())
        return self.bundle

    def set_columns(self, columns: dict[str, np.ndarray], units: dict[str, str] | None = None,
                    drop: tuple[str, ...] = ()) -> None:
        """Add or replace per-row columns (e.g. a boundary's predictions) in this session's table
        only, dropping the columns ``drop``; the selection, filters and view are kept.

        The shared bundle is not modified: the session gets a copy whose table has the new
        columns (pandas copy-on-write shares the unchanged ones) and the same spatial indices.
        """
        import dataclasses

        protected = {c for pair in self.bundle.projections.values() for c in pair} | {"id"}
        clash = sorted(protected & (set(columns) | set(drop)))
        if clash:
            raise ParameterError(f"columns {clash} hold the projections or ids and cannot be replaced; "
                                 "choose other column names")
        table = self.table.drop(columns=[c for c in drop if c in self.table.columns])
        table = table.assign(**{name: np.asarray(values) for name, values in columns.items()})
        units = {**{c: u for c, u in self.units.items() if c in table.columns}, **{c: "" for c in columns},
                 **(units or {})}
        self.bundle = dataclasses.replace(self.bundle, table=table, column_units=units)
        with param.parameterized.batch_call_watchers(self):
            self.param.color_by.objects = [DENSITY, *self.bundle.numeric_columns]
            if self.color_by not in self.param.color_by.objects:
                self.color_by = DENSITY
            self.filters = {k: v for k, v in self.filters.items() if k in table.columns}
            self.bundle_version += 1

    def load(self, dataset: str | os.PathLike, model: str | os.PathLike,
             progress_callback: Callable[[int, int], None] | None = None) -> None:
        """Switch to another dataset and model (paths must lie under `allowed_dirs`)."""
        self.check_allowed(dataset)
        if os.sep in str(model) or Path(model).exists():
            self.check_allowed(model)
        self.set_bundle(load_bundle(dataset, model, progress_callback=progress_callback))

    def check_allowed(self, path: str | os.PathLike) -> Path:
        """``path`` resolved, if it lies under one of the configured directories
        (see `galexplore.explorer.access.confine`)."""
        from galexplore.explorer.access import confine

        return confine(path, self.allowed_dirs)

    # ------------------------------------------------------------------ table views
    @property
    def table(self) -> pd.DataFrame:
        return self.bundle.table

    @property
    def units(self) -> dict[str, str]:
        return self.bundle.column_units

    @property
    def density(self) -> bool:
        return self.color_by == DENSITY

    def xy(self) -> tuple[np.ndarray, np.ndarray]:
        """Coordinates of every row in the current projection."""
        return self.bundle.xy(self.projection)

    @property
    def axis_columns(self) -> tuple[str, str]:
        return self.bundle.projections[self.projection]

    def visible_mask(self) -> np.ndarray | None:
        """Boolean mask of rows that pass every filter (None when there are no filters)."""
        if not self.filters:
            return None
        mask = np.ones(len(self.table), dtype=bool)
        for column, (low, high) in self.filters.items():
            values = self.table[column].to_numpy(dtype=np.float64)
            mask &= (values >= low) & (values <= high)
        return mask

    def visible_rows(self) -> np.ndarray:
        mask = self.visible_mask()
        return np.arange(len(self.table)) if mask is None else np.flatnonzero(mask)

    def set_filter(self, column: str, low: float, high: float) -> None:
        """Show only rows with ``low <= column <= high`` (in the column's units)."""
        if column not in self.table.columns:
            raise GalexploreError(f"cannot filter on unknown column {column!r}")
        if not low <= high:
            raise ParameterError(f"filter on {column}: low {low} is above high {high}; swap them")
        self.filters = {**self.filters, column: (float(low), float(high))}

    def clear_filter(self, column: str) -> None:
        self.filters = {k: v for k, v in self.filters.items() if k != column}

    def colour_values(self) -> np.ndarray | None:
        return None if self.density else self.table[self.color_by].to_numpy(dtype=np.float64)

    def effective_colormap(self) -> list[str]:
        name = default_colormap(None if self.density else self.color_by, self.density) \
            if self.colormap == AUTO else self.colormap
        return COLORMAPS[name]

    def effective_range(self) -> tuple[float, float] | None:
        """The colour limits: the user's, else the column's natural range (None = auto)."""
        if self.color_range is not None:
            return tuple(self.color_range)
        if self.density:
            return None
        return default_range(self.color_by, self.colour_values())

    # ------------------------------------------------------------------ selection
    def _apply(self, mask: np.ndarray, steps: list[dict]) -> np.ndarray:
        """Combine a boolean mask of new rows (restricted to visible rows) with the selection
        and record the gesture ``steps`` (lasso/box history saved with named selections).

        Combined as boolean masks (O(N), no sorting), the same sets as
        `galexplore.analysis.selection.combine` gives for sorted row arrays."""
        visible = self.visible_mask()
        if visible is not None:
            mask = mask & visible
        current = np.zeros(len(self.table), dtype=bool)
        current[self.selection] = True
        combined = {"new": mask, "add": current | mask, "subtract": current & ~mask,
                    "intersect": current & mask}[self.selection_mode]
        self.history = steps if self.selection_mode == "new" else [*self.history, *steps]
        self.selection = np.flatnonzero(combined).astype(np.int64)
        return self.selection

    def _step(self, **shape) -> dict:
        return {"mode": self.selection_mode, "projection": list(self.axis_columns),
                "filters": {k: list(v) for k, v in self.filters.items()}, **shape}

    def select_polygon(self, polygon) -> np.ndarray:
        """Select the visible rows inside ``polygon`` ((n, 2) vertices in plot coordinates),
        combined with the current selection by `selection_mode`; returns the selected rows."""
        polygon = np.asarray(polygon, dtype=np.float64)
        if polygon.ndim != 2 or polygon.shape[1] != 2 or len(polygon) < 3:
            raise SelectionError("a lasso needs at least three vertices; draw a larger shape")
        mask = self.bundle.point_index(self.projection).select_polygon(polygon)
        with param.parameterized.batch_call_watchers(self):  # one redraw for outline and selection
            self.polygon = polygon
            return self._apply(mask, [self._step(polygon=polygon.tolist())])

    def select_box(self, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        """Select the visible rows inside the box (corners in plot coordinates), combined by
        `selection_mode`; returns the selected rows."""
        mask = self.bundle.point_index(self.projection).select_box(x0, x1, y0, y1)
        with param.parameterized.batch_call_watchers(self):  # one redraw for outline and selection
            self.polygon = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)
            return self._apply(mask, [self._step(box=[x0, x1, y0, y1])])

    def clear_selection(self) -> None:
        self.selection = np.empty(0, dtype=np.int64)
        self.polygon = None
        self.history = []

    def click(self, x: float, y: float, x_range=None, y_range=None) -> int:
        """Show the visible galaxy nearest on screen to a click at (x, y) in the detail view.

        ``x_range``/``y_range`` are the plot's visible ranges (so that "nearest" is measured
        in screen fractions); returns the row shown.
        """
        index = self.bundle.point_index(self.projection)
        visible = self.visible_mask()
        if visible is None:
            rows = index.nearest(x, y, 1, x_range=x_range, y_range=y_range)
        else:
            if not visible.any():
                raise SelectionError("every galaxy is hidden by the filters; widen or clear them")
            px, py = self.xy()
            sx = 1.0 / abs(x_range[1] - x_range[0]) if x_range is not None else 1.0
            sy = 1.0 / abs(y_range[1] - y_range[0]) if y_range is not None else 1.0
            candidates = np.flatnonzero(visible & np.isfinite(px) & np.isfinite(py))
            d2 = ((px[candidates] - x) * sx) ** 2 + ((py[candidates] - y) * sy) ** 2
            rows = candidates[np.argmin(d2)] if candidates.size else np.empty(0, dtype=np.int64)
        rows = np.atleast_1d(rows)
        if rows.size == 0:
            raise SelectionError("no galaxy has finite coordinates in this projection")
        self.clicked_row = int(rows[0])
        return self.clicked_row

    def show_id(self, galaxy_id: int) -> int:
        """Show the galaxy whose catalogue ``id`` is ``galaxy_id`` in the detail view."""
        rows = np.flatnonzero(self.table["id"].to_numpy() == int(galaxy_id))
        if rows.size == 0:
            raise SelectionError(f"no galaxy with id {galaxy_id} in this dataset")
        self.clicked_row = int(rows[0])
        return self.clicked_row

    def selected_table(self) -> pd.DataFrame:
        return self.table.iloc[self.selection]

    def saved_selection_names(self) -> list[str]:
        return self._store.names()

    def save_selection(self, name: str, overwrite: bool = False) -> Path:
        """Save the current selection (its ids and the lasso/box steps) under ``name``."""
        if self.selection.size == 0:
            raise SelectionError("the selection is empty; lasso some galaxies before saving")
        ids = self.table["id"].to_numpy()[self.selection]
        fingerprint = self.bundle.dataset.fingerprint if self.bundle.dataset is not None else None
        path = self._store.save(name.strip(), ids, self.history, dataset_fingerprint=fingerprint,
                                overwrite=overwrite)
        self.saved_version += 1
        return path

    def restore_selection(self, name: str) -> np.ndarray:
        """Combine the selection saved as ``name`` with the current one (by `selection_mode`)."""
        saved = self._store.load(name)
        mask = np.isin(self.table["id"].to_numpy(), saved.ids)
        if mask.sum() < len(saved.ids):
            self.notify(f"{len(saved.ids) - int(mask.sum())} of the {len(saved.ids)} saved ids are not in "
                        "this dataset and were skipped", "warning")
        self.polygon = None
        return self._apply(mask, [{**step, "restored_from": name} for step in saved.history])

    # ------------------------------------------------------------------ export
    def provenance(self) -> dict:
        """Where the exported rows come from (keys of `galexplore.export.PROVENANCE_KEYS` and more)."""
        b = self.bundle
        xcol, ycol = self.axis_columns
        return {
            "dataset_path": str(b.dataset.path) if b.dataset is not None else None,
            "dataset_fingerprint": b.dataset.fingerprint if b.dataset is not None else None,
            "model_name": b.model.name if b.model is not None else None,
            "model_path": str(b.model.path) if b.model is not None else None,
            "model_hash": b.model.hash if b.model is not None else None,
            "projection": {
                "name": self.projection, "x": xcol, "y": ycol,
                "pca": b.model.card.extras.get("pca") if b.model is not None else None,
                "boundary_folded_r": b.boundary_r(),
            },
            "lasso_polygon": None if self.polygon is None else self.polygon.tolist(),
            "filters": {k: list(v) for k, v in self.filters.items()},
            "selection_history": self.history,
            "n_selected": int(self.selection.size),
            "time_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }

    def export(self, path: str | os.PathLike) -> Path:
        """Write the selection as CSV with a provenance record beside it; returns the CSV path."""
        from galexplore.export import export_selection

        if self.selection.size == 0:
            raise SelectionError("nothing is selected; lasso or box-select galaxies before exporting")
        ids = self.table["id"].to_numpy()[self.selection]
        csv_path, _ = export_selection(self.table, ids, path, provenance=self.provenance())
        return Path(csv_path)

    # ------------------------------------------------------------------ messages
    def report(self, error: BaseException) -> None:
        """Show an error in the page; user errors verbatim, others with their type."""
        if isinstance(error, GalexploreError):
            text = str(error)
        else:
            text = f"{type(error).__name__}: {error}"
            traceback.print_exception(error)
        self.message_level = "danger"
        self.message = text

    def notify(self, text: str, level: str = "info") -> None:
        self.message_level = level
        self.message = text
