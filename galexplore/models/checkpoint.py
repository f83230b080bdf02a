"""Checkpoints: a directory with ``model.safetensors`` (weights) and ``card.json`` (metadata).

Loading never unpickles anything: safetensors holds raw tensors only, and the card is
JSON. The model is rebuilt from the registry with the card's hyperparameters and the
weights are loaded with ``strict=True``.

Two digests:

- ``card.checksum``: SHA-256 of the weights and of *every* card field (all but the checksum
  itself), written on save and verified on load. Edited weights, or any edited card field
  (a name, a metric, a boundary), are caught before anything uses them; a card without a
  checksum is refused.
- ``card.model_hash(model)``: SHA-256 of the weights and of the card fields that change what
  the model computes; the key of cached embeddings.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
import re
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import safetensors.torch
import torch
from torch import nn

from galexplore import __version__
from galexplore.data.recipes import MAX_INPUT_SIZE, MIN_INPUT_SIZE, MODEL_SIZE, get_recipe
from galexplore.errors import ModelError, ParameterError
from galexplore.models.device import resolve_device
from galexplore.models.registry import build_model

WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "card.json"

# Suffixes of files that can only be read by unpickling (and so may run code).
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin")

# Card fields that do not change what the model computes, left out of ``model_hash``.
_UNHASHED_FIELDS = frozenset({"name", "training_data", "metrics", "created", "galexplore_version", "checksum"})
#: Largest card.json read (cards are a few kB; boundaries and metrics add little).
MAX_CARD_BYTES = 4 * 2**20
#: Longest model name accepted (it is shown in the page and in file names).
MAX_NAME_LENGTH = 200
#: JSON type of each card field, checked when a card is read or saved.
_FIELD_TYPES: dict[str, type] = {
    "name": str, "architecture": str, "hyperparameters": dict, "channels": list, "recipe": str,
    "input_size": int, "latent_names": list, "outputs": list, "output_units": dict,
    "training_data": dict, "metrics": dict, "extras": dict, "created": str,
    "galexplore_version": str, "checksum": str,
}


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class ModelCard:
    """What a checkpoint is: architecture, inputs, outputs, provenance.

    Attributes
    ----------
    name : str
        Human-readable model name.
    architecture : str
        Registered architecture name (see `galexplore.models.registry`).
    hyperparameters : dict
        Keyword arguments of the architecture's builder.
    channels : list of str
        Input channels, in order (e.g. ``["mom1"]`` or ``["mom0", "mom1"]``).
    recipe : str
        Name of the preprocessing recipe in `galexplore.data.recipes`.
    input_size : int
        Side of the square model input in pixels.
    latent_names : list of str
        One name per latent dimension.
    outputs : list of str
        Names of the ``predict`` outputs (empty for autoencoders).
    output_units : dict
        Unit of each output, e.g. ``{"log_mstar": "dex(Msun)"}``.
    training_data : dict
        Provenance of the training set (path, fingerprint, size, seed, ...).
    metrics : dict
        Evaluation figures.
    extras : dict
        Model-specific additions: ``"pca"`` (``mean``, ``components``), ``"boundary"``
        (``folded_r``, ``kappa_threshold``), ``"pa_offset_deg"``, provenance of imports.
    created : str
        ISO-8601 UTC time the card was made.
    galexplore_version : str
        Version of galexplore that made the card.
    checksum : str
        ``model_hash`` of the saved weights; set by `save_checkpoint`, verified by
        `load_checkpoint`. Empty until saved.
    """

    name: str
    architecture: str
    hyperparameters: dict[str, Any]
    channels: list[str]
    recipe: str
    input_size: int = 64
    latent_names: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    output_units: dict[str, str] = field(default_factory=dict)
    training_data: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=_utc_now)
    galexplore_version: str = __version__
    checksum: str = ""

    def model_hash(self, model: nn.Module | Mapping[str, torch.Tensor]) -> str:
        """SHA-256 hex digest of ``model``'s weights and this card (see `compute_model_hash`).

        The key of cached embeddings: it changes exactly when the weights or a card field
        that changes the model's outputs (architecture, recipe, channels, extras, ...) does.
        """
        state = model.state_dict() if isinstance(model, nn.Module) else model
        return compute_model_hash(state, self)

    def to_json(self) -> str:
        """The card as indented JSON text (NumPy values become plain numbers and lists)."""
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=False, default=_json_default)

    @classmethod
    def from_json(cls, text: str) -> ModelCard:
        """Parse a card written by `to_json`.

        Raises
        ------
        ModelError
            If the text is not JSON or lacks a required field.
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ModelError(f"the model card is not valid JSON ({err}); re-save the checkpoint") from err
        except RecursionError:
            raise ModelError("the model card nests its JSON too deeply to be a galexplore card; "
                             "re-save the checkpoint") from None
        if not isinstance(data, dict):
            raise ModelError("the model card must be a JSON object; re-save the checkpoint")
        names = {f.name for f in dataclasses.fields(cls)}
        required = [f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        missing = [name for name in required if name not in data]
        if missing:
            raise ModelError(f"the model card lacks the required field(s) {missing}; re-save the checkpoint")
        unknown = sorted(set(data) - names)
        if unknown:
            warnings.warn(f"model card fields {unknown} are unknown to galexplore {__version__} and are ignored",
                          stacklevel=2)
        fields = {key: value for key, value in data.items() if key in names}
        check_card_fields(fields)
        return cls(**fields)


def check_card_fields(fields: Mapping[str, Any]) -> None:
    """Raise ModelError for card fields of the wrong JSON type or an unusable name."""
    for key, value in fields.items():
        expected = _FIELD_TYPES[key]
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ModelError(f"model card field {key!r} must be a JSON {expected.__name__}, got "
                             f"{type(value).__name__}; re-save the checkpoint")
    for key in ("channels", "latent_names", "outputs"):
        if not all(isinstance(item, str) for item in fields.get(key, [])):
            raise ModelError(f"model card field {key!r} must be a list of strings; re-save the checkpoint")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in fields.get("output_units", {}).items()):
        raise ModelError("model card field 'output_units' must map names to unit strings; re-save the checkpoint")
    size = fields.get("input_size", MODEL_SIZE)
    if not 1 <= size <= MAX_INPUT_SIZE:
        raise ModelError(f"model card field 'input_size' is {size}; it must lie in 1..{MAX_INPUT_SIZE}")
    name = fields.get("name", "")
    if not name.strip() or len(name) > MAX_NAME_LENGTH or any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise ModelError(f"the model card's name must be 1 to {MAX_NAME_LENGTH} printable characters; "
                         "re-save the checkpoint under another name")


