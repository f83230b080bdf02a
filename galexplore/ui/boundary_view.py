"""The Boundaries tab: retrain the Dawson et al. (2020) boundary or fit a classifier, in seconds.

Labels come from a catalogue column with a threshold (e.g. kappa > 0.5) or from the user's
own marks ("mark selection as class A / B"). The fitted boundary is drawn on the latent map
(the vertical line r = position in the folded plane, a circle in PCA 0 vs 1, or the
p = 0.5 contour of a classifier fitted on the shown projection), its metrics are shown, its
predictions become the session's ``pred_class_user`` and ``proba_user`` columns, and it can
be saved into a copy of the model's checkpoint under the user's models directory.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
import param

from galexplore.analysis.boundaries import CLASSIFIER_KINDS, ClassifierBoundary, VerticalBoundary
from galexplore.analysis.stats import confusion_matrix, mean_recall
from galexplore.errors import ColumnError, ParameterError
from galexplore.ui.bundle import latent_columns
from galexplore.ui.callbacks import guarded
from galexplore.ui.latent_view import boundary_path
from galexplore.ui.state import ExplorerState
from galexplore.ui.text import literal

VERTICAL = "vertical"
METHODS = {"Dawson vertical boundary (folded r)": VERTICAL, "logistic regression": "logistic",
           "linear SVM": "linear_svm", "gradient boosting": "gradient_boosting"}
FEATURES = ("current projection", "full latent vectors")
LABEL_SOURCES = ("catalogue column > threshold", "my marks (A = 1, B = 0)")
#: Class label of galaxies marked A / B; A is the positive class (1), like kappa > threshold.
CLASS_A, CLASS_B = 1, 0
PRED_COLUMN, PROBA_COLUMN = "pred_class_user", "proba_user"
#: Folds of the cross-validated metrics of a classifier (fewer members in a class: in-sample).
CV_FOLDS = 3
CONTOUR_GRID = 150
BOUNDARY_COLOUR = "#ff7f0e"


def labels_from_marks(n_rows: int, rows_a, rows_b) -> tuple[np.ndarray, np.ndarray]:
    """Rows and labels of the user's marks: class A -> 1, class B -> 0.

    A row marked both A and B is ambiguous and left out.

    Returns
    -------
    rows : ndarray (m,), sorted marked rows; labels : ndarray (m,) int8.
    """
    a = np.zeros(n_rows, dtype=bool)
    b = np.zeros(n_rows, dtype=bool)
    a[np.asarray(rows_a, dtype=np.int64)] = True
    b[np.asarray(rows_b, dtype=np.int64)] = True
    rows = np.flatnonzero(a ^ b)
    return rows, np.where(a[rows], CLASS_A, CLASS_B).astype(np.int8)


@dataclass
class BoundaryFit:
    """A fitted boundary, its metrics and its predictions for every row of the table.

    Attributes
    ----------
    method : "vertical" or a `ClassifierBoundary` kind.
    features : columns the boundary was fitted on.
    labels : how the labels were made (for the page and the card).
    projection : the projection it can be drawn in (None: full latent vectors).
    n_per_class : galaxies of class 0 and class 1 used in the fit.
    confusion : (2, 2) row-normalised confusion matrix, rows = true class 0, 1.
    mean_recall : mean of its diagonal.
    metrics_note : how the metrics were measured.
    predicted : (n,) int8 predicted class of every row (-1 where a feature is not finite).
    probability : (n,) probability of class 1 (None for the vertical boundary).
    position, uncertainty : TP = TN crossing in r and its bootstrap standard deviation.
    label_column, threshold : the thresholded catalogue column (None for user marks).
    curves : TP and TN rates against r (vertical boundary).
    contour : (k, 2) arrays of the p = 0.5 line in the projection's coordinates.
    fit_seconds : wall time of the fit.
    """

    method: str
    features: list[str]
    labels: str
    projection: str | None
    n_per_class: tuple[int, int]
    confusion: np.ndarray
    mean_recall: float
    metrics_note: str
    predicted: np.ndarray
    probability: np.ndarray | None = None
    position: float | None = None
    uncertainty: float | None = None
    label_column: str | None = None
    threshold: float | None = None
    curves: dict | None = None
    contour: list[np.ndarray] = field(default_factory=list)
    fit_seconds: float = 0.0

    def card_entry(self) -> dict:
        """What the model card keeps of this fit (no fitted estimator: cards are JSON)."""
        entry = {"method": self.method, "features": self.features, "labels": self.labels,
                 "n_per_class": list(self.n_per_class), "confusion_matrix": self.confusion.tolist(),
                 "mean_recall": self.mean_recall, "metrics": self.metrics_note,
                 "fitted_on": "user, in the galexplore explorer",
                 "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        if self.label_column is not None:
            entry.update(label_column=self.label_column, threshold=self.threshold)
        if self.method == VERTICAL:
            entry.update(folded_r=self.position, uncertainty=self.uncertainty)
            if self.label_column == "kappa":
                entry["kappa_threshold"] = self.threshold
        return entry


def _contour(estimator: ClassifierBoundary, x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    """The p = 0.5 line(s) of a 2-D classifier over the finite extent of (x, y)."""
    import contourpy

    ok = np.isfinite(x) & np.isfinite(y)
    pad_x = 0.05 * (np.ptp(x[ok]) or 1.0)
    pad_y = 0.05 * (np.ptp(y[ok]) or 1.0)
    gx, gy, proba = estimator.decision_grid((x[ok].min() - pad_x, x[ok].max() + pad_x),
                                            (y[ok].min() - pad_y, y[ok].max() + pad_y), CONTOUR_GRID)
    lines = contourpy.contour_generator(gx, gy, proba, line_type="Separate").lines(0.5)
    return [np.asarray(line) for line in lines if len(line) > 1]


def _cross_validated(kind: str, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, str]:
    """Out-of-fold predictions (stratified `CV_FOLDS`-fold), or in-sample ones when a class
    has fewer than `CV_FOLDS` members; returns them and a note saying which."""
    from sklearn.model_selection import StratifiedKFold

    if np.bincount(y, minlength=2).min() < CV_FOLDS:
        return ClassifierBoundary(kind).fit(X, y).predict(X), "in-sample (fewer than 3 galaxies in a class)"
    predicted = np.empty_like(y)
    for train, test in StratifiedKFold(CV_FOLDS, shuffle=True, random_state=0).split(X, y):
        predicted[test] = ClassifierBoundary(kind).fit(X[train], y[train]).predict(X[test])
    return predicted, f"{CV_FOLDS}-fold cross-validated"


def fit_boundary(table: pd.DataFrame, method: str, labelled_rows: np.ndarray, labels: np.ndarray,
                 features: list[str], label_text: str, projection: str | None = None) -> BoundaryFit:
    """Fit a boundary on the labelled rows of ``table`` and predict every row.

    Parameters
    ----------
    table : the session's table (needs ``folded_r`` for the vertical boundary).
    method : "vertical" or one of `CLASSIFIER_KINDS`.
    labelled_rows, labels : rows with a label and their class (0 or 1).
    features : columns the classifier uses (ignored by the vertical boundary, which uses ``folded_r``).
    label_text : how the labels were made, shown with the metrics.
    projection : label of the projection ``features`` come from, when they are its two axes.
    """
    started = time.perf_counter()
    labels = np.asarray(labels, dtype=np.int8)
    if method == VERTICAL:
        if "folded_r" not in table.columns:
            raise ColumnError("the vertical boundary lives in the folded (r, h) plane, which this model's embedding "
                              "lacks; choose a classifier instead")
        features = ["folded_r"]
    elif method not in CLASSIFIER_KINDS:
        raise ParameterError(f"unknown boundary method {method!r}; choose one of {', '.join(METHODS)}")
    X_all = table[features].to_numpy(np.float64)
    finite = np.isfinite(X_all).all(axis=1)
    keep = finite[labelled_rows]
    rows, y = np.asarray(labelled_rows)[keep], labels[keep]
    counts = (int((y == 0).sum()), int((y == 1).sum()))
    if min(counts) == 0:
        raise ParameterError(f"a boundary needs galaxies of both classes; the labels give {counts[0]} of class 0 "
                             f"and {counts[1]} of class 1. Change the threshold or mark galaxies of both classes")
    predicted = np.full(len(table), -1, dtype=np.int8)
    if method == VERTICAL:
        r = X_all[:, 0]
        boundary = VerticalBoundary(kappa_threshold=0.5).fit(r[rows], y)
        predicted[finite] = boundary.predict(r[finite])
        truth, guess, note = y, predicted[rows], "on the labelled galaxies (one parameter: in-sample)"
        extra = {"position": float(boundary.position_), "uncertainty": float(boundary.uncertainty_),
                 "curves": boundary.curves_}
        probability, contour = None, []
    else:
        X = X_all[rows]
        guess, note = _cross_validated(method, X, y)
        truth = y
        estimator = ClassifierBoundary(method).fit(X, y)
        predicted[finite] = estimator.predict(X_all[finite])
        probability = np.full(len(table), np.nan)
        probability[finite] = estimator.predict_proba(X_all[finite])
        contour = _contour(estimator, X_all[:, 0], X_all[:, 1]) if len(features) == 2 else []
        extra = {}
    return BoundaryFit(
        method=method, features=list(features), labels=label_text,
        projection=projection if method != VERTICAL else None, n_per_class=counts,
        confusion=confusion_matrix(truth, guess, normalize=True, labels=[0, 1]),
        mean_recall=mean_recall(truth, guess, labels=[0, 1]), metrics_note=note, predicted=predicted,
        probability=probability, contour=contour, fit_seconds=time.perf_counter() - started, **extra)


def save_boundary_copy(model_path: str | Path, fit: BoundaryFit, models_dir: Path, name: str) -> Path:
    """Write a copy of a checkpoint whose card carries ``fit`` (never modifies the original).

    A vertical boundary replaces ``extras["boundary"]`` (the original one is kept as
    ``extras["boundary_original"]``), so the copy's embedding has ``pred_class`` from it; a
    classifier's settings and metrics go to ``extras["user_boundary"]``.

    Returns
    -------
    pathlib.Path, the new checkpoint directory ``models_dir / name``.
    """
    from galexplore.models.checkpoint import load_checkpoint, save_checkpoint

    name = name.strip()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ParameterError(f"model name {name!r} must be letters, digits, '.', '_' or '-'; choose another name")
    destination = Path(models_dir) / name
    if destination.exists():
        raise ParameterError(f"{destination} already exists; choose another model name")
    model, card = load_checkpoint(model_path)
    extras = dict(card.extras)
    if fit.method == VERTICAL:
        if "boundary" in extras and "boundary_original" not in extras:
            extras["boundary_original"] = extras["boundary"]
        extras["boundary"] = fit.card_entry()
    else:
        extras["user_boundary"] = fit.card_entry()
    training_data = {**card.training_data, "copied_from": str(Path(model_path).resolve())}
    copy = dataclasses.replace(card, name=name, extras=extras, training_data=training_data, checksum="",
                               created=time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()))
    return save_checkpoint(model, copy, destination)


class BoundaryModel(param.Parameterized):
    """One session's boundary settings, marks and last fit."""

    method = param.Selector(objects=list(METHODS), default=next(iter(METHODS)))
    features = param.Selector(objects=list(FEATURES), default=FEATURES[0])
    label_source = param.Selector(objects=list(LABEL_SOURCES), default=LABEL_SOURCES[0])
    label_column = param.Selector(objects=[], doc="catalogue column thresholded into two classes")
    threshold = param.Number(default=0.5, doc="class 1: label_column > threshold (in the column's units)")
    fit_version = param.Integer(default=0, doc="bumped after every fit")
    marks_version = param.Integer(default=0, doc="bumped whenever marks change")

    def __init__(self, state: ExplorerState, **params):
        super().__init__(**params)
        self.state = state
        self.marked_a = np.empty(0, dtype=np.int64)  # catalogue ids, so marks survive a model swap
        self.marked_b = np.empty(0, dtype=np.int64)
        self.result: BoundaryFit | None = None
        state.param.watch(self._on_bundle, "bundle_version")
        self._on_bundle()

    def _on_bundle(self, *events) -> None:
        columns = [c for c in self.state.bundle.numeric_columns if c not in (PRED_COLUMN, PROBA_COLUMN)]
        self.param.label_column.objects = columns
        if self.label_column not in columns:
            self.label_column = "kappa" if "kappa" in columns else (columns[0] if columns else None)

    # ---------------------------------------------------------------- marks
    def mark(self, which: str) -> tuple[int, int]:
        """Mark the selected galaxies as class "A" or "B", or "clear" their marks; returns the counts."""
        ids = self.state.table["id"].to_numpy()[self.state.selection]
        if which != "clear" and ids.size == 0:
            raise ParameterError("nothing is selected; lasso galaxies on the map before marking them")
        self.marked_a = np.setdiff1d(self.marked_a, ids)
        self.marked_b = np.setdiff1d(self.marked_b, ids)
        if which == "A":
            self.marked_a = np.union1d(self.marked_a, ids)
        elif which == "B":
            self.marked_b = np.union1d(self.marked_b, ids)
        elif which != "clear":
            raise ParameterError(f"unknown mark {which!r}; use 'A', 'B' or 'clear'")
        self.marks_version += 1
        return self.counts()

    def clear_marks(self) -> None:
        self.marked_a = np.empty(0, dtype=np.int64)
        self.marked_b = np.empty(0, dtype=np.int64)
        self.marks_version += 1

    def counts(self) -> tuple[int, int]:
        """Galaxies of the current table marked A and B."""
        ids = self.state.table["id"].to_numpy()
        return int(np.isin(ids, self.marked_a).sum()), int(np.isin(ids, self.marked_b).sum())

    # ---------------------------------------------------------------- fitting
    def labelled(self) -> tuple[np.ndarray, np.ndarray, str]:
        """Labelled rows, their classes and a description, from the chosen label source."""
        table = self.state.table
        if self.label_source == LABEL_SOURCES[1]:
            ids = table["id"].to_numpy()
            rows, labels = labels_from_marks(len(table), np.flatnonzero(np.isin(ids, self.marked_a)),
                                             np.flatnonzero(np.isin(ids, self.marked_b)))
            return rows, labels, "user marks: A = 1, B = 0"
        if self.label_column not in table.columns:
            raise ColumnError(f"unknown label column {self.label_column!r}; choose one from the list")
        values = table[self.label_column].to_numpy(np.float64)
        rows = np.flatnonzero(np.isfinite(values))
        unit = self.state.units.get(self.label_column, "")
        return rows, (values[rows] > self.threshold).astype(np.int8), \
            f"{self.label_column} > {self.threshold:g} {unit}".rstrip()

    def feature_columns(self) -> tuple[list[str], str | None]:
        if self.features == FEATURES[1]:
            return latent_columns(self.state.table), None
        return list(self.state.axis_columns), self.state.projection

    def fit(self) -> BoundaryFit:
        """Fit with the current settings (a few seconds at most; call it off the event loop)."""
        rows, labels, text = self.labelled()
        features, projection = self.feature_columns()
        fit = fit_boundary(self.state.table, METHODS[self.method], rows, labels, features, text, projection)
        if self.label_source == LABEL_SOURCES[0]:
            fit = dataclasses.replace(fit, label_column=self.label_column, threshold=float(self.threshold))
        return fit

    def apply(self, fit: BoundaryFit) -> None:
        """Keep ``fit`` and add its predictions to the session's table."""
        self.result = fit
        columns = {PRED_COLUMN: fit.predicted}
        if fit.probability is not None:
            columns[PROBA_COLUMN] = fit.probability
        self.state.set_columns(columns, drop=() if fit.probability is not None else (PROBA_COLUMN,))
        self.fit_version += 1

    def save_copy(self, name: str, models_dir: Path | None = None) -> Path:
        from galexplore.paths import user_models_dir

        if self.result is None:
            raise ParameterError("fit a boundary before saving it")
        model = self.state.bundle.model
        if model is None:
            raise ParameterError("this table has no model to copy; open a checkpoint first")
        return save_boundary_copy(model.path, self.result, models_dir or user_models_dir(), name)

    # ---------------------------------------------------------------- drawing
    def overlay(self) -> hv.DynamicMap:
        """The fitted boundary as a line on the latent map (empty where it cannot be drawn)."""

        def draw(**_):
            fit, s = self.result, self.state
            if fit is None:
                return hv.Path([])
            if fit.method == VERTICAL:
                _, y = s.xy()
                finite = y[np.isfinite(y)]
                extent = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
                return boundary_path(s.projection, fit.position, extent)
            if fit.projection == s.projection and fit.contour:
                return hv.Path(fit.contour)
            return hv.Path([])

        streams = [hv.streams.Params(self.state, ["projection", "bundle_version"]),
                   hv.streams.Params(self, ["fit_version"])]
        return hv.DynamicMap(draw, streams=streams).opts(
            hv.opts.Path(color=BOUNDARY_COLOUR, line_width=2.5, line_dash="solid"))


