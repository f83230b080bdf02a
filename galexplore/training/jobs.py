"""Background work in separate processes, so a crash or OOM cannot take the app down.

A `TrainingJob` runs `galexplore.training.loops.train` (or, for a `HeadConfig`,
`galexplore.training.heads.train_head`) in a process started with the "spawn" method,
streams its progress events back through a queue, writes into a private temporary
directory inside the models directory and renames it into place only when the run
succeeds. With ``embed=True`` the same process then computes the new model's embedding of
the job's dataset (reporting its progress), so that switching to the model costs the
server no inference. An `EmbeddingJob` computes one embedding the same way. A
`JobManager` runs one job at a time and queues the rest, and forgets finished jobs beyond
`KEEP_FINISHED`.

The process yields the CPU to the app: it runs at niceness `JOB_NICENESS` (set by the
parent the moment the process exists, so every thread it creates inherits it) and caps
its torch, OpenMP and BLAS thread pools at `cpu_threads`. Temporary directories of
processes that died without cleaning up (a ``kill -9`` of the server) are removed by the
next `JobManager` of that models directory.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import multiprocessing
import os
import queue as queue_module
import re
import shutil
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from galexplore.errors import ParameterError
from galexplore.training.heads import HeadConfig
from galexplore.training.loops import TrainConfig

QUEUED, RUNNING, FINISHED, CANCELLED, FAILED = "queued", "running", "finished", "cancelled", "failed"
_DONE = frozenset({FINISHED, CANCELLED, FAILED})
TMP_PREFIX = ".training-"
_CHECKPOINT = "checkpoint"
#: File in a job's temporary directory naming the process that owns it.
_OWNER_FILE = "owner.json"
#: Finished jobs a `JobManager` remembers (older ones are forgotten; their results stay on disk).
KEEP_FINISHED = 20
#: Niceness of a training process (0 = the server's default, 19 = lowest priority): with
#: Linux's scheduler weights a niceness-10 process gets about 1/10 of a core the server wants.
JOB_NICENESS = 10


def cpu_threads(config: TrainConfig | HeadConfig) -> int:
    """CPU threads of a background run (torch intra- and inter-op, OpenMP, BLAS):
    ``config.num_threads``, else every core but one (at least one), so that the app's server
    process keeps a core while a job trains."""
    return getattr(config, "num_threads", None) or max(1, (os.cpu_count() or 2) - 1)


def lower_priority(pid: int = 0, niceness: int = JOB_NICENESS) -> None:
    """Raise the niceness of process ``pid`` (0: the calling thread) to at least ``niceness``.

    On Linux this applies to the thread ``pid`` and to the threads it creates afterwards.
    Does nothing where the platform has no niceness (Windows) or the process is gone.
    """
    if not hasattr(os, "setpriority"):
        return
    try:
        if os.getpriority(os.PRIO_PROCESS, pid) < niceness:
            os.setpriority(os.PRIO_PROCESS, pid, niceness)
    except OSError:  # the process has already ended, or the OS refuses: the run still works
        pass


def _limit_threads(threads: int) -> contextlib.AbstractContextManager:
    """Cap torch's intra- and inter-op pools and every OpenMP/BLAS pool at ``threads``."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # inter-op pool already started: it keeps its size
        torch.set_num_interop_threads(threads)
    return threadpool_limits(limits=threads)


@dataclass
class EmbedConfig:
    """What an `EmbeddingJob` (or a training job's last step) embeds.

    Attributes
    ----------
    model_path : checkpoint directory.
    umap : fit UMAP on the latents.
    num_threads : CPU threads; None: every core but one.
    """

    model_path: str
    umap: bool = True
    num_threads: int | None = None
    kind: str = "embedding"

    def validate(self) -> None:
        if not str(self.model_path).strip():
            raise ParameterError("an embedding job needs the checkpoint directory of the model")