def file_stem(name: str, max_length: int = 60) -> str:
    """A file-name-safe stem of a model name: letters, digits, '.', '_' and '-' only, never
    starting with a dot, never empty (so no name can reach another directory)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).lstrip("._-")[:max_length]
    return stem or "model"


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"model card value of type {type(value).__name__} cannot be written as JSON")


def _update_with_weights(digest: Any, state_dict: Mapping[str, torch.Tensor]) -> None:
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().cpu().contiguous()
        digest.update(key.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(repr(tuple(tensor.shape)).encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())


def compute_model_hash(state_dict: Mapping[str, torch.Tensor], card: ModelCard) -> str:
    """SHA-256 hex digest of the weights and of the card fields that change outputs.

    Parameters
    ----------
    state_dict : mapping of str to Tensor
        The model's weights.
    card : ModelCard
        Its card; ``name``, ``training_data``, ``metrics``, ``created``,
        ``galexplore_version`` and ``checksum`` are not hashed.

    Returns
    -------
    str
        64 hexadecimal characters.
    """
    digest = hashlib.sha256()
    _update_with_weights(digest, state_dict)
    hashed = {key: value for key, value in dataclasses.asdict(card).items() if key not in _UNHASHED_FIELDS}
    digest.update(json.dumps(hashed, sort_keys=True, default=_json_default).encode())
    return digest.hexdigest()


def compute_card_checksum(state_dict: Mapping[str, torch.Tensor], card: ModelCard) -> str:
    """SHA-256 hex digest of the weights and of every card field except ``checksum``."""
    digest = hashlib.sha256(b"galexplore-card-checksum-v2\n")
    _update_with_weights(digest, state_dict)
    fields = {key: value for key, value in dataclasses.asdict(card).items() if key != "checksum"}
    digest.update(json.dumps(fields, sort_keys=True, default=_json_default).encode())
    return digest.hexdigest()


def write_atomically(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it onto ``path``."""
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        write(Path(tmp_name))
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def save_checkpoint(model: nn.Module, card: ModelCard, directory: str | os.PathLike) -> Path:
    """Write ``model.safetensors`` and ``card.json`` into ``directory``.

    Each file is written to a temporary name and renamed into place; the card is written
    last, so a directory with a card always has the weights it describes.
    ``card.checksum`` is set on the given card (see the module docstring).

    Parameters
    ----------
    model : torch.nn.Module
        The model; its ``state_dict`` is saved (moved to CPU, contiguous).
    card : ModelCard
        Its card; ``card.architecture`` and ``card.hyperparameters`` must rebuild ``model``.
    directory : path-like
        Checkpoint directory; created if missing, existing files of the same names replaced.

    Returns
    -------
    pathlib.Path
        The checkpoint directory.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    check_card_fields(dataclasses.asdict(card))
    card.checksum = compute_card_checksum(state, card)
    write_atomically(
        directory / WEIGHTS_FILE,
        lambda tmp: safetensors.torch.save_file(state, str(tmp), metadata={"format": "pt"}),
    )
    write_atomically(directory / CARD_FILE, lambda tmp: tmp.write_text(card.to_json() + "\n"))
    return directory


def _pickle_only_error(location: Path, pickles: list[Path]) -> ModelError:
    names = ", ".join(p.name for p in pickles)
    return ModelError(
        f"{location} holds only pickle file(s) ({names}) and no {WEIGHTS_FILE}. galexplore never "
        "unpickles a checkpoint when loading it, because unpickling can run arbitrary code. "
        "Convert it once, only if you trust the file: for the published Dawson et al. 2020 model run "
        "`galexplore zoo import-dawson2020 <directory> --trust-pickle`; for a state_dict of your own, "
        "load it with torch.load(path, weights_only=True) and write a checkpoint with "
        "galexplore.models.checkpoint.save_checkpoint."
    )


def read_card(directory: str | os.PathLike) -> ModelCard:
    """Read ``card.json`` of a checkpoint directory without touching the weights.

    Raises
    ------
    ModelError
        If the directory or its card is missing or unreadable.
    """
    directory = Path(directory)
    card_path = directory / CARD_FILE
    if not card_path.is_file():
        raise ModelError(f"{directory} is not a galexplore checkpoint: {CARD_FILE} is missing. "
                         "Give a directory written by save_checkpoint or `galexplore train`.")
    if card_path.stat().st_size > MAX_CARD_BYTES:
        raise ModelError(f"{card_path} is {card_path.stat().st_size:,} bytes; a model card is at most "
                         f"{MAX_CARD_BYTES:,}. It is not a galexplore card: re-save the checkpoint.")
    try:
        text = card_path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ModelError(f"{card_path} is not UTF-8 text ({err.reason} at byte {err.start}); "
                         "re-save the checkpoint") from err
    return ModelCard.from_json(text)


def load_checkpoint(directory: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelCard]:
    """Rebuild a model from a checkpoint directory, in eval mode.

    Parameters
    ----------
    directory : path-like
        Directory with ``model.safetensors`` and ``card.json``.
    device : str or torch.device
        Where to put the model; ``"auto"`` picks CUDA when available.

    Returns
    -------
    (torch.nn.Module, ModelCard)

    Raises
    ------
    ModelError
        If the directory holds only pickles, files are missing or corrupt, the weights do
        not match the architecture (missing, unexpected or mis-shaped tensors), or the
        weights or card were changed after saving (hash mismatch).
    """
    directory = Path(directory)
    if directory.is_file():
        if directory.suffix.lower() in PICKLE_SUFFIXES:
            raise _pickle_only_error(directory, [directory])
        raise ModelError(f"{directory} is a file; give the checkpoint directory that holds "
                         f"{WEIGHTS_FILE} and {CARD_FILE}")
    if not directory.is_dir():
        raise ModelError(f"checkpoint directory {directory} does not exist")
    weights_path = directory / WEIGHTS_FILE
    if not weights_path.is_file():
        pickles = sorted(p for p in directory.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
        if pickles:
            raise _pickle_only_error(directory, pickles)
        raise ModelError(f"{directory} is not a galexplore checkpoint: {WEIGHTS_FILE} is missing. "
                         "Give a directory written by save_checkpoint or `galexplore train`.")
    card = read_card(directory)
    try:
        state = safetensors.torch.load_file(str(weights_path), device="cpu")
    except (safetensors.SafetensorError, OSError, ValueError) as err:
        raise ModelError(f"{weights_path} is not a readable safetensors file ({err}); "
                         "the checkpoint is corrupt: re-save or re-download it") from err
    if not card.checksum:
        raise ModelError(
            f"{directory / CARD_FILE} has no checksum, so nothing shows that the weights and the card belong "
            "together and were not edited. Re-save the checkpoint with save_checkpoint (only if you trust it)."
        )
    actual = compute_card_checksum(state, card)
    if actual != card.checksum:
        raise ModelError(
            f"checkpoint {directory} was modified after it was saved: the weights or the card do "
            f"not match card.json's checksum ({card.checksum[:12]}... expected, "
            f"{actual[:12]}... found). Re-save it with save_checkpoint or restore the original files."
        )
    # the card's shapes are checked on a skeleton that allocates nothing, so a card asking
    # for an absurd model fails here rather than in the allocator
    with torch.device("meta"):
        skeleton = build_model(card.architecture, **card.hyperparameters)
    _check_state_matches(skeleton, state, directory, card)
    model = build_model(card.architecture, **card.hyperparameters)
    model.load_state_dict(state, strict=True)
    return model.to(resolve_device(device)).eval(), card


def _check_state_matches(model: nn.Module, state: Mapping[str, torch.Tensor], directory: Path,
                         card: ModelCard) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = [f"{key}: file {tuple(state[key].shape)}, model {tuple(expected[key].shape)}"
                 for key in sorted(set(state) & set(expected)) if state[key].shape != expected[key].shape]
    if missing or unexpected or misshaped:
        problems = []
        if missing:
            problems.append(f"missing tensors {missing}")
        if unexpected:
            problems.append(f"unexpected tensors {unexpected}")
        if misshaped:
            problems.append(f"wrong shapes [{'; '.join(misshaped)}]")
        raise ModelError(
            f"the weights in {directory} do not fit architecture {card.architecture!r} with "
            f"hyperparameters {card.hyperparameters}: {', '.join(problems)}. The card and the weights "
            "come from different models; re-save the checkpoint."
        )


def check_compatible(card: ModelCard, dataset: Any) -> None:
    """Raise before inference if ``dataset`` cannot be fed to the model ``card`` describes.

    Parameters
    ----------
    card : ModelCard
    dataset : galexplore.data.Dataset
        Anything with ``.channels`` (list of str) and ``.map_shape`` ``(C, H, W)``.

    Raises
    ------
    ModelError
        If the card's recipe is unknown, the dataset lacks a channel the model needs, or
        the recipe cannot turn the dataset's maps into ``input_size`` square inputs
        (recipes resize square maps of 16 to 628 px to 64 x 64).
    """
    try:
        get_recipe(card.recipe)
    except ParameterError as err:
        raise ModelError(f"model {card.name!r} names an unknown preprocessing recipe: {err}") from err
    available = list(dataset.channels)
    missing = [name for name in card.channels if name not in available]
    if missing:
        raise ModelError(
            f"model {card.name!r} needs channel(s) {list(card.channels)} but the dataset has "
            f"{available} (missing {missing}). Use a dataset with those channels or a model trained on {available}."
        )
    height, width = tuple(dataset.map_shape)[-2:]
    if card.input_size != MODEL_SIZE:
        raise ModelError(
            f"model {card.name!r} takes {card.input_size}x{card.input_size} inputs, but recipe "
            f"{card.recipe!r} makes {MODEL_SIZE}x{MODEL_SIZE} ones; the card and the recipe do not fit."
        )
    if height != width or not MIN_INPUT_SIZE <= height <= MAX_INPUT_SIZE:
        raise ModelError(
            f"the dataset's maps are {height}x{width} px, but recipe {card.recipe!r} resizes only square maps "
            f"of {MIN_INPUT_SIZE} to {MAX_INPUT_SIZE} px to the model's {MODEL_SIZE}x{MODEL_SIZE}. "
            "Crop or pad the maps to a square in that range."
        )
