"""Shared fixtures: paths to the real data in ../shared/real and small generated datasets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_REAL = REPO.parent / "shared" / "real"


@pytest.fixture(scope="session")
def shared_real() -> Path:
    """../shared/real beside the checkout (CI has it there); tests read real data from it in place."""
    if not SHARED_REAL.is_dir():
        pytest.fail(f"{SHARED_REAL} is missing: the real-data tests need ../shared beside the checkout")
    return SHARED_REAL


@pytest.fixture(scope="session", autouse=True)
def isolated_user_cache(tmp_path_factory) -> Path:
    """Point GALEXPLORE_DATA_DIR (zoo, user models, caches) at a fresh directory for the whole run,
    so tests never see, nor write into, the real user's cache."""
    path = tmp_path_factory.mktemp("galexplore-data")
    previous = os.environ.get("GALEXPLORE_DATA_DIR")
    os.environ["GALEXPLORE_DATA_DIR"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("GALEXPLORE_DATA_DIR", None)
    else:
        os.environ["GALEXPLORE_DATA_DIR"] = previous


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium driven by Playwright (never a downloaded browser)."""
    from playwright.sync_api import sync_playwright

    from ui_fixtures import CHROMIUM_ARGS

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
