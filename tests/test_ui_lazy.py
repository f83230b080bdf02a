"""What keeps the explorer fast: tabs built on first view, a float32 colour layer, the
selection's details only while their tab is shown, hover points only when few are in view."""

from __future__ import annotations

import numpy as np
import pandas as pd
import panel as pn
import pytest
import holoviews as hv
from bokeh.document import Document

from galexplore.ui.bundle import Bundle, load_bundle
from galexplore.ui.latent_view import HOVER_LIMIT, LatentView, as_float32
from galexplore.ui.layout import on_first_view
from galexplore.ui.selection_view import SelectionView
from galexplore.ui.state import ExplorerState
from ui_fixtures import build_ui_fixture

hv.extension("bokeh")  # as the app does: the latent map's options are Bokeh's


@pytest.fixture(scope="module")
def fixture_paths(tmp_path_factory):
    return build_ui_fixture(tmp_path_factory.mktemp("lazy"), n=120)


@pytest.fixture
def state(fixture_paths, tmp_path):
    dataset, model = fixture_paths
    return ExplorerState(load_bundle(dataset, model), selections_dir=tmp_path / "selections")


def test_a_tab_is_built_the_first_time_it_is_shown():
    built = []

    def build():
        built.append(1)
        return pn.pane.Markdown("statistics")

    tabs = pn.Tabs(("Explore", pn.pane.Markdown("map")), ("Statistics", on_first_view(build)), dynamic=True)
    tabs.server_doc(Document())
    assert built == []
    tabs.active = 1
    assert built == [1]
    tabs.active = 0
    tabs.active = 1
    assert built == [1]


def test_the_colour_layer_is_cast_to_float32_exactly():
    values = np.array([[0.1, np.nan], [1.0 / 3.0, 2.5e6]])
    image = hv.Image(values, vdims="value")
    cast = as_float32(image)
    data = cast.dimension_values("value", flat=False)
    assert data.dtype == np.float32
    # float32 keeps 24 significant bits: relative error below 2**-24, NaN stays NaN
    expected = image.dimension_values("value", flat=False)
    finite = np.isfinite(expected)
    assert np.all(np.abs(data[finite] - expected[finite]) <= np.abs(expected[finite]) * 2.0 ** -24)
    assert np.array_equal(np.isnan(data), ~finite)
    counts = hv.Image(np.array([[1, 2], [3, 4]], dtype=np.uint32), vdims="count")
    assert as_float32(counts).dimension_values("count").dtype == np.uint32


def test_empty_pixels_of_a_count_layer_become_float32_nan():
    counts = hv.Image(np.array([[0.0, 2.0], [3.0, 0.0]]), vdims=hv.Dimension("count", nodata=0))
    values = as_float32(counts).dimension_values("count", flat=False)
    assert values.dtype == np.float32
    expected = counts.dimension_values("count", flat=False)  # HoloViews' own float64 NaN masking
    assert np.array_equal(np.isnan(values), np.isnan(expected)) and np.isnan(expected).sum() == 2
    assert sorted(values[np.isfinite(values)].tolist()) == [2.0, 3.0]


def test_selection_details_wait_until_their_tab_is_shown(state, tmp_path):
    view = SelectionView(state, tmp_path)
    view.shown = False
    x, y = state.xy()
    state.select_box(float(np.min(x)), float(np.min(y)), float(np.median(x)), float(np.max(y)))
    n = state.selection.size
    assert n > 0
    assert f"{n:,} selected" in view.count.pane.object  # the count follows at once
    assert len(view.table.value) != n  # the table does not, while hidden
    view.shown = True
    assert len(view.table.value) == n
    assert sorted(view.table.value["id"]) == sorted(state.table["id"].to_numpy()[state.selection])


def test_hover_points_are_sent_only_when_few_are_in_view(tmp_path):
    n = 3 * HOVER_LIMIT
    rng = np.random.default_rng(3)
    table = pd.DataFrame({"id": np.arange(n), "latent_0": rng.uniform(0, 1, n), "latent_1": rng.uniform(0, 1, n),
                          "kappa": rng.uniform(0, 1, n)})
    state = ExplorerState(Bundle(dataset=None, model=None, table=table, column_units={}), selections_dir=tmp_path)
    view = LatentView(state)
    assert len(view._hover_points(x_range=(0, 1), y_range=(0, 1))) == 0
    # a window holding a sixth of the points (uniform in x) is below the limit: every one in it
    in_window = int(np.sum(table["latent_0"] <= 1 / 6))
    assert in_window < HOVER_LIMIT
    assert len(view._hover_points(x_range=(0, 1 / 6), y_range=(0, 1))) == in_window
