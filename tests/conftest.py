"""Shared fixtures: paths to the real data in ../shared/real and small generated datasets."""

from __future__ import annotations

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
