"""Boundaries and background training in a real browser: fit a boundary from the page and see
it and its metrics, start a tiny training job, watch its progress bar move, cancel it.

Same server pattern as test_browser_app.py (headless /usr/bin/chromium, a Panel server on a
free port, the small fixture dataset and model). Screenshots go to artifacts/.
"""

from __future__ import annotations

import io
import os
import re
import time

import numpy as np
import pytest

from ui_fixtures import ARTIFACTS, TIMEOUT_MS, explorer_server

pytestmark = pytest.mark.browser



@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser-training")
    saved_env = os.environ.get("GALEXPLORE_DATA_DIR")
    os.environ["GALEXPLORE_DATA_DIR"] = str(root / "user")  # the user's models directory
    try:
        with explorer_server(root) as served:
            yield served
    finally:
        if saved_env is None:
            os.environ.pop("GALEXPLORE_DATA_DIR", None)
        else:
            os.environ["GALEXPLORE_DATA_DIR"] = saved_env


def _orange_pixels(png: bytes) -> int:
    """Pixels close to the boundary colour #ff7f0e."""
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)
    return int((np.abs(pixels - np.array([255, 127, 14])).sum(axis=-1) < 60).sum())


def _pane_text(page, css_class: str) -> str:
    """Text of a Markdown pane with ``css_class`` (its paragraphs live in a shadow root)."""
    return "\n".join(page.locator(f".{css_class} p").all_inner_texts())


def _wait(condition, what: str, timeout_s: float = 90.0, page=None) -> None:
    deadline = time.time() + timeout_s
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        if page is not None:
            page.wait_for_timeout(200)
        else:
            time.sleep(0.2)


def test_boundary_fit_and_training_progress_cancel(browser, server):
    from galexplore.paths import user_models_dir
    from galexplore.training.jobs import CANCELLED, TMP_PREFIX
    from galexplore.ui.jobs_state import shared_job_manager

    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1700, "height": 1100})
    page.goto(server["url"], timeout=TIMEOUT_MS)
    page.locator(".latent-map canvas").first.wait_for(timeout=TIMEOUT_MS)
    page.wait_for_timeout(1500)
    state = server["states"][-1]
    state.color_by = "density (counts)"  # a colour scale without orange, so the boundary stands out
    page.wait_for_timeout(1500)
    before = _orange_pixels(page.locator(".latent-map").first.screenshot())

    # --- retrain the Dawson boundary for kappa > 0.6 from the Boundaries tab
    page.get_by_text("Boundaries", exact=True).first.click()
    threshold = page.get_by_label("Threshold (class 1 above)")
    threshold.fill("0.6")
    threshold.press("Enter")
    page.get_by_role("button", name="Fit boundary").click()
    _wait(lambda: "TP = TN crossing" in _pane_text(page, "boundary-metrics"), "the boundary metrics", page=page)
    text = _pane_text(page, "boundary-metrics")
    assert "kappa > 0.6" in text and "Mean recall" in text
    r = state.table["folded_r"].to_numpy()
    crossing = float(re.search(r"r = ([-\d.e]+)", text).group(1))
    # the page's figure is the TP = TN crossing of the table, recomputed here from the two rates
    positive = state.table["kappa"].to_numpy() > 0.6
    tp = np.mean(r[positive] >= crossing)
    tn = np.mean(r[~positive] < crossing)
    assert abs(tp - tn) <= 2.0 / min(positive.sum(), (~positive).sum())
    np.testing.assert_array_equal(state.table["pred_class_user"].to_numpy(), (r >= crossing * (1 - 1e-12)) * 1)
    page.screenshot(path=ARTIFACTS / "browser_boundary_metrics.png")

    # --- the boundary is drawn on the latent map
    page.get_by_text("Explore", exact=True).first.click()
    page.wait_for_timeout(2500)
    shot = page.locator(".latent-map").first.screenshot(path=ARTIFACTS / "browser_boundary_map.png")
    assert _orange_pixels(shot) > before + 150

    # --- a tiny training job: progress bar moves, then cancel
    page.get_by_text("Training", exact=True).first.click()
    epochs = page.get_by_label("Epochs")
    epochs.fill("300")
    epochs.press("Enter")
    images = page.get_by_label("Images per epoch")
    images.fill("32")
    images.press("Enter")
    page.get_by_role("button", name="Start training").click()
    _wait(lambda: re.search(r"epoch \d+/300", _pane_text(page, "training-status")) is not None, "the first epoch",
          page=page)
    progress = page.locator(".training-progress progress").first
    first = float(progress.get_attribute("value"))
    _wait(lambda: float(progress.get_attribute("value")) > first, "the progress bar to move", page=page)
    assert "on cpu" in _pane_text(page, "training-status")
    page.screenshot(path=ARTIFACTS / "browser_training_progress.png")

    page.get_by_role("button", name="Cancel training").click()
    _wait(lambda: re.search("cancelled|stopped early", _pane_text(page, "training-status")) is not None,
          "the job to be cancelled", page=page)
    job = shared_job_manager(user_models_dir()).jobs[-1]
    assert job.status == CANCELLED and not job.process.is_alive()
    assert not list(user_models_dir().glob(f"{TMP_PREFIX}*"))
    assert state.message_level != "danger", state.message
    page.screenshot(path=ARTIFACTS / "browser_training_cancelled.png")
    page.close()
