"""The explorer in a real browser: headless Chromium driven by Playwright against a Panel server
started here on a free port, with a 300-map fixture dataset and two untrained models.

Each test drives the page as a user does (clicks, drags, menus) and reads back what the
browser shows (Bokeh's models in the page, element boxes, downloads). Every test also
asserts that the page logged no console error, and fetched nothing from another machine.
Screenshots go to artifacts/ (git-ignored).
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
import zipfile

import numpy as np
import pandas as pd
import pytest
from matplotlib.path import Path as MplPath

from ui_fixtures import ARTIFACTS, TIMEOUT_MS, BrowserLog, explorer_server, open_page, wait_for, write_velocity_fits

pytestmark = pytest.mark.browser

VIEWPORT_WIDTH = 1400
#: What the page's latent figure shows, read from BokehJS's own models in the browser.
MAP_STATE = """() => {
  for (const doc of Bokeh.documents) {
    for (const m of doc.all_models) {
      if (m.css_classes && m.css_classes.includes('latent-figure')) {
        const bar = m.right.find(r => r.color_mapper !== undefined);
        return {x: [m.x_range.start, m.x_range.end], y: [m.y_range.start, m.y_range.end], title: bar.title,
                xlabel: m.below[0].axis_label, ylabel: m.left[0].axis_label,
                tooltips: m.toolbar.tools.filter(t => t.tooltips && t.tooltips.length > 2)
                                         .map(t => t.tooltips.map(pair => pair[0]))[0]};
      }
    }
  }
  return null;
}"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The fixture server, with a second model ("test-cae-b") among the user's models."""
    import torch

    from galexplore.analysis.embed import load_or_compute_embedding
    from galexplore.models.checkpoint import load_checkpoint, save_checkpoint
    from galexplore.models.registry import build_model
    from galexplore.paths import user_models_dir

    root = tmp_path_factory.mktemp("browser")
    with explorer_server(root) as served:
        _, card = load_checkpoint(served["model"])
        torch.manual_seed(7)
        other = save_checkpoint(build_model("cae_free", in_channels=1, latent_dim=3),
                                dataclasses.replace(card, name="test-cae-b", checksum=""),
                                user_models_dir() / "test-cae-b")
        load_or_compute_embedding(other, served["dataset"], device="cpu", umap=False)
        served["other_model"] = other
        yield served


@pytest.fixture
def log():
    log = BrowserLog()
    yield log
    assert log.problems == [], log.problems  # no console error, nothing fetched from elsewhere


def _choose(page, label: str, option: str) -> None:
    """Pick ``option`` in the Panel select labelled ``label``."""
    page.locator(".bk-input-group").filter(has=page.get_by_text(label, exact=True)).locator("select").first \
        .select_option(label=option)


def _map(page) -> dict:
    return page.evaluate(MAP_STATE)


def _tab(page, name: str) -> None:
    page.get_by_text(name, exact=True).first.click()


def _drag_lasso(page, session, centre=(0.42, 0.5), radius=(0.2, 0.22)) -> None:
    """Drag a closed elliptical lasso over the map; wait until the server has the selection."""
    page.locator(".bk-tool-icon-lasso-select").first.click()
    box = page.locator(".latent-figure").first.bounding_box()
    cx, cy = box["x"] + centre[0] * box["width"], box["y"] + centre[1] * box["height"]
    path = [(cx + radius[0] * box["width"] * np.cos(t), cy + radius[1] * box["height"] * np.sin(t))
            for t in np.linspace(0, 2 * np.pi, 24)]
    page.mouse.move(*path[0])
    page.mouse.down()
    for point in path[1:]:
        page.mouse.move(*point, steps=2)
    page.mouse.up()
    wait_for(lambda: session.selection.rows.size > 0, "the lasso's selection", page=page)


def _count_text(page) -> str:
    return " ".join(page.locator(".selection-count p").all_inner_texts())


