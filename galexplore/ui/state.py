"""The state of one browser session, in four small parts that the views watch.

- `Messages`: the last error or notice shown under the title.
- `Source`: the `Bundle` explored (a parameter: every view follows it), the bundles to go
  back to, and what is being opened.
- `MapState`: projection, colouring, filters, imported markers and the clicked galaxy.
- `SelectionState`: the selection mode and the current `Selection`.

Gestures call the Panel-free application layer (`galexplore.explorer`); the states only keep
its results. Work started for one bundle is applied only while that bundle is still shown.
"""

from __future__ import annotations

import logging
import traceback

import numpy as np
import pandas as pd
import param

from galexplore.errors import GalexploreError, ParameterError
from galexplore.explorer import selections
from galexplore.explorer.bundles import Bundle
from galexplore.explorer.colours import AUTO, COLORMAPS, default_colormap, default_range
from galexplore.explorer.selections import Selection

DENSITY = "density (maps per pixel)"
LOG = logging.getLogger("galexplore.ui")


class Messages(param.Parameterized):
    """The last error or notice of the session."""

    text = param.String(default="")
    level = param.Selector(objects=["danger", "warning", "info", "success"], default="info")

    def notify(self, text: str, level: str = "info") -> None:
        self.param.update(text=text, level=level)

    def report(self, error: BaseException) -> None:
        """Show an error: a user error verbatim, anything else with its type (and its traceback
        in the server's log)."""
        if isinstance(error, GalexploreError):
            text = str(error)
        else:
            text = f"{type(error).__name__}: {error}"
            LOG.error("unexpected error in a session:\n%s", "".join(traceback.format_exception(error)))
        self.notify(text, "danger")


class Source(param.Parameterized):
    """Which bundle the session explores."""

    bundle = param.ClassSelector(class_=Bundle, doc="the dataset, model and table shown")
    previous = param.List(default=[], doc="bundles to go back to, the most recent last")
    loading = param.String(default="", doc="what is being opened ('' when nothing)")
    progress = param.Number(default=None, allow_None=True, doc="fraction done of what is being opened")

    def switch(self, bundle: Bundle, remember: bool = False) -> None:
        """Explore ``bundle``; with ``remember`` the current one can be gone back to."""
        previous = [*self.previous, self.bundle] if remember and self.bundle is not None else self.previous
        self.param.update(previous=previous, bundle=bundle)

    def back(self) -> Bundle:
        """Return to the bundle explored before the last remembered switch."""
        if not self.previous:
            raise ParameterError("there is no previous model to go back to in this session")
        *rest, last = self.previous
        self.param.update(previous=rest, bundle=last)
        return last

    def is_current(self, bundle: Bundle) -> bool:
        """Whether ``bundle`` (or a table derived from it) is what the session shows now."""
        return self.bundle is bundle or (self.bundle is not None and self.bundle._indices is bundle._indices)


