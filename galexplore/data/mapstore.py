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
    Quantised and compressed, ~4x smaller than float16 on mock-like maps. Per channel, values
    are quantised to int16 with a step:

    * ``{"mode": "absolute", "step": s}``: q = round(x / s); |x - x_decoded| <= s / 2.
      Defaults: 0.5 km/s for channels in km/s (error <= 0.25 km/s), 1 for ``counts``
      (exact for integer counts).
    * ``{"mode": "relative", "step": r}``: per map, s = r * max|x| (stored as float32 in the
      chunk); |x - x_decoded| <= r/2 * max|x| of that map. Default for every other unit
      (e.g. mom0 in Jy/beam km/s): r = 2**-12, error <= 0.012 % of the map's peak.

    Blank pixels (NaN; also +-inf) come back as NaN. Two codecs (``storage.codec`` in the
    manifest) hold the int16 codes:

    ``zstd`` (``.zst`` files; written by default)
        One Zstandard frame per map, so a random read decompresses only the map asked for
        (~0.1 ms). Each frame holds the map's steps, its blank mask per channel (bit-packed)
        and the codes after a 2-D prediction: blanks are filled from their nearest finite
        neighbour along the row (then from the nearest non-blank row), the codes are
        differenced along columns and rows (wrapping int16 arithmetic, exactly inverted by
        two cumulative sums), zigzag-mapped to unsigned and split into low/high byte planes.
        Channels with ``"delta": false`` (counts, whose sparse noise differencing would
        spread) skip the differencing. Frames carry Zstandard's content checksum, checked on
        every read. File layout: magic ``GXZSTD01``, uint32 map count, uint32 0, then
        (n + 1) uint64 byte offsets of the frames (the last is the file size), then the frames.
    ``lzma`` (``.lzma`` files; datasets written before the zstd codec, read and appended to)
        The whole chunk's codes delta-filtered along rows (blanks as the sentinel -32768),
        split into byte planes and compressed with ``lzma``; a read decodes the whole chunk,
        so decoded chunks are kept in an LRU cache of bounded size.

    On smooth mock-like fields (4 channels) the zstd codec is ~20 % smaller than lzma
    (benchmarks/bench_dataset.py prints bytes per map for each codec).
"""

from __future__ import annotations

import lzma
import mmap
import os
import stat
from collections import OrderedDict
from pathlib import Path

import numpy as np
import zstandard

from galexplore.errors import DatasetError

STORAGE_KINDS = ("float32", "float16", "compact")
RAW_DTYPES = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2")}
#: Codecs of compact storage; new datasets use the first.
COMPACT_CODECS = ("zstd", "lzma")
COMPACT_CODEC = COMPACT_CODECS[0]
#: The codec of compact manifests that name none (written before the zstd codec existed).
LEGACY_COMPACT_CODEC = "lzma"
#: File suffix of a chunk per storage kind (compact: of the zstd codec) and per compact codec.
CHUNK_SUFFIX = {"float32": ".f32", "float16": ".f16", "compact": ".zst"}
CODEC_SUFFIX = {"zstd": ".zst", "lzma": ".lzma"}
#: Every suffix a chunk file of each storage kind may have.
CHUNK_SUFFIXES = {"float32": (".f32",), "float16": (".f16",), "compact": tuple(CODEC_SUFFIX.values())}
NAN_SENTINEL = np.int16(-32768)
_QMAX = 32767
#: Default compact chunk length (maps) and raw chunk size (bytes).
COMPACT_CHUNK_MAPS = 128
RAW_CHUNK_BYTES = 1 << 25
#: Relative quantisation step of the compact codec for channels without an absolute step.
DEFAULT_RELATIVE_STEP = 2.0**-12
#: lzma compression preset of compact chunks (6: ~10 % smaller than 1, ~10x slower to write).
LZMA_PRESET = 6
#: Zstandard level of compact chunks: 15 is within 0.2 % of level 22's size at a quarter of its time.
ZSTD_LEVEL = 15
ZSTD_MAGIC = b"GXZSTD01"
_ZSTD_HEADER = len(ZSTD_MAGIC) + 8
#: Memory for decoded lzma chunks (float32), least recently used dropped first: 256 MiB
#: holds a whole 4,400-map dataset, so after a first read every click is a memory lookup.
DECODED_CACHE_BYTES = 256 * 2**20


def chunk_suffix(storage: dict) -> str:
    """File suffix of new chunks of a manifest's ``storage`` entry."""
    if storage["kind"] == "compact":
        return CODEC_SUFFIX[storage.get("codec", LEGACY_COMPACT_CODEC)]
    return CHUNK_SUFFIX[storage["kind"]]


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

    Blank pixels get the code -32768. Raises DatasetError for values the codec cannot hold
    (non-integer counts, int16 overflow).
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
                 channels: list[str], codec: str = COMPACT_CODEC) -> bytes:
    """Encode (n, C, H, W) physical maps (NaN blank) as the bytes of one chunk file.

    ``codec`` picks the compact codec (``"zstd"`` or ``"lzma"``); raw storage ignores it.
    """
    if storage in RAW_DTYPES:
        with np.errstate(over="ignore"):
            return np.ascontiguousarray(maps, dtype=RAW_DTYPES[storage]).tobytes()
    q, scales = quantise(maps, quantisation, channels)
    if codec == "zstd":
        return _encode_zstd(q, scales, quantisation)
    if codec != "lzma":
        raise DatasetError(f"unknown compact codec {codec!r}; use one of {', '.join(COMPACT_CODECS)}.")
    delta = q.copy()
    for k, spec in enumerate(quantisation):  # int16 wraps, so the cumulative sum inverts it
        if spec.get("delta", True):
            delta[:, k, :, 1:] = q[:, k, :, 1:] - q[:, k, :, :-1]
    planes = delta.astype("<i2").view(np.uint8).reshape(delta.shape + (2,)).transpose(1, 4, 0, 2, 3)
    return lzma.compress(scales.tobytes() + planes.tobytes(), preset=LZMA_PRESET)