def _embed_in_child(model_path: str, dataset_path: str, umap: bool, events: Any) -> str:
    """Compute (or find) the embedding, reporting its steps as ``("stage", {...})`` events."""
    from galexplore.analysis.embed import load_embedding

    def progress(done: int, total: int) -> None:
        events.put(("stage", {"what": "encoding maps", "done": done, "total": total}))

    def status(text: str) -> None:
        events.put(("stage", {"what": text, "done": None, "total": None}))

    return str(load_embedding(model_path, dataset_path, umap=umap, progress_callback=progress,
                              status_callback=status).path)


def _run_in_child(config: TrainConfig | HeadConfig | EmbedConfig, dataset_path: str, out_dir: str, events: Any,
                  stop_event: Any, embed_umap: bool | None = None) -> None:
    """Body of the background process: report every outcome through ``events``.

    ``embed_umap`` not None: after training, embed ``dataset_path`` with the new model
    (with or without UMAP) before reporting the run finished.
    """
    lower_priority()  # the parent did it already; this covers a parent that lost the race
    try:
        from galexplore.models.device import resolve_device

        def report(event: dict[str, Any]) -> None:
            events.put(("progress", event))

        on_cpu = isinstance(config, (HeadConfig, EmbedConfig)) or resolve_device(config.device).type == "cpu"
        with _limit_threads(cpu_threads(config)) if on_cpu else contextlib.nullcontext():
            if isinstance(config, EmbedConfig):
                path = _embed_in_child(config.model_path, dataset_path, config.umap, events)
            elif isinstance(config, HeadConfig):
                from galexplore.training.heads import train_head

                path = train_head(config, out_dir, callback=report, stop_event=stop_event)
            else:
                from galexplore.training.loops import train

                path = train(config, dataset_path, out_dir, callback=report, stop_event=stop_event)
                if embed_umap is not None and not stop_event.is_set():
                    _embed_in_child(str(path), dataset_path, embed_umap, events)
        events.put(("finished", str(path)))
    except BaseException as err:  # the parent must hear of every failure, whatever it is
        events.put(("failed", f"{type(err).__name__}: {err}"))


