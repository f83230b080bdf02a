"""The Boundaries tab: retrain the Dawson et al. (2020) boundary at any threshold or fit a
classifier, in seconds and off the event loop (`galexplore.explorer.boundaries`). The fit is
drawn on the latent map, its predictions become the columns ``pred_class_user`` and
``proba_user`` of the session's table, and it can be saved into a copy of the model."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import panel as pn
import param

from galexplore.errors import ParameterError
from galexplore.explorer import boundaries as bounds
from galexplore.explorer.bundles import latent_columns
from galexplore.ui import figures
from galexplore.ui.feedback import rule, busy
from galexplore.ui.state import FittedBoundary, Messages, SelectionState
from galexplore.ui.text import literal


def metrics_markdown(fit: bounds.BoundaryFit | None) -> str:
    """The fit's metrics as Markdown (confusion matrix rows = true class)."""
    if fit is None:
        return "No boundary fitted in this session yet."
    cm = fit.confusion
    lines = [f"**{literal(fit.method)}** on {literal(', '.join(fit.features))}; labels: {literal(fit.labels)}", "",
             f"Class 0: {fit.n_per_class[0]:,} maps, class 1: {fit.n_per_class[1]:,}", ""]
    if fit.position is not None:
        lines += [f"**TP = TN crossing:** r = {fit.position:.4g} ± {fit.uncertainty:.2g} (bootstrap)", ""]
    lines += [f"**Mean recall:** {fit.mean_recall:.3f} ({literal(fit.metrics_note)})", "",
              "| true \\\\ predicted | 0 | 1 |", "|---|---|---|",
              f"| 0 | {cm[0, 0]:.3f} | {cm[0, 1]:.3f} |", f"| 1 | {cm[1, 0]:.3f} | {cm[1, 1]:.3f} |", "",
              f"Predictions are in the column {bounds.PRED_COLUMN}"
              + (f" and the probability in {bounds.PROBA_COLUMN}" if fit.probability is not None else "")
              + f" (colour the map by them; exports include them). Fit: {fit.fit_seconds:.2f} s."]
    if fit.method != bounds.VERTICAL and fit.projection is None:
        lines.append("Fitted on the full latent vectors: no line to draw; colour the map by the probability.")
    return "\n".join(lines)