def encode_chunk_for(maps: np.ndarray, storage: dict, channels: list[str]) -> bytes:
    """`encode_chunk` with a manifest's ``storage`` entry (kind, quantisation, codec)."""
    return encode_chunk(maps, storage["kind"], storage.get("quantisation"), channels,
                        codec=storage.get("codec", LEGACY_COMPACT_CODEC))


def check_encoded_chunk(data: bytes, n: int, storage: dict, map_shape: tuple[int, int, int]) -> None:
    """Raise DatasetError unless ``data`` can be the chunk file of ``n`` maps of this storage
    (raw: its exact size; zstd: its header; lzma chunks are checked when decoded)."""
    kind = storage["kind"]
    if kind in RAW_DTYPES:
        expected = n * int(np.prod(map_shape)) * RAW_DTYPES[kind].itemsize
        ok = len(data) == expected
    elif storage.get("codec", LEGACY_COMPACT_CODEC) == "zstd":
        ok = data[:len(ZSTD_MAGIC)] == ZSTD_MAGIC and int.from_bytes(data[8:12], "little") == n
    else:
        ok = True
    if not ok:
        raise DatasetError(f"the encoded chunk is not {n} maps of {kind} storage of shape {tuple(map_shape)}; "
                           "encode it with galexplore.data.mapstore.encode_chunk and this dataset's storage.")


def decode_chunk(data: bytes, n: int, map_shape: tuple[int, int, int], quantisation: list[dict],
                 path: Path) -> np.ndarray:
    """Decode one lzma chunk file's bytes into (n, C, H, W) float32 maps (NaN blank)."""
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


def _fill_blanks(q: np.ndarray, blank: np.ndarray) -> np.ndarray:
    """Codes (..., H, W) with each blank taken from the nearest non-blank pixel of its row (left
    first), and blank rows from the nearest non-blank row (above first); all-blank planes -> 0.
    What blanks hold is arbitrary (the mask restores them); this choice keeps the 2-D
    differences of smooth fields small at the edge of the emission."""
    h, w = q.shape[-2:]
    cols = np.arange(w)
    left = np.maximum.accumulate(np.where(blank, -1, cols), axis=-1)
    right = np.minimum.accumulate(np.where(blank, w, cols)[..., ::-1], axis=-1)[..., ::-1]
    filled = np.take_along_axis(q, np.minimum(np.where(left >= 0, left, right), w - 1), axis=-1)
    empty = blank.all(axis=-1)
    rows = np.arange(h)
    above = np.maximum.accumulate(np.where(empty, -1, rows), axis=-1)
    below = np.minimum.accumulate(np.where(empty, h, rows)[..., ::-1], axis=-1)[..., ::-1]
    source = np.minimum(np.where(above >= 0, above, below), h - 1)
    filled = np.take_along_axis(filled, source[..., None], axis=-2)
    filled[empty.all(axis=-1)] = 0
    return filled