class TrainingJob:
    """One training run (or, with an `EmbedConfig`, one embedding) in a separate process.

    Parameters
    ----------
    config : TrainConfig, HeadConfig or EmbedConfig
        What to run.
    dataset_path : path-like
        Dataset directory (opened in the child process).
    models_dir : path-like
        Where the checkpoint directory ``models_dir / name`` appears on success (its
        private temporary directory lives there too).
    name : str, optional
        Checkpoint directory name; default ``<kind>-<UTC time>``. Must not exist yet.
    embed : bool
        After training, compute the new model's embedding of ``dataset_path`` in the same
        process (``stage`` shows its progress); the job finishes when it is cached.
    embed_umap : bool
        Fit UMAP in that embedding.

    Attributes
    ----------
    status : str
        ``queued``, ``running``, ``finished``, ``cancelled`` or ``failed`` (polls the process).
    error : str or None
        Why the run failed.
    result : pathlib.Path or None
        The checkpoint directory once the run has finished (or was cancelled after it
        saved); for an `EmbedConfig`, the embedding's cache file.
    events : list of dict
        Training progress events received so far (see `train`).
    stage : dict or None
        The latest step after training: ``{"what": str, "done": int | None, "total": int | None}``.
    message : str
        One line for the user about the job's state.
    process : multiprocessing.Process or None
    """

    def __init__(self, config: TrainConfig | HeadConfig | EmbedConfig, dataset_path: str | os.PathLike,
                 models_dir: str | os.PathLike, name: str | None = None, embed: bool = False,
                 embed_umap: bool = True):
        config.validate()
        self.config = config
        self.dataset_path = Path(dataset_path)
        self.models_dir = Path(models_dir)
        self.name = name or f"{config.kind}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.name):
            raise ParameterError(f"model name {self.name!r} must be letters, digits, '.', '_' or '-' "
                                 "(no spaces or slashes); choose another name")
        self.destination = self.models_dir / self.name
        if not self.is_embedding and self.destination.exists():
            raise ParameterError(f"{self.destination} already exists; choose another model name")
        self.embed = embed and isinstance(config, TrainConfig)
        self.embed_umap = embed_umap
        self.events: list[dict[str, Any]] = []
        self.stage: dict[str, Any] | None = None
        self.error: str | None = None
        self.result: Path | None = None
        self.message = "waiting to start"
        self.process: multiprocessing.process.BaseProcess | None = None
        self._status = QUEUED
        self._tmp_dir: Path | None = None
        self._queue: Any = None
        self._stop: Any = None
        self._cancel_requested = False
        self._lock = threading.RLock()

    @property
    def is_embedding(self) -> bool:
        return isinstance(self.config, EmbedConfig)

    # -- state --------------------------------------------------------------------------
    @property
    def status(self) -> str:
        self.poll()
        return self._status

    @property
    def latest(self) -> dict[str, Any] | None:
        """The most recent progress event, or None."""
        self.poll()
        return self.events[-1] if self.events else None

    @property
    def done(self) -> bool:
        return self.status in _DONE

    def start(self) -> None:
        """Start the process (once)."""
        with self._lock:
            if self._status != QUEUED:
                raise ParameterError(f"job {self.name!r} is {self._status}; it can be started only once")
            self.models_dir.mkdir(parents=True, exist_ok=True)
            if not self.is_embedding and self.destination.exists():
                raise ParameterError(f"{self.destination} appeared since the job was queued; "
                                     "choose another model name")
            context = multiprocessing.get_context("spawn")
            self._tmp_dir = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=self.models_dir))
            self._queue = context.Queue()
            self._stop = context.Event()
            self.process = context.Process(
                target=_run_in_child, name=f"galexplore-{self.config.kind}-{self.name}", daemon=True,
                args=(self.config, str(self.dataset_path), str(self._tmp_dir / _CHECKPOINT), self._queue,
                      self._stop, self.embed_umap if self.embed else None),
            )
            try:
                self.process.start()
            except BaseException as err:
                self._fail(f"could not start the background process: {type(err).__name__}: {err}")
                raise
            lower_priority(self.process.pid)  # before the child starts threads, which inherit it
            (self._tmp_dir / _OWNER_FILE).write_text(json.dumps({"server_pid": os.getpid(),
                                                                  "job_pid": self.process.pid}))
            self._status = RUNNING
            self.message = (f"embedding with {Path(self.config.model_path).name}" if self.is_embedding
                            else f"training {self.config.kind} ({self.config.epochs} epochs)")

    def poll(self) -> None:
        """Read pending progress events and settle the job if its process has ended."""
        with self._lock:
            if self._status != RUNNING:
                return
            outcome = self._drain()
            if outcome is None and not self.process.is_alive():
                outcome = self._drain()  # the child's last message may arrive just after it exits
                if outcome is None:
                    code = self.process.exitcode
                    hint = " (killed: possibly out of memory)" if code is not None and code < 0 else ""
                    outcome = ("failed", f"the background process ended unexpectedly with exit code {code}{hint}")
            if outcome is not None:
                self._settle(*outcome)
            elif self.stage is not None:
                self.message = stage_text(self.stage)
            elif self.events:
                event = self.events[-1]
                self.message = (f"epoch {event['epoch']}/{event['epochs']}: val loss {event['val_loss']:.4g}, "
                                f"about {event['eta_s']:.0f} s left")

    def wait(self, timeout: float | None = None) -> str:
        """Block until the job is done or ``timeout`` seconds have passed; returns the status."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.done:
            if self._status == QUEUED:
                raise ParameterError(f"job {self.name!r} has not been started; call start() or use a JobManager")
            if deadline is not None and time.monotonic() >= deadline:
                break
            self.process.join(0.05)
        return self._status

    def cancel(self, grace_s: float = 10.0) -> None:
        """Ask the run to stop after its current batch; terminate it if it has not ended after
        ``grace_s`` seconds. A checkpoint it saved before ending is kept (``result``)."""
        with self._lock:
            if self._status == QUEUED:
                self._status = CANCELLED
                self.message = "cancelled before it started"
                return
            if self._status != RUNNING:
                return
            self._cancel_requested = True
            self._stop.set()
        deadline = time.monotonic() + grace_s
        while self.process.is_alive() and time.monotonic() < deadline:
            self.poll()
            self.process.join(0.05)
        with self._lock:
            if self.process.is_alive():
                self.process.terminate()
                self.process.join(5.0)
                if self.process.is_alive():
                    self.process.kill()
                    self.process.join()
            self.poll()

    # -- internals ----------------------------------------------------------------------
    def _drain(self) -> tuple[str, str] | None:
        outcome = None
        while True:
            try:
                kind, payload = self._queue.get_nowait()
            except queue_module.Empty:
                return outcome
            except (EOFError, OSError):
                return outcome
            if kind == "progress":
                self.events.append(payload)
            elif kind == "stage":
                self.stage = payload
            else:
                outcome = (kind, payload)

    def _settle(self, kind: str, payload: str) -> None:
        self.process.join(5.0)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        if kind == "finished" and self.is_embedding:
            self.result = Path(payload)
            self._status = FINISHED
            self.message = "finished: the embedding is cached"
            self._cleanup()
        elif kind == "finished":
            try:
                os.replace(payload, self.destination)
            except OSError as err:
                self._fail(f"the checkpoint could not be moved to {self.destination} ({err}); "
                           "something else created that directory: train again under another name")
                return
            self.result = self.destination
            if self._cancel_requested:
                self._status = CANCELLED
                self.message = f"stopped early; best checkpoint so far saved to {self.destination}"
            else:
                self._status = FINISHED
                self.message = f"finished: {self.destination}"
            self._cleanup()
        elif self._cancel_requested:
            self._status = CANCELLED
            self.message = "cancelled"
            self._cleanup()
        else:
            self._fail(payload)

    def _fail(self, error: str) -> None:
        self._status = FAILED
        self.error = error
        self.message = f"failed: {error}"
        self._cleanup()

    def _cleanup(self) -> None:
        """Remove the temporary directory and release the queue and the stop event (their
        semaphores), so that nothing of the job outlives it but its result."""
        if self._tmp_dir is not None:
            shutil.rmtree(self._tmp_dir, ignore_errors=True)
            self._tmp_dir = None
        if self._queue is not None:
            self._queue.close()
            self._queue.join_thread()
            self._queue = None
        self._stop = None


def stage_text(stage: dict[str, Any]) -> str:
    """One line for a job's step after training (``TrainingJob.stage``)."""
    if stage.get("total"):
        return f"{stage['what']}: {stage['done']:,} of {stage['total']:,}"
    return str(stage["what"])


