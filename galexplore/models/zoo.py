"""Published encoders: where they come from, how to fetch and convert them, where they live.

The cache directory is `galexplore.paths.data_dir` (``$GALEXPLORE_DATA_DIR`` or
``~/.cache/galexplore``):
``downloads/<name>/`` holds the original files as published, ``models/<name>/`` the
converted checkpoint (``model.safetensors`` + ``card.json``) that galexplore loads.
Converting a pickled original runs the opt-in legacy import (`galexplore.models.legacy`)
once; afterwards nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from galexplore.errors import ModelError
from galexplore.models.checkpoint import CARD_FILE, ModelCard, save_checkpoint, write_atomically
from galexplore.paths import data_dir

# Dawson et al. 2020: TP = TN crossing of the folded radius on the EAGLE training set
# (published inference code of SpaceMeerkat/CAE), separating kappa above and below 0.5.
DAWSON2020_FOLDED_R = 2.960960960960961
DAWSON2020_KAPPA_THRESHOLD = 0.5
# Its latent angle -> position angle (east of north, receding side): not published; measured
# by `python scripts/calibrate_dawson2020_pa.py 120 2020` on 120 regular exponential discs
# made with KinMS directly (residual sigma 1.9 deg).
DAWSON2020_PA_CALIBRATION = {"sense": 1, "offset_deg": 125.9}


@dataclass(frozen=True)
class ZooFile:
    """One original file of a zoo entry: its name, download URL and SHA-256 (hex)."""

    name: str
    url: str
    sha256: str


@dataclass(frozen=True)
class ZooEntry:
    """A published encoder: what it is, where it was published, and its original files."""

    name: str
    description: str
    paper: str
    repository: str
    licence: str
    files: tuple[ZooFile, ...]
    import_command: str


_DAWSON2020_RAW = "https://raw.githubusercontent.com/SpaceMeerkat/CAE/33ae005aa4d6576367690ca6d29a816bb13ead03"

ZOO: dict[str, ZooEntry] = {
    "dawson2020": ZooEntry(
        name="dawson2020",
        description=("Convolutional autoencoder (Table A1) trained on 64x64 EAGLE mock CO velocity maps; "
                     "3-D latent, PCA, folded radius r < 2.961 -> kappa < 0.5"),
        paper="Dawson J. M., Davis T. A., Gomez E. L., Schock J., Zabel N., Williams T. G., 2020, MNRAS, 491, 2506",
        repository="https://github.com/SpaceMeerkat/CAE",
        licence="MIT, SpaceMeerkat/CAE",
        files=(
            ZooFile("CAE_Epoch_300.pt", f"{_DAWSON2020_RAW}/spacemerlin/data/checkpoints/CAE_Epoch_300.pt",
                    "444aa2974babb591fab23500d4e45172b8bcccb66ea1e7c51f1db9a98828b86e"),
            ZooFile("PCA_routine.pkl", f"{_DAWSON2020_RAW}/spacemerlin/data/checkpoints/PCA_routine.pkl",
                    "8e3d3914e48ceffb60a2d045a2193c1c9c1b3293cd1734f3628fe1b597fe6ed4"),
            ZooFile("LICENSE", f"{_DAWSON2020_RAW}/LICENSE",
                    "b21fce2cb670a2d42f8627f541ae53325a006d81c58574c514c663a0a64b6512"),
        ),
        import_command="galexplore zoo import-dawson2020 {source} --trust-pickle",
    ),
}


def download_dir(name: str) -> Path:
    """Where `fetch` puts the original files of zoo entry ``name``."""
    return data_dir() / "downloads" / name


def installed_path(name: str) -> Path:
    """Where the converted checkpoint of zoo entry ``name`` lives (it may not exist yet)."""
    return data_dir() / "models" / name


def is_installed(name: str) -> bool:
    """Whether zoo entry ``name`` has a converted checkpoint in the cache."""
    return (installed_path(name) / CARD_FILE).is_file()


def _entry(name: str) -> ZooEntry:
    try:
        return ZOO[name]
    except KeyError:
        raise ModelError(f"no zoo entry {name!r}; known entries: {', '.join(sorted(ZOO))} "
                         "(see `galexplore zoo list`)") from None


def describe_zoo() -> str:
    """Text listing of the zoo entries and whether each is installed (`galexplore zoo list`)."""
    lines = [f"zoo cache: {data_dir()}"]
    for entry in ZOO.values():
        if is_installed(entry.name):
            status = f"installed at {installed_path(entry.name)}"
        else:
            status = "not installed: " + _install_hint(entry)
        lines += [
            f"{entry.name}: {entry.description}",
            f"  paper:   {entry.paper}",
            f"  source:  {entry.repository} (licence {entry.licence})",
            f"  status:  {status}",
        ]
    return "\n".join(lines)


def _install_hint(entry: ZooEntry) -> str:
    return (f"run `galexplore zoo fetch {entry.name}` (needs internet), then "
            f"`{entry.import_command.format(source=download_dir(entry.name))}`; or, with the original files "
            f"already on disk, `{entry.import_command.format(source='<directory>')}`")


def sha256_of(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_file(url: str, destination: str | os.PathLike, sha256: str) -> Path:
    """Download ``url`` to ``destination`` and keep it only if its SHA-256 matches.

    Parameters
    ----------
    url : str
        Any URL urllib opens (``https://``, ``file://``).
    destination : path-like
        Final file path; written atomically.
    sha256 : str
        Expected SHA-256 hex digest.

    Returns
    -------
    pathlib.Path
        ``destination``.

    Raises
    ------
    ModelError
        If the download fails or the checksum differs (nothing is left at ``destination``).
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as handle:
                shutil.copyfileobj(response, handle)
        except (urllib.error.URLError, OSError) as err:
            raise ModelError(f"cannot download {url}: {err}. Check the internet connection and retry.") from err
        actual = sha256_of(tmp)
        if actual != sha256.lower():
            raise ModelError(f"the file downloaded from {url} has SHA-256 {actual}, expected {sha256}: it is "
                             "not the published file (corrupted or changed upstream); it was not kept.")

    write_atomically(destination, write)
    return destination


def fetch(name: str) -> Path:
    """Download the original files of zoo entry ``name`` into the cache, verifying SHA-256.

    Returns
    -------
    pathlib.Path
        The download directory, to be converted with the entry's import command.
    """
    entry = _entry(name)
    target = download_dir(name)
    for item in entry.files:
        path = target / item.name
        if not (path.is_file() and sha256_of(path) == item.sha256):
            download_file(item.url, path, item.sha256)
    return target


def import_dawson2020(source_dir: str | os.PathLike, out: str | os.PathLike | None = None,
                      trust_pickle: bool = False) -> Path:
    """Convert the published Dawson et al. 2020 CAE and PCA into a galexplore checkpoint, once.

    Parameters
    ----------
    source_dir : path-like
        Directory with ``CAE_Epoch_300.pt`` and ``PCA_routine.pkl`` (and ``LICENSE``,
        copied along if present), as published in SpaceMeerkat/CAE.
    out : path-like, optional
        Checkpoint directory to write; default ``installed_path("dawson2020")``.
    trust_pickle : bool
        Must be True: the two originals are pickles, and unpickling can run code.

    Returns
    -------
    pathlib.Path
        The checkpoint directory (recipe ``dawson2020``, channel ``mom1``; the card's
        extras hold the PCA, the folded-radius boundary and the originals' SHA-256).

    Raises
    ------
    ModelError
        If a file is missing, ``trust_pickle`` is False, or a file's SHA-256 is not
        the published one.
    """
    from galexplore.models.cae import DawsonCAE
    from galexplore.models.legacy import (
        load_legacy_pickle,
        pca_from_pickle,
        state_dict_from_pickled_module,
        untrusted_pickle_error,
    )

    entry = ZOO["dawson2020"]
    source_dir = Path(source_dir)
    originals = {item.name: item for item in entry.files if item.name != "LICENSE"}
    missing = [name for name in originals if not (source_dir / name).is_file()]
    if missing:
        raise ModelError(f"{source_dir} lacks {missing}: give the directory holding the published "
                         f"CAE_Epoch_300.pt and PCA_routine.pkl (`galexplore zoo fetch dawson2020` downloads them)")
    if not trust_pickle:
        raise untrusted_pickle_error(source_dir / "CAE_Epoch_300.pt")
    hashes = {name: sha256_of(source_dir / name) for name in originals}
    for name, item in originals.items():
        if hashes[name] != item.sha256:
            raise ModelError(f"{source_dir / name} has SHA-256 {hashes[name]}, but the published file has "
                             f"{item.sha256}: this is not the published Dawson et al. 2020 file. "
                             "Fetch the original with `galexplore zoo fetch dawson2020`.")

    state = state_dict_from_pickled_module(load_legacy_pickle(source_dir / "CAE_Epoch_300.pt", trust_pickle=True))
    pca = pca_from_pickle(load_legacy_pickle(source_dir / "PCA_routine.pkl", trust_pickle=True))
    hyperparameters = {"in_channels": 1, "latent_dim": 3}
    model = DawsonCAE(**hyperparameters)
    model.load_state_dict(state, strict=True)

    card = ModelCard(
        name="dawson2020",
        architecture="dawson2020_cae",
        hyperparameters=hyperparameters,
        channels=["mom1"],
        recipe="dawson2020",
        input_size=64,
        latent_names=["latent_0", "latent_1", "latent_2"],
        training_data={"description": "noiseless EAGLE mock CO velocity maps, kappa-balanced sampling "
                                      "(Dawson et al. 2020, sections 2.1-2.6)",
                       "pca_fit_samples": 94984},
        extras={
            "pca": {"mean": pca["mean"].tolist(), "components": pca["components"].tolist()},
            "boundary": {"folded_r": DAWSON2020_FOLDED_R, "kappa_threshold": DAWSON2020_KAPPA_THRESHOLD},
            "pa_calibration": dict(DAWSON2020_PA_CALIBRATION),
            "paper": entry.paper,
            "licence": entry.licence,
            "source": {"repository": entry.repository,
                       "files": {name: {"url": originals[name].url, "sha256": hashes[name]} for name in originals}},
        },
    )
    out = Path(out) if out is not None else installed_path(entry.name)
    save_checkpoint(model, card, out)
    if (source_dir / "LICENSE").is_file():
        shutil.copyfile(source_dir / "LICENSE", out / "LICENSE")
    return out


def resolve_model(name_or_path: str | os.PathLike) -> Path:
    """The checkpoint directory for a path or a zoo name.

    Parameters
    ----------
    name_or_path : str or path-like
        An existing checkpoint directory, or the name of an installed zoo entry.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ModelError
        If it is neither; for a zoo entry not yet installed the message gives the
        exact commands that install it.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    name = str(name_or_path)
    if name in ZOO:
        if is_installed(name):
            return installed_path(name)
        raise ModelError(f"zoo model {name!r} is not installed in {data_dir()}: {_install_hint(ZOO[name])}")
    raise ModelError(f"{name!r} is neither a checkpoint directory nor a zoo model name "
                     f"(known: {', '.join(sorted(ZOO))}); give a directory written by `galexplore train`")
