"""Batched inference of a model over a dataset, laid out the way the hardware likes it.

* **Once per map.** Models with ``encode_and_reconstruct`` give latents and reconstructions
  from one encoder pass; regressors predict from the latents (``predict_from_latent``).
* **Reading overlaps computing.** A background thread reads, decodes and preprocesses (the
  card's recipe) the next batches while the model runs; batches never straddle a chunk file
  where a chunk fits in a batch, so no chunk is decoded twice.
* **Layout and threads.** On the CPU the convolutions run channels-last (oneDNN's native
  layout) in slices of `CPU_SLICE_MAPS` maps, one Python thread per core, each op
  single-threaded: torch's own threads wait on each other at every one of these small ops
  and stall when the machine is shared. On CUDA, batches are copied from pinned memory
  without blocking. `benchmarks/bench_embed.py` compares this with eager NCHW, TorchScript
  tracing and ``torch.compile`` in the same run: channels-last eager on a thread per core
  was the fastest on the 2-core development machine (``torch.compile`` was slower and took
  ~45 s to start).

The caller's model is not changed: inference runs on an evaluation-mode copy. Within
`on_workers(engine)`, `run_model` sends partitions of whole batches to the workers of a
`galexplore.parallel` engine (a dask cluster) and gives the same bytes as in one process.
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import numpy as np
import torch

from galexplore.data.dataset import Dataset
from galexplore.data.recipes import get_recipe
from galexplore.models.checkpoint import ModelCard
from galexplore.parallel import SerialEngine

ProgressCallback = Callable[[int, int], None]
#: Batches prepared ahead of the model by the reader thread.
PREFETCH_BATCHES = 2
#: Maps per slice that one CPU compute thread runs at a time (small enough to stay in cache).
CPU_SLICE_MAPS = 32
#: Smallest batch on CUDA (16 MiB of one-channel input): small batches leave a GPU idle.
CUDA_BATCH_MAPS = 1024
#: Partitions of `run_model` on workers: at least this many per worker, at most this many maps each.
PARTITIONS_PER_WORKER = 4
PARTITION_MAPS = 16384
_ENGINE: ContextVar = ContextVar("galexplore_inference_engine", default=None)


def prepare_inputs(card: ModelCard, dataset: Dataset, index) -> np.ndarray:
    """Model input for rows ``index``: the card's channels through the card's recipe, (n, C, 64, 64) float32."""
    channel_idx = [dataset.channel_index(c) for c in card.channels]
    maps = np.asarray(dataset.maps[index], dtype=np.float32)[:, channel_idx]
    return get_recipe(card.recipe)(maps)


def batch_bounds(dataset: Dataset, batch_size: int, rows: slice | None = None) -> list[tuple[int, int]]:
    """(start, stop) of batches of at most ``batch_size`` maps covering ``rows`` (default: all).

    Batches are made of whole chunk files where a chunk fits in a batch, so that every chunk
    is read and decoded once; a larger chunk is cut into batches of ``batch_size`` and a rest.
    """
    first, last, _ = (rows or slice(None)).indices(len(dataset))
    counts = [c["n_maps"] for c in dataset.manifest["chunks"]]
    edges = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
    edges = [int(e) for e in edges if first < e < last]
    bounds: list[tuple[int, int]] = []
    start = first
    for lo, hi in zip([first] + edges, edges + [last]):
        if hi - start > batch_size and lo > start:  # close the batch before this chunk
            bounds.append((start, lo))
            start = lo
        while hi - start > batch_size:  # a chunk larger than a batch
            bounds.append((start, start + batch_size))
            start += batch_size
    if last > start:
        bounds.append((start, last))
    return bounds


def infer_batch(model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """``latent``, ``recon_mse`` where the model reconstructs, and ``pred_<name>`` of one batch.

    Encodes once where the model allows it (``encode_and_reconstruct``, ``predict_from_latent``).
    """
    out: dict[str, torch.Tensor] = {}
    if hasattr(model, "encode_and_reconstruct"):
        z, recon = model.encode_and_reconstruct(x)
    else:
        z = model.encode(x)
        recon = model.reconstruct(x) if hasattr(model, "reconstruct") else None
    out["latent"] = z
    if recon is not None:
        out["recon_mse"] = ((recon - x) ** 2).mean(dim=(1, 2, 3))
    if hasattr(model, "predict_from_latent"):
        predictions = model.predict_from_latent(z)
    else:
        predictions = model.predict(x) if hasattr(model, "predict") else {}
    for name, value in predictions.items():
        out[f"pred_{name}"] = value.reshape(len(x))
    return out


def inference_copy(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """An evaluation-mode copy of ``model`` on ``device`` in the layout its convolutions run fastest in."""
    model = copy.deepcopy(model).to(device).eval()
    return model.to(memory_format=torch.channels_last)


def run_model(model: torch.nn.Module, card: ModelCard, dataset: Dataset, *, device: str | torch.device,
              batch_size: int = 256, progress_callback: ProgressCallback | None = None,
              rows: slice | None = None) -> dict[str, np.ndarray]:
    """Batched inference over a whole dataset (or the contiguous ``rows`` of it).

    Parameters
    ----------
    model, card : the model and its card (channels and recipe).
    dataset : the maps.
    device : torch device (``"cpu"``, ``"cuda"``, a ``torch.device``).
    batch_size : maps read per batch (aligned to the dataset's chunk files); on CUDA at least
        `CUDA_BATCH_MAPS`, which a GPU needs to be busy.
    progress_callback : called with (maps done, maps total) after each batch.
    rows : a slice of rows with step 1; default all.

    Returns
    -------
    dict with ``latent`` (N, d), ``recon_mse`` (N,) where the model reconstructs, and
    ``pred_<name>`` (N,) for each model output, in physical units (float32 numpy arrays).

    Notes
    -----
    On the CPU, while this runs, torch's own thread pool is set to one thread (restored
    afterwards) and as many Python threads as it had run slices of each batch side by side.
    """
    engine = _ENGINE.get()
    if engine is not None:
        return _run_on_workers(engine, model, card, dataset, str(device), batch_size, progress_callback, rows)
    device = torch.device(device)
    net = inference_copy(model, device)
    pin = device.type == "cuda"
    batch_size = max(int(batch_size), CUDA_BATCH_MAPS) if pin else max(1, int(batch_size))
    bounds = batch_bounds(dataset, batch_size, rows)
    total = sum(stop - start for start, stop in bounds)

    def load(bound: tuple[int, int]) -> torch.Tensor:
        x = torch.from_numpy(prepare_inputs(card, dataset, slice(*bound)))
        x = x.contiguous(memory_format=torch.channels_last)
        return x.pin_memory() if pin else x

    out: dict[str, list[np.ndarray]] = {}
    done = 0
    with _batch_runner(net, device) as run:
        for (start, stop), x in prefetched(load, bounds, PREFETCH_BATCHES):
            for name, value in run(x.to(device, non_blocking=pin)).items():
                out.setdefault(name, []).append(value)
            done += stop - start
            if progress_callback is not None:
                progress_callback(done, total)
    return {k: np.concatenate(v) for k, v in out.items()}


@contextmanager
def on_workers(engine) -> Iterator[None]:
    """Within this block, `run_model` runs on the workers of ``engine`` (`galexplore.parallel`)."""
    token = _ENGINE.set(None if isinstance(engine, SerialEngine) else engine)
    try:
        yield
    finally:
        _ENGINE.reset(token)


def _run_on_workers(engine, model, card, dataset, device, batch_size, progress_callback, rows):
    """`run_model` in partitions of whole batches (so every batch, and every number, is the
    one a single process computes), one task each; the workers open the dataset by its path."""
    bounds = batch_bounds(dataset, max(1, int(batch_size)), rows)
    total = sum(stop - start for start, stop in bounds)
    n_parts = min(len(bounds), max(PARTITIONS_PER_WORKER * engine.workers, -(-total // PARTITION_MAPS)))
    groups = np.array_split(np.arange(len(bounds)), n_parts) if bounds else []
    partitions = [(bounds[g[0]][0], bounds[g[-1]][1]) for g in groups]
    shared = engine.share((copy.deepcopy(model).cpu(), card))
    out: dict[str, list[np.ndarray]] = {}
    done = 0
    for (start, stop), result in zip(partitions, engine.ordered(
            _run_partition, partitions, shared, str(Path(dataset.path).resolve()), dataset.fingerprint,
            device, batch_size)):
        for name, value in result.items():
            out.setdefault(name, []).append(value)
        done += stop - start
        if progress_callback is not None:
            progress_callback(done, total)
    return {k: np.concatenate(v) for k, v in out.items()}


def _run_partition(rows: tuple[int, int], model_and_card, path: str, fingerprint: str, device: str,
                   batch_size: int) -> dict[str, np.ndarray]:
    from galexplore.data.distributed import opened_dataset

    model, card = model_and_card
    return run_model(model, card, opened_dataset(path, fingerprint), device=device, batch_size=batch_size,
                     rows=slice(*rows))


def _infer_to_numpy(net: torch.nn.Module, x: torch.Tensor) -> dict[str, np.ndarray]:
    with torch.inference_mode():  # thread-local: every compute thread enters it
        return {k: v.float().cpu().numpy() for k, v in infer_batch(net, x).items()}


@contextmanager
def _batch_runner(net: torch.nn.Module, device: torch.device) -> Iterator[Callable]:
    """A function batch -> outputs as numpy arrays. On the CPU it runs slices of
    `CPU_SLICE_MAPS` maps on one Python thread per core, each op single-threaded: small
    convolutions scale better that way than with torch's threads, which wait on each other at
    every op and stall when the machine is shared (measured in benchmarks/bench_embed.py)."""
    if device.type != "cpu":
        yield lambda x: _infer_to_numpy(net, x)
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="galexplore-infer") as pool:
            def run(x: torch.Tensor) -> dict[str, np.ndarray]:
                parts = list(pool.map(lambda part: _infer_to_numpy(net, part), x.split(CPU_SLICE_MAPS)))
                return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

            yield run
    finally:
        torch.set_num_threads(threads)


def prefetched(load: Callable, items: Iterable, depth: int) -> Iterator[tuple[object, object]]:
    """``(item, load(item))`` for each item, loading up to ``depth`` items ahead in one background thread.

    An exception in ``load`` is raised here, at its item; items not yet loaded when the
    consumer stops are cancelled.
    """
    items = iter(items)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="galexplore-reader") as pool:
        pending: deque = deque()

        def submit() -> None:
            for item in items:
                pending.append((item, pool.submit(load, item)))
                return

        for _ in range(max(1, depth)):
            submit()
        try:
            while pending:
                item, future = pending.popleft()
                result = future.result()
                submit()
                yield item, result
        finally:
            for _, future in pending:
                future.cancel()
