"""A small dataset + model + cached embedding for the explorer's tests (no UMAP: fast).

The maps are analytic thin rotating discs (arctan rotation curve), so the catalogue's PA
and inclination are exact by construction; the model is an untrained index-free CAE
(fixed seed), enough to exercise every code path of the app.
"""

from __future__ import annotations

import contextlib
import re
import socket
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

#: Screenshots of the browser tests (git-ignored).
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
#: Debian's Chromium, headless, kept off the network.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--headless=new"]
TIMEOUT_MS = 90_000


def free_port() -> int:
    """A TCP port on localhost that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def serve_in_thread(session) -> tuple[str, object]:
    """Serve a Panel session factory on a free localhost port; return (url, server thread)
    once the port accepts connections."""
    import panel as pn

    port = free_port()
    thread = pn.serve({"/": session}, port=port, address="localhost", show=False, threaded=True,
                      websocket_origin=[f"localhost:{port}"])
    deadline = time.time() + 30
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("localhost", port)) == 0:
                break
        time.sleep(0.2)
    return f"http://localhost:{port}/", thread


@contextlib.contextmanager
def explorer_server(root: Path, n: int = 300):
    """Serve the explorer on an ``n``-map fixture under ``root``, one page per browser session.

    Yields ``{"url", "pages" (each session's ExplorerPage, in order), "root", "dataset", "model"}``.
    """
    from galexplore.ui.layout import build_app, configure_panel, warm_up

    dataset, model = build_ui_fixture(root, n=n)
    configure_panel()
    warm_up()
    pages = []

    def session():
        page = build_app(dataset, model, selections_dir=root / "selections", models_dir=root / "models-trained",
                         real_overlay=False, allowed_dirs=[root])
        pages.append(page)
        return page

    url, thread = serve_in_thread(session)
    try:
        yield {"url": url, "pages": pages, "root": root, "dataset": dataset, "model": model}
    finally:
        thread.stop()


class BrowserLog:
    """What a page did that the suite forbids: console errors and warnings from the page's
    code, failed requests, and requests that left this machine."""

    def __init__(self):
        self.problems: list[str] = []

    def watch(self, page) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        page.on("requestfailed", lambda request: self.problems.append(f"failed request: {request.url}"))
        page.on("request", self._request)

    def _console(self, message) -> None:
        if message.type == "error":
            self.problems.append(f"console error: {message.text}")

    def _request(self, request) -> None:
        if not request.url.startswith(("http://localhost", "ws://localhost", "http://127.0.0.1", "ws://127.0.0.1",
                                       "data:", "blob:")):
            self.problems.append(f"request off this machine: {request.url}")


def open_page(browser, url: str, log: BrowserLog, width: int = 1400, height: int = 1000):
    """A new page at ``url`` with its console watched, once the latent map has drawn."""
    page = browser.new_page(viewport={"width": width, "height": height}, accept_downloads=True)
    log.watch(page)
    page.goto(url, timeout=TIMEOUT_MS)
    page.locator(".latent-figure canvas").first.wait_for(timeout=TIMEOUT_MS)
    page.get_by_text(re.compile(r"maps selected")).first.wait_for(timeout=TIMEOUT_MS)
    return page


def wait_for(condition, what: str, timeout_s: float = 90.0, page=None) -> None:
    """Wait until ``condition()`` is true (generous limit: a loaded machine is slow)."""
    deadline = time.time() + timeout_s
    while not condition():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        if page is not None:
            page.wait_for_timeout(200)
        else:
            time.sleep(0.2)


CHANNELS = ["mom0", "mom1", "mom2", "env"]
UNITS = {"mom0": "Jy/beam km/s", "mom1": "km/s", "mom2": "km/s", "env": "counts"}


def disc_maps(pa_deg: float, inc_deg: float, vflat: float, rng: np.random.Generator) -> np.ndarray:
    """(4, 64, 64) maps of a thin disc at the given PA (east of north) and inclination."""
    rows, cols = np.mgrid[0:64, 0:64].astype(np.float64)
    d_row, d_col = rows - 31.5, cols - 31.5
    theta = np.radians(pa_deg)
    # coordinate along the receding major axis, unit vector (d_col, d_row) = (-sin, cos)
    major = -np.sin(theta) * d_col + np.cos(theta) * d_row
    minor = np.cos(theta) * d_col + np.sin(theta) * d_row
    cos_i = max(np.cos(np.radians(inc_deg)), 0.05)
    radius = np.hypot(major, minor / cos_i)
    cos_phi = np.divide(major, radius, out=np.zeros_like(radius), where=radius > 0)
    v_rot = vflat * (2.0 / np.pi) * np.arctan(radius / 4.0)
    mom1 = v_rot * np.sin(np.radians(inc_deg)) * cos_phi
    mom0 = np.exp(-radius / 8.0)
    mom2 = 10.0 + 20.0 * np.exp(-radius / 5.0)
    blank = radius > 24.0
    for m in (mom0, mom1, mom2):
        m[blank] = np.nan
    env = rng.poisson(2.0, size=(64, 64)).astype(np.float64)
    return np.stack([mom0, mom1, mom2, env]).astype(np.float32)


def build_ui_fixture(root: Path, n: int = 300, seed: int = 0) -> tuple[Path, Path]:
    """Write a dataset of ``n`` discs and an untrained CAE under ``root``; returns their paths."""
    from galexplore.analysis.embed import load_or_compute_embedding
    from galexplore.data import create_dataset
    from galexplore.models.checkpoint import ModelCard, save_checkpoint
    from galexplore.models.registry import build_model

    rng = np.random.default_rng(seed)
    pa = rng.uniform(0.0, 360.0, n)
    inc = rng.uniform(20.0, 85.0, n)
    vflat = rng.uniform(80.0, 300.0, n)
    maps = np.stack([disc_maps(p, i, v, rng) for p, i, v in zip(pa, inc, vflat)])
    catalog = pd.DataFrame({
        "id": np.arange(1000, 1000 + n, dtype=np.int64),
        "galaxy_id": np.arange(n, dtype=np.int64) // 2,
        "view": np.arange(n) % 2,
        "kappa": rng.uniform(0.1, 0.95, n),
        "pa": pa,
        "inc": inc,
        "vflat_kms": vflat,
        "log_mstar": rng.normal(10.0, 0.5, n),
    })
    dataset = root / "universe"
    with create_dataset(dataset, CHANNELS, UNITS) as writer:
        writer.append(maps, catalog, column_units={"kappa": "", "pa": "deg", "inc": "deg",
                                                   "vflat_kms": "km/s", "log_mstar": "dex(Msun)"})
    torch.manual_seed(seed)
    model = build_model("cae_free", in_channels=1, latent_dim=3)
    card = ModelCard(name="test-cae", architecture="cae_free",
                     hyperparameters={"in_channels": 1, "latent_dim": 3}, channels=["mom1"],
                     recipe="dawson2020", latent_names=["z0", "z1", "z2"])
    model_dir = save_checkpoint(model, card, root / "models" / "test-cae")
    load_or_compute_embedding(model_dir, dataset, device="cpu", umap=False)
    return dataset, Path(model_dir)


def write_velocity_fits(path: Path, pa_deg: float, inc_deg: float, size: int = 48, name: str = "NGC TEST") -> Path:
    """A real-ALMA-like FITS file: velocity map in HDU 1 (NaN blank), OBJECT in HDU 0."""
    from astropy.io import fits

    rng = np.random.default_rng(1)
    mom1 = disc_maps(pa_deg, inc_deg, 200.0, rng)[1]
    if size != 64:
        idx = np.round(np.linspace(0, 63, size)).astype(int)
        mom1 = mom1[np.ix_(idx, idx)]
    primary = fits.PrimaryHDU()
    primary.header["OBJECT"] = name
    fits.HDUList([primary, fits.ImageHDU(mom1.astype(np.float32))]).writeto(path, overwrite=True)
    return path
