"""Boundaries of the Boundaries tab: hand-computed fits, user marks, predictions as columns, card copies."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from galexplore.errors import ParameterError
from galexplore.ui.boundary_view import (LABEL_SOURCES, METHODS, PRED_COLUMN, PROBA_COLUMN, BoundaryModel,
                                         fit_boundary, labels_from_marks, save_boundary_copy)
from galexplore.ui.bundle import Bundle
from galexplore.ui.state import ExplorerState

VERTICAL_LABEL = next(k for k, v in METHODS.items() if v == "vertical")
LOGISTIC_LABEL = next(k for k, v in METHODS.items() if v == "logistic")


def _state(table: pd.DataFrame, tmp_path) -> ExplorerState:
    bundle = Bundle(dataset=None, model=None, table=table, column_units={c: "" for c in table.columns})
    return ExplorerState(bundle, selections_dir=tmp_path / "selections")


def _folded_table() -> pd.DataFrame:
    # r = 1..6; kappa rises with r. Hand computation for kappa > 0.62: positives at r = 4, 5, 6.
    # Predicting positive where r >= p gives TP = TN = 1 for 3 < p <= 4, so the TP = TN
    # crossing is the middle of that interval, r = 3.5. For kappa > 0.5 (positives r = 3..6)
    # it is 2.5: the threshold moves the boundary.
    return pd.DataFrame({
        "id": np.arange(10, 16), "folded_r": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "folded_h": np.zeros(6),
        "kappa": [0.2, 0.4, 0.6, 0.65, 0.8, 0.9], "latent_0": np.arange(6.0), "latent_1": np.ones(6),
    })


def test_vertical_boundary_any_kappa_threshold(tmp_path):
    state = _state(_folded_table(), tmp_path)
    model = BoundaryModel(state)
    model.method, model.label_column, model.threshold = VERTICAL_LABEL, "kappa", 0.62
    fit = model.fit()
    assert fit.position == pytest.approx(3.5)
    assert fit.n_per_class == (3, 3)
    np.testing.assert_allclose(fit.confusion, np.eye(2))
    assert fit.mean_recall == 1.0
    np.testing.assert_array_equal(fit.predicted, [0, 0, 0, 1, 1, 1])
    assert fit.card_entry()["kappa_threshold"] == 0.62 and fit.card_entry()["folded_r"] == pytest.approx(3.5)

    model.threshold = 0.5
    assert model.fit().position == pytest.approx(2.5)


def test_labels_from_marks_by_hand():
    rows, labels = labels_from_marks(6, rows_a=[0, 1, 4], rows_b=[4, 5])
    # row 4 is marked both ways: ambiguous, left out; A -> 1, B -> 0
    np.testing.assert_array_equal(rows, [0, 1, 5])
    np.testing.assert_array_equal(labels, [1, 1, 0])


def test_marks_from_selection_fit_and_columns(tmp_path):
    state = _state(_folded_table(), tmp_path)
    model = BoundaryModel(state)
    state.selection = np.array([3, 4, 5])
    assert model.mark("A") == (3, 0)
    state.selection = np.array([0, 1, 5])
    assert model.mark("B") == (2, 3)  # row 5 moved from A to B
    state.selection = np.array([1])
    assert model.mark("clear") == (2, 2)
    model.label_source = LABEL_SOURCES[1]
    rows, labels, _ = model.labelled()
    np.testing.assert_array_equal(rows, [0, 3, 4, 5])
    np.testing.assert_array_equal(labels, [0, 1, 1, 0])

    # marks A at r = 4, 5 and B at r = 1, 6: the best TP = TN split on r (TP = TN = 1/2)
    model.method = VERTICAL_LABEL
    fit = model.fit()
    np.testing.assert_allclose(np.diag(fit.confusion), [0.5, 0.5])
    selection = state.selection.copy()
    model.apply(fit)
    np.testing.assert_array_equal(state.selection, selection)  # predictions do not reset the selection
    np.testing.assert_array_equal(state.table[PRED_COLUMN], fit.predicted)
    assert PRED_COLUMN in state.param.color_by.objects
    with pytest.raises(ParameterError, match="both classes"):
        model.clear_marks()
        model.fit()


def test_classifier_contour_on_mirror_symmetric_data(tmp_path):
    # class 1 at (x, y), class 0 at (-x, y): the regularised logistic fit is symmetric, so its
    # p = 0.5 line is x = 0 exactly (up to the contour grid)
    rng = np.random.default_rng(3)
    x, y = rng.uniform(0.5, 3.0, 40), rng.normal(0.0, 1.0, 40)
    table = pd.DataFrame({"id": np.arange(80), "latent_0": np.r_[x, -x], "latent_1": np.r_[y, y],
                          "label": np.r_[np.ones(40), np.zeros(40)]})
    state = _state(table, tmp_path)
    model = BoundaryModel(state)
    state.projection = "latent 0 vs 1"
    model.method, model.label_column, model.threshold = LOGISTIC_LABEL, "label", 0.5
    fit = model.fit()
    model.apply(fit)
    assert fit.mean_recall == 1.0 and fit.projection == "latent 0 vs 1"
    line = np.concatenate(fit.contour)
    grid_step = (np.ptp(table["latent_0"]) * 1.1) / 149
    assert np.abs(line[:, 0]).max() < grid_step
    assert np.all((state.table[PROBA_COLUMN] > 0.5) == (table["latent_0"] > 0))
    # the CSV export carries the predictions
    state.selection = np.arange(80)
    exported = pd.read_csv(state.export(tmp_path / "out.csv"))
    assert {PRED_COLUMN, PROBA_COLUMN} <= set(exported.columns)


def test_fit_rejects_unknown_method_and_one_class():
    table = _folded_table()
    with pytest.raises(ParameterError, match="unknown boundary method"):
        fit_boundary(table, "random_forest", np.arange(6), np.array([0, 0, 0, 1, 1, 1]), ["latent_0"], "x")
    with pytest.raises(ParameterError, match="both classes"):
        fit_boundary(table, "logistic", np.arange(6), np.ones(6), ["latent_0"], "x")


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
    fit = fit_boundary(_folded_table(), "vertical", np.arange(6), np.array([0, 0, 0, 1, 1, 1]), [], "kappa > 0.62")
    copy = save_boundary_copy(original, fit, tmp_path / "user", "m-boundary")
    assert {p.name: p.read_bytes() for p in original.iterdir()} == before
    _, card = load_checkpoint(copy)  # checksum verified
    assert card.name == "m-boundary"
    assert card.extras["boundary"]["folded_r"] == pytest.approx(3.5)
    assert card.extras["boundary_original"] == {"folded_r": 9.0}
    assert json.loads((copy / "card.json").read_text())["training_data"]["copied_from"] == str(original.resolve())
    with pytest.raises(ParameterError, match="already exists"):
        save_boundary_copy(original, fit, tmp_path / "user", "m-boundary")
