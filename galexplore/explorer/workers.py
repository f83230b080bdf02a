"""Work that would hold the server's interpreter lock for long: placing new latent vectors in
a fitted UMAP map, in one separate, low-priority worker process.

umap-learn compiles its Numba kernels on first use in a process (a minute or more on two
busy cores) and holds the GIL while it does; in the server that would stall every session.
The worker process keeps the rebuilt UMAP of each reference set, so only the first
placement for a model pays for it. The worker is started on first use and stopped when the
server process exits.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import hashlib
import multiprocessing
import threading

import numpy as np

_POOL: concurrent.futures.ProcessPoolExecutor | None = None
_POOL_LOCK = threading.Lock()
#: In the worker process: rebuilt UMAP projections by reference key.
_FITTED: dict[str, object] = {}


def _start_worker() -> None:
    from galexplore.training.jobs import lower_priority

    lower_priority()
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)


def _pool() -> concurrent.futures.ProcessPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = concurrent.futures.ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker)
        return _POOL


def shutdown() -> None:
    """Stop the worker process (queued placements are cancelled)."""
    global _POOL
    with _POOL_LOCK:
        pool, _POOL = _POOL, None
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)


atexit.register(shutdown)


def _reference_key(latents: np.ndarray, coords: np.ndarray, settings: dict) -> str:
    digest = hashlib.sha256(repr(sorted(settings.items())).encode())
    digest.update(np.ascontiguousarray(latents, dtype=np.float64).tobytes())
    digest.update(np.ascontiguousarray(coords, dtype=np.float64).tobytes())
    return digest.hexdigest()


def _place(key: str, latents_ref: np.ndarray, coords_ref: np.ndarray, settings: dict,
           latents: np.ndarray) -> np.ndarray:
    """In the worker: the UMAP coordinates (n, 2) of ``latents``."""
    from galexplore.analysis.projections import UMAPProjection

    if key not in _FITTED:
        _FITTED.clear()  # one model at a time: the rebuilt graph of another is dropped
        _FITTED[key] = UMAPProjection.from_reference(latents_ref, coords_ref, **settings)
    return _FITTED[key].transform(latents)


def place_in_umap(projector, latents: np.ndarray) -> concurrent.futures.Future:
    """Start placing ``latents`` (n, d) in ``projector``'s UMAP map; the future gives (n, 2)."""
    latents_ref, coords_ref = projector.umap_reference_
    settings = projector.umap_settings
    key = _reference_key(latents_ref, coords_ref, settings)
    return _pool().submit(_place, key, latents_ref, coords_ref, settings, np.asarray(latents, dtype=np.float64))
