"""The TP = TN vertical boundary and the learned classifier boundaries."""

import numpy as np
import pytest

from galexplore.analysis.boundaries import (
    ClassifierBoundary,
    LogisticBoundary,
    VerticalBoundary,
    labels_from_threshold,
)
from galexplore.errors import ParameterError

# Hand-worked examples. Boundary at b: predicted positive where r >= b.
#   r     = 1 2 3 4 5 6, positives (kappa > 0.5) at r = 3, 5, 6.
#   b in (3, 4]: TP = 2/3 (5, 6), TN = 2/3 (1, 2)  -> equal on the whole interval -> 3.5
#   b in (2, 3]: TP = 1, TN = 2/3;  b in (4, 5]: TP = 2/3, TN = 1.
PLATEAU = ([1, 2, 3, 4, 5, 6], [0.1, 0.2, 0.9, 0.3, 0.8, 0.9], 3.5)
#   r = 1 2 3 4 5, positives at 2, 4, 5:  b in (2, 3]: TP 2/3 > TN 1/2;  b in (3, 4]: TP 2/3 < TN 1
#   -> TP - TN changes sign at the data value 3.
STEP = ([1, 2, 3, 4, 5], [0.1, 0.9, 0.2, 0.9, 0.9], 3.0)
#   Separable: TP = TN = 1 for b in (2, 3] -> 2.5.
SEPARABLE = ([4, 1, 3, 2], [0.9, 0.1, 0.9, 0.2], 2.5)


@pytest.mark.parametrize("r, kappa, expected", [PLATEAU, STEP, SEPARABLE])
def test_vertical_boundary_hand_examples(r, kappa, expected):
    boundary = VerticalBoundary(n_bootstrap=0).fit(r, kappa)
    assert boundary.position_ == pytest.approx(expected)


def test_vertical_boundary_metrics_by_hand():
    r, kappa, _ = PLATEAU
    m = VerticalBoundary(n_bootstrap=0).fit(r, kappa).metrics(r, kappa)
    # predicted positive: r >= 3.5 -> 4, 5, 6. Negatives 1, 2, 4: TN 2, FP 1. Positives 3, 5, 6: FN 1, TP 2.
    np.testing.assert_allclose(m["confusion_matrix"], [[2 / 3, 1 / 3], [1 / 3, 2 / 3]])
    assert m["mean_recall"] == pytest.approx(2 / 3)
    assert (m["n_positive"], m["n_negative"]) == (3, 3)


def _population(n, seed):
    rng = np.random.default_rng(seed)
    kappa = rng.uniform(0.0, 1.0, n)
    return 3.0 + 2.0 * (kappa - 0.5) + rng.normal(0.0, 0.5, n), kappa


def test_curves_match_brute_force_rates_and_cross_at_the_position():
    r, kappa = _population(3000, 1)
    b = VerticalBoundary(n_bootstrap=0, n_curve_points=64).fit(r, kappa)
    pos = kappa > 0.5
    for k in (0, 20, 40, 63):
        x = b.curves_["position"][k]
        assert b.curves_["tp"][k] == pytest.approx(np.mean(r[pos] >= x))
        assert b.curves_["tn"][k] == pytest.approx(np.mean(r[~pos] < x))
    np.testing.assert_allclose(b.curves_["fp"], 1 - b.curves_["tn"])
    np.testing.assert_allclose(b.curves_["fn"], 1 - b.curves_["tp"])
    # at the position the two rates agree to within one galaxy of the smaller class
    tp_at, tn_at = np.mean(r[pos] >= b.position_), np.mean(r[~pos] < b.position_)
    assert abs(tp_at - tn_at) <= 1.0 / min(pos.sum(), (~pos).sum()) + 1e-12
    # symmetric population: the crossing lies near r = 3 (kappa = 0.5 maps to r = 3)
    assert b.position_ == pytest.approx(3.0, abs=0.05)


def test_bootstrap_uncertainty_shrinks_like_one_over_sqrt_n():
    small = VerticalBoundary(n_bootstrap=200, random_state=0).fit(*_population(2000, 2))
    large = VerticalBoundary(n_bootstrap=200, random_state=0).fit(*_population(18000, 3))
    ratio = large.uncertainty_ / small.uncertainty_
    assert 1 / 3 * 0.7 < ratio < 1 / 3 * 1.4  # sqrt(2000 / 18000) = 1/3
    assert small.bootstrap_positions_.size == 200


def test_vertical_boundary_needs_both_classes_and_predicts():
    with pytest.raises(ParameterError, match="both sides"):
        VerticalBoundary().fit([1.0, 2.0], [0.9, 0.8])
    card = VerticalBoundary.from_position(2.960960960960961)
    np.testing.assert_array_equal(card.predict([2.9, 2.960960960960961, 3.5]), [0, 1, 1])


def _blobs(n=400, seed=0):
    rng = np.random.default_rng(seed)
    X = np.r_[rng.normal([-2.0, 0.0], 0.7, (n, 2)), rng.normal([2.0, 0.0], 0.7, (n, 2))]
    return X, np.r_[np.zeros(n), np.ones(n)].astype(int)


@pytest.mark.parametrize("kind", ["logistic", "linear_svm", "gradient_boosting"])
def test_classifier_boundaries_separate_blobs(kind):
    X, y = _blobs()
    boundary = ClassifierBoundary(kind).fit(X, y)
    assert np.mean(boundary.predict(X) == y) > 0.97
    proba = boundary.predict_proba([[-3.0, 0.0], [3.0, 0.0]])
    assert proba[0] < 0.1 and proba[1] > 0.9


def test_logistic_decision_grid_half_probability_on_the_symmetry_line():
    X, y = _blobs(2000, 1)
    x, yy, proba = LogisticBoundary().fit(X, y).decision_grid((-4, 4), (-2, 2), 41)
    assert proba.shape == (41, 41)
    assert np.abs(proba[:, 20] - 0.5).max() < 0.1  # x = 0 is the Bayes boundary of the two blobs
    assert (proba[:, 0] < 0.01).all() and (proba[:, -1] > 0.99).all()


def test_classifier_boundary_errors():
    X, y = _blobs(20)
    with pytest.raises(ParameterError, match="two classes"):
        ClassifierBoundary().fit(X, np.zeros(len(X)))
    with pytest.raises(ParameterError, match="unknown classifier"):
        ClassifierBoundary("forest").fit(X, y)
    three_d = ClassifierBoundary().fit(np.c_[X, X[:, :1]], y)
    with pytest.raises(ParameterError, match="2 columns"):
        three_d.decision_grid((0, 1), (0, 1), 5)
    np.testing.assert_array_equal(labels_from_threshold([0.2, 0.5, 0.7], 0.5), [0, 0, 1])