def metrics_markdown(fit: BoundaryFit | None) -> str:
    """The fit's metrics as Markdown (confusion matrix rows = true class)."""
    if fit is None:
        return "No boundary fitted in this session yet."
    cm = fit.confusion
    lines = [f"**{literal(fit.method)}** on {literal(', '.join(fit.features))}; labels: {literal(fit.labels)}",
             f"Class 0: {fit.n_per_class[0]:,} galaxies, class 1: {fit.n_per_class[1]:,}",
             ""]
    if fit.position is not None:
        lines += [f"**TP = TN crossing:** r = {fit.position:.4g} ± {fit.uncertainty:.2g} (bootstrap)", ""]
    lines += [f"**Mean recall:** {fit.mean_recall:.3f} ({fit.metrics_note})", "",
              "| true \\ predicted | 0 | 1 |", "|---|---|---|",
              f"| 0 | {cm[0, 0]:.3f} | {cm[0, 1]:.3f} |", f"| 1 | {cm[1, 0]:.3f} | {cm[1, 1]:.3f} |", "",
              f"Predictions are in the columns `{PRED_COLUMN}`"
              + (f" and `{PROBA_COLUMN}`" if fit.probability is not None else "")
              + f" (colour the map by them; the CSV export includes them). Fit: {fit.fit_seconds:.2f} s."]
    if fit.method != VERTICAL and fit.projection is None:
        lines.append("Fitted on the full latent vectors: no line to draw; colour the map by the probability.")
    return "\n".join(lines)


