"""Where work runs: in this process, or on dask.distributed workers (local or a real cluster).

`open_engine` gives one interface to both, used by `galexplore sample` and `galexplore
embed`: ``engine.share(obj)`` sends a large object to every worker once, and
``engine.ordered(fn, items, *shared)`` yields ``fn(item, *shared)`` in the order of
``items``, keeping a bounded number of tasks in flight so that results never pile up.

* ``scheduler=None`` and one worker: everything runs here, no processes are started.
* ``scheduler=None`` and more workers, or ``scheduler="local"``: a `distributed.LocalCluster`
  of single-threaded worker processes on this machine, listening on loopback only. They
  watch their parent and exit as soon as it is gone, so a ``kill -9`` of the command leaves
  nothing running (tested; the ``ProcessPoolExecutor`` this replaces left its workers
  blocked forever).
* ``scheduler="tcp://host:8786"``: the workers of a running cluster (``dask scheduler`` and
  ``dask worker`` on other machines, or dask-jobqueue). They must be able to import
  galexplore and read the dataset at the same path.

Results do not depend on where the work ran: each task is a pure function of its item.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from galexplore.errors import ParameterError

#: Tasks kept in flight per worker: enough to hide scheduling latency, few enough to bound memory.
IN_FLIGHT_PER_WORKER = 3


class SerialEngine:
    """Runs every task here, in order, when its result is asked for."""

    workers = 1

    def share(self, obj):
        return obj

    def ordered(self, fn: Callable, items: Iterable, *shared) -> Iterator:
        for item in items:
            yield fn(item, *shared)


class DaskEngine:
    """Runs tasks on the workers of a ``distributed.Client``."""

    def __init__(self, client) -> None:
        self.client = client

    @property
    def workers(self) -> int:
        return max(1, len(self.client.scheduler_info(n_workers=-1)["workers"]))

    def share(self, obj):
        """A future of ``obj`` held by every worker (sent once, not with every task)."""
        return self.client.scatter(obj, broadcast=True, hash=False)

    def submit(self, fn: Callable, *args):
        return self.client.submit(fn, *args, pure=False)

    def ordered(self, fn: Callable, items: Iterable, *shared) -> Iterator:
        pending: deque = deque()
        limit = IN_FLIGHT_PER_WORKER * self.workers
        for item in items:
            pending.append(self.submit(fn, item, *shared))
            if len(pending) >= limit:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


@contextmanager
def open_engine(workers: int | None = None, scheduler: str | None = None) -> Iterator[SerialEngine | DaskEngine]:
    """The engine for ``workers`` processes or a ``scheduler`` address (see the module docstring).

    Parameters
    ----------
    workers : worker processes of a local cluster (default: all cores); 1 without a
        scheduler runs everything in this process. Ignored for a scheduler address.
    scheduler : None, ``"local"`` or the address of a running dask scheduler.
    """
    if workers is not None and workers < 1:
        raise ParameterError(f"workers must be at least 1, got {workers}.")
    workers = workers or os.cpu_count() or 1
    if scheduler is None and workers == 1:
        yield SerialEngine()
        return
    import logging

    from distributed import Client, LocalCluster

    if scheduler in (None, "local"):
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR)
        client = Client(cluster)
    else:
        cluster = None
        try:
            client = Client(scheduler, timeout="20s")
        except (OSError, ValueError, TypeError) as err:
            raise ParameterError(f"cannot reach a dask scheduler at {scheduler!r} ({err}); start one "
                                 "with `dask scheduler` (and workers with `dask worker ADDRESS`), or "
                                 "pass --scheduler local.") from err
    try:
        yield DaskEngine(client)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
