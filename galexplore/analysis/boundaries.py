"""Decision boundaries in a latent projection.

`VerticalBoundary` is the classifier of Dawson et al. (2020, sec. 2.6, Fig. 7): a line
``r = position`` in the folded latent plane, placed where the true-positive rate equals
the true-negative rate. `ClassifierBoundary` fits a general classifier (logistic
regression, linear SVM, gradient boosting) on any projection or the full latent vectors.
"""

from __future__ import annotations

import numpy as np

from galexplore.analysis.stats import confusion_matrix, mean_recall
from galexplore.errors import ParameterError


def _crossing(r_sorted: np.ndarray, positive_sorted: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Position where TP rate = TN rate, for points sorted by r (see `VerticalBoundary`)."""
    if weights is not None:
        keep = weights > 0
        r_sorted, positive_sorted, weights = r_sorted[keep], positive_sorted[keep], weights[keep]
    else:
        weights = np.ones(r_sorted.shape, dtype=np.float64)
    values, first = np.unique(r_sorted, return_index=True)
    pos_at = np.add.reduceat(weights * positive_sorted, first)
    neg_at = np.add.reduceat(weights * ~positive_sorted, first)
    n_pos, n_neg = pos_at.sum(), neg_at.sum()
    # Boundary just at values[k] (predicted positive where r >= values[k]); the rates are
    # constant for positions in (values[k-1], values[k]].
    tp = (n_pos - np.concatenate(([0.0], np.cumsum(pos_at)[:-1]))) / n_pos
    tn = np.concatenate(([0.0], np.cumsum(neg_at)[:-1])) / n_neg
    d = tp - tn  # non-increasing; d[0] = 1, and d = -1 beyond the largest r
    last_positive = np.flatnonzero(d > 0)[-1]
    negative = np.flatnonzero(d < 0)
    below = values[last_positive]
    above = values[negative[0] - 1] if negative.size else values[-1]
    return 0.5 * (below + above)


class VerticalBoundary:
    """The TP = TN vertical boundary of Dawson et al. (2020) in the folded plane.

    Positives are galaxies with ``kappa > kappa_threshold``; a galaxy is predicted positive
    where ``r >= position``. The TP rate (fraction of positives predicted positive) falls
    and the TN rate (fraction of negatives predicted negative) rises as the position
    moves right; both are step functions of the position. ``position_`` is where they
    cross: the data value at which TP - TN changes sign, or the midpoint of the interval
    over which TP = TN exactly.

    Parameters
    ----------
    kappa_threshold : float
        Circularity separating the classes (0.5 in the paper).
    n_bootstrap : int
        Bootstrap resamplings of the galaxies for ``uncertainty_`` (0: no uncertainty).
    random_state : int
        Seed of the bootstrap.
    n_curve_points : int
        Positions at which ``curves_`` samples the four rates (Fig. 7).

    Attributes
    ----------
    position_ : float, boundary position in r (latent units).
    uncertainty_ : float, standard deviation of the bootstrap positions (NaN if none).
    bootstrap_positions_ : ndarray (n_bootstrap,)
    curves_ : dict of ndarrays ``position``, ``tp``, ``tn``, ``fp``, ``fn`` (rates; fp = 1 - tn,
        fn = 1 - tp), for plotting Fig. 7.
    """

    def __init__(self, kappa_threshold: float = 0.5, n_bootstrap: int = 200, random_state: int = 0,
                 n_curve_points: int = 512):
        self.kappa_threshold = kappa_threshold
        self.n_bootstrap = n_bootstrap
        self.random_state = random_state
        self.n_curve_points = n_curve_points

    def _labels(self, r, kappa) -> tuple[np.ndarray, np.ndarray]:
        r = np.asarray(r, dtype=np.float64).ravel()
        kappa = np.asarray(kappa, dtype=np.float64).ravel()
        if r.shape != kappa.shape:
            raise ParameterError(f"r and kappa must have the same length, got {r.size} and {kappa.size}")
        finite = np.isfinite(r) & np.isfinite(kappa)
        return r[finite], kappa[finite] > self.kappa_threshold

    def fit(self, r, kappa) -> VerticalBoundary:
        """Place the boundary.

        Parameters
        ----------
        r : array_like (n,), folded radius of each galaxy (latent units).
        kappa : array_like (n,), circularity of each galaxy. Rows with NaN are ignored.
        """
        r, positive = self._labels(r, kappa)
        if positive.all() or not positive.any():
            raise ParameterError(
                f"a boundary needs galaxies on both sides of kappa = {self.kappa_threshold}; got "
                f"{int(positive.sum())} above and {int((~positive).sum())} below. Use more galaxies "
                "or another kappa threshold")
        order = np.argsort(r, kind="stable")
        r_sorted, pos_sorted = r[order], positive[order]
        self.position_ = _crossing(r_sorted, pos_sorted)

        rng = np.random.default_rng(self.random_state)
        positions = []
        for _ in range(self.n_bootstrap):
            weights = np.bincount(rng.integers(0, r.size, r.size), minlength=r.size)[order].astype(np.float64)
            if (weights * pos_sorted).sum() > 0 and (weights * ~pos_sorted).sum() > 0:
                positions.append(_crossing(r_sorted, pos_sorted, weights))
        self.bootstrap_positions_ = np.asarray(positions)
        self.uncertainty_ = float(np.std(self.bootstrap_positions_, ddof=1)) if len(positions) > 1 else float("nan")

        grid = np.linspace(r_sorted[0], r_sorted[-1], self.n_curve_points)
        r_pos, r_neg = r_sorted[pos_sorted], r_sorted[~pos_sorted]
        tp = 1.0 - np.searchsorted(r_pos, grid, side="left") / r_pos.size
        tn = np.searchsorted(r_neg, grid, side="left") / r_neg.size
        self.curves_ = {"position": grid, "tp": tp, "tn": tn, "fp": 1.0 - tn, "fn": 1.0 - tp}
        return self

    @classmethod
    def from_position(cls, position: float, kappa_threshold: float = 0.5) -> VerticalBoundary:
        """A boundary at a known position (e.g. a model card's ``boundary.folded_r``)."""
        boundary = cls(kappa_threshold=kappa_threshold, n_bootstrap=0)
        boundary.position_ = float(position)
        boundary.uncertainty_ = float("nan")
        return boundary

    def predict(self, r) -> np.ndarray:
        """Predicted class (1: kappa above the threshold) of each folded radius r."""
        if not hasattr(self, "position_"):
            raise ParameterError("this VerticalBoundary is not fitted yet: call fit(r, kappa) first")
        return (np.asarray(r, dtype=np.float64) >= self.position_).astype(np.int8)

    def metrics(self, r, kappa) -> dict:
        """Row-normalised confusion matrix (rows: true class 0, 1), mean recall, accuracy, counts."""
        r, positive = self._labels(r, kappa)
        true = positive.astype(np.int8)
        pred = self.predict(r)
        return {
            "confusion_matrix": confusion_matrix(true, pred, labels=[0, 1]),
            "mean_recall": mean_recall(true, pred, labels=[0, 1]),
            "accuracy": float(np.mean(true == pred)) if true.size else float("nan"),
            "n_positive": int(positive.sum()),
            "n_negative": int((~positive).sum()),
        }


CLASSIFIER_KINDS = ("logistic", "linear_svm", "gradient_boosting")


class ClassifierBoundary:
    """A learned boundary between two classes in any projection or the full latent space.

    Parameters
    ----------
    kind : {"logistic", "linear_svm", "gradient_boosting"}
    class_weight : "balanced" or None
        "balanced" weights classes inversely to their frequency, which matters for the
        kappa classes (93 % positives in Dawson et al.'s test set).
    random_state : int

    Attributes
    ----------
    estimator_ : the fitted scikit-learn pipeline (standard scaling + classifier).
    n_features_in_ : int
    classes_ : ndarray, the class labels in the order of `predict_proba`'s columns.
    """

    def __init__(self, kind: str = "logistic", class_weight: str | None = "balanced", random_state: int = 0):
        self.kind = kind
        self.class_weight = class_weight
        self.random_state = random_state

    def _estimator(self):
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.ensemble import HistGradientBoostingClassifier
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import LinearSVC

        if self.kind == "logistic":
            model = LogisticRegression(class_weight=self.class_weight, random_state=self.random_state)
        elif self.kind == "linear_svm":
            # Platt scaling turns the SVM's margin into a probability for predict_proba.
            svm = LinearSVC(class_weight=self.class_weight, random_state=self.random_state)
            model = CalibratedClassifierCV(svm, method="sigmoid", cv=3)
        elif self.kind == "gradient_boosting":
            model = HistGradientBoostingClassifier(class_weight=self.class_weight, random_state=self.random_state)
        else:
            raise ParameterError(f"unknown classifier kind {self.kind!r}; choose one of {', '.join(CLASSIFIER_KINDS)}")
        return make_pipeline(StandardScaler(), model)

    def fit(self, X, y) -> ClassifierBoundary:
        """Fit on points ``X`` (n, d) with labels ``y`` (n,) (e.g. ``labels_from_threshold`` or user marks)."""
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y).ravel()
        if X.ndim == 1:
            X = X[:, None]
        if X.ndim != 2 or X.shape[0] != y.shape[0]:
            raise ParameterError(f"X must be (n, d) with one label per row; got X {X.shape} and {y.shape[0]} labels")
        if not np.isfinite(X).all():
            raise ParameterError("X contains NaN or infinite values; drop those rows before fitting a boundary")
        if np.unique(y).size != 2:
            raise ParameterError(f"a boundary needs exactly two classes, got {np.unique(y).size}; "
                                 "mark or threshold so that both classes are present")
        self.estimator_ = self._estimator().fit(X, y)
        self.n_features_in_ = X.shape[1]
        self.classes_ = self.estimator_.classes_
        return self

    def _check(self, X) -> np.ndarray:
        if not hasattr(self, "estimator_"):
            raise ParameterError("this boundary is not fitted yet: call fit(X, y) first")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 1:
            X = X[:, None]
        if X.shape[1] != self.n_features_in_:
            raise ParameterError(f"X has {X.shape[1]} columns, the boundary was fitted on {self.n_features_in_}")
        return X

    def predict(self, X) -> np.ndarray:
        """Predicted label of each row."""
        return self.estimator_.predict(self._check(X))

    def predict_proba(self, X) -> np.ndarray:
        """Probability of ``classes_[1]`` for each row, shape (n,)."""
        return self.estimator_.predict_proba(self._check(X))[:, 1]

    def decision_grid(self, xrange: tuple[float, float], yrange: tuple[float, float], n: int = 200):
        """Probability of ``classes_[1]`` on an n x n grid, for contouring a 2-D boundary.

        Returns
        -------
        x : ndarray (n,), y : ndarray (n,), proba : ndarray (n, n) indexed [y, x].
        """
        if getattr(self, "n_features_in_", None) != 2:
            raise ParameterError("decision_grid needs a boundary fitted on exactly 2 columns (a 2-D projection)")
        x = np.linspace(*xrange, n)
        y = np.linspace(*yrange, n)
        xx, yy = np.meshgrid(x, y)
        proba = self.predict_proba(np.column_stack([xx.ravel(), yy.ravel()])).reshape(n, n)
        return x, y, proba


class LogisticBoundary(ClassifierBoundary):
    """`ClassifierBoundary` with logistic regression (a linear boundary with probabilities)."""

    def __init__(self, class_weight: str | None = "balanced", random_state: int = 0):
        super().__init__(kind="logistic", class_weight=class_weight, random_state=random_state)


def labels_from_threshold(values, threshold: float) -> np.ndarray:
    """Binary labels (1 where ``values > threshold``, e.g. kappa > 0.5)."""
    return (np.asarray(values, dtype=np.float64) > threshold).astype(np.int8)
