"""One explorer session's background training: settings checked on entry, a job submitted to
the server's shared queue, its progress followed, and what it gives applied.

Training runs in a separate process (`galexplore.training.jobs.TrainingJob`), so a crash or
an out-of-memory kill cannot take the server down; the same process then computes the new
model's embedding of the job's own dataset, so switching to the new model reads a cache.
All sessions share one `JobManager` per models directory, which runs one job at a time and
queues the others with a message saying why. A head job ("MLP head on the latents") trains
on the session table's latent vectors and adds its predictions as columns instead of a
new model.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from galexplore.errors import ParameterError
from galexplore.explorer.bundles import Bundle, latent_columns
from galexplore.training.heads import HEAD_KIND, HeadConfig, MLPHead
from galexplore.training.jobs import CANCELLED, FAILED, FINISHED, QUEUED, RUNNING, JobManager, TrainingJob
from galexplore.training.loops import TrainConfig

#: What the Training tab offers: label -> TrainConfig kind ("finetune": the current model's kind).
TRAINABLE = {
    "fine-tune the current model": "finetune",
    "CAE, Dawson et al. 2020 (kappa-balanced draws)": "cae",
    "CAE, index-free decoder (kappa-balanced draws)": "cae-free",
    "environment VAE (Gim et al.)": "vae",
    "CNN regressor of a catalogue column": "regressor",
    "MLP head on the latents (predicts the target column or a class)": HEAD_KIND,
}
#: Labels of an MLP head: the target column's values, the column thresholded, or the user's marks.
HEAD_LABELS = ("column value (regression)", "column > threshold (classification)", "my marks (A = 1, B = 0)")
#: Hidden layers of the heads trained from the Training tab.
HEAD_HIDDEN_LAYERS = (32, 32)
KIND_OF_ARCHITECTURE = {"dawson2020_cae": "cae", "cae_free": "cae-free", "environment_vae": "vae",
                        "cnn_regressor": "regressor"}
SUBSETS = ("whole dataset", "current selection")
#: Inclusive limits of the numeric settings; a value outside is refused, never clamped.
LIMITS = {"epochs": (1, 10_000), "images_per_epoch": (2, 1_000_000), "batch_size": (1, 4096),
          "learning_rate": (1e-7, 1.0), "seed": (0, 2**32 - 1)}
#: Seconds a cancelled run may take to stop after its current batch before it is terminated.
CANCEL_GRACE_S = 5.0
#: Phases of a session's run after its job ends.
IDLE, SWAP_READY, SWAPPED, HEAD_APPLIED, HEAD_STALE = (
    "idle", "ready to switch", "switched to the new model", "head predictions added to the table",
    "head trained on another model's latents")

_MANAGERS: dict[str, JobManager] = {}
_MANAGERS_LOCK = threading.Lock()


def shared_job_manager(models_dir: str | Path) -> JobManager:
    """The process-wide `JobManager` of ``models_dir`` (one job at a time, others queued)."""
    key = str(Path(models_dir).resolve())
    with _MANAGERS_LOCK:
        if key not in _MANAGERS:
            _MANAGERS[key] = JobManager(key, max_concurrent=1)
        return _MANAGERS[key]


def check_setting(name: str, value) -> int | float:
    """``value`` of a numeric setting if it lies within `LIMITS`, else a `ParameterError`
    that names the limits (so the page can refuse it visibly)."""
    low, high = LIMITS[name]
    integer = isinstance(low, int)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ParameterError(f"{name.replace('_', ' ')} must be a number from {low:,} to {high:,}") from None
    if not math.isfinite(number) or not low <= number <= high or (integer and number != int(number)):
        kind = "a whole number" if integer else "a number"
        raise ParameterError(f"{name.replace('_', ' ')} must be {kind} from {low:,} to {high:,}; "
                             f"{value} was refused")
    return int(number) if integer else number


@dataclass
class TrainingSettings:
    """What the Training tab asks for (see `TRAINABLE`, `HEAD_LABELS`, `SUBSETS`, `LIMITS`)."""

    what: str = next(iter(TRAINABLE))
    epochs: int = 5
    images_per_epoch: int = 1024
    batch_size: int = 32
    learning_rate: float = 1e-3
    target: str | None = None
    head_labels: str = HEAD_LABELS[0]
    threshold: float = 0.5
    subset: str = SUBSETS[0]
    device: str = "auto"
    seed: int = 0

    def checked(self) -> TrainingSettings:
        for name in LIMITS:
            check_setting(name, getattr(self, name))
        if self.what not in TRAINABLE:
            raise ParameterError(f"unknown training choice {self.what!r}")
        if not math.isfinite(float(self.threshold)):
            raise ParameterError("the head's threshold must be a finite number")
        return self


def make_config(settings: TrainingSettings, bundle: Bundle, selection: np.ndarray,
                marks=None) -> TrainConfig | HeadConfig:
    """The `TrainConfig` (or `HeadConfig`) of the settings on ``bundle`` (ParameterError when
    they do not fit together). ``selection``: selected rows; ``marks``: the session's
    `galexplore.explorer.boundaries.Marks` (labels of a head)."""
    settings.checked()
    kind = TRAINABLE[settings.what]
    if kind == HEAD_KIND:
        return _head_config(settings, bundle, selection, marks)
    extra: dict = {}
    if kind == "finetune":
        if bundle.model is None:
            raise ParameterError("this table has no model to fine-tune; open a checkpoint first")
        card = bundle.model.card
        kind = KIND_OF_ARCHITECTURE.get(card.architecture)
        if kind is None:
            raise ParameterError(f"models of architecture {card.architecture!r} cannot be fine-tuned here; "
                                 "train a CAE, VAE or regressor from scratch instead")
        extra = {"init_from": str(bundle.model.path), "channels": list(card.channels),
                 "latent_dim": card.hyperparameters.get("latent_dim")}
        if kind == "regressor":
            extra["targets"] = list(card.outputs)
    elif kind == "regressor":
        if settings.target is None:
            raise ParameterError("choose the catalogue column the regressor should learn")
        extra = {"targets": [settings.target]}
    if settings.subset == SUBSETS[1]:
        if len(selection) == 0:
            raise ParameterError("nothing is selected; lasso galaxies or train on the whole dataset")
        extra["rows"] = np.asarray(selection).tolist()
    config = TrainConfig(kind=kind, epochs=int(settings.epochs), batch_size=int(settings.batch_size),
                         learning_rate=float(settings.learning_rate), seed=int(settings.seed),
                         device=settings.device, images_per_epoch=int(settings.images_per_epoch), **extra)
    config.validate()
    return config


def _head_config(settings: TrainingSettings, bundle: Bundle, selection: np.ndarray, marks) -> HeadConfig:
    """An MLP head on the table's latent vectors; with the subset "current selection" only the
    selected rows are used for training."""
    latent = latent_columns(bundle.columns)
    if not latent:
        raise ParameterError("this table has no latent vectors; open a model to train a head on its latents")
    task = "regression" if settings.head_labels == HEAD_LABELS[0] else "classification"
    if settings.head_labels == HEAD_LABELS[2]:
        if marks is None:
            raise ParameterError("marks are made in the Boundaries tab, which this page lacks; "
                                 "label the head with a catalogue column instead")
        ids = bundle.column("id")
        a, b = np.isin(ids, marks.a), np.isin(ids, marks.b)
        values = np.where(a & ~b, 1.0, np.where(b & ~a, 0.0, np.nan))
        target, unit, described = "marks", "", "user marks: A = 1, B = 0"
    else:
        if settings.target not in bundle.table:
            raise ParameterError("choose the catalogue column the head should learn")
        values = np.asarray(bundle.column(settings.target), dtype=np.float64)
        target, unit, described = settings.target, bundle.unit(settings.target), settings.target
        if task == "classification":
            values = np.where(np.isfinite(values), (values > settings.threshold).astype(np.float64), np.nan)
            described = f"{settings.target} > {settings.threshold:g} {unit}".rstrip()
            unit = ""
    if settings.subset == SUBSETS[1]:
        if len(selection) == 0:
            raise ParameterError("nothing is selected; lasso galaxies or train on the whole dataset")
        keep = np.zeros(bundle.n_maps, dtype=bool)
        keep[np.asarray(selection)] = True
        values = np.where(keep, values, np.nan)
    groups = bundle.column("galaxy_id" if "galaxy_id" in bundle.table else "id")
    config = HeadConfig(target=target, latents=bundle.frame(latent).to_numpy(np.float64), values=values,
                        galaxy_ids=groups, task=task, latent_names=latent, target_unit=unit,
                        labels_from=described, hidden_layers=HEAD_HIDDEN_LAYERS, epochs=int(settings.epochs),
                        batch_size=int(settings.batch_size), learning_rate=float(settings.learning_rate),
                        seed=int(settings.seed), model_path=str(bundle.model.path) if bundle.model else None)
    config.validate()
    return config


class TrainingRun:
    """The job of one session and what it gives when it ends.

    Parameters
    ----------
    models_dir : where checkpoints appear (the server's shared queue for that directory).
    """

    def __init__(self, models_dir: str | Path):
        self.manager = shared_job_manager(models_dir)
        self.job: TrainingJob | None = None
        self.phase = IDLE
        self.head: MLPHead | None = None

    @property
    def active(self) -> bool:
        """True while the job is queued or running."""
        return self.job is not None and self.job.status in (QUEUED, RUNNING)

    def start(self, config: TrainConfig | HeadConfig, bundle: Bundle, name: str | None = None) -> TrainingJob:
        """Submit a job on ``bundle``'s dataset; it starts now or waits in the shared queue.
        A model job also embeds that dataset (with UMAP when ``bundle`` has it)."""
        if self.active:
            raise ParameterError("this session already has a training job; cancel it or wait for it to end")
        dataset = bundle.dataset
        if dataset is None and not isinstance(config, HeadConfig):
            raise ParameterError("this table has no dataset to train on; open a dataset first")
        self.phase, self.head = IDLE, None
        self.job = self.manager.submit(config, dataset.path if dataset is not None else "", name=name,
                                       embed=not isinstance(config, HeadConfig),
                                       embed_umap="umap_0" in bundle.columns)
        return self.job

    def poll(self) -> None:
        """Update the job (and the shared queue); set `phase` when it has just ended."""
        self.manager.poll()
        job = self.job
        if job is None or self.phase != IDLE or job.status != FINISHED:
            return
        if isinstance(job.config, HeadConfig):
            self.head = MLPHead.load(job.result)
        self.phase = SWAP_READY

    def head_columns(self, bundle: Bundle) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        """The finished head's prediction columns for ``bundle`` and their units; ParameterError
        (and phase `HEAD_STALE`) when ``bundle`` shows another model than the head was trained on."""
        model = str(bundle.model.path) if bundle.model is not None else None
        if self.job.config.model_path != model:
            self.phase = HEAD_STALE
            raise ParameterError(f"the MLP head saved to {self.job.result.name} was trained on the latents of "
                                 "another model; its predictions were not added to this table")
        columns = self.head.table_columns(bundle.frame(latent_columns(bundle.columns)).to_numpy(np.float64))
        self.phase = HEAD_APPLIED
        return columns, {self.head.columns[0]: self.head.target_unit}

    def cancel(self) -> None:
        """Cancel the job, blocking for at most a few seconds while its process stops (call it
        off the event loop)."""
        if self.job is not None:
            self.manager.cancel(self.job, grace_s=CANCEL_GRACE_S)

    def close(self) -> None:
        """End of the session: cancel its job so that no process outlives it."""
        if self.active:
            self.manager.cancel(self.job, grace_s=CANCEL_GRACE_S)

    def progress_fraction(self) -> float:
        """Epochs done / epochs, in [0, 1]; during the embedding, maps encoded / maps."""
        job = self.job
        if job is None:
            return 0.0
        stage = job.stage
        if stage is not None and stage.get("total"):
            return min(1.0, stage["done"] / stage["total"])
        if not job.events:
            return 0.0
        latest = job.events[-1]
        return min(1.0, latest["epoch"] / max(latest["epochs"], 1))

    def status_text(self) -> str:
        """One line: what the job is doing, on which device, how far it is."""
        from galexplore.models.device import resolve_device

        job = self.job
        if job is None:
            return "No training job in this session."
        if self.phase == SWAPPED:
            return f"finished and switched to {job.result.name}"
        if self.phase == HEAD_APPLIED:
            return f"finished {job.result.name}: {head_summary(self.head)}; colour the map by {self.head.columns[-1]}"
        if self.phase == HEAD_STALE:
            return f"finished {job.result.name}, but on another model's latents: {head_summary(self.head)}"
        if job.status in (FAILED, CANCELLED):
            return f"{job.name}: {job.message}"
        if self.phase == SWAP_READY:
            return f"finished {job.result.name}: switching to it"
        latest = job.events[-1] if job.events else None
        device = latest["device"] if latest else resolve_device(getattr(job.config, "device", "cpu"))
        if job.status == RUNNING and latest is None:
            return f"{job.name}: starting on {device} (loading the maps)"
        if job.stage is not None:
            return f"{job.name}: trained; now {job.message}"
        return f"{job.name} on {device}: {job.message}"


def head_summary(head: MLPHead) -> str:
    """The head's held-out metrics in one line."""
    m = head.metrics
    held_out = f"on {m['n']:,} held-out maps of unseen galaxies"
    if head.task == "regression":
        unit = f" {head.target_unit}" if head.target_unit else ""
        return f"{head.target}: R^2 = {m['r2']:.3f}, RMSE = {m['rmse']:.3g}{unit} {held_out}"
    return f"{head.target}: balanced accuracy = {m['balanced_accuracy']:.3f} {held_out}"


def settings_with(settings: TrainingSettings, **changes) -> TrainingSettings:
    """A copy of ``settings`` with ``changes``, each numeric one checked against `LIMITS`."""
    for name, value in changes.items():
        if name in LIMITS:
            changes[name] = check_setting(name, value)
    return replace(settings, **changes)
