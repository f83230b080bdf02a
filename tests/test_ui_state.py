"""The explorer's state and computation layer, without a browser."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from matplotlib.path import Path as MplPath

from galexplore.errors import DatasetError, ParameterError, SelectionError
from galexplore.ui.bundle import load_bundle, projection_options
from galexplore.ui.colours import COLORMAPS, default_colormap, default_range
from galexplore.ui.state import DENSITY, ExplorerState
from ui_fixtures import build_ui_fixture, write_velocity_fits


@pytest.fixture(scope="module")
def fixture_paths(tmp_path_factory):
    return build_ui_fixture(tmp_path_factory.mktemp("ui"), n=240)


@pytest.fixture
def state(fixture_paths, tmp_path):
    dataset, model = fixture_paths
    return ExplorerState(load_bundle(dataset, model), allowed_dirs=[dataset.parent],
                         selections_dir=tmp_path / "selections")


def _triangle(x, y):
    return np.array([[np.percentile(x, 5), np.percentile(y, 5)], [np.percentile(x, 95), np.percentile(y, 20)],
                     [np.percentile(x, 40), np.percentile(y, 95)]])


def _inside(x, y, polygon):
    return set(np.flatnonzero(MplPath(polygon).contains_points(np.column_stack([x, y]))).tolist())


def test_projection_options_follow_the_columns():
    options = projection_options(["id", "latent_0", "latent_1", "latent_2", "pca_0", "pca_1", "pca_2",
                                  "folded_r", "folded_h", "umap_0", "umap_1"])
    assert options["folded (r, h)"] == ("folded_r", "folded_h")
    assert options["UMAP"] == ("umap_0", "umap_1")
    assert options["PCA 1 vs 2"] == ("pca_1", "pca_2")
    assert options["latent 0 vs 2"] == ("latent_0", "latent_2")
    assert len(options) == 3 + 1 + 1 + 3
    assert "UMAP" not in projection_options(["latent_0", "latent_1"])


def test_state_defaults_to_the_folded_space_coloured_by_kappa(state):
    assert state.projection == "folded (r, h)"
    assert state.color_by == "kappa"
    assert state.effective_range() == (0.0, 1.0)
    state.color_by = "pa"
    assert state.effective_range() == (0.0, 360.0)
    assert state.effective_colormap() == COLORMAPS["colorwheel (cyclic)"]
    state.color_by = DENSITY
    assert state.density and state.colour_values() is None


def test_colour_defaults():
    assert default_range("kappa") == (0.0, 1.0)
    assert default_range("pa_latent") == (0.0, 360.0)
    assert default_colormap("pa") == "colorwheel (cyclic)"
    values = np.arange(101, dtype=float)
    assert default_range("log_mstar", values) == (1.0, 99.0)


def test_lasso_selects_exactly_the_points_inside(state):
    x, y = state.xy()
    polygon = _triangle(x, y)
    selected = state.select_polygon(polygon)
    assert set(selected.tolist()) == _inside(x, y, polygon)
    assert 0 < selected.size < len(x)
    np.testing.assert_array_equal(state.polygon, polygon)


def test_selection_modes_combine_like_sets(state):
    x, y = state.xy()
    first = _triangle(x, y)
    pad_x, pad_y = 0.1 * np.ptp(x), 0.1 * np.ptp(y)  # no point on the rectangle's edges
    left, bottom, top, middle = x.min() - pad_x, y.min() - pad_y, y.max() + pad_y, np.median(x)
    second = np.array([[left, bottom], [middle, bottom], [middle, top], [left, top]])
    a, b = _inside(x, y, first), _inside(x, y, second)
    state.select_polygon(first)
    state.selection_mode = "add"
    assert set(state.select_polygon(second).tolist()) == a | b
    state.selection_mode = "subtract"
    assert set(state.select_polygon(first).tolist()) == b - a
    state.selection_mode = "new"
    state.select_polygon(first)
    state.selection_mode = "intersect"
    assert set(state.select_polygon(second).tolist()) == a & b
    assert [step["mode"] for step in state.history] == ["new", "intersect"]


def test_box_select_and_filters(state):
    x, y = state.xy()
    kappa = state.table["kappa"].to_numpy()
    state.set_filter("kappa", 0.3, 0.6)
    box = (np.percentile(x, 10), np.percentile(y, 10), np.percentile(x, 90), np.percentile(y, 90))
    selected = state.select_box(*box)
    expected = np.flatnonzero((x >= box[0]) & (x <= box[2]) & (y >= box[1]) & (y <= box[3])
                              & (kappa >= 0.3) & (kappa <= 0.6))
    np.testing.assert_array_equal(selected, expected)
    with pytest.raises(ParameterError):
        state.set_filter("kappa", 0.9, 0.1)


def test_click_shows_the_nearest_visible_galaxy(state):
    x, y = state.xy()
    assert state.click(x[17], y[17]) == 17
    kappa = state.table["kappa"].to_numpy()
    state.set_filter("kappa", kappa[17] + 1e-9, 1.0)
    row = state.click(x[17], y[17])
    assert row != 17 and kappa[row] > kappa[17]
    state.show_id(int(state.table["id"].iloc[5]))
    assert state.clicked_row == 5
    with pytest.raises(SelectionError):
        state.show_id(-1)


def test_export_through_the_state(state, tmp_path):
    x, y = state.xy()
    polygon = _triangle(x, y)
    rows = state.select_polygon(polygon)
    csv_path = state.export(tmp_path / "out.csv")
    exported = pd.read_csv(csv_path)
    assert sorted(exported["id"]) == sorted(state.table["id"].to_numpy()[rows].tolist())
    for column in ("id", "kappa", "pa", "latent_0", "pca_2", "folded_r", "folded_h"):
        assert column in exported.columns
    provenance = json.loads(csv_path.with_name("out.provenance.json").read_text())
    np.testing.assert_allclose(provenance["lasso_polygon"], polygon)
    assert provenance["dataset_fingerprint"] == state.bundle.dataset.fingerprint
    assert provenance["projection"]["x"] == "folded_r"
    state.clear_selection()
    with pytest.raises(SelectionError):
        state.export(tmp_path / "empty.csv")


def test_named_selections_round_trip(state):
    x, y = state.xy()
    rows = state.select_polygon(_triangle(x, y))
    state.save_selection("left wedge")
    state.clear_selection()
    assert state.saved_selection_names() == ["left wedge"]
    np.testing.assert_array_equal(state.restore_selection("left wedge"), rows)
    with pytest.raises(SelectionError):
        state.restore_selection("missing")


def test_only_configured_directories_open(state, tmp_path):
    with pytest.raises(ParameterError, match="outside the directories"):
        state.check_allowed(tmp_path)
    with pytest.raises(ParameterError):
        state.load(tmp_path, "anything")


def test_a_failing_callback_is_shown_and_the_state_stays_usable(state):
    from galexplore.ui.callbacks import guarded

    def broken():
        raise DatasetError("the manifest is missing; rebuild the dataset")

    assert guarded(state, broken)() is None
    assert state.message == "the manifest is missing; rebuild the dataset"
    assert state.message_level == "danger"
    guarded(state, lambda: 1 / 0)()
    assert state.message.startswith("ZeroDivisionError")
    x, y = state.xy()
    assert state.click(x[0], y[0]) == 0


def test_new_latents_land_on_the_table_projections(state):
    bundle = state.bundle
    latent = bundle.table[["latent_0", "latent_1", "latent_2"]].to_numpy()[:20]
    placed = bundle.place_latents(latent)
    for column in ("pca_0", "pca_1", "pca_2", "folded_r", "folded_h"):
        np.testing.assert_allclose(placed[column], bundle.table[column].to_numpy()[:20], rtol=1e-4, atol=1e-6)
