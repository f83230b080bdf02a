"""The page and its states without a browser: what a session costs to build, tabs built on
first view, states that follow the bundle, and results for an old bundle dropped."""

from __future__ import annotations

import asyncio

import numpy as np
import panel as pn
import pytest
from bokeh.document import Document

from galexplore.explorer.bundles import BUNDLES
from galexplore.ui import layout
from galexplore.ui.state import DENSITY
from ui_fixtures import build_ui_fixture


@pytest.fixture(scope="module")
def fixture_paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("page")
    dataset, model = build_ui_fixture(root, n=120)
    other_root = tmp_path_factory.mktemp("page-other")
    other_dataset, _ = build_ui_fixture(other_root, n=60, seed=5)
    return dataset, model, other_dataset


@pytest.fixture
def page(fixture_paths, tmp_path):
    dataset, model, _ = fixture_paths
    return layout.build_app(dataset, model, selections_dir=tmp_path / "selections", models_dir=tmp_path / "models",
                            real_overlay=False)


def test_a_session_is_small_and_its_tabs_are_built_when_first_shown(page):
    document = Document()
    pn.panel(page).server_doc(document)
    assert len(list(document.models)) < 250  # the Explore tab and the sidebar only
    assert page._views == {}
    page.tabs.active = 1
    assert set(page._views) == {"Selection"}
    page.tabs.active = 0
    page.tabs.active = 1
    assert set(page._views) == {"Selection"}  # built once
    assert page._views["Selection"].shown
    page.tabs.active = 0
    assert not page._views["Selection"].shown


def test_the_map_follows_projection_colour_and_model(page, fixture_paths):
    session, latent = page.session, page.latent
    figure = latent.figure
    session.map.projection = "PCA 0 vs 1"
    x, _ = session.bundle.xy("PCA 0 vs 1")
    assert figure.x_range.start < x.min() < 0 < x.max() < figure.x_range.end
    assert (figure.x_range.reset_start, figure.x_range.reset_end) == (figure.x_range.start, figure.x_range.end)
    assert figure.xaxis[0].axis_label == "pca_0 [latent units]"
    session.map.color_by = "pa"
    assert latent.colour_bar.title == "pa [deg]" and latent.colour_mapper.high == 360.0
    session.map.color_by = DENSITY
    assert latent.colour_bar.title == "maps per pixel"
    # a table that only gains columns keeps the view; another model shows its whole projection
    figure.x_range.update(start=0.0, end=1e-3)
    session.source.bundle = session.bundle.with_columns({"extra": np.zeros(session.bundle.n_maps)})
    assert (figure.x_range.start, figure.x_range.end) == (0.0, 1e-3)
    session.map.reset = True
    assert figure.x_range.start < x.min()


def test_selection_survives_another_model_but_not_another_dataset(page, fixture_paths):
    dataset, model, other_dataset = fixture_paths
    session = page.session
    session.selection.box(-1, -1, 1, 1)
    rows = session.selection.rows.copy()
    assert rows.size > 0
    same_dataset = BUNDLES.get(dataset, model).with_columns({"other": np.ones(120)})
    session.source.switch(same_dataset)
    np.testing.assert_array_equal(session.selection.rows, rows)
    assert session.selection.current.polygon is None  # drawn in the old model's coordinates
    session.source.switch(BUNDLES.get(other_dataset, model))
    assert session.selection.rows.size == 0 and session.map.projection == "folded (r, h)"


def test_a_boundary_fit_finishing_after_a_model_switch_is_dropped(page, fixture_paths, monkeypatch):
    from galexplore.explorer import boundaries as bounds
    from galexplore.ui.boundary_view import BoundaryView

    dataset, model, other_dataset = fixture_paths
    session = page.session
    view = BoundaryView(selection=session.selection, boundary=session.boundary, messages=session.messages,
                        models_dir=page.models_dir)
    real_fit = bounds.fit_on_bundle

    def fit_then_switch(*args, **kwargs):
        result = real_fit(*args, **kwargs)
        session.source.switch(BUNDLES.get(other_dataset, model))  # the user opened another dataset meanwhile
        return result

    monkeypatch.setattr(bounds, "fit_on_bundle", fit_then_switch)
    asyncio.run(view._on_fit(None))
    assert session.boundary.fit is None and "pred_class_user" not in session.bundle.columns
    assert session.messages.level == "warning" and "not applied" in session.messages.text


def test_errors_of_callbacks_are_shown_in_their_own_page(page):
    from galexplore.errors import SelectionError
    from galexplore.ui import feedback

    page.session.messages.report(SelectionError("nothing is selected"))
    assert (page.session.messages.level, page.session.messages.text) == ("danger", "nothing is selected")
    page.session.messages.report(ZeroDivisionError("boom"))
    assert page.session.messages.text == "ZeroDivisionError: boom"
    feedback.install()
    assert pn.config.exception_handler is feedback._handle


def test_writes_to_closed_pages_are_dropped_and_other_task_errors_reported():
    import asyncio

    from tornado.iostream import StreamClosedError
    from tornado.websocket import WebSocketClosedError

    from galexplore.ui import feedback

    class Loop:
        def __init__(self):
            self.reported = []

        def default_exception_handler(self, context):
            self.reported.append(context["exception"])

    loop = Loop()
    for closed in (WebSocketClosedError(), StreamClosedError()):
        feedback.closed_page_handler(loop, {"message": "Task exception was never retrieved", "exception": closed})
    other = ValueError("a real failure")
    feedback.closed_page_handler(loop, {"message": "Task exception was never retrieved", "exception": other})
    assert loop.reported == [other]

    async def install_in_a_running_loop():
        feedback.quiet_closed_pages()
        return asyncio.get_running_loop().get_exception_handler()

    assert asyncio.run(install_in_a_running_loop()) is feedback.closed_page_handler
    feedback.quiet_closed_pages()  # outside a running loop: nothing to install, no error