def rate_curves(fit: BoundaryFit | None) -> hv.Overlay:
    """TP and TN rates against r with the crossing (Dawson et al. 2020, Fig. 7)."""
    if fit is None or fit.curves is None:
        return hv.Overlay([hv.Curve([])]).opts(width=320, height=220)
    c = fit.curves
    tp = hv.Curve((c["position"], c["tp"]), "r", "rate", label="TP rate")
    tn = hv.Curve((c["position"], c["tn"]), "r", "rate", label="TN rate")
    return (tp * tn * hv.VLine(fit.position).opts(color=BOUNDARY_COLOUR)).opts(
        width=320, height=220, legend_position="right", title="TP / TN against r")


class BoundaryView(pn.viewable.Viewer):
    """Widgets of the Boundaries tab for one session."""

    def __init__(self, state: ExplorerState, boundary: BoundaryModel, **params):
        super().__init__(**params)
        self.state = state
        self.boundary = boundary
        self.fit_button = pn.widgets.Button(label="Fit boundary", button_type="primary")
        self.fit_button.on_click(self._on_fit)
        self.mark_buttons = [pn.widgets.Button(label=f"Mark selection as class {which}") for which in ("A", "B")]
        self.unmark_button = pn.widgets.Button(label="Clear marks of selection")
        self.clear_button = pn.widgets.Button(label="Clear all marks")
        for button, which in zip([*self.mark_buttons, self.unmark_button], ("A", "B", "clear")):
            button.on_click(guarded(state, lambda event, which=which: boundary.mark(which)))
        self.clear_button.on_click(guarded(state, lambda event: boundary.clear_marks()))
        self.save_name = pn.widgets.TextInput(label="Save into a copy of the model named",
                                              placeholder="my-model-boundary")
        self.save_button = pn.widgets.Button(label="Save boundary with model card")
        self.save_button.on_click(guarded(state, self._on_save))

    async def _on_fit(self, event) -> None:
        self.fit_button.disabled = True
        try:
            fit = await asyncio.to_thread(self.boundary.fit)
            self.boundary.apply(fit)
            self.state.notify(f"boundary fitted: mean recall {fit.mean_recall:.3f}", "success")
        except Exception as error:  # noqa: BLE001 -- shown in the page; the session carries on
            self.state.report(error)
        finally:
            self.fit_button.disabled = False

    def _on_save(self, event) -> None:
        name = self.save_name.value.strip() or \
            f"{self.state.bundle.model.name}-boundary-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"
        path = self.boundary.save_copy(name)
        self.state.notify(f"saved a copy of the model with this boundary to {path}", "success")

    def _counts_text(self, marks_version, bundle_version) -> str:
        a, b = self.boundary.counts()
        return f"**Marked:** class A {a:,}, class B {b:,}"

    def __panel__(self):
        b = self.boundary
        settings = pn.Column(
            pn.widgets.Select.from_param(b.param.method, label="Boundary"),
            pn.widgets.RadioButtonGroup.from_param(b.param.features),
            pn.widgets.RadioBoxGroup.from_param(b.param.label_source),
            pn.widgets.Select.from_param(b.param.label_column, label="Label column"),
            pn.widgets.FloatInput.from_param(b.param.threshold, label="Threshold (class 1 above)"),
            self.fit_button,
            pn.layout.Divider(),
            pn.Row(*self.mark_buttons), pn.Row(self.unmark_button, self.clear_button),
            pn.pane.Markdown(pn.bind(self._counts_text, b.param.marks_version, self.state.param.bundle_version),
                             css_classes=["mark-counts"]),
            pn.layout.Divider(),
            self.save_name, self.save_button, width=420,
        )
        results = pn.Column(
            pn.pane.Markdown(pn.bind(lambda version: metrics_markdown(b.result), b.param.fit_version),
                             css_classes=["boundary-metrics"], width=520),
            pn.pane.HoloViews(pn.bind(lambda version: rate_curves(b.result), b.param.fit_version)),
        )
        return pn.Row(settings, results)
