"""One session's background training: configure, submit, follow, cancel, then hot-swap the model.

Training runs in a separate process (`galexplore.training.jobs.TrainingJob`), so a crash or
an out-of-memory kill cannot take the server down. All sessions of a server share one
`JobManager` per models directory, which runs one job at a time and queues the others
with a message saying why. `TrainingSession.poll` is cheap (it drains a queue) and is
meant to be called from a periodic callback; the new model's embedding is computed in a
worker thread, and only the final switch of the session's bundle happens on the caller's
thread. A head job ("MLP head on the latents") trains on the session table's latent
vectors and, when it ends, adds its predictions to the session's table as
``pred_head_<target>`` (and ``proba_head_<target>`` for a classifier) instead of swapping
the model.
"""

from __future__ import annotations

import concurrent.futures
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import param

from galexplore.errors import ParameterError
from galexplore.models.device import resolve_device
from galexplore.training.heads import HEAD_KIND, HeadConfig, MLPHead
from galexplore.training.jobs import CANCELLED, FAILED, FINISHED, QUEUED, RUNNING, JobManager, TrainingJob
from galexplore.training.loops import TrainConfig
from galexplore.ui.bundle import latent_columns, load_bundle
from galexplore.ui.state import ExplorerState

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
IDLE, SWAPPING, SWAPPED, SWAP_FAILED = "idle", "loading the new model", "switched to the new model", \
    "the new model could not be loaded"
HEAD_APPLIED, HEAD_STALE = "head predictions added to the table", "head trained on another model's latents"

#: Seconds a cancelled run may take to stop after its current batch before it is terminated.
CANCEL_GRACE_S = 5.0

_MANAGERS: dict[str, JobManager] = {}
_MANAGERS_LOCK = threading.Lock()
#: Computes new models' embeddings off the server's event loop, one at a time.
_EMBEDDER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="galexplore-embed")


def shared_job_manager(models_dir: str | Path) -> JobManager:
    """The process-wide `JobManager` of ``models_dir`` (one training job at a time, others queued)."""
    key = str(Path(models_dir).resolve())
    with _MANAGERS_LOCK:
        if key not in _MANAGERS:
            _MANAGERS[key] = JobManager(key, max_concurrent=1)
        return _MANAGERS[key]