def test_projection_switch_shows_the_whole_new_projection_and_reset_returns_there(browser, server, log):
    page = open_page(browser, server["url"], log)
    session = server["pages"][-1].session
    bundle = session.bundle
    # counts are of maps and of galaxies (two views per galaxy)
    wait_for(lambda: "of 300 maps of 150 galaxies" in _count_text(page), "the counts", page=page)
    page.screenshot(path=ARTIFACTS / "browser_explore.png")
    for projection in ("PCA 0 vs 1", "latent 1 vs 2", "folded (r, h)"):
        _choose(page, "Projection", projection)
        x, y = bundle.xy(projection)
        wait_for(lambda: _map(page)["xlabel"] == bundle.label(bundle.axes(projection)[0]), "new axes", page=page)
        shown = _map(page)
        assert shown["x"][0] < x.min() and shown["x"][1] > x.max(), (projection, shown)
        assert shown["y"][0] < y.min() and shown["y"][1] > y.max(), (projection, shown)
        assert shown["ylabel"] == bundle.label(bundle.axes(projection)[1])
        assert shown["tooltips"][:2] == [bundle.label(c) for c in bundle.axes(projection)]
    full = _map(page)
    # zoom into a box, then Reset: back to the whole folded plane, not an old window
    page.locator(".bk-tool-icon-auto-box-zoom").first.click()
    box = page.locator(".latent-figure").first.bounding_box()
    page.mouse.move(box["x"] + 0.3 * box["width"], box["y"] + 0.3 * box["height"])
    page.mouse.down()
    page.mouse.move(box["x"] + 0.5 * box["width"], box["y"] + 0.5 * box["height"], steps=5)
    page.mouse.up()
    wait_for(lambda: _map(page)["x"][1] - _map(page)["x"][0] < 0.7 * (full["x"][1] - full["x"][0]), "the zoom",
             page=page)
    page.locator(".bk-tool-icon-reset").first.click()
    wait_for(lambda: np.allclose(_map(page)["x"], full["x"]) and np.allclose(_map(page)["y"], full["y"]),
             "Reset", page=page)
    # the wheel over the map scrolls the page and leaves the map alone
    page.set_viewport_size({"width": VIEWPORT_WIDTH, "height": 500})  # a page taller than the window
    page.wait_for_timeout(500)
    box = page.locator(".latent-figure").first.bounding_box()
    before = _map(page)
    page.mouse.move(box["x"] + 0.5 * box["width"], box["y"] + 0.5 * box["height"])
    page.mouse.wheel(0, 400)
    page.wait_for_timeout(800)
    assert page.evaluate("() => window.scrollY") > 0 and _map(page)["x"] == before["x"]
    page.close()


def test_colourbar_names_the_column_and_its_unit(browser, server, log):
    page = open_page(browser, server["url"], log)
    bundle = server["pages"][-1].session.bundle
    assert _map(page)["title"] == "kappa"  # no unit
    for column, title in (("pa", "pa [deg]"), ("vflat_kms", "vflat_kms [km/s]"),
                          ("latent_0", "latent_0 [latent units]"), ("density (maps per pixel)", "maps per pixel")):
        _choose(page, "Colour by", column)
        wait_for(lambda: _map(page)["title"] == title, f"the colourbar title {title!r}", page=page)
    assert bundle.label("log_mstar") == "log_mstar [dex(Msun)]"
    page.screenshot(path=ARTIFACTS / "browser_colour_density.png")
    page.close()


def test_lasso_click_detail_and_selection_fit_the_window_and_export_one_zip(browser, server, log):
    page = open_page(browser, server["url"], log, width=VIEWPORT_WIDTH)
    session = server["pages"][-1].session
    _drag_lasso(page, session)
    x, y = session.bundle.xy(session.map.projection)
    polygon = session.selection.current.polygon
    expected = int(MplPath(polygon).contains_points(np.column_stack([x, y])).sum())
    assert session.selection.rows.size == expected > 0
    galaxies = session.bundle.column("galaxy_id")[session.selection.rows]
    wait_for(lambda: f"{expected:,} maps selected ({np.unique(galaxies).size:,} galaxies)" in _count_text(page),
             "the selection count", page=page)
    page.screenshot(path=ARTIFACTS / "browser_lasso.png")

    # a click shows the detail, whose every part lies inside the window
    box = page.locator(".latent-figure").first.bounding_box()
    page.mouse.click(box["x"] + 0.42 * box["width"], box["y"] + 0.5 * box["height"])
    page.get_by_text(re.compile(r"Galaxy id \d+")).first.wait_for(timeout=TIMEOUT_MS)
    page.locator(".detail-traversal img").first.wait_for(timeout=TIMEOUT_MS)
    for selector in (".detail-view", ".detail-images", ".detail-facts", ".detail-neighbours", ".detail-traversal"):
        part = page.locator(selector).first.bounding_box()
        assert part["x"] + part["width"] <= VIEWPORT_WIDTH, (selector, part)
    assert page.evaluate("() => document.documentElement.scrollWidth") <= VIEWPORT_WIDTH
    page.screenshot(path=ARTIFACTS / "browser_detail.png", full_page=True)

    # the Selection tab: every part, the table's paginator included, inside the window
    _tab(page, "Selection")
    page.locator(".selection-table").first.wait_for(timeout=TIMEOUT_MS)
    page.get_by_text("Next", exact=True).first.wait_for(timeout=TIMEOUT_MS)
    for locator in (page.locator(".selection-table").first, page.get_by_text("Next", exact=True).first,
                    page.locator(".selection-gallery").first):
        part = locator.bounding_box()
        assert part["x"] + part["width"] <= VIEWPORT_WIDTH, part
    assert page.evaluate("() => document.documentElement.scrollWidth") <= VIEWPORT_WIDTH
    page.screenshot(path=ARTIFACTS / "browser_selection.png", full_page=True)

    # one download: the rows, their units and the provenance, as strict JSON
    button = page.get_by_text(re.compile("Download the selection")).first
    with page.expect_download(timeout=TIMEOUT_MS) as download:
        button.click()
    with zipfile.ZipFile(download.value.path()) as archive:
        names = sorted(archive.namelist())
        rows = pd.read_csv(io.BytesIO(archive.read(names[0])))
        record = json.loads(archive.read(names[1]), parse_constant=lambda c: pytest.fail(f"{c} in the provenance"))
    assert names == ["selection.csv", "selection.provenance.json"]
    assert sorted(rows["id"]) == sorted(session.bundle.column("id")[session.selection.rows].tolist())
    assert record["column_units"]["pa"] == "deg" and record["column_units"]["folded_r"] == "latent units"
    assert record["dataset_fingerprint"] == session.bundle.dataset.fingerprint
    assert len(record["model_hash"]) == 64 and record["lasso_polygon"] == np.asarray(polygon).tolist()
    assert record["selection_history"][0]["mode"] == "new" and "numpy" in record["versions"]
    page.close()


