"""A small dataset + model + cached embedding for the explorer's tests (no UMAP: fast).

The maps are analytic thin rotating discs (arctan rotation curve), so the catalogue's PA
and inclination are exact by construction; the model is an untrained index-free CAE
(fixed seed), enough to exercise every code path of the app.
"""

from __future__ import annotations

import contextlib
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
def explorer_server(root: Path):
    """Serve the explorer on a 300-galaxy fixture under ``root``, one app per browser session.

    Yields ``{"url", "states" (each session's ExplorerState, in order), "root"}``.
    """
    import holoviews as hv
    import panel as pn

    from galexplore.ui.layout import build_app, warm_up

    dataset, model = build_ui_fixture(root, n=300)
    pn.extension("tabulator", notifications=True)
    hv.extension("bokeh")
    warm_up()
    states = []

    def session():
        app = build_app(dataset, model, export_dir=root / "exports", selections_dir=root / "selections",
                        real_overlay=False)
        states.append(app.explorer_state)
        return app

    url, thread = serve_in_thread(session)
    try:
        yield {"url": url, "states": states, "root": root}
    finally:
        thread.stop()


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
