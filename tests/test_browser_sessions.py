"""A short soak test (the long one is benchmarks/bench_sessions.py): a `galexplore serve`
process on localhost, three sessions open at once while one of them trains, the training
process killed with SIGKILL in the middle. Every session keeps answering, the trainer's page
says what happened, and the server writes no traceback."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ui_fixtures import ARTIFACTS, TIMEOUT_MS, BrowserLog, build_ui_fixture, free_port, open_page, wait_for

pytestmark = pytest.mark.browser


def _spawned_children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            if parent == pid and "spawn_main" in (stat.parent / "cmdline").read_text():
                found.append(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return found


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("sessions")
    dataset, model = build_ui_fixture(root, n=300)
    port = free_port()
    log_path = root / "server.log"
    env = {**os.environ, "GALEXPLORE_DATA_DIR": str(root / "home"), "PYTHONWARNINGS": "ignore"}
    with open(log_path, "w") as log:
        server = subprocess.Popen([sys.executable, "-m", "galexplore", "serve", "--dataset", str(dataset), "--model",
                                   str(model), "--port", str(port), "--no-browser"], stdout=log,
                                  stderr=subprocess.STDOUT, env=env)
    try:
        def listening() -> bool:
            assert server.poll() is None, log_path.read_text()
            with socket.socket() as s:
                return s.connect_ex(("localhost", port)) == 0

        wait_for(listening, "the server", timeout_s=300)
        yield {"url": f"http://localhost:{port}/", "server": server, "log": log_path}
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()


def _click_shows_a_galaxy(page) -> None:
    box = page.locator(".latent-figure").first.bounding_box()
    page.mouse.click(box["x"] + 0.45 * box["width"], box["y"] + 0.6 * box["height"])
    page.get_by_text(re.compile(r"Galaxy id \d+")).first.wait_for(timeout=2 * TIMEOUT_MS)


def test_three_sessions_while_a_training_job_is_killed(browser, served):
    log = BrowserLog()
    trainer = open_page(browser, served["url"], log)
    trainer.get_by_text("Training", exact=True).first.click()
    for label, value in (("Epochs", "500"), ("Images per epoch", "64")):
        field = trainer.get_by_label(re.compile(f"^{label}"))
        field.fill(value)
        field.press("Enter")
    trainer.get_by_role("button", name="Start training").click()
    wait_for(lambda: re.search(r"epoch \d+/500", " ".join(trainer.locator(".training-status p").all_inner_texts())),
             "the first epoch", page=trainer)
    others = [open_page(browser, served["url"], log) for _ in range(2)]
    jobs = _spawned_children(served["server"].pid)
    assert len(jobs) == 1
    os.kill(jobs[0], signal.SIGKILL)
    for page in others:
        _click_shows_a_galaxy(page)
    wait_for(lambda: "ended unexpectedly with exit code -9" in " ".join(
        trainer.locator(".training-status p").all_inner_texts()), "the trainer's page to report the kill", page=trainer)
    trainer.screenshot(path=ARTIFACTS / "browser_sessions_killed_job.png")
    trainer.get_by_text("Explore", exact=True).first.click()
    _click_shows_a_galaxy(trainer)
    for page in (trainer, *others):
        page.close()
    assert served["server"].poll() is None
    assert "Traceback" not in served["log"].read_text()
    assert log.problems == [], log.problems
