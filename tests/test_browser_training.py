"""Boundaries and background training in a real browser: fit a boundary and see it drawn with
its metrics, refuse out-of-range settings, train a tiny model until the page switches to it
and still answers clicks, go back, and cancel a long job.

Same server pattern as test_browser_app.py (headless /usr/bin/chromium, a Panel server on a
free port, the small fixture dataset and model). Screenshots go to artifacts/.
"""

from __future__ import annotations

import io
import re

import numpy as np
import pytest

from ui_fixtures import ARTIFACTS, TIMEOUT_MS, BrowserLog, explorer_server, open_page, wait_for

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with explorer_server(tmp_path_factory.mktemp("browser-training")) as served:
        yield served


@pytest.fixture
def log():
    log = BrowserLog()
    yield log
    assert log.problems == [], log.problems


def _orange_pixels(png: bytes) -> int:
    """Pixels close to the fitted boundary's colour #ff7f0e."""
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)
    return int((np.abs(pixels - np.array([255, 127, 14])).sum(axis=-1) < 60).sum())


def _pane_text(page, css_class: str) -> str:
    """Text of a Markdown pane with ``css_class`` (its paragraphs live in a shadow root)."""
    return "\n".join(page.locator(f".{css_class} p").all_inner_texts())


def _fill(page, label: str, value: str) -> None:
    field = page.get_by_label(re.compile(f"^{re.escape(label)}"))
    field.fill(value)
    field.press("Enter")


def test_boundary_fit_is_drawn_with_its_metrics(browser, server, log):
    page = open_page(browser, server["url"], log)
    session = server["pages"][-1].session
    page.locator(".bk-input-group").filter(has=page.get_by_text("Colour by", exact=True)).locator("select").first \
        .select_option(label="density (maps per pixel)")  # a colour scale without orange
    page.wait_for_timeout(1500)
    before = _orange_pixels(page.locator(".latent-figure").first.screenshot())

    page.get_by_text("Boundaries", exact=True).first.click()
    _fill(page, "Threshold (class 1 above)", "0.6")
    page.get_by_role("button", name="Fit boundary").click()
    wait_for(lambda: "TP = TN crossing" in _pane_text(page, "boundary-metrics"), "the boundary metrics", page=page)
    text = _pane_text(page, "boundary-metrics")
    assert "kappa > 0.6" in text and "Mean recall" in text
    table = session.bundle.frame(["folded_r", "kappa", "pred_class_user"])
    r = table["folded_r"].to_numpy()
    crossing = float(re.search(r"r = ([-\d.e]+)", text).group(1))
    positive = table["kappa"].to_numpy() > 0.6
    tp, tn = np.mean(r[positive] >= crossing), np.mean(r[~positive] < crossing)
    assert abs(tp - tn) <= 2.0 / min(positive.sum(), (~positive).sum())
    np.testing.assert_array_equal(table["pred_class_user"].to_numpy(), (r >= crossing * (1 - 1e-12)) * 1)
    page.screenshot(path=ARTIFACTS / "browser_boundaries.png")

    page.get_by_text("Explore", exact=True).first.click()
    page.wait_for_timeout(2000)
    shot = page.locator(".latent-figure").first.screenshot(path=ARTIFACTS / "browser_boundary_map.png")
    assert _orange_pixels(shot) > before + 150
    page.close()


def test_out_of_range_settings_are_refused_where_they_are_typed(browser, server, log):
    page = open_page(browser, server["url"], log)
    session = server["pages"][-1].session
    page.get_by_text("Training", exact=True).first.click()
    field = page.get_by_label(re.compile("^Epochs"))
    field.wait_for(timeout=TIMEOUT_MS)
    _fill(page, "Epochs", "0")
    page.get_by_text(re.compile("epochs must be a whole number from 1 to 10,000; 0 was refused")).first \
        .wait_for(timeout=TIMEOUT_MS)
    wait_for(lambda: field.input_value() == "5", "the field back at its last value", page=page)
    _fill(page, "Batch size", "100000")
    page.get_by_text(re.compile("batch size must be a whole number from 1 to 4,096")).first.wait_for(timeout=TIMEOUT_MS)
    assert session.messages.level == "danger"
    page.screenshot(path=ARTIFACTS / "browser_training_refused.png")
    page.close()


def test_a_finished_job_switches_the_page_which_still_answers_clicks(browser, server, log):
    from galexplore.training.jobs import TMP_PREFIX

    page = open_page(browser, server["url"], log)
    session = server["pages"][-1].session
    first = session.bundle
    page.get_by_text("Training", exact=True).first.click()
    _fill(page, "Epochs", "2")
    _fill(page, "Images per epoch", "32")
    page.get_by_role("button", name="Start training").click()
    wait_for(lambda: session.bundle.model.path != first.model.path, "the switch to the new model",
             timeout_s=240, page=page)
    new = session.bundle
    assert new.model.path.parent == server["root"] / "models-trained"
    assert not list((server["root"] / "models-trained").glob(f"{TMP_PREFIX}*"))
    wait_for(lambda: "switched" in _pane_text(page, "training-status"), "the status", page=page)
    page.screenshot(path=ARTIFACTS / "browser_training_finished.png")
    # the page shows the new model and answers clicks on it
    page.get_by_text("Explore", exact=True).first.click()
    page.wait_for_timeout(1000)
    box = page.locator(".latent-figure").first.bounding_box()
    page.mouse.click(box["x"] + 0.45 * box["width"], box["y"] + 0.6 * box["height"])
    page.get_by_text(re.compile(r"Galaxy id \d+")).first.wait_for(timeout=TIMEOUT_MS)
    assert session.map.clicked is not None and session.bundle is new
    # ... and goes back
    page.get_by_text("Training", exact=True).first.click()
    page.get_by_role("button", name="Back to the previous model").click()
    wait_for(lambda: session.bundle is first, "the previous model", page=page)
    page.close()


def test_training_progress_then_cancel_leaves_nothing(browser, server, log):
    from galexplore.training.jobs import CANCELLED, TMP_PREFIX

    page = open_page(browser, server["url"], log)
    view_page = server["pages"][-1]
    page.get_by_text("Training", exact=True).first.click()
    _fill(page, "Epochs", "300")
    _fill(page, "Images per epoch", "32")
    page.get_by_role("button", name="Start training").click()
    wait_for(lambda: re.search(r"epoch \d+/300", _pane_text(page, "training-status")) is not None,
             "the first epoch", page=page)
    progress = page.locator(".training-progress progress").first
    first = float(progress.get_attribute("value"))
    wait_for(lambda: float(progress.get_attribute("value")) > first, "the progress bar to move", page=page)
    assert "on cpu" in _pane_text(page, "training-status")
    page.screenshot(path=ARTIFACTS / "browser_training_progress.png")
    page.get_by_role("button", name="Cancel training").click()
    wait_for(lambda: re.search("cancelled|stopped early", _pane_text(page, "training-status")) is not None,
             "the job to be cancelled", page=page)
    job = view_page._views["Training"].run.job
    assert job.status == CANCELLED and not job.process.is_alive()
    assert not list((server["root"] / "models-trained").glob(f"{TMP_PREFIX}*"))
    page.screenshot(path=ARTIFACTS / "browser_training_cancelled.png")
    page.close()
