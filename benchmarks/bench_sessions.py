"""Eight users at once while one of them trains: a bounded soak test of ``galexplore serve``.

A server on localhost only (the sample universe). One session starts a training job
from its Training tab; then 8 sessions open at the same time in headless Chromium, each
lassos, clicks galaxies and opens the Selection tab; halfway through, the training
process is killed with SIGKILL. Figures, each against a baseline of the same run:

* 8 pages opened together: time until the last is usable, against one page opened alone;
* click to detail across the sessions (p50, p95, clicks without a detail within 30 s),
  against clicks in the lone page;
* tracebacks in the server's output (the goal is 0) and whether the page that trained
  reports the killed job and goes on;
* the server's resident memory: idle (one page opened and closed), with 8 sessions, and
  after they close (the goal: within 20 % of idle).

Run: ``python benchmarks/bench_sessions.py [--sessions 8] [--clicks 5]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--headless=new", "--no-first-run",
                 "--disable-background-networking"]
CLICK_TIMEOUT_S = 30.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024.0


def children(pid: int) -> list[int]:
    """Processes whose parent is ``pid``."""
    try:
        return [child.pid for child in psutil.Process(pid).children()]
    except psutil.NoSuchProcess:
        return []


async def usable(page, url: str) -> float:
    started = time.perf_counter()
    await page.goto(url, timeout=300_000)
    await page.locator(".latent-figure canvas").first.wait_for(timeout=300_000)
    await page.get_by_text(re.compile("maps selected")).first.wait_for(timeout=300_000)
    return time.perf_counter() - started


async def lasso(page) -> None:
    await page.locator(".bk-tool-icon-lasso-select").first.click()
    box = await page.locator(".latent-figure").first.bounding_box()
    cx, cy = box["x"] + 0.4 * box["width"], box["y"] + 0.5 * box["height"]
    await page.mouse.move(cx - 80, cy - 60)
    await page.mouse.down()
    for dx, dy in ((80, -90), (90, 0), (60, 80), (-40, 100), (-120, 40), (-80, -60)):
        await page.mouse.move(cx + dx, cy + dy, steps=3)
    await page.mouse.up()


async def clicks(page, n: int, seed: int) -> list[float | None]:
    """Seconds from each click on the map to its galaxy's header in the detail view (None: not
    within `CLICK_TIMEOUT_S`)."""
    import random

    rng = random.Random(seed)
    box = await page.locator(".latent-figure").first.bounding_box()
    times: list[float | None] = []
    header = page.get_by_text(re.compile(r"Galaxy id \d+"))
    for _ in range(n):
        before = await header.first.inner_text() if await header.count() else ""
        await page.mouse.click(box["x"] + rng.uniform(0.25, 0.6) * box["width"],
                               box["y"] + rng.uniform(0.3, 0.75) * box["height"])
        started = time.perf_counter()
        shown = None
        while time.perf_counter() - started < CLICK_TIMEOUT_S:
            if await header.count() and await header.first.inner_text() != before:
                shown = time.perf_counter() - started
                break
            await asyncio.sleep(0.05)
        times.append(shown)
    return times


async def one_user(browser, url: str, n_clicks: int, seed: int) -> dict:
    page = await browser.new_page(viewport={"width": 1400, "height": 1000})
    ready = await usable(page, url)
    await lasso(page)
    times = await clicks(page, n_clicks, seed)
    await page.get_by_text("Selection", exact=True).first.click()
    await page.wait_for_timeout(1000)
    return {"page": page, "usable": ready, "clicks": times}


async def soak(url: str, server: subprocess.Popen, sessions: int, n_clicks: int) -> dict:
    from playwright.async_api import async_playwright

    out: dict = {}
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        lone = await one_user(browser, url, n_clicks, seed=0)
        out["lone"] = lone
        await lone["page"].close()
        await asyncio.sleep(20)  # the server drops the closed session
        out["rss_idle"] = rss_mb(server.pid)

        trainer = await browser.new_page(viewport={"width": 1400, "height": 1000})
        await usable(trainer, url)
        await trainer.get_by_text("Training", exact=True).first.click()
        for label, value in (("Epochs", "200"), ("Images per epoch", "256")):
            field = trainer.get_by_label(re.compile(f"^{label}"))
            await field.fill(value)
            await field.press("Enter")
        await trainer.get_by_role("button", name="Start training").click()
        deadline = time.perf_counter() + 120
        jobs: list[int] = []
        while not jobs and time.perf_counter() < deadline:
            await asyncio.sleep(0.5)
            jobs = [c for c in children(server.pid) if "spawn_main" in Path(f"/proc/{c}/cmdline").read_text()]
        out["training_started"] = bool(jobs)

        async def kill_midway() -> None:
            await asyncio.sleep(15)
            for pid in jobs:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            out["killed"] = len(jobs)

        started = time.perf_counter()
        results, _ = await asyncio.gather(
            asyncio.gather(*[one_user(browser, url, n_clicks, seed=k + 1) for k in range(sessions)]),
            kill_midway())
        out["all_usable"] = max(r["usable"] for r in results)
        out["wall"] = time.perf_counter() - started
        out["clicks"] = [t for r in results for t in r["clicks"]]
        out["rss_busy"] = rss_mb(server.pid)
        status = trainer.locator(".training-status p")
        deadline = time.perf_counter() + 60
        text = ""
        while time.perf_counter() < deadline:
            text = " ".join(await status.all_inner_texts())
            if "failed" in text or "ended unexpectedly" in text:
                break
            await asyncio.sleep(0.5)
        out["trainer_status"] = text
        await trainer.get_by_text("Explore", exact=True).first.click()
        out["trainer_still_answers"] = (await clicks(trainer, 1, seed=99))[0] is not None
        for r in results:
            await r["page"].close()
        await trainer.close()
        await browser.close()
    rss = []
    for _ in range(24):  # closed sessions are dropped after their unused lifetime, then memory is released
        await asyncio.sleep(5)
        rss.append(rss_mb(server.pid))
    out["rss_after"] = min(rss)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--clicks", type=int, default=5)
    args = parser.parse_args()
    port = _free_port()
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "GALEXPLORE_DATA_DIR": home, "PYTHONWARNINGS": "ignore"}
        log_path = Path(home) / "server.log"
        with open(log_path, "w") as log:
            server = subprocess.Popen([sys.executable, "-m", "galexplore", "serve", "--port", str(port),
                                       "--no-browser"], stdout=log, stderr=subprocess.STDOUT, env=env)
            try:
                while True:
                    with socket.socket() as s:
                        if s.connect_ex(("localhost", port)) == 0:
                            break
                    if server.poll() is not None:
                        raise SystemExit(log_path.read_text())
                    time.sleep(0.1)
                out = asyncio.run(soak(f"http://localhost:{port}/", server, args.sessions, args.clicks))
                alive = server.poll() is None
            finally:
                server.send_signal(signal.SIGINT)
                try:
                    server.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    server.kill()
        text = log_path.read_text()
    tracebacks = text.count("Traceback (most recent call last)")
    clicks = out["clicks"]
    shown = sorted(t for t in clicks if t is not None)
    lone = sorted(t for t in out["lone"]["clicks"] if t is not None)
    print(f"== {args.sessions} sessions while a training job runs (killed with SIGKILL after 15 s) ==")
    print(f"  pages usable: all {args.sessions} within {out['all_usable']:.1f} s; one page alone: "
          f"{out['lone']['usable']:.1f} s (ratio {out['all_usable'] / out['lone']['usable']:.2f})")
    if shown:
        print(f"  click to detail, {len(clicks)} clicks: p50 {statistics.median(shown):.2f} s, "
              f"p95 {shown[int(0.95 * (len(shown) - 1))]:.2f} s, not shown within {CLICK_TIMEOUT_S:.0f} s: "
              f"{len(clicks) - len(shown)}; alone: p50 {statistics.median(lone):.2f} s")
    print(f"  training job started: {out['training_started']}, processes killed: {out.get('killed', 0)}; "
          f"the training page says: {out['trainer_status'][:160]!r}")
    print(f"  the training page still answers clicks: {out['trainer_still_answers']}")
    print(f"  server alive at the end: {alive}; tracebacks in its output: {tracebacks}")
    for block in text.split("Traceback (most recent call last)")[1:4]:
        lines = [line for line in block.splitlines() if line.strip()]
        print("    traceback ending:", " | ".join(lines[-3:])[:400])
    print(f"  server RSS: idle {out['rss_idle']:.0f} MB, with {args.sessions} sessions {out['rss_busy']:.0f} MB, "
          f"after they closed {out['rss_after']:.0f} MB ({100 * (out['rss_after'] / out['rss_idle'] - 1):+.1f} % "
          "of idle)")


if __name__ == "__main__":
    main()