def _encode_zstd(q: np.ndarray, scales: np.ndarray, quantisation: list[dict]) -> bytes:
    n, c, h, w = q.shape
    blank = q == NAN_SENTINEL
    residual = np.where(blank, np.int16(0), q)
    for k, spec in enumerate(quantisation):
        if spec.get("delta", True):  # int16 wraps, so two cumulative sums invert this exactly
            x = _fill_blanks(q[:, k], blank[:, k])
            x[..., 1:] = x[..., 1:] - x[..., :-1]
            x[..., 1:, :] = x[..., 1:, :] - x[..., :-1, :]
            residual[:, k] = x
    r = residual.astype(np.int32)
    zigzag = ((r << 1) ^ (r >> 31)).astype("<u2")
    planes = zigzag.view(np.uint8).reshape(n, c, h, w, 2).transpose(0, 1, 4, 2, 3).reshape(n, -1)
    masks = np.packbits(blank.reshape(n, c, h * w), axis=-1).reshape(n, -1)
    payload = np.concatenate([scales.astype("<f4").view(np.uint8).reshape(n, -1), masks, planes], axis=1)
    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True)
    frames = [compressor.compress(row.tobytes()) for row in payload]
    offsets = _ZSTD_HEADER + 8 * (n + 1) + np.concatenate([[0], np.cumsum([len(f) for f in frames])])
    header = ZSTD_MAGIC + np.array([n, 0], dtype="<u4").tobytes() + offsets.astype("<u8").tobytes()
    return header + b"".join(frames)


def _undo_differences(d: np.ndarray) -> np.ndarray:
    """Invert the 2-D differences of (..., H, W) int16 codes: cumulative sums along rows and
    columns, wrapping like the differences. Many planes: one vectorised add per row (and per
    column, transposed), ~2x faster than ``np.cumsum`` there; few planes: ``np.cumsum``."""
    if d[..., 0, 0].size < 16:
        return np.cumsum(np.cumsum(d, axis=-2, dtype=np.int16), axis=-1, dtype=np.int16)
    x = d.copy()
    for i in range(1, x.shape[-2]):
        x[..., i, :] += x[..., i - 1, :]
    x = np.ascontiguousarray(x.swapaxes(-1, -2))
    for j in range(1, x.shape[-2]):
        x[..., j, :] += x[..., j - 1, :]
    return x.swapaxes(-1, -2)