class TrainingSession(param.Parameterized):
    """The training settings and the current job of one explorer session.

    Parameters
    ----------
    state : the session's `ExplorerState` (the dataset trained on, the model swapped).
    models_dir : where checkpoints appear (default `galexplore.paths.user_models_dir()`).
    """

    what = param.Selector(objects=list(TRAINABLE), default=next(iter(TRAINABLE)))
    epochs = param.Integer(default=5, bounds=(1, 10_000))
    images_per_epoch = param.Integer(default=1024, bounds=(2, None), doc="maps drawn per epoch")
    batch_size = param.Integer(default=32, bounds=(1, 4096))
    learning_rate = param.Number(default=1e-3, doc="initial Adam learning rate")
    target = param.Selector(objects=[], doc="catalogue column a regressor or an MLP head learns")
    head_labels = param.Selector(objects=list(HEAD_LABELS), default=HEAD_LABELS[0], doc="what an MLP head predicts")
    threshold = param.Number(default=0.5, doc="head classification: class 1 is target > threshold (column units)")
    subset = param.Selector(objects=list(SUBSETS), default=SUBSETS[0])
    device = param.Selector(objects=["auto", "cpu", "cuda"], default="auto")
    seed = param.Integer(default=0)
    phase = param.String(default=IDLE, doc="idle, the job's status, or the hot swap's phase")
    events_version = param.Integer(default=0, doc="bumped when progress events or the job's status change")

    def __init__(self, state: ExplorerState, models_dir: str | Path | None = None, boundary=None, **params):
        from galexplore.paths import user_models_dir

        super().__init__(**params)
        self.state = state
        self.boundary = boundary  # the session's `BoundaryModel`: its marks label an MLP head
        self.head: MLPHead | None = None
        self.manager = shared_job_manager(models_dir if models_dir is not None else user_models_dir())
        self.job: TrainingJob | None = None
        self._swap: concurrent.futures.Future | None = None
        self._seen = (0, None)
        state.param.watch(self._on_bundle, "bundle_version")
        self._on_bundle()

    def _on_bundle(self, *events) -> None:
        dataset = self.state.bundle.dataset
        columns = [] if dataset is None else [
            c for c in dataset.catalog.columns
            if c not in ("id", "galaxy_id", "view") and pd.api.types.is_numeric_dtype(dataset.catalog[c])]
        self.param.target.objects = columns
        if self.target not in columns:
            self.target = "log_mstar" if "log_mstar" in columns else (columns[0] if columns else None)

    # ---------------------------------------------------------------- configuring
    def config(self) -> TrainConfig | HeadConfig:
        """The `TrainConfig` (or `HeadConfig`) of the current settings (ParameterError when they
        are inconsistent)."""
        kind = TRAINABLE[self.what]
        if kind == HEAD_KIND:
            return self.head_config()
        extra: dict = {}
        if kind == "finetune":
            model = self.state.bundle.model
            if model is None:
                raise ParameterError("this table has no model to fine-tune; open a checkpoint first")
            card = model.card
            kind = KIND_OF_ARCHITECTURE.get(card.architecture)
            if kind is None:
                raise ParameterError(f"models of architecture {card.architecture!r} cannot be fine-tuned here; "
                                     "train a CAE, VAE or regressor from scratch instead")
            extra = {"init_from": str(model.path), "channels": list(card.channels),
                     "latent_dim": card.hyperparameters.get("latent_dim")}
            if kind == "regressor":
                extra["targets"] = list(card.outputs)
        elif kind == "regressor":
            if self.target is None:
                raise ParameterError("choose the catalogue column the regressor should learn")
            extra = {"targets": [self.target]}
        if self.subset == SUBSETS[1]:
            if self.state.selection.size == 0:
                raise ParameterError("nothing is selected; lasso galaxies or train on the whole dataset")
            extra["rows"] = self.state.selection.tolist()
        config = TrainConfig(kind=kind, epochs=self.epochs, batch_size=self.batch_size,
                             learning_rate=self.learning_rate, seed=self.seed, device=self.device,
                             images_per_epoch=self.images_per_epoch, **extra)
        config.validate()
        return config

    def head_config(self) -> HeadConfig:
        """An MLP head on the session table's latent vectors, labelled by `head_labels`; with
        the subset "current selection" only the selected rows are used for training."""
        table = self.state.table
        model = self.state.bundle.model
        latent = latent_columns(table)
        if not latent:
            raise ParameterError("this table has no latent vectors; open a model to train a head on its latents")
        task = "regression" if self.head_labels == HEAD_LABELS[0] else "classification"
        if self.head_labels == HEAD_LABELS[2]:
            if self.boundary is None:
                raise ParameterError("marks are made in the Boundaries tab, which this page lacks; "
                                     "label the head with a catalogue column instead")
            ids = table["id"].to_numpy()
            a, b = np.isin(ids, self.boundary.marked_a), np.isin(ids, self.boundary.marked_b)
            values = np.where(a & ~b, 1.0, np.where(b & ~a, 0.0, np.nan))
            target, unit, described = "marks", "", "user marks: A = 1, B = 0"
        else:
            if self.target not in table.columns:
                raise ParameterError("choose the catalogue column the head should learn")
            values = table[self.target].to_numpy(np.float64)
            target, unit = self.target, self.state.units.get(self.target, "")
            described = self.target
            if task == "classification":
                values = np.where(np.isfinite(values), (values > self.threshold).astype(np.float64), np.nan)
                described = f"{self.target} > {self.threshold:g} {unit}".rstrip()
                unit = ""
        if self.subset == SUBSETS[1]:
            if self.state.selection.size == 0:
                raise ParameterError("nothing is selected; lasso galaxies or train on the whole dataset")
            keep = np.zeros(len(table), dtype=bool)
            keep[self.state.selection] = True
            values = np.where(keep, values, np.nan)
        groups = table["galaxy_id"] if "galaxy_id" in table.columns else table["id"]
        config = HeadConfig(target=target, latents=table[latent].to_numpy(np.float64), values=values,
                            galaxy_ids=groups.to_numpy(), task=task, latent_names=latent, target_unit=unit,
                            labels_from=described, hidden_layers=HEAD_HIDDEN_LAYERS, epochs=self.epochs,
                            batch_size=self.batch_size, learning_rate=self.learning_rate, seed=self.seed,
                            model_path=str(model.path) if model is not None else None)
        config.validate()
        return config

    # ---------------------------------------------------------------- running
    @property
    def active(self) -> bool:
        """True while a job is queued or running or its model is being loaded."""
        return (self.job is not None and self.job.status in (QUEUED, RUNNING)) or self._swap is not None

    def start(self, name: str | None = None) -> TrainingJob:
        """Submit a job with the current settings; it starts now or waits in the shared queue."""
        if self.active:
            raise ParameterError("this session already has a training job; cancel it or wait for it to end")
        config = self.config()
        dataset = self.state.bundle.dataset
        if dataset is None and not isinstance(config, HeadConfig):
            raise ParameterError("this table has no dataset to train on; open a dataset first")
        self.phase = IDLE
        self.job = self.manager.submit(config, dataset.path if dataset is not None else "", name=name)
        self._seen = (0, None)
        self.poll()
        return self.job

    def cancel(self) -> None:
        """Cancel the session's job, blocking for at most a few seconds while its process stops.

        Safe to call from a worker thread (it changes no parameter); call `poll` afterwards.
        """
        if self.job is not None:
            self.manager.cancel(self.job, grace_s=CANCEL_GRACE_S)

    def poll(self) -> bool:
        """Update the job (and the queue); switch to the new model once its embedding is ready.

        Returns True while there is still something to watch.
        """
        self.manager.poll()
        job = self.job
        if job is not None:
            key = (len(job.events), job.status)
            if key != self._seen:
                self._seen = key
                self.events_version += 1
                if job.status == FAILED:
                    self.state.notify(f"training failed: {job.error}", "danger")
                elif job.status == CANCELLED:
                    self.state.notify(f"training {job.message}", "info")
            if self.phase not in (SWAPPING, SWAPPED, SWAP_FAILED, HEAD_APPLIED, HEAD_STALE):
                self.phase = job.status
                if job.status == FINISHED and isinstance(job.config, HeadConfig):
                    self._apply_head(job)
                elif job.status == FINISHED:
                    self._swap = _EMBEDDER.submit(load_bundle, self.state.bundle.dataset.path, str(job.result))
                    self.phase = SWAPPING
        if self._swap is not None and self._swap.done():
            swap, self._swap = self._swap, None
            try:
                bundle = swap.result()
            except Exception as error:  # noqa: BLE001 -- the old model stays; the reason is shown
                self.phase = SWAP_FAILED
                self.state.report(error)
            else:
                self.state.swap_model(bundle)
                self.phase = SWAPPED
                self.state.notify(f"switched to the new model {bundle.model.name} ({job.result}); "
                                  "use 'Back to the previous model' to return", "success")
            self.events_version += 1
        return self.active

    def _apply_head(self, job: TrainingJob) -> None:
        """Add a finished head's predictions to the table (when it is still that model's table)."""
        self.head = MLPHead.load(job.result)
        model = self.state.bundle.model
        if job.config.model_path != (str(model.path) if model is not None else None):
            self.phase = HEAD_STALE
            self.state.notify(f"the MLP head saved to {job.result} was trained on the latents of another model; "
                              "its predictions were not added to this table", "warning")
            return
        names = latent_columns(self.state.table)
        self.state.set_columns(self.head.table_columns(self.state.table[names].to_numpy(np.float64)),
                               units={self.head.columns[0]: self.head.target_unit})
        self.phase = HEAD_APPLIED
        self.state.notify(f"MLP head: {head_summary(self.head)}; predictions are in "
                          f"{', '.join(self.head.columns)} (saved to {job.result})", "success")

    def status_text(self) -> str:
        """One line for the page: what the job is doing, on which device, how far it is."""
        job = self.job
        if job is None:
            return "No training job in this session."
        if self.phase == SWAPPING:
            return f"finished: computing the embedding of {job.result.name}..."
        if self.phase == SWAPPED:
            return f"finished and switched to {job.result.name}"
        if self.phase == HEAD_APPLIED:
            return (f"finished {job.result.name}: {head_summary(self.head)}; colour the map by "
                    f"{self.head.columns[-1]}")
        if self.phase == HEAD_STALE:
            return f"finished {job.result.name}, but on another model's latents: {head_summary(self.head)}"
        latest = job.events[-1] if job.events else None
        device = f" on {latest['device'] if latest else resolve_device(job.config.device)}"
        if job.status == RUNNING and latest is None:
            return f"{job.name}: starting{device} (loading the maps)"
        if job.status == CANCELLED:
            return f"{job.name}: {job.message}"
        return f"{job.name}{device}: {job.message}"

    def progress_fraction(self) -> float:
        """Epochs done / epochs, in [0, 1]."""
        job = self.job
        if job is None or not job.events:
            return 0.0
        latest = job.events[-1]
        return min(1.0, latest["epoch"] / max(latest["epochs"], 1))

    def close(self) -> None:
        """End of the session: cancel its job so that no training process outlives it."""
        if self.job is not None and self.job.status in (QUEUED, RUNNING):
            self.manager.cancel(self.job, grace_s=CANCEL_GRACE_S)


def head_summary(head: MLPHead) -> str:
    """The head's held-out metrics in one line."""
    m = head.metrics
    held_out = f"on {m['n']:,} held-out maps of unseen galaxies"
    if head.task == "regression":
        unit = f" {head.target_unit}" if head.target_unit else ""
        return f"{head.target}: R^2 = {m['r2']:.3f}, RMSE = {m['rmse']:.3g}{unit} {held_out}"
    return f"{head.target}: balanced accuracy = {m['balanced_accuracy']:.3f} {held_out}"