class MapState(param.Parameterized):
    """What the latent map shows."""

    source = param.ClassSelector(class_=Source)
    projection = param.Selector(objects=[], doc="label of the projection shown")
    color_by = param.Selector(objects=[], doc=f"column that colours the map, or '{DENSITY}'")
    colormap = param.Selector(objects=[AUTO, *COLORMAPS], default=AUTO)
    color_range = param.Range(default=None, allow_None=True, doc="colour limits; None = natural range")
    filters = param.Dict(default={}, doc="column -> (low, high): rows outside any range are hidden")
    clicked = param.Integer(default=None, allow_None=True, doc="row of the galaxy in the detail view")
    markers = param.DataFrame(default=None, allow_None=True, doc="imported galaxies and their projections")
    reset = param.Event(doc="show the whole projection again")

    def __init__(self, **params):
        super().__init__(**params)
        self._follow_bundle()

    @param.depends("source.bundle", watch=True)
    def _follow_bundle(self) -> None:
        bundle = self.source.bundle
        projections = list(bundle.projections)
        if not projections:
            raise GalexploreError("the embedding has no projection columns (latent_*, pca_*, folded_*, umap_*); "
                                  "recompute it with `galexplore embed MODEL DATASET --force`")
        colours = [DENSITY, *bundle.numeric_columns]
        projection = self.projection if self.projection in projections else projections[0]
        colour = self.color_by if self.color_by in colours else ("kappa" if "kappa" in colours else DENSITY)
        with param.parameterized.batch_call_watchers(self):
            self.param.projection.objects = projections
            self.param.color_by.objects = colours
            self.param.update(
                projection=projection, color_by=colour,
                filters={k: v for k, v in self.filters.items() if k in bundle.columns},
                clicked=self.clicked if self.clicked is not None and self.clicked < bundle.n_maps else None)

    @property
    def bundle(self) -> Bundle:
        return self.source.bundle

    @property
    def density(self) -> bool:
        return self.color_by == DENSITY

    @property
    def axes(self) -> tuple[str, str]:
        return self.bundle.axes(self.projection)

    def visible_mask(self) -> np.ndarray | None:
        return selections.visible_mask(self.bundle, self.filters)

    def set_filter(self, column: str, low: float, high: float) -> None:
        self.filters = {**self.filters, column: selections.check_filter(self.bundle, column, low, high)}

    def colour_values(self) -> np.ndarray | None:
        return None if self.density else self.bundle.column(self.color_by)

    def colour_label(self) -> str:
        return "maps per pixel" if self.density else self.bundle.label(self.color_by)

    def effective_colormap(self) -> list[str]:
        name = default_colormap(None if self.density else self.color_by, self.density) \
            if self.colormap == AUTO else self.colormap
        return COLORMAPS[name]

    def effective_range(self) -> tuple[float, float] | None:
        """The colour limits: the user's, else the column's natural range (None: the data's)."""
        if self.color_range is not None:
            return tuple(self.color_range)
        if self.density:
            return None
        return default_range(self.color_by, self.colour_values())

    def show_id(self, galaxy_id: int) -> int:
        """Show the galaxy with catalogue id ``galaxy_id`` in the detail view; returns its row."""
        self.clicked = selections.row_of_id(self.bundle, galaxy_id)
        return self.clicked


class SelectionState(param.Parameterized):
    """The selection and how new gestures combine with it."""

    map = param.ClassSelector(class_=MapState)
    mode = param.Selector(objects=list(selections.MODES), default="new")
    current = param.ClassSelector(class_=Selection, default=Selection())

    def __init__(self, **params):
        super().__init__(**params)
        self._dataset = self._dataset_of(self.map.bundle)

    @staticmethod
    def _dataset_of(bundle: Bundle):
        return None if bundle.dataset is None else bundle.dataset.fingerprint

    @param.depends("map.source.bundle", watch=True)
    def _follow_bundle(self) -> None:
        """Another model on the same dataset keeps the selected rows (not the outline, drawn in
        the old model's coordinates); another dataset clears the selection."""
        dataset = self._dataset_of(self.map.bundle)
        if dataset != self._dataset:
            self.current = Selection()
        elif self.current.polygon is not None:
            self.current = Selection(self.current.rows, None, self.current.history)
        self._dataset = dataset

    @property
    def rows(self) -> np.ndarray:
        return self.current.rows

    def lasso(self, polygon) -> Selection:
        m = self.map
        self.current = selections.lasso(m.bundle, m.projection, self.current, polygon, self.mode, m.filters)
        return self.current

    def box(self, x0: float, y0: float, x1: float, y1: float) -> Selection:
        m = self.map
        self.current = selections.box(m.bundle, m.projection, self.current, x0, y0, x1, y1, self.mode, m.filters)
        return self.current

    def clear(self) -> None:
        self.current = Selection()

    def restore(self, saved) -> int:
        """Combine a saved selection with the current one by mode; returns the ids skipped."""
        self.current, missing = selections.restore(self.map.bundle, self.current, saved, self.mode)
        return missing

    def selected_table(self) -> pd.DataFrame:
        return self.map.bundle.frame(rows=self.rows)


class FittedBoundary(param.Parameterized):
    """The boundary fitted in this session and the galaxies marked as class A or B. A fit
    belongs to the model it was made on: another model clears it (marks, by id, stay)."""

    source = param.ClassSelector(class_=Source)
    fit = param.Parameter(default=None, doc="the session's BoundaryFit, or None")
    marks_changed = param.Event(doc="the marks changed")

    def __init__(self, **params):
        from galexplore.explorer.boundaries import Marks

        super().__init__(**params)
        self.marks = Marks()
        self._fitted_on = self.source.bundle._indices

    @param.depends("source.bundle", watch=True)
    def _follow_bundle(self) -> None:
        if self.source.bundle._indices is not self._fitted_on:
            self._fitted_on = self.source.bundle._indices
            self.fit = None