def embedding_job(model_path: str | os.PathLike, dataset_path: str | os.PathLike, models_dir: str | os.PathLike,
                 umap: bool = True) -> TrainingJob:
    """A job that computes (or finds) the embedding of a model on a dataset in a background
    process; ``result`` is the cache file. ``models_dir`` holds its temporary directory."""
    return TrainingJob(EmbedConfig(str(model_path), umap=umap), dataset_path, models_dir,
                       name=f"embedding-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}")


def sweep_orphans(models_dir: str | os.PathLike) -> list[Path]:
    """Remove the temporary directories in ``models_dir`` whose job process is no longer
    running (left by a server that was killed); returns those removed. Directories of live
    processes, and of processes this one cannot see, are left alone."""
    removed = []
    for directory in Path(models_dir).glob(f"{TMP_PREFIX}*"):
        try:
            owner = json.loads((directory / _OWNER_FILE).read_text())
            pid = int(owner["job_pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not written by this version, or still being created: leave it
        try:
            os.kill(pid, 0)
            continue
        except ProcessLookupError:
            pass
        except PermissionError:
            continue  # someone else's live process
        shutil.rmtree(directory, ignore_errors=True)
        removed.append(directory)
    return removed


_MANAGERS: weakref.WeakSet = weakref.WeakSet()


class JobManager:
    """Runs jobs one at a time (per manager); further jobs wait in a queue.

    Creating a manager removes the temporary directories that dead jobs left in
    ``models_dir`` (`sweep_orphans`); the jobs of every manager are cancelled when the
    process exits.

    Parameters
    ----------
    models_dir : path-like
        Where every job's checkpoint directory appears.
    max_concurrent : int
        Jobs that may run at once (1: training fills the CPU or GPU by itself).
    """

    def __init__(self, models_dir: str | os.PathLike, max_concurrent: int = 1):
        if max_concurrent < 1:
            raise ParameterError(f"max_concurrent must be at least 1, got {max_concurrent}")
        self.models_dir = Path(models_dir)
        self.max_concurrent = max_concurrent
        self.jobs: list[TrainingJob] = []
        self._lock = threading.RLock()
        if self.models_dir.is_dir():
            sweep_orphans(self.models_dir)
        _MANAGERS.add(self)

    def submit(self, config: TrainConfig | HeadConfig | EmbedConfig, dataset_path: str | os.PathLike,
               name: str | None = None, embed: bool = False, embed_umap: bool = True) -> TrainingJob:
        """Queue a job and start it if a slot is free; returns the job (see its ``message``)."""
        with self._lock:
            name = name or self._free_name(config.kind)
            taken = {job.name for job in self.jobs if job.status in (QUEUED, RUNNING)}
            if name in taken:
                raise ParameterError(f"another job already writes model {name!r}; choose another name")
            job = TrainingJob(config, dataset_path, self.models_dir, name=name, embed=embed, embed_umap=embed_umap)
            self.jobs.append(job)
            self.poll()
            return job

    def poll(self) -> None:
        """Update every job, start queued jobs while slots are free, and forget finished jobs
        beyond the `KEEP_FINISHED` most recent."""
        with self._lock:
            finished = [job for job in self.jobs if job._status in _DONE]
            for job in finished[:-KEEP_FINISHED] if len(finished) > KEEP_FINISHED else []:
                self.jobs.remove(job)
            running = [job for job in self.jobs if job.status == RUNNING]
            waiting = [job for job in self.jobs if job.status == QUEUED]
            position = 0
            for job in waiting:
                if len(running) < self.max_concurrent:
                    job.start()
                    running.append(job)
                else:
                    position += 1
                    job.message = (f"queued (position {position}): another training run is in progress "
                                   f"and at most {self.max_concurrent} may run at a time; this one starts "
                                   "by itself when a run ends, or cancel a running one")

    @property
    def active(self) -> list[TrainingJob]:
        """Jobs queued or running."""
        self.poll()
        return [job for job in self.jobs if job.status in (QUEUED, RUNNING)]

    def cancel(self, job: TrainingJob, grace_s: float = 10.0) -> None:
        """Cancel one job (queued or running) and start the next queued one."""
        job.cancel(grace_s=grace_s)
        self.poll()

    def shutdown(self, grace_s: float = 5.0) -> None:
        """Cancel every job, queued ones first, so no training process outlives the manager."""
        with self._lock:
            for job in sorted(self.jobs, key=lambda j: j.status == RUNNING):
                job.cancel(grace_s=grace_s)

    def _free_name(self, kind: str) -> str:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        names = {job.name for job in self.jobs}
        candidate, n = f"{kind}-{stamp}", 1
        while candidate in names or (self.models_dir / candidate).exists():
            n += 1
            candidate = f"{kind}-{stamp}-{n}"
        return candidate


@atexit.register
def _shutdown_all() -> None:
    """At exit: stop every job's process and release its queue, so that none outlives the
    server and no semaphore is reported leaked."""
    for manager in list(_MANAGERS):
        manager.shutdown(grace_s=2.0)
