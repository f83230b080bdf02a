"""Bring your own data: FITS velocity maps encoded by the current model and placed in the
current latent space (no plotting library here)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from galexplore.errors import FitsError, ModelError
from galexplore.paths import REPO_ROOT
from galexplore.ui.bundle import Bundle

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz")
N_NEIGHBOURS = 5


def read_uploaded_fits(files: dict[str, bytes]) -> tuple[list[str], list[np.ndarray]]:
    """Velocity maps from uploaded FITS files (file name -> content), read through a
    temporary file each; returns the OBJECT names (or file stems) and the 2-D maps."""
    from galexplore.data.fits_io import read_velocity_map

    names, maps = [], []
    with tempfile.TemporaryDirectory(prefix="galexplore-upload-") as tmp:
        for filename, content in files.items():
            safe = Path(filename).name or "upload.fits"
            path = Path(tmp) / safe
            path.write_bytes(content)
            name, image = read_velocity_map(path)
            names.append(name if name != path.stem else Path(filename).name)
            maps.append(image)
    return names, maps


def fits_in_directory(directory: str | os.PathLike) -> list[Path]:
    """The FITS files directly inside ``directory``, sorted by name."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FitsError(f"{directory} is not a directory; give a folder holding .fits velocity maps")
    files = sorted(p for p in directory.iterdir() if p.name.lower().endswith(FITS_SUFFIXES))
    if not files:
        raise FitsError(f"{directory} holds no FITS files ({', '.join(FITS_SUFFIXES)})")
    return files


def encode_velocity_maps(bundle: Bundle, names: list[str], maps: list[np.ndarray]) -> pd.DataFrame:
    """Encode single velocity maps with the bundle's model and place them in every projection.

    Each map goes through the model's recipe on its own (maps may differ in size). Returns
    one row per map: ``name``, latent and projection columns (see `Bundle.place_latents`),
    and ``neighbour_ids`` (the catalogue ids of the `N_NEIGHBOURS` nearest galaxies in latent space).
    """
    from galexplore.data.recipes import get_recipe

    card = bundle.model.card
    if len(card.channels) != 1:
        raise ModelError(f"uploaded FITS files hold one velocity map each, but model {card.name!r} needs the "
                         f"channels {card.channels}; switch to a single-channel (mom1) model")
    if not maps:
        raise FitsError("no maps to encode; upload at least one FITS velocity map")
    recipe = get_recipe(card.recipe)
    x = np.concatenate([recipe(np.asarray(m, dtype=np.float32)[None, None]) for m in maps])
    with torch.inference_mode():
        z = bundle.model.model.encode(torch.from_numpy(x).to(bundle.model.device)).float().cpu().numpy()
    placed = bundle.place_latents(z)
    ids = bundle.table["id"].to_numpy()
    near = bundle.neighbours_of_latent(z, N_NEIGHBOURS)
    placed.insert(0, "name", list(names))
    placed["neighbour_ids"] = [", ".join(str(int(i)) for i in ids[row]) for row in near]
    return placed


def real_alma_fits_dir() -> Path | None:
    """The 30 real ALMA velocity maps of Dawson et al. (2020), when present: the zoo's
    download of the published repository, else ``../shared/real/dawson2020/fits``."""
    from galexplore.models.zoo import download_dir

    for candidate in (download_dir("dawson2020") / "fits", REPO_ROOT.parent / "shared" / "real" / "dawson2020" / "fits"):
        if candidate.is_dir() and any(candidate.glob("*.fits")):
            return candidate
    return None
