"""Boundaries of the application layer: hand-computed fits, user marks, predictions as columns,
card copies."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from galexplore.errors import ParameterError
from galexplore.explorer import boundaries as bounds
from galexplore.explorer.bundles import Bundle


def _bundle(table: pd.DataFrame) -> Bundle:
    return Bundle(dataset=None, model=None, table=table, column_units={c: "" for c in table.columns})


def _folded_table() -> pd.DataFrame:
    # r = 1..6; kappa rises with r. Hand computation for kappa > 0.62: positives at r = 4, 5, 6.
    # Predicting positive where r >= p gives TP = TN = 1 for 3 < p <= 4, so the TP = TN
    # crossing is the middle of that interval, r = 3.5. For kappa > 0.5 (positives r = 3..6)
    # it is 2.5: the threshold moves the boundary.
    return pd.DataFrame({
        "id": np.arange(10, 16), "folded_r": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "folded_h": np.zeros(6),
        "kappa": [0.2, 0.4, 0.6, 0.65, 0.8, 0.9], "latent_0": np.arange(6.0), "latent_1": np.ones(6),
    })


def test_vertical_boundary_any_kappa_threshold():
    bundle = _bundle(_folded_table())
    rows, labels, text = bounds.labelled_by_threshold(bundle, "kappa", 0.62)
    fit = bounds.fit_on_bundle(bundle, bounds.VERTICAL, [], rows, labels, text, None, "kappa", 0.62)
    assert fit.position == pytest.approx(3.5) and fit.n_per_class == (3, 3)
    np.testing.assert_allclose(fit.confusion, np.eye(2))
    assert fit.mean_recall == 1.0 and text == "kappa > 0.62"
    np.testing.assert_array_equal(fit.predicted, [0, 0, 0, 1, 1, 1])
    entry = fit.card_entry()
    assert entry["kappa_threshold"] == 0.62 and entry["folded_r"] == pytest.approx(3.5)
    json.dumps(entry, allow_nan=False)  # a model card holds strict JSON
    rows, labels, text = bounds.labelled_by_threshold(bundle, "kappa", 0.5)
    assert bounds.fit_on_bundle(bundle, bounds.VERTICAL, [], rows, labels, text, None).position == pytest.approx(2.5)
    with pytest.raises(ParameterError, match="finite"):
        bounds.labelled_by_threshold(bundle, "kappa", float("nan"))


def test_labels_from_marks_by_hand():
    rows, labels = bounds.labels_from_marks(6, rows_a=[0, 1, 4], rows_b=[4, 5])
    # row 4 is marked both ways: ambiguous, left out; A -> 1, B -> 0
    np.testing.assert_array_equal(rows, [0, 1, 5])
    np.testing.assert_array_equal(labels, [1, 1, 0])


def test_marks_by_id_then_a_fit_and_its_columns():
    bundle = _bundle(_folded_table())
    marks = bounds.Marks()
    ids = bundle.column("id")
    marks.mark(ids[[3, 4, 5]], "A")
    marks.mark(ids[[0, 1, 5]], "B")  # row 5 moves from A to B
    marks.mark(ids[[1]], "clear")
    assert marks.counts(bundle) == (2, 2)
    rows, labels = marks.labelled(bundle)
    np.testing.assert_array_equal(rows, [0, 3, 4, 5])
    np.testing.assert_array_equal(labels, [0, 1, 1, 0])
    # marks A at r = 4, 5 and B at r = 1, 6: the best TP = TN split on r (TP = TN = 1/2)
    fit = bounds.fit_on_bundle(bundle, bounds.VERTICAL, [], rows, labels, "marks", None)
    np.testing.assert_allclose(np.diag(fit.confusion), [0.5, 0.5])
    columns, drop = bounds.prediction_columns(fit)
    assert list(columns) == [bounds.PRED_COLUMN] and drop == (bounds.PROBA_COLUMN,)
    derived = bundle.with_columns(columns, drop=drop)
    np.testing.assert_array_equal(derived.column(bounds.PRED_COLUMN), fit.predicted)
    marks.clear()
    with pytest.raises(ParameterError, match="both classes"):
        bounds.fit_on_bundle(bundle, bounds.VERTICAL, [], *marks.labelled(bundle), "marks", None)
    with pytest.raises(ParameterError, match="nothing is selected"):
        marks.mark([], "A")


def test_classifier_contour_on_mirror_symmetric_data():
    # class 1 at (x, y), class 0 at (-x, y): the regularised logistic fit is symmetric, so its
    # p = 0.5 line is x = 0 exactly (up to the contour grid)
    rng = np.random.default_rng(3)
    x, y = rng.uniform(0.5, 3.0, 40), rng.normal(0.0, 1.0, 40)
    table = pd.DataFrame({"id": np.arange(80), "latent_0": np.r_[x, -x], "latent_1": np.r_[y, y],
                          "label": np.r_[np.ones(40), np.zeros(40)]})
    bundle = _bundle(table)
    rows, labels, text = bounds.labelled_by_threshold(bundle, "label", 0.5)
    fit = bounds.fit_on_bundle(bundle, "logistic", ["latent_0", "latent_1"], rows, labels, text, "latent 0 vs 1")
    assert fit.mean_recall == 1.0 and fit.projection == "latent 0 vs 1"
    line = np.concatenate(fit.contour)
    grid_step = (np.ptp(table["latent_0"]) * 1.1) / 149
    assert np.abs(line[:, 0]).max() < grid_step
    assert np.all((fit.probability > 0.5) == (table["latent_0"] > 0))
    drawn = bounds.fitted_line(fit, "latent 0 vs 1", (0.0, 1.0))
    assert len(drawn) == len(fit.contour) and bounds.fitted_line(fit, "UMAP", (0.0, 1.0)) == []


def test_the_model_boundary_is_drawn_where_it_lives():
    vertical = bounds.boundary_line("folded (r, h)", 2.0, (0.0, 3.0))
    np.testing.assert_array_equal(vertical[0], [[2.0, 0.0], [2.0, 3.0]])
    circle = bounds.boundary_line("PCA 0 vs 1", 2.0, (0.0, 3.0))[0]
    np.testing.assert_allclose(np.hypot(circle[:, 0], circle[:, 1]), 2.0)
    assert bounds.boundary_line("UMAP", 2.0, (0.0, 1.0)) == []
    assert bounds.boundary_line("PCA 0 vs 1", None, (0, 1)) == []


def test_fit_rejects_unknown_method_and_one_class():
    table = _folded_table()
    with pytest.raises(ParameterError, match="unknown boundary method"):
        bounds.fit_boundary(table, "random_forest", np.arange(6), np.array([0, 0, 0, 1, 1, 1]), ["latent_0"], "x")
    with pytest.raises(ParameterError, match="both classes"):
        bounds.fit_boundary(table, "logistic", np.arange(6), np.ones(6), ["latent_0"], "x")


def test_save_boundary_copy_leaves_the_original_alone(tmp_path):
    from galexplore.models.checkpoint import ModelCard, load_checkpoint, save_checkpoint
    from galexplore.models.registry import build_model

    torch.manual_seed(0)
    original = save_checkpoint(
        build_model("cae_free", in_channels=1, latent_dim=3),
        ModelCard(name="m", architecture="cae_free", hyperparameters={"in_channels": 1, "latent_dim": 3},
                  channels=["mom1"], recipe="dawson2020", extras={"boundary": {"folded_r": 9.0}}),
        tmp_path / "shipped" / "m")
    before = {p.name: p.read_bytes() for p in original.iterdir()}
    fit = bounds.fit_boundary(_folded_table(), "vertical", np.arange(6), np.array([0, 0, 0, 1, 1, 1]), [],
                              "kappa > 0.62")
    copy = bounds.save_boundary_copy(original, fit, tmp_path / "user", "m-boundary")
    assert {p.name: p.read_bytes() for p in original.iterdir()} == before
    _, card = load_checkpoint(copy)  # checksum verified
    assert card.name == "m-boundary"
    assert card.extras["boundary"]["folded_r"] == pytest.approx(3.5)
    assert card.extras["boundary_original"] == {"folded_r": 9.0}
    assert json.loads((copy / "card.json").read_text())["training_data"]["copied_from"] == str(original.resolve())
    with pytest.raises(ParameterError, match="already exists"):
        bounds.save_boundary_copy(original, fit, tmp_path / "user", "m-boundary")