def _decode_zstd_frames(frames: list[bytes], map_shape: tuple[int, int, int], quantisation: list[dict],
                        path: Path) -> np.ndarray:
    """(k, C, H, W) float32 maps from k zstd frames of one chunk."""
    c, h, w = map_shape
    k = len(frames)
    mask_bytes = (h * w + 7) // 8
    size = 4 * c + c * mask_bytes + 2 * c * h * w
    decompressor = zstandard.ZstdDecompressor()
    try:
        payload = np.frombuffer(b"".join(decompressor.decompress(f) for f in frames), dtype=np.uint8)
    except zstandard.ZstdError as err:
        raise DatasetError(f"map chunk {path} is corrupt ({err}); regenerate the dataset.") from err
    if payload.size != k * size:
        raise DatasetError(f"map chunk {path} holds maps of another shape than the manifest's "
                           f"{map_shape}; regenerate the dataset.")
    payload = payload.reshape(k, size)
    scales = payload[:, :4 * c].copy().view("<f4")
    blank = np.unpackbits(payload[:, 4 * c:4 * c + c * mask_bytes].reshape(k, c, mask_bytes),
                          axis=-1, count=h * w).view(bool).reshape(k, c, h, w)
    planes = payload[:, 4 * c + c * mask_bytes:].reshape(k, c, 2, h, w)
    interleaved = np.empty((k, c, h, w, 2), dtype=np.uint8)
    interleaved[..., 0], interleaved[..., 1] = planes[:, :, 0], planes[:, :, 1]
    zigzag = interleaved.view("<u2")[..., 0]
    q = ((zigzag >> 1) ^ -(zigzag & 1)).view(np.int16)  # -(z & 1) wraps to 0 or 0xFFFF
    predicted = [j for j, spec in enumerate(quantisation) if spec.get("delta", True)]
    if predicted:
        q[:, predicted] = _undo_differences(q[:, predicted])
    out = q * scales[:, :, None, None]
    out[blank] = np.nan
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
    codec : compact codec (``"zstd"`` or ``"lzma"``; ignored for raw storage).
    """

    def __init__(self, root: Path, storage: str, map_shape: tuple[int, int, int],
                 files: list[str], counts: list[int], quantisation: list[dict] | None,
                 codec: str = LEGACY_COMPACT_CODEC) -> None:
        self.root = root
        self.storage = storage
        self.map_shape = tuple(map_shape)
        self.files = files
        self.counts = np.asarray(counts, dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)
        self.quantisation = quantisation
        self.codec = codec
        self._memmaps: dict[int, np.ndarray] = {}
        self._decoded: OrderedDict[int, np.ndarray] = OrderedDict()
        self._checked: dict[int, str] = {}  # chunk -> its path, once found inside the dataset
        self._inside: dict[str, bool] = {}  # directory -> whether it resolves inside the dataset
        self._real_root: Path | None = None
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
            if self.storage == "compact" and self.codec == "zstd":
                out[group] = self._zstd_maps(chunk, local)
            else:
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
        maps = decode_chunk(Path(path).read_bytes(), int(self.counts[chunk]), self.map_shape,
                            self.quantisation, path)
        self.chunks_read += 1
        self._decoded[chunk] = maps
        while len(self._decoded) > 1 and sum(m.nbytes for m in self._decoded.values()) > DECODED_CACHE_BYTES:
            self._decoded.popitem(last=False)
        return maps

    def _zstd_maps(self, chunk: int, local: np.ndarray) -> np.ndarray:
        """Maps ``local`` (indices within the chunk) of a zstd chunk, decompressing only their frames."""
        path = self._path(chunk)
        n = int(self.counts[chunk])
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as err:
            raise DatasetError(f"cannot read map chunk {path} ({err}); restore the file or regenerate "
                               "the dataset.") from err
        try:
            head = os.pread(fd, _ZSTD_HEADER + 8 * (n + 1), 0)
            if head[:len(ZSTD_MAGIC)] != ZSTD_MAGIC or len(head) != _ZSTD_HEADER + 8 * (n + 1) \
                    or int.from_bytes(head[8:12], "little") != n:
                raise DatasetError(f"map chunk {path} is not a zstd chunk of the {n} maps the manifest "
                                   "lists; regenerate the dataset.")
            offsets = np.frombuffer(head, dtype="<u8", offset=_ZSTD_HEADER).astype(np.int64)
            if offsets[0] != len(head) or offsets[-1] != os.fstat(fd).st_size or np.any(np.diff(offsets) <= 0):
                raise DatasetError(f"map chunk {path} has a damaged frame index; regenerate the dataset.")
            if len(local) * 4 >= n:  # many maps: one read of the whole file
                body = os.pread(fd, int(offsets[-1] - offsets[0]), int(offsets[0]))
                frames = [body[offsets[i] - offsets[0]:offsets[i + 1] - offsets[0]] for i in local]
            else:
                frames = [os.pread(fd, int(offsets[i + 1] - offsets[i]), int(offsets[i])) for i in local]
        finally:
            os.close(fd)
        self.chunks_read += 1
        return _decode_zstd_frames(frames, self.map_shape, self.quantisation, path)

    def _path(self, chunk: int) -> str:
        """The chunk file's path, after checking (once per chunk) that it is a file inside the dataset."""
        if chunk in self._checked:
            return self._checked[chunk]
        path = os.path.join(self.root, self.files[chunk])
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            mode = 0
        if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode) and os.path.isfile(path)):
            raise DatasetError(
                f"map chunk file {path} (maps {self.starts[chunk]}..{self.starts[chunk + 1] - 1}) is "
                "missing; the dataset is incomplete: regenerate it (or restore the file).")
        if self._real_root is None:
            self._real_root = Path(self.root).resolve()
        parent = os.path.dirname(path)
        if parent not in self._inside:  # the directory, and the file if it is a link, must resolve inside
            self._inside[parent] = Path(parent).resolve().is_relative_to(self._real_root)
        if not self._inside[parent] or stat.S_ISLNK(mode) and not Path(path).resolve().is_relative_to(self._real_root):
            raise DatasetError(f"map chunk file {self.files[chunk]} is a link to a file outside the dataset "
                               f"directory {self.root}; galexplore reads only files inside it.")
        self._checked[chunk] = path
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