def test_model_switch_then_clicks_work_and_imported_galaxies_follow(browser, server, log):
    page = open_page(browser, server["url"], log)
    session = server["pages"][-1].session
    first = session.bundle
    # an uploaded galaxy, then another model: the marker is placed again, with a word
    fits_path = write_velocity_fits(server["root"] / "upload.fits", 120.0, 60.0, size=48, name="NGC 4429 MOCK")
    _tab(page, "Your data")
    page.locator(".fits-upload input[type=file]").first.set_input_files(str(fits_path))
    wait_for(lambda: session.map.markers is not None, "the marker", page=page)
    before = session.map.markers[["latent_0", "latent_1"]].to_numpy()
    _tab(page, "Explore")
    _choose(page, "Model", "test-cae-b (yours)")
    wait_for(lambda: session.bundle.name == "test-cae-b", "the switch", page=page)
    wait_for(lambda: session.map.markers is not None and not np.allclose(
        session.map.markers[["latent_0", "latent_1"]].to_numpy(), before), "the marker re-placed", page=page)
    assert session.selection.rows.size == 0 and session.bundle is not first
    assert page.locator("select").filter(has_text="test-cae-b").count() >= 1  # the sidebar names the new model
    wait_for(lambda: _map(page)["x"][1] > session.bundle.xy("folded (r, h)")[0].max(), "the new map", page=page)
    # clicks on the new model's map show the new model's galaxies
    box = page.locator(".latent-figure").first.bounding_box()
    page.mouse.click(box["x"] + 0.45 * box["width"], box["y"] + 0.6 * box["height"])
    page.get_by_text(re.compile(r"Galaxy id \d+")).first.wait_for(timeout=TIMEOUT_MS)
    assert session.map.clicked is not None
    page.screenshot(path=ARTIFACTS / "browser_model_switch.png")
    # and back through the checkpoint field, which accepts only allowed directories
    field = page.locator("input[placeholder='/path/to/checkpoint']").first
    field.fill("/definitely/not/allowed/checkpoint")
    page.get_by_text("Open", exact=True).first.click()
    page.get_by_text(re.compile("is outside the directories this server may open")).first.wait_for(timeout=TIMEOUT_MS)
    field.fill(str(server["model"]))
    page.get_by_text("Open", exact=True).first.click()
    wait_for(lambda: session.bundle.name == "test-cae", "the first model again", page=page)
    page.close()


def test_upload_names_that_are_not_paths(browser, server, log):
    page = open_page(browser, server["url"], log)
    session = server["pages"][-1].session
    content = write_velocity_fits(server["root"] / "named.fits", 33.0, 50.0, size=40, name="").read_bytes()
    files = [{"name": "../../escape.fits", "mimeType": "application/fits", "buffer": content},
             {"name": "y" * 300 + ".fits", "mimeType": "application/fits", "buffer": content},
             {"name": "broken.fits", "mimeType": "application/fits", "buffer": b"not a FITS file"}]
    _tab(page, "Your data")
    page.locator(".fits-upload input[type=file]").first.set_input_files(files)
    wait_for(lambda: session.map.markers is not None and len(session.map.markers) == 2, "two markers", page=page)
    assert session.map.markers["name"].tolist() == ["escape.fits", "y" * 119 + "…"]
    assert not (server["root"].parent / "escape.fits").exists()
    page.get_by_text(re.compile("1 file\\(s\\) could not be read: broken.fits")).first.wait_for(timeout=TIMEOUT_MS)
    page.screenshot(path=ARTIFACTS / "browser_upload.png")
    page.close()


def test_statistics_say_what_they_computed_on(browser, server, log):
    page = open_page(browser, server["url"], log)
    _tab(page, "Statistics")
    page.get_by_role("button", name="Compute figures").click()
    page.get_by_text("Computed on every map: 300 maps of 150 galaxies.").first.wait_for(timeout=4 * TIMEOUT_MS)
    page.get_by_text(re.compile("On all 300 maps; mutual information divided by its mean over 50 shuffles")) \
        .first.wait_for(timeout=TIMEOUT_MS)
    page.wait_for_timeout(1500)
    page.screenshot(path=ARTIFACTS / "browser_statistics.png", full_page=True)
    page.close()
