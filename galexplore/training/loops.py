"""Training runs for the CAEs, the environment VAE and the CNN regressors.

One entry point, `train`, turns a `TrainConfig` and a dataset into a checkpoint directory
(weights + a complete model card). The CAE recipe is that of Dawson et al. (2020, sec. 2.6):
Adam, learning rate 1e-3 halved every 30 epochs, batches of 32, 6400 kappa-balanced draws
per epoch, MSE loss, a test set held out by galaxy. The VAE minimises the Poisson NLL of
raw neighbour counts plus KL; regressors minimise the MSE of standardised targets.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from galexplore.errors import ColumnError, ParameterError, TrainingError
from galexplore.models.checkpoint import CARD_FILE, ModelCard, save_checkpoint
from galexplore.models.device import resolve_device
from galexplore.models.registry import build_model
from galexplore.training.samplers import draw_epoch, kappa_balanced_weights, split_train_validation_test

KINDS = ("cae", "cae-free", "vae", "regressor")
ARCHITECTURES = {"cae": "dawson2020_cae", "cae-free": "cae_free", "vae": "environment_vae",
                 "regressor": "cnn_regressor"}
DEFAULT_LATENT_DIM = {"cae": 3, "cae-free": 3, "vae": 8, "regressor": 32}
DEFAULT_REGRESSOR_CHANNELS = ("mom0", "mom1", "mom2")
#: Network input = velocity / this (km/s), so rotation curves of a few 100 km/s are O(1).
VELOCITY_SCALE_KMS = 300.0
VELOCITY_CHANNELS = frozenset({"mom1", "mom2"})
#: Other channels are divided by this percentile of their finite training-set values.
SCALE_PERCENTILE = 99.0
#: With ``noisy_labels`` a target column is trained on its redshift-based counterpart
#: (Quigley et al.: D_z = D + v_p / H0), while the output keeps the true column's name.
NOISY_LABEL_COLUMNS = {"distance": "distance_z"}
KAPPA_THRESHOLD = 0.5
LOAD_CHUNK = 1024
EVAL_BATCH = 256
#: Largest accepted epochs, batch size and images per epoch (beyond, a typo, not a plan).
MAX_EPOCHS = 100_000
MAX_BATCH_SIZE = 65_536
MAX_IMAGES_PER_EPOCH = 10_000_000

ProgressCallback = Callable[[dict[str, Any]], None]


@dataclass
class TrainConfig:
    """What to train and how.

    Attributes
    ----------
    kind : {"cae", "cae-free", "vae", "regressor"}
        Dawson et al. CAE, its index-free variant, the environment VAE, or a CNN regressor.
    epochs : int
        Number of epochs (each ``images_per_epoch`` draws).
    batch_size : int
        Maps per optimiser step.
    learning_rate : float
        Initial Adam learning rate; halved every ``lr_halving_epochs`` epochs.
    seed : int
        Seeds the weights, the split and the sampler; same seed on CPU, same weights.
    device : str
        ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ...
    targets : list of str
        Regressor target columns of the catalogue.
    channels : list of str
        Input channels; default ``mom1`` (CAEs), ``env`` (VAE), ``mom0, mom1, mom2`` (regressor).
    latent_dim : int or None
        Latent size; default 3 (CAEs), 8 (VAE), 32 (regressor).
    noisy_labels : bool
        Regressor: train the ``distance`` target on ``distance_z`` (Quigley et al.).
    images_per_epoch : int
        Images drawn (with replacement) per epoch; kappa-balanced for CAEs, uniform otherwise.
    validation_fraction : float
        Fraction of galaxies held out to choose the epoch whose weights are kept.
    test_fraction : float
        Fraction of galaxies held out for the card's test figures; never used while training
        or choosing the epoch.
    lr_halving_epochs : int
        Epochs between halvings of the learning rate.
    name : str or None
        Model name for the card; default the output directory's name.
    rows : list of int or None
        Dataset rows to train on (e.g. the explorer's selection); None: every row.
    init_from : str or None
        Checkpoint directory whose weights start the run (fine-tuning); it must have the
        architecture and hyperparameters of this run. None: fresh weights from ``seed``.
    num_threads : int or None
        CPU threads of a background run (`TrainingJob`); None: every core but one, so the
        app's server keeps a core. Foreground `train` leaves the caller's setting alone.
    """

    kind: str
    epochs: int = 30
    batch_size: int = 32
    learning_rate: float = 1e-3
    seed: int = 0
    device: str = "auto"
    targets: list[str] = field(default_factory=list)
    channels: list[str] = field(default_factory=list)
    latent_dim: int | None = None
    noisy_labels: bool = False
    images_per_epoch: int = 6400
    validation_fraction: float = 0.1
    test_fraction: float = 0.2
    lr_halving_epochs: int = 30
    name: str | None = None
    rows: list[int] | None = None
    init_from: str | None = None
    num_threads: int | None = None

    def validate(self) -> None:
        """Raise `ParameterError` naming the first field that is out of range."""
        if self.kind not in KINDS:
            raise ParameterError(f"unknown model kind {self.kind!r}; choose one of {', '.join(KINDS)}")
        for name in ("epochs", "batch_size", "lr_halving_epochs"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ParameterError(f"{name} must be a positive integer, got {value!r}")
        for name, largest in (("epochs", MAX_EPOCHS), ("batch_size", MAX_BATCH_SIZE),
                              ("images_per_epoch", MAX_IMAGES_PER_EPOCH)):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value > largest:
                raise ParameterError(f"{name} must be an integer of at most {largest:,}, got {value!r}")
        if self.images_per_epoch < 2:
            raise ParameterError(f"images_per_epoch must be at least 2, got {self.images_per_epoch}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ParameterError(f"learning_rate must be a positive number, got {self.learning_rate}")
        if self.latent_dim is not None and self.latent_dim < 1:
            raise ParameterError(f"latent_dim must be at least 1, got {self.latent_dim}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ParameterError(f"test_fraction must lie strictly between 0 and 1, got {self.test_fraction}")
        if not 0.0 < self.validation_fraction < 1.0 - self.test_fraction:
            raise ParameterError(f"validation_fraction must lie strictly between 0 and 1 - test_fraction "
                                 f"({1.0 - self.test_fraction:g}), got {self.validation_fraction}")
        if self.kind == "regressor" and not self.targets:
            raise ParameterError("a regressor needs at least one target column: pass --target NAME")
        if self.kind != "regressor" and (self.targets or self.noisy_labels):
            raise ParameterError(f"targets and noisy_labels apply to regressors only, not to kind {self.kind!r}")
        if self.kind in ("cae", "cae-free", "vae") and len(self.channels) > 1:
            raise ParameterError(f"kind {self.kind!r} takes one input channel, got {self.channels}")
        if self.rows is not None and len(self.rows) < 4:
            raise ParameterError(f"training on a subset needs at least 4 rows, got {len(self.rows)}; "
                                 "select more galaxies or train on the whole dataset")
        if self.num_threads is not None and (not isinstance(self.num_threads, (int, np.integer))
                                             or self.num_threads < 1):
            raise ParameterError(f"num_threads must be a positive integer, got {self.num_threads!r}")


@dataclass
class _Problem:
    """Everything a kind-specific preparation hands to the generic loop."""

    architecture: str
    hyperparameters: dict[str, Any]
    channels: list[str]
    recipe: str
    rows: np.ndarray                      # dataset rows used
    inputs: torch.Tensor                  # (n, C, 64, 64) model input of those rows
    labels: torch.Tensor | None           # (n, T) physical regression labels
    train_index: np.ndarray               # into rows
    validation_index: np.ndarray          # chooses the epoch
    test_index: np.ndarray                # the card's held-out figures only
    sampling_weights: np.ndarray          # over train_index
    sampler: str
    latent_names: list[str]
    outputs: list[str] = field(default_factory=list)
    output_units: dict[str, str] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    label_columns: dict[str, str] = field(default_factory=dict)
    configure: Callable[[nn.Module], None] = lambda model: None


def train(config: TrainConfig, dataset: Any, out_dir: str | os.PathLike,
          callback: ProgressCallback | None = None, stop_event: Any = None) -> Path:
    """Train a model and write its checkpoint (``model.safetensors`` + ``card.json``).

    Parameters
    ----------
    config : TrainConfig
    dataset : galexplore.data.Dataset or path-like
        Training data; a path is opened with `open_dataset`.
    out_dir : path-like
        Checkpoint directory to create; must not already hold a checkpoint.
    callback : callable, optional
        Called after every epoch with ``{"epoch", "epochs", "train_loss", "val_loss",
        "best_val_loss", "learning_rate", "elapsed_s", "eta_s", "device", "partial"}``.
    stop_event : threading.Event or multiprocessing.Event, optional
        When set, training ends after the current batch. KeyboardInterrupt does the same.
        Either way the weights with the lowest validation loss are saved (the validation
        set, not the test set, chooses them).

    Returns
    -------
    pathlib.Path
        The checkpoint directory.

    Raises
    ------
    ParameterError, ColumnError
        A bad configuration, or a channel or column the dataset lacks.
    TrainingError
        The loss became NaN or infinite.
    """
    config.validate()
    out_dir = Path(out_dir)
    if (out_dir / CARD_FILE).exists():
        raise ParameterError(f"{out_dir} already holds a checkpoint; choose another output directory or delete it")
    if isinstance(dataset, (str, os.PathLike)):
        from galexplore.data.dataset import open_dataset

        dataset = open_dataset(dataset)
    device = resolve_device(config.device)
    with _seeded(config.seed, device):
        problem = _prepare(config, dataset)
        model = build_model(problem.architecture, **problem.hyperparameters)
        problem.configure(model)
        if config.init_from is not None:
            _load_initial_weights(model, problem, config.init_from)
        model.to(device)
        history, best_state, stopped = _fit(model, problem, config, device, callback, stop_event)
    model.load_state_dict(best_state)
    model.eval()
    card = _model_card(config, dataset, out_dir, problem, model, history, stopped, device)
    return save_checkpoint(model.cpu(), card, out_dir)


def train_from_cli(config: TrainConfig, dataset_path: str | os.PathLike, out: str | os.PathLike) -> Path:
    """`train` with a tqdm progress bar (one step per epoch) on the terminal; Ctrl-C stops early."""
    from tqdm.auto import tqdm

    with tqdm(total=config.epochs, unit="epoch", desc=f"train {config.kind}") as bar:
        def show(event: dict[str, Any]) -> None:
            bar.set_postfix(train=f"{event['train_loss']:.4g}", val=f"{event['val_loss']:.4g}",
                            device=event["device"])
            bar.update(event["epoch"] - bar.n)

        return train(config, dataset_path, out, callback=show)


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch inside a forked RNG state, with deterministic cuDNN, restoring both after."""
    devices = [device.index or 0] if device.type == "cuda" else []
    saved = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        try:
            yield
        finally:
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


def _load_initial_weights(model: nn.Module, problem: _Problem, checkpoint: str) -> None:
    """Start from the weights of ``checkpoint`` (fine-tuning), which must match the run's model."""
    from galexplore.models.checkpoint import load_checkpoint

    initial, card = load_checkpoint(checkpoint)
    if card.architecture != problem.architecture or card.hyperparameters != problem.hyperparameters:
        raise ParameterError(
            f"cannot fine-tune from {checkpoint}: it is {card.architecture} {card.hyperparameters}, this run "
            f"trains {problem.architecture} {problem.hyperparameters}; pick a checkpoint of the same kind "
            "or train from scratch")
    model.load_state_dict(initial.state_dict())


# ----------------------------------------------------------------------------- preparation

def _prepare(config: TrainConfig, dataset: Any) -> _Problem:
    if config.kind in ("cae", "cae-free"):
        return _prepare_autoencoder(config, dataset)
    if config.kind == "vae":
        return _prepare_vae(config, dataset)
    return _prepare_regressor(config, dataset)


def _require_columns(catalog, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in catalog.columns]
    if missing:
        raise ColumnError(f"{what} column(s) {missing} are not in the catalogue; available: {list(catalog.columns)}")


def _load_inputs(dataset: Any, channels: list[str], recipe_name: str, rows: np.ndarray) -> torch.Tensor:
    """Model input of ``rows``: the channels through the recipe, in chunks, as one CPU tensor."""
    from galexplore.data.recipes import get_recipe

    recipe = get_recipe(recipe_name)
    channel_index = [dataset.channel_index(c) for c in channels]
    parts = []
    for start in range(0, len(rows), LOAD_CHUNK):
        block = np.asarray(dataset.maps[rows[start:start + LOAD_CHUNK]], dtype=np.float32)[:, channel_index]
        parts.append(np.asarray(recipe(block), dtype=np.float32))
    return torch.from_numpy(np.concatenate(parts))


def _rows(config: TrainConfig, n: int) -> np.ndarray:
    """Dataset rows of the run: ``config.rows`` (sorted, unique) or all ``n``."""
    if config.rows is None:
        return np.arange(n)
    rows = np.unique(np.asarray(config.rows, dtype=np.int64))
    if rows[0] < 0 or rows[-1] >= n:
        raise ParameterError(f"training rows must lie in [0, {n}) for this dataset of {n} maps; "
                             "reselect the galaxies in the dataset being trained on")
    return rows


def _split(config: TrainConfig, catalog, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ids = catalog["galaxy_id"] if "galaxy_id" in catalog.columns else catalog["id"]
    return split_train_validation_test(np.asarray(ids)[rows], config.validation_fraction, config.test_fraction,
                                       config.seed)


def _prepare_autoencoder(config: TrainConfig, dataset: Any) -> _Problem:
    catalog = dataset.catalog
    channels = list(config.channels) or ["mom1"]
    dataset.channel_index(channels[0])
    noisy = "snr" in catalog.columns and bool(np.isfinite(np.asarray(catalog["snr"], dtype=float)).any())
    recipe = "dawson2020_noisy" if noisy else "dawson2020"
    rows = _rows(config, len(dataset))
    train_index, validation_index, test_index = _split(config, catalog, rows)
    if "kappa" in catalog.columns:
        weights = kappa_balanced_weights(np.asarray(catalog["kappa"], dtype=float)[rows[train_index]])
        sampler = "kappa_balanced"
    else:
        weights = np.ones(len(train_index))
        sampler = "uniform"
    latent_dim = config.latent_dim or DEFAULT_LATENT_DIM[config.kind]
    return _Problem(
        architecture=ARCHITECTURES[config.kind],
        hyperparameters={"in_channels": 1, "latent_dim": latent_dim},
        channels=channels, recipe=recipe, rows=rows,
        inputs=_load_inputs(dataset, channels, recipe, rows), labels=None,
        train_index=train_index, validation_index=validation_index, test_index=test_index,
        sampling_weights=weights, sampler=sampler,
        latent_names=[f"z{i}" for i in range(latent_dim)],
    )


def _prepare_vae(config: TrainConfig, dataset: Any) -> _Problem:
    catalog = dataset.catalog
    channels = list(config.channels) or ["env"]
    dataset.channel_index(channels[0])
    rows = _rows(config, len(dataset))
    train_index, validation_index, test_index = _split(config, catalog, rows)
    latent_dim = config.latent_dim or DEFAULT_LATENT_DIM["vae"]
    return _Problem(
        architecture=ARCHITECTURES["vae"],
        hyperparameters={"latent_dim": latent_dim, "in_channels": 1},
        channels=channels, recipe="physical", rows=rows,
        inputs=_load_inputs(dataset, channels, "physical", rows), labels=None,
        train_index=train_index, validation_index=validation_index, test_index=test_index,
        sampling_weights=np.ones(len(train_index)),
        sampler="uniform", latent_names=[f"z{i}" for i in range(latent_dim)],
    )


def _prepare_regressor(config: TrainConfig, dataset: Any) -> _Problem:
    catalog = dataset.catalog
    channels = list(config.channels) or [c for c in DEFAULT_REGRESSOR_CHANNELS if c in dataset.channels]
    if not channels:
        raise ParameterError(f"the dataset has none of the default channels {DEFAULT_REGRESSOR_CHANNELS}; "
                             f"pass --channel NAME (available: {list(dataset.channels)})")
    for name in channels:
        dataset.channel_index(name)
    outputs = list(config.targets)
    _require_columns(catalog, outputs, "target")
    label_columns = {name: name for name in outputs}
    if config.noisy_labels:
        noisy = [name for name in outputs if name in NOISY_LABEL_COLUMNS]
        if not noisy:
            raise ParameterError(f"noisy_labels trains {sorted(NOISY_LABEL_COLUMNS)} on "
                                 f"{sorted(NOISY_LABEL_COLUMNS.values())}; add --target distance")
        for name in noisy:
            label_columns[name] = NOISY_LABEL_COLUMNS[name]
        _require_columns(catalog, [label_columns[n] for n in noisy], "noisy-label")
    labels = np.column_stack([np.asarray(catalog[label_columns[name]], dtype=np.float64) for name in outputs])
    rows = np.intersect1d(_rows(config, len(dataset)), np.flatnonzero(np.isfinite(labels).all(axis=1)))
    if rows.size < 4:
        raise ParameterError(f"only {rows.size} rows have finite values of {outputs}; the regressor needs more")
    train_index, validation_index, test_index = _split(config, catalog, rows)
    inputs = _load_inputs(dataset, channels, "physical", rows)
    scale = []
    for c, name in enumerate(channels):
        if name in VELOCITY_CHANNELS:
            scale.append(VELOCITY_SCALE_KMS)
            continue
        values = np.abs(inputs[train_index, c].numpy())
        values = values[np.isfinite(values) & (values > 0)]  # the recipe sets blank pixels to 0
        level = float(np.percentile(values, SCALE_PERCENTILE)) if values.size else 0.0
        scale.append(level if level > 0 else 1.0)
    train_labels = labels[rows][train_index]
    mean = train_labels.mean(axis=0)
    std = train_labels.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    units = getattr(dataset, "column_units", {}) or {}
    latent_dim = config.latent_dim or DEFAULT_LATENT_DIM["regressor"]

    def configure(model: nn.Module) -> None:
        model.set_input_scale(scale)
        model.set_target_scaling(mean, std)

    return _Problem(
        architecture=ARCHITECTURES["regressor"],
        hyperparameters={"in_channels": len(channels), "outputs": outputs,
                         "output_units": [units.get(name, "") for name in outputs], "latent_dim": latent_dim},
        channels=channels, recipe="physical", rows=rows, inputs=inputs,
        labels=torch.from_numpy(labels[rows].astype(np.float32)),
        train_index=train_index, validation_index=validation_index, test_index=test_index,
        sampling_weights=np.ones(len(train_index)),
        sampler="uniform", latent_names=[f"h{i}" for i in range(latent_dim)],
        outputs=outputs, output_units={name: units.get(name, "") for name in outputs},
        extras={"input_scale": dict(zip(channels, scale)),
                "input_scale_rule": f"{', '.join(sorted(VELOCITY_CHANNELS))}: {VELOCITY_SCALE_KMS:g} km/s; "
                                    f"other channels: {SCALE_PERCENTILE:g}th percentile of non-blank "
                                    "|training values|"},
        label_columns=label_columns, configure=configure,
    )


# ----------------------------------------------------------------------------- the loop

def _loss(kind: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    if kind == "vae":
        return model.loss(x)[0]
    if kind == "regressor":
        return torch.mean((model(x) - model.standardise(y)) ** 2)
    return torch.mean((model.reconstruct(x) - x) ** 2)


def _batches(n: int, batch_size: int) -> Iterator[slice]:
    """Consecutive slices of ``n`` items; a trailing batch of one joins the previous batch
    (batch normalisation cannot train on a single map)."""
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    for i, start in enumerate(starts):
        yield slice(start, starts[i + 1] if i + 1 < len(starts) else n)


@torch.no_grad()
def _evaluate(kind: str, model: nn.Module, problem: _Problem, device: torch.device) -> float:
    """Mean loss over the validation set, in evaluation mode."""
    model.eval()
    total, count = 0.0, 0
    index = problem.validation_index
    for part in _batches(len(index), EVAL_BATCH):
        rows = index[part]
        x = problem.inputs[rows].to(device)
        y = problem.labels[rows].to(device) if problem.labels is not None else None
        total += float(_loss(kind, model, x, y)) * len(rows)
        count += len(rows)
    return total / count


def _fit(model: nn.Module, problem: _Problem, config: TrainConfig, device: torch.device,
         callback: ProgressCallback | None, stop_event: Any) -> tuple[list[dict], dict, bool]:
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    schedule = torch.optim.lr_scheduler.StepLR(optimiser, step_size=config.lr_halving_epochs, gamma=0.5)
    generator = torch.Generator().manual_seed(config.seed)
    history: list[dict] = []
    best_state: dict[str, torch.Tensor] | None = None
    best_loss = math.inf
    stopped = False
    started = time.perf_counter()

    def finish_epoch(epoch: int, train_sum: float, seen: int, partial: bool) -> None:
        nonlocal best_state, best_loss
        val_loss = _evaluate(config.kind, model, problem, device)
        if not math.isfinite(val_loss):
            raise TrainingError(f"the validation loss became {val_loss} at epoch {epoch}; "
                                f"lower the learning rate (now {config.learning_rate:g})")
        train_loss = train_sum / seen if seen else math.nan
        if val_loss < best_loss or best_state is None:
            best_loss = val_loss
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elapsed = time.perf_counter() - started
        event = {"epoch": epoch, "epochs": config.epochs, "train_loss": train_loss, "val_loss": val_loss,
                 "best_val_loss": best_loss, "learning_rate": optimiser.param_groups[0]["lr"],
                 "elapsed_s": elapsed,
                 "eta_s": 0.0 if partial else elapsed / epoch * (config.epochs - epoch),
                 "device": str(device), "partial": partial}
        history.append(event)
        if callback is not None:
            callback(dict(event))

    epoch, train_sum, seen, recorded = 0, 0.0, 0, True
    try:
        for epoch in range(1, config.epochs + 1):
            model.train()
            train_sum, seen, recorded = 0.0, 0, False
            draws = problem.train_index[draw_epoch(problem.sampling_weights, config.images_per_epoch, generator)]
            for part in _batches(len(draws), config.batch_size):
                rows = draws[part]
                x = problem.inputs[rows].to(device)
                y = problem.labels[rows].to(device) if problem.labels is not None else None
                loss = _loss(config.kind, model, x, y)
                if not torch.isfinite(loss):
                    raise TrainingError(
                        f"the training loss became {loss.item()} at epoch {epoch}; lower the learning rate "
                        f"(now {config.learning_rate:g}, try {config.learning_rate / 10:g}) or check the "
                        "input maps for extreme values")
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                train_sum += loss.item() * len(rows)
                seen += len(rows)
                if stop_event is not None and stop_event.is_set():
                    stopped = True
                    break
            schedule.step()
            recorded = True
            finish_epoch(epoch, train_sum, seen, partial=stopped and seen < config.images_per_epoch)
            if stopped or (stop_event is not None and stop_event.is_set()):
                stopped = True
                break
    except KeyboardInterrupt:
        stopped = True
    if not recorded or best_state is None:
        finish_epoch(max(epoch, 1), train_sum, seen, partial=True)
    return history, best_state, stopped


# ----------------------------------------------------------------------------- the card

@torch.no_grad()
def _outputs(model: nn.Module, problem: _Problem, index: np.ndarray) -> dict[str, np.ndarray]:
    """Latents (and predictions, for regressors) of the rows ``index`` of the problem's inputs."""
    model.eval()
    latents, predictions = [], []
    with torch.inference_mode():
        for part in _batches(len(index), EVAL_BATCH):
            x = problem.inputs[index[part]]
            latents.append(model.encode(x).numpy())
            if problem.outputs:
                predictions.append(torch.stack([v for v in model.predict(x).values()], dim=1).numpy())
    result = {"latent": np.concatenate(latents)}
    if predictions:
        result["prediction"] = np.concatenate(predictions)
    return result


def _autoencoder_extras(problem: _Problem, dataset: Any, train_latent: np.ndarray,
                        test_latent: np.ndarray) -> tuple[dict[str, Any], dict[str, Any]]:
    """Dawson et al. (2020) post-processing of a CAE's latents, as in secs 2.6 and 3.5.

    Fitted on the training set: the PCA rotation, the vertical TP = TN boundary in the
    folded plane and the latent-angle to PA calibration. Measured on the test set: the
    confusion matrix, the mean recall and the PA residual scatter.

    Returns
    -------
    (extras for the model card, test metrics)
    """
    from galexplore.analysis.boundaries import VerticalBoundary
    from galexplore.analysis.position_angle import PositionAngleCalibration, latent_angle
    from galexplore.analysis.projections import PCAProjection, fold
    from galexplore.analysis.stats import confusion_matrix, mean_recall

    if len(train_latent) <= train_latent.shape[1]:
        return {}, {}
    pca = PCAProjection().fit(train_latent)
    extras: dict[str, Any] = {"pca": {"mean": pca.mean_.tolist(), "components": pca.components_.tolist(),
                                      "fitted_on": "training-set latents"}}
    catalog = dataset.catalog
    if train_latent.shape[1] != 3 or "kappa" not in catalog.columns:
        return extras, {}
    rows_train = problem.rows[problem.train_index]
    rows_test = problem.rows[problem.test_index]
    kappa = np.asarray(catalog["kappa"], dtype=float)
    r_train, _ = fold(pca.transform(train_latent))
    r_test, _ = fold(pca.transform(test_latent))
    metrics: dict[str, Any] = {}
    high = kappa[rows_train] > KAPPA_THRESHOLD
    if high.any() and not high.all():
        boundary = VerticalBoundary(kappa_threshold=KAPPA_THRESHOLD).fit(r_train, kappa[rows_train])
        extras["boundary"] = {"folded_r": float(boundary.position_), "kappa_threshold": KAPPA_THRESHOLD,
                              "uncertainty": float(boundary.uncertainty_), "fitted_on": "training set"}
        truth = (kappa[rows_test] > KAPPA_THRESHOLD).astype(int)
        predicted = boundary.predict(r_test).astype(int)
        metrics["confusion_matrix"] = np.asarray(
            confusion_matrix(truth, predicted, normalize=True, labels=[0, 1])).tolist()
        metrics["mean_recall"] = float(mean_recall(truth, predicted))
    pa_column = "pa_kin" if "pa_kin" in catalog.columns else "pa" if "pa" in catalog.columns else None
    if pa_column is not None:
        true_pa = np.asarray(catalog[pa_column], dtype=float)
        calibration = PositionAngleCalibration().fit(latent_angle(pca.transform(train_latent)), true_pa[rows_train])
        extras["pa_calibration"] = calibration.to_dict()
        residual = calibration.residuals(calibration.transform(latent_angle(pca.transform(test_latent))),
                                         true_pa[rows_test])
        metrics["pa_residual_sigma_deg"] = float(np.nanstd(residual, ddof=1))
        metrics["pa_against"] = pa_column
    return extras, metrics


def _regression_metrics(problem: _Problem, dataset: Any, prediction: np.ndarray) -> dict[str, Any]:
    """Bias (mean of predicted - true), scatter (its standard deviation) and RMSE per output on
    the test set, against the true column (for noisy labels: the true distance, not D_z)."""
    catalog = dataset.catalog
    rows = problem.rows[problem.test_index]
    metrics = {}
    for i, name in enumerate(problem.outputs):
        truth = np.asarray(catalog[name], dtype=np.float64)[rows]
        ok = np.isfinite(truth)
        residual = prediction[ok, i].astype(np.float64) - truth[ok]
        metrics[name] = {"bias": float(residual.mean()), "scatter": float(residual.std()),
                         "rmse": float(np.sqrt(np.mean(residual**2))), "n": int(ok.sum()),
                         "unit": problem.output_units.get(name, "")}
    return metrics


def _json_number(value: Any) -> Any:
    """None for a NaN float (no training batch ran), so the card stays strict JSON."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _model_card(config: TrainConfig, dataset: Any, out_dir: Path, problem: _Problem, model: nn.Module,
                history: list[dict], stopped: bool, device: torch.device) -> ModelCard:
    model.cpu()
    test = _outputs(model, problem, problem.test_index)
    extras = dict(problem.extras)
    metrics: dict[str, Any] = {
        "loss": {"vae": "poisson_nll + kl per map (nats)", "regressor": "mse of standardised targets"}.get(
            config.kind, "mse per pixel"),
        "final_train_loss": _json_number(history[-1]["train_loss"]), "final_val_loss": history[-1]["val_loss"],
        "best_val_loss": min(h["val_loss"] for h in history),
        "best_epoch": min(history, key=lambda h: h["val_loss"])["epoch"],
        "epochs_run": len(history), "stopped_early": stopped,
        "history": [{k: _json_number(h[k]) for k in ("epoch", "train_loss", "val_loss", "learning_rate", "partial")}
                    for h in history],
    }
    if config.kind in ("cae", "cae-free"):
        train = _outputs(model, problem, problem.train_index)
        card_extras, test_metrics = _autoencoder_extras(problem, dataset, train["latent"], test["latent"])
        extras.update(card_extras)
        metrics["test"] = test_metrics
    elif config.kind == "vae":
        info = model.latent_informativeness(problem.inputs[problem.test_index])
        extras["latent_informativeness"] = info.tolist()
        extras["latent_ranking"] = torch.argsort(info, descending=True, stable=True).tolist()
    else:
        metrics["test"] = _regression_metrics(problem, dataset, test["prediction"])
    catalog = dataset.catalog
    ids = catalog["galaxy_id"] if "galaxy_id" in catalog.columns else catalog["id"]
    galaxies = np.asarray(ids)[problem.rows]
    training_data = {
        "dataset_path": str(Path(dataset.path).resolve()), "dataset_fingerprint": dataset.fingerprint,
        "n_train": int(len(problem.train_index)), "n_validation": int(len(problem.validation_index)),
        "n_test": int(len(problem.test_index)),
        "n_train_galaxies": int(np.unique(galaxies[problem.train_index]).size),
        "n_validation_galaxies": int(np.unique(galaxies[problem.validation_index]).size),
        "n_test_galaxies": int(np.unique(galaxies[problem.test_index]).size),
        "split": "by galaxy: train / validation (chooses the epoch) / test (figures only)",
        "split_seed": config.seed, "validation_fraction": config.validation_fraction,
        "test_fraction": config.test_fraction,
        "sampler": problem.sampler, "label_columns": problem.label_columns,
        "config": dataclasses.asdict(config), "device": str(device),
    }
    return ModelCard(
        name=config.name or out_dir.name, architecture=problem.architecture,
        hyperparameters=problem.hyperparameters, channels=problem.channels, recipe=problem.recipe,
        input_size=int(problem.inputs.shape[-1]), latent_names=problem.latent_names,
        outputs=problem.outputs, output_units=problem.output_units,
        training_data=training_data, metrics=metrics, extras=extras,
    )
