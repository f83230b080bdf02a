"""Stored script injection, tried in a real browser: a checkpoint's name, FITS OBJECT headers
and an uploaded file's name all hold HTML that runs script if a page interprets it. The page
must show each string as text, and no script may run.

Also: `panel serve galexplore/app.py` refuses a client that is not on this machine.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ui_fixtures import ARTIFACTS, TIMEOUT_MS, free_port, serve_in_thread, write_velocity_fits

pytestmark = pytest.mark.browser

#: Each sets window.__xss when interpreted as HTML; the marker names the vector.
MODEL_NAME = '<img src=x onerror="window.__xss=\'model name\'">cae'
OBJECT_NAME = '<img src=x onerror="window.__xss=\'OBJECT\'">NGC 1'
UPLOAD_OBJECT = "<svg onload=\"window.__xss='upload OBJECT'\"></svg>NGC 2"
UPLOAD_FILE = '<img src=y onerror="window.__xss=\'file name\'">.fits'


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory):
    from galexplore.analysis.embed import load_or_compute_embedding
    from galexplore.data.fits_io import maps_to_dataset
    from galexplore.models.checkpoint import load_checkpoint, save_checkpoint
    from galexplore.ui.layout import build_app, configure_panel, warm_up
    from ui_fixtures import build_ui_fixture

    root = tmp_path_factory.mktemp("hostile")
    _, plain_model = build_ui_fixture(root, n=20)
    model, card = load_checkpoint(plain_model)
    model_dir = save_checkpoint(model, dataclasses.replace(card, name=MODEL_NAME, checksum=""),
                                root / "models" / "hostile")
    fits_files = [write_velocity_fits(root / f"g{k}.fits", 30.0 * k, 40.0 + 3 * k, size=48,
                                      name=OBJECT_NAME if k == 0 else f"NGC {k + 10}") for k in range(12)]
    dataset = maps_to_dataset(fits_files, root / "fits-universe")
    load_or_compute_embedding(model_dir, dataset, device="cpu", umap=False)
    configure_panel()
    warm_up()
    pages = []

    def session():
        page = build_app(dataset, model_dir, selections_dir=root / "selections", real_overlay=False,
                         allowed_dirs=[root])
        pages.append(page)
        return page

    url, thread = serve_in_thread(session)
    try:
        yield {"url": url, "pages": pages, "root": root, "model": model_dir}
    finally:
        thread.stop()


def test_no_user_string_runs_script_and_each_is_shown_as_text(browser, hostile_server):
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1600, "height": 1100})
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(hostile_server["url"], timeout=TIMEOUT_MS)
    page.locator(".latent-figure canvas").first.wait_for(timeout=TIMEOUT_MS)
    session = hostile_server["pages"][-1].session

    # the model's name reaches the message pane when the model is (re)opened
    field = page.locator("input[placeholder='/path/to/checkpoint']").first
    field.fill(str(hostile_server["model"]))
    page.get_by_text("Open", exact=True).first.click()
    message = page.get_by_text(re.compile("opened fits-universe with model")).first
    message.wait_for(timeout=TIMEOUT_MS)
    assert message.inner_text().endswith(MODEL_NAME)

    # the OBJECT header reaches the detail view's property table
    session.map.show_id(0)
    page.get_by_text(OBJECT_NAME).first.wait_for(timeout=TIMEOUT_MS)

    # an uploaded file's name and OBJECT reach the message pane and the marker table
    upload = hostile_server["root"] / "uploads"
    upload.mkdir(exist_ok=True)
    hostile_object = write_velocity_fits(upload / "object.fits", 200.0, 50.0, size=40, name=UPLOAD_OBJECT)
    hostile_name = write_velocity_fits(upload / UPLOAD_FILE, 100.0, 70.0, size=40, name="")  # no OBJECT
    page.get_by_text("Your data", exact=True).first.click()
    page.locator(".fits-upload input[type=file]").first.set_input_files([str(hostile_object), str(hostile_name)])
    page.get_by_text(re.compile(r"placed 2 galaxies")).first.wait_for(timeout=TIMEOUT_MS)
    for shown in (UPLOAD_OBJECT, UPLOAD_FILE):
        page.locator(".marker-table").get_by_text(shown).first.wait_for(timeout=TIMEOUT_MS)
    page.wait_for_timeout(1000)
    page.screenshot(path=ARTIFACTS / "browser_security_literal_text.png", full_page=True)

    assert page.evaluate("() => window.__xss === undefined"), page.evaluate("() => window.__xss")
    assert dialogs == []
    assert page.locator("img[src='x'], img[src='y'], svg[onload]").count() == 0
    page.close()


def _non_loopback_address() -> str | None:
    """An IPv4 address of this machine that is not loopback, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_panel_serve_refuses_a_client_that_is_not_on_this_machine(browser, tmp_path):
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to connect from")
    port = free_port()
    app = Path(__file__).resolve().parents[1] / "galexplore" / "app.py"
    env = {**os.environ, "GALEXPLORE_DATASET": str(tmp_path / "no-such-dataset")}
    env.pop("GALEXPLORE_ALLOW_REMOTE", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "panel", "serve", str(app), "--port", str(port), "--address", "0.0.0.0",
         "--allow-websocket-origin", "*"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    page = browser.new_page()
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.5)
        page.goto(f"http://{address}:{port}/app", timeout=TIMEOUT_MS)
        page.get_by_text("answers only this machine").first.wait_for(timeout=TIMEOUT_MS)
        page.screenshot(path=ARTIFACTS / "browser_security_remote_refused.png")
        # from this machine the page is built (here it reports the missing dataset instead)
        page.goto(f"http://127.0.0.1:{port}/app", timeout=TIMEOUT_MS)
        page.get_by_text("cannot start").first.wait_for(timeout=4 * TIMEOUT_MS)
        assert page.get_by_text("answers only this machine").count() == 0
        assert page.get_by_text(re.compile("no-such-dataset")).count() > 0
    finally:
        page.close()
        server.terminate()
        server.wait(timeout=60)
