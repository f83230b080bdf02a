"""The shipped sample in a real browser, tab by tab, as a newcomer opens it: the screenshots
the README shows (artifacts/readme/; copied to docs/images/ when they change)."""

from __future__ import annotations

import re

import pytest

from galexplore.paths import sample_model_dirs
from ui_fixtures import ARTIFACTS, TIMEOUT_MS, BrowserLog, open_page, serve_in_thread, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.skipif(not sample_model_dirs(), reason="no sample models")]


@pytest.fixture(scope="module")
def sample_server(tmp_path_factory):
    from galexplore.ui.layout import build_app, configure_panel, warm_up

    root = tmp_path_factory.mktemp("sample")
    configure_panel()
    warm_up()
    pages = []

    def session():
        page = build_app(selections_dir=root / "selections", models_dir=root / "models", real_overlay=False)
        pages.append(page)
        return page

    url, thread = serve_in_thread(session)
    try:
        yield {"url": url, "pages": pages}
    finally:
        thread.stop()


def test_every_tab_of_the_sample(browser, sample_server):
    out = ARTIFACTS / "readme"
    out.mkdir(parents=True, exist_ok=True)
    log = BrowserLog()
    page = open_page(browser, sample_server["url"], log, width=1400, height=1000)
    session = sample_server["pages"][-1].session
    wait_for(lambda: f"of {session.bundle.n_maps:,} maps of {session.bundle.n_galaxies:,} galaxies" in
             " ".join(page.locator(".selection-count p").all_inner_texts()), "the counts", page=page)
    page.locator(".bk-tool-icon-lasso-select").first.click()
    box = page.locator(".latent-figure").first.bounding_box()
    cx, cy = box["x"] + 0.75 * box["width"], box["y"] + 0.75 * box["height"]
    page.mouse.move(cx - 60, cy - 50)
    page.mouse.down()
    for dx, dy in ((40, -60), (90, -20), (70, 60), (-20, 70), (-80, 30)):
        page.mouse.move(cx + dx, cy + dy, steps=3)
    page.mouse.up()
    wait_for(lambda: session.selection.rows.size > 0, "the selection", page=page)
    page.mouse.click(cx, cy)
    page.locator(".detail-traversal img").first.wait_for(timeout=TIMEOUT_MS)
    page.wait_for_timeout(1500)
    page.screenshot(path=out / "explore.png")
    for tab, action in (("Selection", None), ("Statistics", "Compute figures"), ("Your data", None),
                        ("Boundaries", "Fit boundary"), ("Training", None)):
        page.get_by_text(tab, exact=True).first.click()
        page.wait_for_timeout(1500)
        if action == "Compute figures":
            page.get_by_role("button", name=action).click()
            page.get_by_text(re.compile("Computed on every map")).first.wait_for(timeout=4 * TIMEOUT_MS)
        elif action == "Fit boundary":
            page.get_by_role("button", name=action).click()
            page.get_by_text(re.compile("Mean recall")).first.wait_for(timeout=4 * TIMEOUT_MS)
        page.wait_for_timeout(1500)
        page.screenshot(path=out / f"{tab.lower().replace(' ', '_')}.png")
    page.close()
    assert log.problems == [], log.problems
