"""Chunk files of a dataset's map store: raw (memory-mapped) and compact (quantised) codecs.

A map store is a sequence of chunk files, each holding ``n`` consecutive maps of shape
(C, H, W). The manifest (see `galexplore.data.dataset`) lists the chunks and their first
map index; this module only encodes, decodes and reads single chunks.

Storage kinds
-------------
``float32`` / ``float16``
    Raw little-endian arrays of shape (n, C, H, W), no header. Memory-mapped with read-ahead
    switched off (``MADV_RANDOM``), so reading a map touches only that map's pages. float16 keeps ~3 significant digits
    (relative error <= 2**-11, i.e. 0.05 %; values above 65504 overflow to inf).
``compact``
    For shipping small datasets in git. Per channel, values are quantised to int16 with a step:

    * ``{"mode": "absolute", "step": s}``: q = round(x / s); |x - x_decoded| <= s / 2.
      Defaults: 0.5 km/s for channels in km/s (error <= 0.25 km/s), 1 for ``counts``
      (exact for integer counts).
    * ``{"mode": "relative", "step": r}``: per map, s = r * max|x| (stored as float32 in the
      chunk); |x - x_decoded| <= r/2 * max|x| of that map. Default for every other unit
      (e.g. mom0 in Jy/beam km/s): r = 2**-12, error <= 0.012 % of the map's peak.

    Blank pixels (NaN; also +-inf) become the sentinel -32768 and come back as NaN. The int16 plane is
    delta-filtered along rows (wrapping int16 arithmetic, so exactly invertible; not for
    ``counts``, whose sparse noise it would spread), split per channel into low/high byte
    planes (small deltas make the high plane nearly constant), and the chunk is compressed
    with ``lzma`` (stdlib). Decoded chunks are kept in an LRU cache of bounded size. On smooth mock-like
    fields (4 channels) this is ~20x smaller than float32 (benchmarks/bench_dataset.py).
"""

from __future__ import annotations

import lzma
import mmap
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np

from galexplore.errors import DatasetError

STORAGE_KINDS = ("float32", "float16", "compact")
RAW_DTYPES = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2")}
CHUNK_SUFFIX = {"float32": ".f32", "float16": ".f16", "compact": ".lzma"}
NAN_SENTINEL = np.int16(-32768)
_QMAX = 32767
#: Default compact chunk length (maps) and raw chunk size (bytes).
COMPACT_CHUNK_MAPS = 128
RAW_CHUNK_BYTES = 1 << 25
#: Relative quantisation step of the compact codec for channels without an absolute step.
DEFAULT_RELATIVE_STEP = 2.0**-12
#: lzma compression preset of compact chunks (6: ~10 % smaller than 1, ~10x slower to write).
LZMA_PRESET = 6
#: Memory for decoded compact chunks (float32), least recently used dropped first: 256 MiB
#: holds the whole shipped sample, so after a first read every click is a memory lookup.
DECODED_CACHE_BYTES = 256 * 2**20