class BoundaryView(pn.viewable.Viewer):
    """Settings, marks, metrics and saving of the session's boundary."""

    selection = param.ClassSelector(class_=SelectionState)
    boundary = param.ClassSelector(class_=FittedBoundary)
    messages = param.ClassSelector(class_=Messages)
    models_dir = param.Parameter()
    method = param.Selector(objects=list(bounds.METHODS), default=next(iter(bounds.METHODS)))
    features = param.Selector(objects=list(bounds.FEATURES), default=bounds.FEATURES[0])
    label_source = param.Selector(objects=list(bounds.LABEL_SOURCES), default=bounds.LABEL_SOURCES[0])
    label_column = param.Selector(objects=[], doc="catalogue column thresholded into two classes")
    threshold = param.Number(default=0.5, doc="class 1: label_column > threshold (in the column's units)")

    def __init__(self, **params):
        super().__init__(**params)
        self.fit_button = pn.widgets.Button(label="Fit boundary", color="primary")
        self.fit_button.on_click(self._on_fit)
        self.mark_buttons = {which: pn.widgets.Button(label=f"Mark selection as class {which}") for which in "AB"}
        self.unmark_button = pn.widgets.Button(label="Clear marks of selection")
        self.clear_button = pn.widgets.Button(label="Clear all marks")
        for which, button in [*self.mark_buttons.items(), ("clear", self.unmark_button)]:
            button.on_click(lambda event, which=which: self._mark(which))
        self.clear_button.on_click(lambda event: self._clear_marks())
        self.save_name = pn.widgets.TextInput(label="Save into a copy of the model named", placeholder="my-boundary")
        self.save_button = pn.widgets.Button(label="Save boundary with model card")
        self.save_button.on_click(self._on_save)
        # panes made once and updated (replacing panes in a served page loses their style sheets)
        self.metrics = pn.pane.Markdown(metrics_markdown(None), css_classes=["boundary-metrics"], width=520)
        self.rates = pn.pane.Bokeh(None, visible=False)
        self.results = pn.Column(self.metrics, self.rates)
        self._follow_bundle()

    @property
    def bundle(self):
        return self.selection.map.bundle

    @param.depends("selection.map.source.bundle", watch=True)
    def _follow_bundle(self) -> None:
        columns = [c for c in self.bundle.numeric_columns if c not in (bounds.PRED_COLUMN, bounds.PROBA_COLUMN)]
        self.param.label_column.objects = columns
        if self.label_column not in columns:
            self.param.update(label_column="kappa" if "kappa" in columns else (columns[0] if columns else None),
                              threshold=self.bundle.kappa_threshold)

    def _mark(self, which: str) -> None:
        ids = self.bundle.column("id")[self.selection.rows]
        self.boundary.marks.mark(ids, which)
        self.boundary.marks_changed = True

    def _clear_marks(self) -> None:
        self.boundary.marks.clear()
        self.boundary.marks_changed = True

    def _request(self):
        """What to fit: (method, features, rows, labels, description, projection, column, threshold)."""
        bundle = self.bundle
        if self.label_source == bounds.LABEL_SOURCES[1]:
            rows, labels = self.boundary.marks.labelled(bundle)
            text, column, threshold = "user marks: A = 1, B = 0", None, None
        else:
            if not np.isfinite(self.threshold):
                raise ParameterError("the threshold must be a finite number")
            rows, labels, text = bounds.labelled_by_threshold(bundle, self.label_column, self.threshold)
            column, threshold = self.label_column, self.threshold
        if self.features == bounds.FEATURES[1]:
            features, projection = latent_columns(bundle.columns), None
        else:
            features, projection = list(self.selection.map.axes), self.selection.map.projection
        return bounds.METHODS[self.method], features, rows, labels, text, projection, column, threshold

    async def _on_fit(self, event) -> None:
        bundle, request = self.bundle, self._request()
        with busy(self.results):
            self.fit_button.disabled = True
            try:
                fit = await asyncio.to_thread(bounds.fit_on_bundle, bundle, *request)
            finally:
                self.fit_button.disabled = False
        source = self.selection.map.source
        if not source.is_current(bundle):
            self.messages.notify("the boundary was fitted on the previous model's table and was not applied; "
                                 "fit it again", "warning")
            return
        columns, drop = bounds.prediction_columns(fit)
        self.boundary.fit = fit
        source.bundle = source.bundle.with_columns(columns, drop=drop)
        self.metrics.object = metrics_markdown(fit)
        self.rates.param.update(object=figures.boundary_rates_figure(fit.curves, fit.position)
                                if fit.curves is not None else None, visible=fit.curves is not None)
        self.messages.notify(f"boundary fitted in {fit.fit_seconds:.1f} s: mean recall {fit.mean_recall:.3f}",
                             "success")

    async def _on_save(self, event) -> None:
        fit, model = self.boundary.fit, self.bundle.model
        if fit is None:
            raise ParameterError("fit a boundary before saving it")
        name = self.save_name.value.strip() or f"{model.name}-boundary-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"
        path = await asyncio.to_thread(bounds.save_boundary_copy, model.path, fit, self.models_dir, name)
        self.messages.notify(f"saved a copy of the model with this boundary as {path.name} (in your models); "
                             "open it from the Model list", "success")

    def _counts_text(self, *_) -> str:
        a, b = self.boundary.marks.counts(self.bundle)
        return f"**Marked:** class A {a:,}, class B {b:,}"

    def __panel__(self):
        settings = pn.Column(
            pn.widgets.Select.from_param(self.param.method, label="Boundary"),
            pn.widgets.RadioButtonGroup.from_param(self.param.features),
            pn.widgets.RadioBoxGroup.from_param(self.param.label_source),
            pn.widgets.Select.from_param(self.param.label_column, label="Label column"),
            pn.widgets.FloatInput.from_param(self.param.threshold, label="Threshold (class 1 above)"),
            self.fit_button,
            rule(),
            pn.Row(*self.mark_buttons.values()), pn.Row(self.unmark_button, self.clear_button),
            pn.pane.Markdown(pn.bind(self._counts_text, self.boundary.param.marks_changed,
                                     self.selection.map.source.param.bundle), css_classes=["mark-counts"]),
            rule(),
            self.save_name, self.save_button, width=420,
        )
        return pn.Row(settings, self.results, name="Boundaries")
