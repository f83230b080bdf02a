"""Where galexplore finds its shipped sample universe, pretrained models and user files."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DATASET = REPO_ROOT / "sample_data" / "universe"
SAMPLE_MODELS = REPO_ROOT / "assets" / "models"


def data_dir() -> Path:
    """User cache for zoo checkpoints and downloads: $GALEXPLORE_DATA_DIR or ~/.cache/galexplore."""
    return Path(os.environ.get("GALEXPLORE_DATA_DIR", Path.home() / ".cache" / "galexplore"))


def user_models_dir() -> Path:
    """Where checkpoints trained from the app are written: <data_dir>/models."""
    return data_dir() / "models"


def sample_model_dirs() -> list[Path]:
    """Checkpoint directories of the pretrained sample models, sorted by name."""
    if not SAMPLE_MODELS.is_dir():
        return []
    return sorted(p for p in SAMPLE_MODELS.iterdir() if (p / "card.json").is_file())
