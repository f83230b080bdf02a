"""Boundaries in the latent space, fitted in seconds: the Dawson et al. (2020) vertical
boundary in the folded plane at any kappa threshold, or a classifier (logistic regression,
linear SVM, gradient boosting) on a 2-D projection or the full latent vectors.

Labels come from a catalogue column with a threshold (e.g. kappa > 0.5) or from the user's
own marks ("class A / B"). A fit gives metrics, predictions for every row (the columns
`PRED_COLUMN` and `PROBA_COLUMN`), the line to draw (r = position in the folded plane, a
circle in PCA 0 vs 1, or the p = 0.5 contour of a 2-D classifier), and can be saved into a
copy of the model's checkpoint. Fits run in the caller's thread: the explorer calls them off
its event loop, with the process's BLAS and OpenMP pools limited (`limit_server_threads`).
"""

from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from galexplore.analysis.boundaries import CLASSIFIER_KINDS, ClassifierBoundary, VerticalBoundary
from galexplore.analysis.stats import confusion_matrix, mean_recall
from galexplore.errors import ColumnError, ParameterError
from galexplore.explorer.bundles import Bundle

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
            finite = self.uncertainty is not None and np.isfinite(self.uncertainty)
            entry.update(folded_r=self.position, uncertainty=self.uncertainty if finite else None)
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
        boundary = VerticalBoundary(kappa_threshold=0.5).fit(r[rows], y)  # y is 0 or 1: class 1 is y > 0.5
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


def boundary_line(projection: str, r: float | None, extent: tuple[float, float]) -> list[np.ndarray]:
    """The folded-space boundary r = const as polylines: a vertical line over ``extent`` (of h)
    in the folded plane, a circle in PCA 0 vs 1, nothing in other projections."""
    if r is None or not np.isfinite(r):
        return []
    if projection == "folded (r, h)":
        return [np.array([[r, extent[0]], [r, extent[1]]])]
    if projection == "PCA 0 vs 1":
        t = np.linspace(0.0, 2.0 * np.pi, 181)
        return [np.column_stack([r * np.cos(t), r * np.sin(t)])]
    return []


def fitted_line(fit: BoundaryFit | None, projection: str, extent: tuple[float, float]) -> list[np.ndarray]:
    """Polylines of a session's fit in ``projection`` (empty where it cannot be drawn)."""
    if fit is None:
        return []
    if fit.method == VERTICAL:
        return boundary_line(projection, fit.position, extent)
    if fit.projection == projection:
        return list(fit.contour)
    return []


class Marks:
    """Galaxies the user marked as class A (1) or B (0), by catalogue id, so that marks
    survive a model switch on the same dataset."""

    def __init__(self):
        self.a = np.empty(0, dtype=np.int64)
        self.b = np.empty(0, dtype=np.int64)

    def mark(self, ids, which: str) -> None:
        """Mark ``ids`` as "A" or "B", or "clear" their marks."""
        ids = np.asarray(ids, dtype=np.int64)
        if which != "clear" and ids.size == 0:
            raise ParameterError("nothing is selected; lasso galaxies on the map before marking them")
        if which not in ("A", "B", "clear"):
            raise ParameterError(f"unknown mark {which!r}; use 'A', 'B' or 'clear'")
        self.a = np.setdiff1d(self.a, ids)
        self.b = np.setdiff1d(self.b, ids)
        if which == "A":
            self.a = np.union1d(self.a, ids)
        elif which == "B":
            self.b = np.union1d(self.b, ids)

    def clear(self) -> None:
        self.a = np.empty(0, dtype=np.int64)
        self.b = np.empty(0, dtype=np.int64)

    def counts(self, bundle: Bundle) -> tuple[int, int]:
        """Galaxies of ``bundle``'s table marked A and B."""
        ids = bundle.column("id")
        return int(np.isin(ids, self.a).sum()), int(np.isin(ids, self.b).sum())

    def labelled(self, bundle: Bundle) -> tuple[np.ndarray, np.ndarray]:
        """Rows of ``bundle``'s table with a mark, and their class (A = 1, B = 0)."""
        ids = bundle.column("id")
        return labels_from_marks(len(ids), np.flatnonzero(np.isin(ids, self.a)), np.flatnonzero(np.isin(ids, self.b)))


def labelled_by_threshold(bundle: Bundle, column: str, threshold: float) -> tuple[np.ndarray, np.ndarray, str]:
    """Rows with a finite ``column``, their class (column > threshold) and a description."""
    if column not in bundle.columns:
        raise ColumnError(f"unknown label column {column!r}; choose one from the list")
    if not np.isfinite(threshold):
        raise ParameterError("the threshold must be a finite number")
    values = np.asarray(bundle.column(column), dtype=np.float64)
    rows = np.flatnonzero(np.isfinite(values))
    return rows, (values[rows] > threshold).astype(np.int8), f"{column} > {threshold:g} {bundle.unit(column)}".rstrip()


def fit_on_bundle(bundle: Bundle, method: str, features: list[str], rows: np.ndarray, labels: np.ndarray,
                  label_text: str, projection: str | None, label_column: str | None = None,
                  threshold: float | None = None) -> BoundaryFit:
    """`fit_boundary` on a bundle's table, remembering the label column and threshold."""
    used = [c for c in dict.fromkeys([*features, "folded_r"]) if c in bundle.table]
    fit = fit_boundary(bundle.frame(used), method, rows, labels, features, label_text, projection)
    if label_column is not None:
        fit = dataclasses.replace(fit, label_column=label_column, threshold=float(threshold))
    return fit


def prediction_columns(fit: BoundaryFit) -> tuple[dict[str, np.ndarray], tuple[str, ...]]:
    """The columns a fit adds to a session's table, and the stale ones it removes."""
    columns = {PRED_COLUMN: fit.predicted}
    if fit.probability is not None:
        columns[PROBA_COLUMN] = fit.probability
        return columns, ()
    return columns, (PROBA_COLUMN,)
