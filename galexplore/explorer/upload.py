"""Bring your own data: FITS velocity maps encoded by the current model and placed among the
dataset's galaxies, as labelled markers with their nearest neighbours in latent space.

Uploaded files are read from a private temporary directory under a name made here, never
the name the browser sent (which may hold ``..``, NUL, slashes or 300 characters); that
name is only shown, cut to `MAX_SHOWN_NAME` characters. One unreadable file is reported by
name and the others are placed.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from galexplore.errors import FitsError, GalexploreError, ModelError
from galexplore.explorer.bundles import Bundle, latent_columns
from galexplore.paths import REPO_ROOT

FITS_SUFFIXES = (".fits.gz", ".fits", ".fit", ".fts")
N_NEIGHBOURS = 5
#: Longest file name shown for an upload (longer ones end with an ellipsis).
MAX_SHOWN_NAME = 120


def shown_name(filename: str) -> str:
    """The name of an uploaded file as the page shows it: its last path component, control
    characters removed, at most `MAX_SHOWN_NAME` characters ("upload" when nothing is left)."""
    name = str(filename).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable())
    if len(name) > MAX_SHOWN_NAME:
        name = name[:MAX_SHOWN_NAME - 1] + "…"
    return name or "upload"


def _suffix(filename: str) -> str:
    lower = str(filename).lower()
    return next((s for s in FITS_SUFFIXES if lower.endswith(s)), ".fits")


@dataclass
class UploadResult:
    """What a batch of uploaded files gave: the maps read and the files refused (with why)."""

    names: list[str]
    maps: list[np.ndarray]
    refused: list[str]


def read_uploaded_fits(files: dict[str, bytes] | list[tuple[str, bytes]]) -> UploadResult:
    """Velocity maps from uploaded FITS files (browser file name, content).

    Each file is written to a private temporary directory as ``upload-<k><suffix>`` and read
    with `galexplore.data.fits_io.read_velocity_map`. A galaxy is named by its OBJECT header,
    else by its shown file name. Files that cannot be read are listed in ``refused`` as
    "name: reason"; the others are returned.
    """
    from galexplore.data.fits_io import read_velocity_map

    items = list(files.items()) if isinstance(files, dict) else list(files)
    result = UploadResult([], [], [])
    with tempfile.TemporaryDirectory(prefix="galexplore-upload-") as tmp:
        for k, (filename, content) in enumerate(items):
            shown = shown_name(filename)
            path = Path(tmp) / f"upload-{k}{_suffix(filename)}"
            try:
                path.write_bytes(bytes(content))
                name, image = read_velocity_map(path)
            except GalexploreError as error:
                result.refused.append(f"{shown}: {str(error).replace(str(path), 'the file')}")
                continue
            except Exception as error:  # noqa: BLE001 -- one bad file must not stop the others
                result.refused.append(f"{shown}: not a readable FITS velocity map ({type(error).__name__})")
                continue
            finally:
                path.unlink(missing_ok=True)
            result.names.append(shown if name == path.stem else name)
            result.maps.append(image)
    return result


def fits_in_directory(directory: str | os.PathLike) -> list[Path]:
    """The FITS files directly inside ``directory``, sorted by name."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FitsError(f"{directory.name!r} is not a directory; give a folder holding .fits velocity maps")
    files = sorted(p for p in directory.iterdir() if p.name.lower().endswith(FITS_SUFFIXES))
    if not files:
        raise FitsError(f"{directory.name!r} holds no FITS files ({', '.join(FITS_SUFFIXES)})")
    return files


def encode(bundle: Bundle, maps: list[np.ndarray]) -> np.ndarray:
    """Latent vectors (n, d) of single velocity maps, each through the model's recipe on its
    own (maps may differ in size)."""
    from galexplore.data.recipes import get_recipe

    card = bundle.model.card
    if len(card.channels) != 1:
        raise ModelError(f"uploaded FITS files hold one velocity map each, but model {card.name!r} needs the "
                         f"channels {card.channels}; switch to a single-channel (mom1) model")
    if not maps:
        raise FitsError("no maps to encode; upload at least one FITS velocity map")
    recipe = get_recipe(card.recipe)
    x = np.concatenate([recipe(np.asarray(m, dtype=np.float32)[None, None]) for m in maps])
    loaded = bundle.model.loaded()
    with torch.inference_mode():
        return loaded.model.encode(torch.from_numpy(x).to(loaded.device)).float().cpu().numpy()


def place(bundle: Bundle, names: list[str], latents: np.ndarray) -> pd.DataFrame:
    """Markers: one row per galaxy with ``name``, its latents, every projection the bundle's
    projector gives without UMAP, ``umap_0``/``umap_1`` as NaN (see `place_in_umap`) when
    the bundle has UMAP, and ``neighbour_ids`` (catalogue ids of the `N_NEIGHBOURS` nearest
    galaxies in latent space)."""
    z = np.atleast_2d(np.asarray(latents, dtype=np.float64))
    lat = latent_columns(bundle.columns)
    if z.shape[1] != len(lat):
        raise ModelError(f"latent vectors have {z.shape[1]} dimensions but the embedding has {len(lat)}")
    markers = pd.DataFrame({"name": list(names), **{c: z[:, k] for k, c in enumerate(lat)}})
    for column, values in bundle.projector.transform(z, umap=False).items():
        markers[column] = values
    if {"umap_0", "umap_1"} <= set(bundle.columns):
        markers["umap_0"] = markers["umap_1"] = np.nan
    ids = bundle.column("id")
    near = bundle.neighbours_of_latent(z, N_NEIGHBOURS)
    markers["neighbour_ids"] = [", ".join(str(int(i)) for i in ids[row]) for row in near]
    return markers


def real_alma_fits_dir() -> Path | None:
    """The 30 real ALMA velocity maps of Dawson et al. (2020), when present: the zoo's
    download of the published repository, else ``../shared/real/dawson2020/fits``."""
    from galexplore.models.zoo import download_dir

    shared = REPO_ROOT.parent / "shared" / "real" / "dawson2020" / "fits"
    for candidate in (download_dir("dawson2020") / "fits", shared):
        if candidate.is_dir() and any(candidate.glob("*.fits")):
            return candidate
    return None
