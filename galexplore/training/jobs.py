"""Background training: each run in its own process, so a crash or OOM cannot take the app down.

A `TrainingJob` runs `galexplore.training.loops.train` (or, for a `HeadConfig`,
`galexplore.training.heads.train_head`) in a process started with the "spawn" method,
streams its progress events back through a queue, writes into a private temporary
directory inside the models directory and renames it into place only when the run
succeeds. A `JobManager` runs one job at a time and queues the rest.

The training process yields the CPU to the app: it runs at niceness `JOB_NICENESS`
(set by the parent the moment the process exists, so every thread it creates inherits
it) and caps its torch, OpenMP and BLAS thread pools at `cpu_threads`.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue as queue_module
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from galexplore.errors import ParameterError
from galexplore.training.heads import HeadConfig
from galexplore.training.loops import TrainConfig

QUEUED, RUNNING, FINISHED, CANCELLED, FAILED = "queued", "running", "finished", "cancelled", "failed"
_DONE = frozenset({FINISHED, CANCELLED, FAILED})
TMP_PREFIX = ".training-"
_CHECKPOINT = "checkpoint"
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


def _run_in_child(config: TrainConfig | HeadConfig, dataset_path: str, out_dir: str, events: Any,
                  stop_event: Any) -> None:
    """Body of the training process: report every outcome through ``events``."""
    lower_priority()  # the parent did it already; this covers a parent that lost the race
    try:
        from galexplore.models.device import resolve_device

        def report(event: dict[str, Any]) -> None:
            events.put(("progress", event))

        on_cpu = isinstance(config, HeadConfig) or resolve_device(config.device).type == "cpu"
        with _limit_threads(cpu_threads(config)) if on_cpu else contextlib.nullcontext():
            if isinstance(config, HeadConfig):
                from galexplore.training.heads import train_head

                path = train_head(config, out_dir, callback=report, stop_event=stop_event)
            else:
                from galexplore.training.loops import train

                path = train(config, dataset_path, out_dir, callback=report, stop_event=stop_event)
        events.put(("finished", str(path)))
    except BaseException as err:  # the parent must hear of every failure, whatever it is
        events.put(("failed", f"{type(err).__name__}: {err}"))


class TrainingJob:
    """One training run in a separate process.

    Parameters
    ----------
    config : TrainConfig
        What to train.
    dataset_path : path-like
        Dataset directory (opened in the child process).
    models_dir : path-like
        Where the checkpoint directory ``models_dir / name`` appears on success.
    name : str, optional
        Checkpoint directory name; default ``<kind>-<UTC time>``. Must not exist yet.

    Attributes
    ----------
    status : str
        ``queued``, ``running``, ``finished``, ``cancelled`` or ``failed`` (polls the process).
    error : str or None
        Why the run failed.
    result : pathlib.Path or None
        The checkpoint directory once the run has finished (or was cancelled after it saved).
    events : list of dict
        Progress events received so far (see `train`).
    message : str
        One line for the user about the job's state.
    process : multiprocessing.Process or None
    """

    def __init__(self, config: TrainConfig, dataset_path: str | os.PathLike, models_dir: str | os.PathLike,
                 name: str | None = None):
        config.validate()
        self.config = config
        self.dataset_path = Path(dataset_path)
        self.models_dir = Path(models_dir)
        self.name = name or f"{config.kind}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.name):
            raise ParameterError(f"model name {self.name!r} must be letters, digits, '.', '_' or '-' "
                                 "(no spaces or slashes); choose another name")
        self.destination = self.models_dir / self.name
        if self.destination.exists():
            raise ParameterError(f"{self.destination} already exists; choose another model name")
        self.events: list[dict[str, Any]] = []
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
        """Start the training process (once)."""
        with self._lock:
            if self._status != QUEUED:
                raise ParameterError(f"job {self.name!r} is {self._status}; it can be started only once")
            self.models_dir.mkdir(parents=True, exist_ok=True)
            if self.destination.exists():
                raise ParameterError(f"{self.destination} appeared since the job was queued; "
                                     "choose another model name")
            context = multiprocessing.get_context("spawn")
            self._tmp_dir = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=self.models_dir))
            self._queue = context.Queue()
            self._stop = context.Event()
            self.process = context.Process(
                target=_run_in_child, name=f"galexplore-train-{self.name}", daemon=True,
                args=(self.config, str(self.dataset_path), str(self._tmp_dir / _CHECKPOINT), self._queue,
                      self._stop),
            )
            try:
                self.process.start()
            except BaseException as err:
                self._fail(f"could not start the training process: {type(err).__name__}: {err}")
                raise
            lower_priority(self.process.pid)  # before the child starts threads, which inherit it
            self._status = RUNNING
            self.message = f"training {self.config.kind} ({self.config.epochs} epochs)"

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
                    outcome = ("failed", f"the training process ended unexpectedly with exit code {code}{hint}")
            if outcome is not None:
                self._settle(*outcome)
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
            else:
                outcome = (kind, payload)

    def _settle(self, kind: str, payload: str) -> None:
        self.process.join(5.0)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        if kind == "finished":
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
        if self._tmp_dir is not None:
            shutil.rmtree(self._tmp_dir, ignore_errors=True)
            self._tmp_dir = None
        if self._queue is not None:
            self._queue.close()
            self._queue.join_thread()
            self._queue = None


class JobManager:
    """Runs training jobs one at a time (per manager); further jobs wait in a queue.

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

    def submit(self, config: TrainConfig, dataset_path: str | os.PathLike, name: str | None = None) -> TrainingJob:
        """Queue a job and start it if a slot is free; returns the job (see its ``message``)."""
        with self._lock:
            name = name or self._free_name(config.kind)
            taken = {job.name for job in self.jobs if job.status in (QUEUED, RUNNING)}
            if name in taken:
                raise ParameterError(f"another job already writes model {name!r}; choose another name")
            job = TrainingJob(config, dataset_path, self.models_dir, name=name)
            self.jobs.append(job)
            self.poll()
            return job

    def poll(self) -> None:
        """Update every job and start queued jobs while slots are free."""
        with self._lock:
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