def default_chunk_maps(storage: str, map_shape: tuple[int, int, int]) -> int:
    """Maps per chunk: 128 for compact, about 32 MiB per chunk file for raw storage."""
    if storage == "compact":
        return COMPACT_CHUNK_MAPS
    bytes_per_map = int(np.prod(map_shape)) * RAW_DTYPES[storage].itemsize
    return max(1, RAW_CHUNK_BYTES // bytes_per_map)


def default_quantisation(unit: str) -> dict:
    """The compact codec's quantisation of a channel with this unit (see module docstring)."""
    if unit == "km/s":
        return {"mode": "absolute", "step": 0.5, "delta": True}
    if unit == "counts":
        return {"mode": "absolute", "step": 1.0, "delta": False}
    return {"mode": "relative", "step": DEFAULT_RELATIVE_STEP, "delta": True}


def quantise(maps: np.ndarray, quantisation: list[dict], channels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Compact codec step 1: (n, C, H, W) maps -> int16 codes and (n, C) float32 steps.

    Raises DatasetError for values the codec cannot hold (non-integer counts, int16 overflow).
    """
    n, c = maps.shape[:2]
    q = np.empty(maps.shape, dtype=np.int16)
    scales = np.ones((n, c), dtype="<f4")
    for k, spec in enumerate(quantisation):
        x = np.asarray(maps[:, k], dtype=np.float64)
        blank = ~np.isfinite(x)
        if spec["mode"] == "absolute":
            step = np.full(n, spec["step"])
        else:
            peak = np.max(np.where(blank, 0.0, np.abs(x)).reshape(n, -1), axis=1, initial=0.0)
            peak = np.where(peak > 0, peak, 1.0)
            step = (spec["step"] * peak).astype("<f4").astype(np.float64)
        scales[:, k] = step
        with np.errstate(invalid="ignore"):
            r = np.rint(x / step[:, None, None])
        exact_counts = spec["mode"] == "absolute" and spec["step"] == 1.0 and not spec.get("delta", True)
        if exact_counts and np.any(np.where(blank, 0, r - x)):
            raise DatasetError(
                f"channel {channels[k]!r} holds non-integer counts, which compact storage keeps only "
                "as exact integers; use storage='float32' for it.")
        if np.any(np.abs(np.where(blank, 0, r)) > _QMAX):
            raise DatasetError(
                f"channel {channels[k]!r} has values beyond +-{_QMAX * spec['step']:g} that compact "
                f"storage (int16 with step {spec['step']:g}) cannot hold; use storage='float32'.")
        q[:, k] = np.where(blank, NAN_SENTINEL, r).astype(np.int16)
    return q, scales


def encode_chunk(maps: np.ndarray, storage: str, quantisation: list[dict] | None,
                 channels: list[str]) -> bytes:
    """Encode (n, C, H, W) physical maps (NaN blank) as the bytes of one chunk file."""
    if storage in RAW_DTYPES:
        with np.errstate(over="ignore"):
            return np.ascontiguousarray(maps, dtype=RAW_DTYPES[storage]).tobytes()
    q, scales = quantise(maps, quantisation, channels)
    delta = q.copy()
    for k, spec in enumerate(quantisation):  # int16 wraps, so the cumulative sum inverts it
        if spec.get("delta", True):
            delta[:, k, :, 1:] = q[:, k, :, 1:] - q[:, k, :, :-1]
    planes = delta.astype("<i2").view(np.uint8).reshape(delta.shape + (2,)).transpose(1, 4, 0, 2, 3)
    return lzma.compress(scales.tobytes() + planes.tobytes(), preset=LZMA_PRESET)


def decode_chunk(data: bytes, n: int, map_shape: tuple[int, int, int], quantisation: list[dict],
                 path: Path) -> np.ndarray:
    """Decode one compact chunk file's bytes into (n, C, H, W) float32 maps (NaN blank)."""
    c, h, w = map_shape
    try:
        raw = lzma.decompress(data)
    except lzma.LZMAError as err:
        raise DatasetError(f"map chunk {path} is corrupt ({err}); regenerate the dataset.") from err
    n_scale = n * c * 4
    if len(raw) != n_scale + n * c * h * w * 2:
        raise DatasetError(f"map chunk {path} holds {len(raw)} bytes, not the {n} maps the manifest "
                           "lists; regenerate the dataset.")
    scales = np.frombuffer(raw[:n_scale], dtype="<f4").reshape(n, c)
    planes = np.frombuffer(raw[n_scale:], dtype=np.uint8).reshape(c, 2, n, h, w)
    delta = planes.transpose(2, 0, 3, 4, 1).copy().view("<i2")[..., 0]
    q = delta
    for k, spec in enumerate(quantisation):
        if spec.get("delta", True):
            q[:, k] = np.cumsum(delta[:, k], axis=-1, dtype=np.int16)
    out = q.astype(np.float32) * scales[:, :, None, None]
    out[q == NAN_SENTINEL] = np.nan
    return out


class ChunkReader:
    """Reads maps from the chunk files of one store, touching only the chunks asked for.

    Parameters
    ----------
    root : dataset directory.
    storage : storage kind.
    map_shape : (C, H, W).
    files : chunk file names relative to ``root``, in store order.
    counts : maps per chunk.
    quantisation : compact codec parameters per channel (ignored for raw storage).
    """

    def __init__(self, root: Path, storage: str, map_shape: tuple[int, int, int],
                 files: list[str], counts: list[int], quantisation: list[dict] | None) -> None:
        self.root = root
        self.storage = storage
        self.map_shape = tuple(map_shape)
        self.files = files
        self.counts = np.asarray(counts, dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)
        self.quantisation = quantisation
        self._memmaps: dict[int, np.ndarray] = {}
        self._decoded: OrderedDict[int, np.ndarray] = OrderedDict()
        self.chunks_read = 0  # chunk files opened or decoded so far (for tests and benchmarks)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def take(self, index: np.ndarray) -> np.ndarray:
        """Maps at sorted-or-not int64 indices (already in range) as (k, C, H, W) float32."""
        out = np.empty((len(index),) + self.map_shape, dtype=np.float32)
        if len(index) == 0:
            return out
        chunk_of = np.searchsorted(self.starts, index, side="right") - 1
        order = np.argsort(chunk_of, kind="stable")
        bounds = np.flatnonzero(np.diff(chunk_of[order])) + 1
        for group in np.split(order, bounds):
            chunk = int(chunk_of[group[0]])
            local = index[group] - self.starts[chunk]
            out[group] = self._chunk(chunk)[local]
        return out

    def _chunk(self, chunk: int) -> np.ndarray:
        if self.storage in RAW_DTYPES:
            if chunk not in self._memmaps:
                self._memmaps[chunk] = self._open_raw(chunk)
            return self._memmaps[chunk]
        if chunk in self._decoded:
            self._decoded.move_to_end(chunk)
            return self._decoded[chunk]
        path = self._path(chunk)
        maps = decode_chunk(path.read_bytes(), int(self.counts[chunk]), self.map_shape,
                            self.quantisation, path)
        self.chunks_read += 1
        self._decoded[chunk] = maps
        while len(self._decoded) > 1 and sum(m.nbytes for m in self._decoded.values()) > DECODED_CACHE_BYTES:
            self._decoded.popitem(last=False)
        return maps

    def _path(self, chunk: int) -> Path:
        path = self.root / self.files[chunk]
        if not path.is_file():
            raise DatasetError(
                f"map chunk file {path} (maps {self.starts[chunk]}..{self.starts[chunk + 1] - 1}) is "
                "missing; the dataset is incomplete: regenerate it (or restore the file).")
        if not path.resolve().is_relative_to(self.root.resolve()):
            raise DatasetError(f"map chunk file {self.files[chunk]} is a link to a file outside the dataset "
                               f"directory {self.root}; galexplore reads only files inside it.")
        return path

    def _open_raw(self, chunk: int) -> np.ndarray:
        path = self._path(chunk)
        dtype = RAW_DTYPES[self.storage]
        n = int(self.counts[chunk])
        expected = n * int(np.prod(self.map_shape)) * dtype.itemsize
        if os.path.getsize(path) != expected:
            raise DatasetError(f"map chunk file {path} has {os.path.getsize(path)} bytes, expected "
                               f"{expected} for {n} maps; regenerate the dataset.")
        self.chunks_read += 1
        with open(path, "rb") as fh:
            mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        if hasattr(mapped, "madvise") and hasattr(mmap, "MADV_RANDOM"):
            # no read-ahead: a map read then faults in only that map's pages, not megabytes
            mapped.madvise(mmap.MADV_RANDOM)
        return np.frombuffer(mapped, dtype=dtype).reshape((n,) + self.map_shape)
