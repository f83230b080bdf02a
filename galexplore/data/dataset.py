"""The galexplore dataset: one directory with a manifest, a Parquet catalogue and a map store.

Layout::

    DATASET/
      manifest.json                      format version, shape, channels + units, storage,
                                         the committed chunk and catalogue files, provenance
      maps/chunk-<first map>.f32|.f16|.zst|.lzma   N x C x H x W maps in physical units, NaN blank
      catalog/part-<first row>.parquet   catalogue rows, units in each field's b"unit" metadata

Departure from DESIGN.md: the catalogue is stored as one or more Parquet *parts*
(``catalog/part-*.parquet``) rather than a single ``catalog.parquet``, so that appending never
rewrites existing files. Row i of the concatenated parts belongs to map i.

Commit protocol: the manifest is the single source of truth; files it does not list are
ignored. `create_dataset` writes into a hidden sibling directory ``.NAME.partial-<hex>`` that
is renamed into place on `DatasetWriter.close`. `append_to_dataset` writes new chunk and part
files beside the old ones and then atomically replaces ``manifest.json`` (``os.replace``); a
crash before that leaves the old dataset intact.

One writer at a time: every writer holds an advisory lock on the sibling file ``.NAME.lock``
(`filelock`, i.e. ``flock``) from the moment it starts until it commits or aborts, and a second
writer waits up to ``lock_timeout`` seconds for it, then fails with a DatasetError. The kernel
releases the lock when a writer dies, even by ``kill -9``, so whatever is found while holding
the lock and belongs to no commit (``.partial`` folders, files the manifest does not list)
was left by a dead writer and is deleted then; a writer never deletes a file it did not create
itself otherwise, and creates its files exclusively (``O_EXCL``). Advisory locks need a file
system with working ``flock`` (local disks do; some network file systems do not): as a second
line, an append also refuses to commit when the manifest changed under it.

Checksums: the manifest records the SHA-256 of every chunk and catalogue part it lists.
Catalogue parts are checked whenever they are read, compact chunks whenever they are decoded
(they are read whole anyway); raw chunks are memory-mapped and checked by `Dataset.verify`
(``galexplore info --verify``). Manifests written before checksums existed have none and stay
readable. `Dataset.fingerprint` hashes the manifest, so every write through this module (new
maps, new checksums) changes it; editing chunk files in place bypasses the manifest and is
caught by the checksums, not by the fingerprint.

Opening is lazy: `open_dataset` reads only the manifest; `Dataset.catalog` reads the parts on
first access; `Dataset.column_units` reads one Parquet footer; `Dataset.maps` reads only the
chunks that hold the requested maps (see `galexplore.data.mapstore` for the storage kinds).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from filelock import FileLock, Timeout

from galexplore.data.mapstore import (
    CHUNK_SUFFIXES,
    COMPACT_CODEC,
    COMPACT_CODECS,
    LEGACY_COMPACT_CODEC,
    RAW_DTYPES,
    STORAGE_KINDS,
    ChunkReader,
    check_encoded_chunk,
    chunk_suffix,
    default_chunk_maps,
    default_quantisation,
    encode_chunk_for,
    quantise,
)
from galexplore.errors import DatasetError

FORMAT_NAME = "galexplore-dataset"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MAPS_DIR = "maps"
CATALOG_DIR = "catalog"
#: Catalogue rows buffered by a writer before they are written as one Parquet part.
CATALOG_PART_ROWS = 1 << 20
#: Largest number of channels and map side (pixels) a manifest may declare.
MAX_CHANNELS = 64
MAX_MAP_SIZE = 4096
#: The only file names a manifest may list: chunk files of its storage kind and catalogue parts.
CHUNK_FILE_PATTERN = {kind: re.compile(rf"{MAPS_DIR}/chunk-\d{{10}}({'|'.join(map(re.escape, suffixes))})")
                      for kind, suffixes in CHUNK_SUFFIXES.items()}
PART_FILE_PATTERN = re.compile(rf"{CATALOG_DIR}/part-\d{{10}}\.parquet")
#: Largest map or row count a manifest may declare.
MAX_COUNT = 10**12
#: Seconds a writer waits for another writer of the same dataset before giving up.
LOCK_TIMEOUT_S = 30.0
#: Manifest key of a listed file's SHA-256 (hex).
CHECKSUM_KEY = "sha256"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
#: What writers leave beside a dataset NAME: ``.NAME.partial-<hex>`` and ``.NAME.replaced-<hex>``.
_LEFTOVER = re.compile(r"\.(?P<name>.+)\.(?P<kind>partial|replaced)-[0-9a-f]{32}")


def _read_manifest(path: Path) -> dict:
    if not path.is_dir():
        raise DatasetError(f"dataset directory {path} does not exist; check the path, or create it "
                           "with `galexplore sample` or galexplore.data.create_dataset.")
    file = path / MANIFEST
    if not file.is_file():
        raise DatasetError(f"{path} has no {MANIFEST}, so it is not a (complete) galexplore dataset; "
                           "an interrupted write leaves no manifest: regenerate the dataset.")
    try:
        manifest = json.loads(file.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise DatasetError(f"{file} is not valid JSON (or not UTF-8: {type(err).__name__}: {str(err)[:200]}); "
                           "regenerate the dataset (or restore the manifest).") from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise DatasetError(f"{file} is not a galexplore dataset manifest (no \"format\": "
                           f"\"{FORMAT_NAME}\"); point to a dataset directory.")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise DatasetError(f"{file} has format version {version!r}, but this galexplore reads only "
                           f"version {FORMAT_VERSION}; use the galexplore version that wrote it, or "
                           "regenerate the dataset.")
    _check_manifest(manifest, file)
    return manifest


def _is_count(value, minimum: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and minimum <= value <= MAX_COUNT


def _is_positive_number(value) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value)) and value > 0
    except OverflowError:
        return False


def _check_manifest(manifest: dict, file: Path) -> None:
    """Raise DatasetError unless every field the reader uses is present, of the right type
    and consistent, and every listed file is a plain name inside the dataset directory."""
    def bad(what: str) -> DatasetError:
        return DatasetError(f"{file} is damaged: {what}; regenerate the dataset (or restore the manifest).")

    for key, kind in (("n_maps", int), ("map_shape", list), ("channels", list), ("storage", dict),
                      ("chunks", list), ("catalog_parts", list)):
        if not isinstance(manifest.get(key), kind):
            raise bad(f"field {key!r} is missing or not a JSON {kind.__name__}")
    if not _is_count(manifest["n_maps"]):
        raise bad(f"n_maps is {manifest['n_maps']!r}, not a count")
    shape = manifest["map_shape"]
    if len(shape) != 3 or not all(_is_count(v, 1) for v in shape) or shape[0] > MAX_CHANNELS \
            or not shape[1] == shape[2] <= MAX_MAP_SIZE:
        raise bad(f"map_shape {shape!r} is not [channels <= {MAX_CHANNELS}, size, size] with size <= {MAX_MAP_SIZE}")
    channels = manifest["channels"]
    if len(channels) != shape[0] or not all(
            isinstance(c, dict) and isinstance(c.get("name"), str) and isinstance(c.get("unit"), str)
            for c in channels):
        raise bad("channels must list a {name, unit} pair of strings per channel of map_shape")
    storage = manifest["storage"]
    if storage.get("kind") not in STORAGE_KINDS or not _is_count(storage.get("chunk_maps"), 1):
        raise bad(f"storage {storage!r} needs a kind in {STORAGE_KINDS} and a positive chunk_maps")
    quantisation = storage.get("quantisation")
    if storage["kind"] == "compact" and not (
            isinstance(quantisation, list) and len(quantisation) == shape[0]
            and all(isinstance(q, dict) and q.get("mode") in ("absolute", "relative")
                    and _is_positive_number(q.get("step")) for q in quantisation)):
        raise bad("compact storage needs one {mode, step > 0} quantisation per channel")
    if storage["kind"] == "compact" and storage.get("codec", LEGACY_COMPACT_CODEC) not in COMPACT_CODECS:
        raise bad(f"compact codec {storage.get('codec')!r} is not one of {', '.join(COMPACT_CODECS)}")
    pattern = CHUNK_FILE_PATTERN[storage["kind"]]
    for entries, count_key, file_pattern in ((manifest["chunks"], "n_maps", pattern),
                                              (manifest["catalog_parts"], "n_rows", PART_FILE_PATTERN)):
        start = 0
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("file"), str) \
                    or not file_pattern.fullmatch(entry["file"]):
                raise bad(f"listed file {entry.get('file') if isinstance(entry, dict) else entry!r} is not a "
                          "file name the dataset format writes (files must lie inside the dataset directory)")
            if not _is_count(entry.get(count_key), 1) or entry.get("start", start) != start:
                raise bad(f"entry {entry['file']} has {count_key} {entry.get(count_key)!r} and start "
                          f"{entry.get('start')!r}; expected a positive count starting at {start}")
            if int(re.search(r"-(\d{10})\.", entry["file"]).group(1)) != start:
                raise bad(f"entry {entry['file']} holds the maps from {start} on, but its name says otherwise "
                          "(each file is named after its first map); the manifest lists a file twice or "
                          "out of order")
            checksum = entry.get(CHECKSUM_KEY)
            if checksum is not None and not (isinstance(checksum, str) and _SHA256_HEX.fullmatch(checksum)):
                raise bad(f"entry {entry['file']} has a {CHECKSUM_KEY} that is not 64 hexadecimal digits")
            start += entry[count_key]
        if start != manifest["n_maps"]:
            raise bad(f"{manifest['n_maps']} maps declared, but the {count_key} of its files add up to {start}")
    if not isinstance(manifest.get("provenance", {}), dict):
        raise bad("provenance is not a JSON object")


def _fsync_write(path: Path, data: bytes, exclusive: bool = False) -> None:
    """Write ``data`` to ``path`` and fsync it; ``exclusive``: never replace an existing file."""
    try:
        fh = open(path, "xb" if exclusive else "wb")
    except FileExistsError:
        raise DatasetError(f"{path} exists already although the manifest does not list it: another "
                           "program is writing this dataset without galexplore's lock; stop it and "
                           "write again.") from None
    with fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 23):
            digest.update(block)
    return digest.hexdigest()


def parquet_row(parquet: pq.ParquetFile, row: int, columns: list[str], batch_rows: int = 1 << 16) -> dict[str, object]:
    """The values of ``columns`` (those the file has) at ``row`` of a Parquet file, as pandas
    converts them; decodes the row group that holds the row a batch at a time, up to it."""
    present = [c for c in columns if c in parquet.schema_arrow.names]
    start = 0
    for group in range(parquet.num_row_groups):
        n = parquet.metadata.row_group(group).num_rows
        if row < start + n:
            offset = row - start
            for batch in parquet.iter_batches(batch_size=batch_rows, row_groups=[group], columns=present):
                if offset < batch.num_rows:
                    frame = batch.slice(offset, 1).to_pandas()
                    return {c: frame[c].iloc[0] for c in frame.columns}
                offset -= batch.num_rows
        start += n
    raise IndexError(f"row {row} is outside the file ({start} rows)")


def _write_manifest(directory: Path, manifest: dict) -> None:
    """Write ``manifest.json`` atomically (temporary file, fsync, os.replace)."""
    tmp = directory / f".{MANIFEST}.{uuid.uuid4().hex}.tmp"
    _fsync_write(tmp, json.dumps(manifest, indent=1).encode())
    os.replace(tmp, directory / MANIFEST)
    if hasattr(os, "O_DIRECTORY"):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class MapView:
    """Lazy N x C x H x W float32 view of a dataset's maps (NaN blank), read chunk by chunk.

    Index with an int, a slice, an int array or a boolean mask of length N; further indices
    (channel, row, column) may follow in a tuple: ``maps[idx, 1]``. Results are new arrays.
    ``before_read``, if given, is called with the indices of the chunks a read touches
    (the dataset checks their checksums there).
    """

    def __init__(self, reader: ChunkReader, before_read=None) -> None:
        self._reader = reader
        self._before_read = before_read

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self._reader),) + self._reader.map_shape

    dtype = np.dtype(np.float32)

    @property
    def chunks_read(self) -> int:
        """Chunk files opened (raw) or decoded (compact) so far."""
        return self._reader.chunks_read

    def __len__(self) -> int:
        return len(self._reader)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)

    def __getitem__(self, key):
        rest: tuple = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        n = len(self._reader)
        if isinstance(key, (int, np.integer)):
            i = int(key) + n if key < 0 else int(key)
            if not 0 <= i < n:
                raise IndexError(f"map index {key} is out of range for {n} maps.")
            return self._take(np.array([i], dtype=np.int64))[0][rest]
        if isinstance(key, slice):
            index = np.arange(*key.indices(n), dtype=np.int64)
        else:
            arr = np.asarray(key)
            if arr.dtype == bool:
                if arr.shape != (n,):
                    raise IndexError(f"boolean mask has shape {arr.shape}, expected ({n},).")
                index = np.flatnonzero(arr).astype(np.int64)
            elif arr.size == 0 or np.issubdtype(arr.dtype, np.integer):
                index = arr.astype(np.int64).ravel()
                index = np.where(index < 0, index + n, index)
                if index.size and (index.min() < 0 or index.max() >= n):
                    raise IndexError(f"map indices out of range for {n} maps.")
            else:
                raise IndexError(f"cannot index maps with {type(key).__name__} of dtype {arr.dtype}; "
                                 "use an int, a slice, an int array or a boolean mask.")
        out = self._take(index)
        return out[(slice(None),) + rest] if rest else out

    def _take(self, index: np.ndarray) -> np.ndarray:
        if self._before_read is not None and len(index):
            self._before_read(np.unique(np.searchsorted(self._reader.starts, index, side="right") - 1))
        return self._reader.take(index)


class Dataset:
    """An opened dataset directory; see the module docstring. Build with `open_dataset`."""

    def __init__(self, path: Path, manifest: dict) -> None:
        self.path = path
        self._manifest = manifest
        self.channels: list[str] = [c["name"] for c in manifest["channels"]]
        self.units: dict[str, str] = {c["name"]: c["unit"] for c in manifest["channels"]}
        self.map_shape: tuple[int, int, int] = tuple(manifest["map_shape"])
        self.storage: str = manifest["storage"]["kind"]
        self.fingerprint: str = hashlib.sha256(
            json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        self.codec: str = manifest["storage"].get("codec", LEGACY_COMPACT_CODEC)
        # raw chunks are memory-mapped (only touched pages are read): their SHA-256 is checked by
        # verify(); a compact chunk file is read whole, so its SHA-256 is checked on first read
        # (~0.5 ms for a zstd chunk of 128 maps; its frames' own checksums cannot tell two
        # chunk files swapped)
        self._checked_chunks: set[int] = set()
        self.maps = MapView(self._new_reader(),
                            before_read=self._check_chunks if self.storage == "compact" else None)
        self._catalog: pd.DataFrame | None = None
        self._column_units: dict[str, str] | None = None
        self._catalog_schema: pa.Schema | None = None
        self._checked_parts: set[int] = set()

    def _new_reader(self) -> ChunkReader:
        chunks = self._manifest["chunks"]
        return ChunkReader(self.path, self.storage, self.map_shape, [c["file"] for c in chunks],
                           [c["n_maps"] for c in chunks], self._manifest["storage"].get("quantisation"),
                           codec=self.codec)

    def _listed_file(self, name: str, what: str) -> Path:
        """``self.path / name`` after checking that it exists and lies inside the dataset."""
        path = self.path / name
        if not path.is_file():
            raise DatasetError(f"{what} {path} is missing; the dataset is incomplete: regenerate it "
                               "(or restore the file).")
        if not path.resolve().is_relative_to(self.path.resolve()):
            raise DatasetError(f"{what} {name} is a link to a file outside the dataset directory "
                               f"{self.path}; galexplore reads only files inside it.")
        return path

    def _mismatch(self, what: str, name: str) -> DatasetError:
        return DatasetError(f"{what} {self.path / name} does not match the checksum its manifest recorded: "
                            "it was damaged or edited after it was written. Restore the file or "
                            "regenerate the dataset (`galexplore info --verify` checks every file).")

    def _check_chunks(self, chunks: np.ndarray) -> None:
        """Compare the checksum of each chunk not checked yet with the manifest's (once per chunk)."""
        for chunk in map(int, chunks):
            if chunk in self._checked_chunks:
                continue
            entry = self._manifest["chunks"][chunk]
            if CHECKSUM_KEY in entry:
                path = self._listed_file(entry["file"], "map chunk file")
                if _sha256(path.read_bytes()) != entry[CHECKSUM_KEY]:
                    raise self._mismatch("map chunk file", entry["file"])
            self._checked_chunks.add(chunk)

    def __len__(self) -> int:
        return int(self._manifest["n_maps"])

    def __repr__(self) -> str:
        return (f"Dataset({str(self.path)!r}, n={len(self)}, channels={self.channels}, "
                f"storage={self.storage!r})")

    @property
    def provenance(self) -> dict:
        """Generator, version, parameters, seed and source files, as written at creation."""
        return json.loads(json.dumps(self._manifest.get("provenance") or {}))

    @property
    def manifest(self) -> dict:
        """A copy of the manifest."""
        return json.loads(json.dumps(self._manifest))

    def to_dask(self):
        """The maps as a dask array (one block per chunk file) and the catalogue as a dask
        dataframe indexed by map row; see `galexplore.data.distributed`."""
        from galexplore.data.distributed import dataset_to_dask

        return dataset_to_dask(self)

    def channel_index(self, name: str) -> int:
        """Position of channel ``name`` in the store's channel axis."""
        if name not in self.channels:
            raise DatasetError(f"channel {name!r} is not in dataset {self.path}; it has "
                               f"{', '.join(self.channels)}.")
        return self.channels.index(name)

    def _part_paths(self) -> list[Path]:
        return [self._listed_file(p["file"], "catalogue part") for p in self._manifest["catalog_parts"]]

    @property
    def catalog(self) -> pd.DataFrame:
        """The catalogue (row i <-> map i), read from the Parquet parts on first access."""
        if self._catalog is None:
            self._catalog = self._load_catalog()
        return self._catalog

    def _load_catalog(self) -> pd.DataFrame:
        if not self._manifest["catalog_parts"]:
            return pd.DataFrame({"id": np.zeros(0, dtype=np.int64)})
        catalog = self._read_parts(None)
        if "id" not in catalog.columns:
            raise DatasetError(f"the catalogue of {self.path} has no 'id' column; regenerate the "
                               "dataset.")
        if catalog["id"].duplicated().any():
            raise DatasetError(f"the catalogue of {self.path} has duplicate ids; regenerate the "
                               "dataset.")
        return catalog

    def _read_parts(self, columns: list[str] | None) -> pd.DataFrame:
        """The catalogue parts (only ``columns`` where given) joined, one row per map; each
        part's SHA-256 is checked on its first read."""
        tables = []
        for k, (entry, path) in enumerate(zip(self._manifest["catalog_parts"], self._part_paths())):
            if k not in self._checked_parts:
                if CHECKSUM_KEY in entry and _file_sha256(path) != entry[CHECKSUM_KEY]:
                    raise self._mismatch("catalogue part", entry["file"])
                self._checked_parts.add(k)
            try:
                present = None if columns is None else [c for c in columns if c in pq.read_schema(path).names]
                tables.append(pq.read_table(path, columns=present))
            except (pa.ArrowException, OSError) as err:
                raise DatasetError(f"cannot read the catalogue of {self.path} ({err}); regenerate the "
                                   "dataset.") from err
        try:
            table = pa.concat_tables(tables, promote_options="permissive")
        except pa.ArrowException as err:
            raise DatasetError(f"the catalogue parts of {self.path} do not fit together ({err}); "
                               "regenerate the dataset.") from err
        frame = table.to_pandas()
        if len(frame) != len(self):
            raise DatasetError(f"the catalogue of {self.path} has {len(frame)} rows but the map "
                               f"store has {len(self)} maps; regenerate the dataset.")
        return frame

    @property
    def catalog_schema(self) -> pa.Schema:
        """The catalogue's columns and their Arrow types, from the parts' Parquet footers (no rows read)."""
        if self._catalog_schema is None:
            paths = self._part_paths()
            try:
                schemas = [pq.read_schema(p) for p in paths]
                self._catalog_schema = (pa.unify_schemas(schemas, promote_options="permissive") if schemas
                                        else pa.schema([("id", pa.int64())]))
            except (pa.ArrowException, OSError) as err:
                raise DatasetError(f"cannot read the catalogue of {self.path} ({err}); regenerate the "
                                   "dataset.") from err
        return self._catalog_schema

    def read_catalog(self, columns: list[str]) -> pd.DataFrame:
        """Only ``columns`` of the catalogue (row i <-> map i), as `catalog` would hold them.

        Reads those columns of each Parquet part (each part's SHA-256 checked on its first
        read); served from `catalog` when that is loaded already. An unknown column raises
        DatasetError.
        """
        unknown = [c for c in columns if c not in self.catalog_schema.names]
        if unknown:
            raise DatasetError(f"the catalogue of {self.path} has no column(s) {unknown}")
        if self._catalog is not None:
            return self._catalog[list(columns)]
        return self._read_parts(list(columns))[list(columns)]

    def read_catalog_row(self, row: int, columns: list[str]) -> dict[str, object]:
        """``columns`` of one catalogue row (as `catalog` would hold them), reading only the
        part and the row group that hold it, a batch at a time (no whole column is loaded)."""
        if not 0 <= row < len(self):
            raise DatasetError(f"row {row} is outside the catalogue of {self.path} ({len(self)} rows)")
        if self._catalog is not None:
            return {c: self._catalog[c].iloc[row] for c in columns}
        entries = self._manifest["catalog_parts"]
        k = max(i for i, entry in enumerate(entries) if entry["start"] <= row)
        path = self._listed_file(entries[k]["file"], "catalogue part")
        if k not in self._checked_parts:
            if CHECKSUM_KEY in entries[k] and _file_sha256(path) != entries[k][CHECKSUM_KEY]:
                raise self._mismatch("catalogue part", entries[k]["file"])
            self._checked_parts.add(k)
        try:
            values = parquet_row(pq.ParquetFile(path), row - entries[k]["start"], columns)
        except (pa.ArrowException, OSError) as err:
            raise DatasetError(f"cannot read the catalogue of {self.path} ({err}); regenerate the "
                               "dataset.") from err
        return {c: values.get(c, np.nan) for c in columns}  # a column this part lacks: NaN, as in `catalog`

    @property
    def column_units(self) -> dict[str, str]:
        """Unit of every catalogue column ("" where none), from the Parquet field metadata."""
        if self._column_units is None:
            paths = self._part_paths()
            units: dict[str, str] = {}
            if paths:
                try:
                    schema = pq.read_schema(paths[0])
                except (pa.ArrowException, OSError) as err:
                    raise DatasetError(f"cannot read the catalogue of {self.path} ({err}); regenerate "
                                       "the dataset.") from err
                for column in schema:
                    meta = column.metadata or {}
                    units[column.name] = meta.get(b"unit", b"").decode("utf-8", "replace")
            self._column_units = units
        return dict(self._column_units)

    def disk_bytes(self) -> int:
        """Bytes on disk of the manifest and every committed file (stats each file)."""
        files = [MANIFEST] + [c["file"] for c in self._manifest["chunks"]] + [
            p["file"] for p in self._manifest["catalog_parts"]]
        return sum((self.path / f).stat().st_size for f in files if (self.path / f).is_file())

    def verify(self, full: bool = False) -> Verification:
        """Check the files the manifest lists; problems are collected, not raised.

        Always (cheap: one ``stat`` per raw chunk, compact chunks hashed, not decoded): every
        file exists inside the dataset, raw chunks have the size their maps need, compact
        chunks and catalogue parts match their checksums, and the catalogue reads. ``full``
        (``galexplore info --verify``): also compare the checksums of raw chunks and decode
        every chunk, which finds damage in files written before checksums existed.
        """
        report = Verification(full=full)
        raw = self.storage in RAW_DTYPES
        bytes_per_map = int(np.prod(self.map_shape)) * RAW_DTYPES[self.storage].itemsize if raw else 0
        reader = self._new_reader()
        listed = [("map chunk file", e) for e in self._manifest["chunks"]]
        listed += [("catalogue part", e) for e in self._manifest["catalog_parts"]]
        for index, (what, entry) in enumerate(listed):
            chunk = index < len(self._manifest["chunks"])
            report.files += 1
            report.with_checksum += CHECKSUM_KEY in entry
            try:
                path = self._listed_file(entry["file"], what)
                if raw and chunk and path.stat().st_size != entry["n_maps"] * bytes_per_map:
                    raise DatasetError(f"{what} {path} has {path.stat().st_size} bytes, not the "
                                       f"{entry['n_maps'] * bytes_per_map} its {entry['n_maps']} maps need: it "
                                       "is truncated or damaged; restore it or regenerate the dataset.")
                if CHECKSUM_KEY in entry and (full or not (raw and chunk)) \
                        and _file_sha256(path) != entry[CHECKSUM_KEY]:
                    raise self._mismatch(what, entry["file"])
            except DatasetError as err:
                report.problems.append(str(err))
                continue
            if chunk and full:
                start = int(reader.starts[index])
                try:  # decodes compact chunks; faults in every page of raw ones
                    reader.take(np.arange(start, start + entry["n_maps"]))
                except Exception as err:  # any codec failure is a problem to report, not to raise
                    report.problems.append(f"{what} {path} cannot be decoded ({type(err).__name__}: {err}); "
                                           "restore it or regenerate the dataset.")
        if not any(p.startswith("catalogue part") for p in report.problems):
            try:
                self._load_catalog()
            except DatasetError as err:
                report.problems.append(str(err))
        return report


@dataclass
class Verification:
    """What `Dataset.verify` found.

    Attributes
    ----------
    full : whether every file was read (``galexplore info --verify``).
    files : files the manifest lists (chunks and catalogue parts).
    with_checksum : how many of them have a SHA-256 in the manifest.
    problems : one message per damaged, missing or unreadable file; empty when all is well.
    """

    full: bool
    files: int = 0
    with_checksum: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        """A few lines for `galexplore info`: the verdict, what was checked, each problem."""
        if self.with_checksum == 0:
            sums = "no checksums recorded (the manifest predates them)"
        elif self.with_checksum < self.files:
            sums = f"checksums recorded for {self.with_checksum} of {self.files} files"
        else:
            sums = f"checksums recorded for all {self.files} files"
        how = (("every file read and decoded" + (", checksums compared" if self.with_checksum else ""))
               if self.full else
               "quick check: files present, raw chunk sizes, checksums of compact chunks and "
               "catalogue (--verify reads and decodes everything)")
        head = f"verify: {'OK' if self.ok else f'{len(self.problems)} problem(s)'}; {how}; {sums}"
        return "\n".join([head] + [f"  - {p}" for p in self.problems])


def open_dataset(path: str | os.PathLike) -> Dataset:
    """Open a dataset directory lazily: reads the manifest only (no maps, no catalogue rows)."""
    path = Path(path)
    return Dataset(path, _read_manifest(path))


def _lock_for_writing(path: Path, timeout: float) -> FileLock:
    """Take the writer lock of the dataset at ``path`` (see the module docstring)."""
    lock = FileLock(path.parent / f".{path.name}.lock", timeout=timeout, thread_local=False)
    try:
        lock.acquire()
    except Timeout:
        raise DatasetError(f"another process is writing dataset {path} (this one waited {timeout:g} s for "
                           "it); try again when it has finished, or pass a longer lock_timeout.") from None
    except OSError as err:
        raise DatasetError(f"cannot lock dataset {path} for writing ({err}); the directory "
                           f"{path.parent} must be writable.") from err
    return lock


def _sweep_dead_writers(path: Path) -> None:
    """Remove what dead writers of ``path`` left beside it; call only while holding its lock.

    A writer holds the lock for as long as its ``.partial`` folder exists, so one found now
    belongs to a writer that is gone. A ``.replaced`` folder without a dataset at ``path``
    means a writer died between moving the old dataset aside and the new one in: the old one
    is moved back.
    """
    leftovers = [(entry, match["kind"]) for entry in path.parent.iterdir()
                 if (match := _LEFTOVER.fullmatch(entry.name)) and match["name"] == path.name]
    replaced = [entry for entry, kind in leftovers if kind == "replaced"]
    if replaced and not path.exists():
        newest = max(replaced, key=lambda e: e.lstat().st_mtime_ns)
        os.replace(newest, path)
        leftovers = [(e, k) for e, k in leftovers if e != newest]
    for entry, _ in leftovers:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def create_dataset(path: str | os.PathLike, channels, units: dict[str, str], *, map_size: int = 64,
                   storage: str = "float32", provenance: dict | None = None,
                   overwrite: bool = False, chunk_maps: int | None = None,
                   quantisation: dict[str, dict] | None = None,
                   lock_timeout: float = LOCK_TIMEOUT_S) -> DatasetWriter:
    """Start writing a new dataset; it appears at ``path`` only when the writer is closed.

    Parameters
    ----------
    path : dataset directory to create.
    channels : channel names in store order, e.g. ``["mom0", "mom1", "mom2", "env"]``.
    units : unit of every channel, e.g. ``{"mom1": "km/s"}``.
    map_size : H = W of the maps in pixels.
    storage : "float32", "float16" or "compact" (see `galexplore.data.mapstore`).
    provenance : JSON-serialisable dict (generator, generator_version, parameters, seed,
        source files).
    overwrite : replace an existing dataset at ``path`` (on close).
    chunk_maps : maps per chunk file (default: 128 for compact, ~32 MiB files for raw).
    quantisation : compact storage only: per channel ``{"mode": "absolute"|"relative",
        "step": float}`` overriding the defaults of `mapstore.default_quantisation`.
    lock_timeout : seconds to wait for another writer of ``path`` before a DatasetError.
    """
    path = Path(path).resolve()
    channels = list(channels)
    if storage not in STORAGE_KINDS:
        raise DatasetError(f"unknown storage kind {storage!r}; use one of {', '.join(STORAGE_KINDS)}.")
    if not channels or len(set(channels)) != len(channels):
        raise DatasetError(f"channels must be distinct names, got {channels}.")
    missing = [c for c in channels if c not in units]
    if missing:
        raise DatasetError(f"no unit given for channel(s) {missing}; pass units={{name: unit}}.")
    map_shape = (len(channels), int(map_size), int(map_size))
    quant = None
    if storage == "compact":
        quant = [dict((quantisation or {}).get(c) or default_quantisation(units[c])) for c in channels]
        for c, spec in zip(channels, quant):
            if spec.get("mode") not in ("absolute", "relative") or not spec.get("step", 0) > 0:
                raise DatasetError(f"quantisation of channel {c!r} must be {{'mode': 'absolute' or "
                                   f"'relative', 'step': > 0}}, got {spec}.")
    try:
        json.dumps(provenance or {})
    except TypeError as err:
        raise DatasetError(f"provenance must be JSON-serialisable ({err}).") from err
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "n_maps": 0,
        "map_shape": list(map_shape),
        "channels": [{"name": c, "unit": units[c]} for c in channels],
        "storage": {"kind": storage,
                    "chunk_maps": int(chunk_maps or default_chunk_maps(storage, map_shape)),
                    "quantisation": quant, **({"codec": COMPACT_CODEC} if storage == "compact" else {})},
        "chunks": [],
        "catalog_parts": [],
        "provenance": provenance or {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = _lock_for_writing(path, lock_timeout)
    try:
        _sweep_dead_writers(path)
        if path.exists() and not overwrite:
            raise DatasetError(f"{path} already exists; pass overwrite=True to replace it, or use "
                               "append_to_dataset to add maps.")
        work = path.parent / f".{path.name}.partial-{uuid.uuid4().hex}"
        (work / MAPS_DIR).mkdir(parents=True)
        (work / CATALOG_DIR).mkdir()
    except BaseException:
        lock.release()
        raise
    return DatasetWriter(path, work, manifest, lock=lock, existing_ids=set(), existing_units=None)


def append_to_dataset(path: str | os.PathLike, lock_timeout: float = LOCK_TIMEOUT_S) -> DatasetWriter:
    """Start appending maps to an existing dataset; committed on close (manifest replace).

    Waits up to ``lock_timeout`` seconds for another writer of the dataset, then reads the
    manifest: the maps and ids appended are checked against the dataset as it is then.
    """
    path = Path(path).resolve()
    if not path.is_dir() and not (path.parent.is_dir() and any(path.parent.glob(f".{path.name}.replaced-*"))):
        open_dataset(path)  # raises the DatasetError that says what is missing
    lock = _lock_for_writing(path, lock_timeout)
    try:
        _sweep_dead_writers(path)
        committed = (path / MANIFEST).read_bytes() if (path / MANIFEST).is_file() else b""
        ds = open_dataset(path)
        manifest = ds.manifest
        listed = {MANIFEST} | {c["file"] for c in manifest["chunks"]} | {
            p["file"] for p in manifest["catalog_parts"]}
        for sub in (MAPS_DIR, CATALOG_DIR):  # files of dead writers: no live writer can hold any now
            for f in (path / sub).iterdir() if (path / sub).is_dir() else ():
                if f"{sub}/{f.name}" not in listed and not f.is_dir():
                    f.unlink()
        for f in path.glob(f".{MANIFEST}.*.tmp"):
            f.unlink()
        ids = set(ds.catalog["id"].tolist()) if len(ds) else set()
        units = ds.column_units if manifest["catalog_parts"] else None
        columns = list(ds.catalog.columns) if manifest["catalog_parts"] else None
    except BaseException:
        lock.release()
        raise
    return DatasetWriter(path, path, manifest, lock=lock, existing_ids=ids, existing_units=units,
                         existing_columns=columns, committed_manifest=committed)


class DatasetWriter:
    """Buffers appended maps and rows into chunk and part files; `close` commits them.

    Use as a context manager: the dataset is committed when the block ends normally and
    left untouched (new files removed) when it raises.
    """

    def __init__(self, final: Path, work: Path, manifest: dict, *, lock: FileLock, existing_ids: set,
                 existing_units: dict[str, str] | None,
                 existing_columns: list[str] | None = None, committed_manifest: bytes | None = None) -> None:
        self._final = final
        self._work = work
        self._lock = lock
        self._committed_manifest = committed_manifest
        self._manifest = manifest
        self._ids = existing_ids
        self._units = dict(existing_units or {})
        self._columns = existing_columns
        self._map_shape = tuple(manifest["map_shape"])
        self._channels = [c["name"] for c in manifest["channels"]]
        self._storage = manifest["storage"]
        self._chunk_maps = int(self._storage["chunk_maps"])
        self._n = int(manifest["n_maps"])  # maps accepted so far (committed + buffered)
        self._flushed_maps = self._n
        self._flushed_rows = self._n
        self._map_buffer: list[np.ndarray] = []
        self._row_buffer: list[pd.DataFrame] = []
        self._new_files: list[Path] = []
        self._closed = False

    @property
    def n_maps(self) -> int:
        """Maps in the dataset once this writer commits."""
        return self._n

    @property
    def storage(self) -> dict:
        """The manifest's storage entry (kind, chunk_maps, quantisation, codec): what
        `mapstore.encode_chunk_for` needs to encode chunks for `append_encoded`."""
        return json.loads(json.dumps(self._storage))

    def append(self, maps: np.ndarray, catalog: pd.DataFrame,
               column_units: dict[str, str] | None = None) -> None:
        """Add n maps (n, C, H, W; physical units, NaN blank) and their n catalogue rows."""
        if self._closed:
            raise DatasetError("this dataset writer is closed; open a new one with append_to_dataset.")
        maps = np.asarray(maps)
        if maps.ndim != 4 or maps.shape[1:] != self._map_shape:
            raise DatasetError(
                f"maps have shape {maps.shape}, but this dataset stores (n, {', '.join(map(str, self._map_shape))}) "
                f"(channels {', '.join(self._channels)}); select/reorder channels and resize the maps.")
        if not isinstance(catalog, pd.DataFrame) or len(catalog) != len(maps):
            raise DatasetError(f"got {len(maps)} maps but a catalogue of "
                               f"{len(catalog) if hasattr(catalog, '__len__') else '?'} rows; pass one "
                               "row per map as a pandas DataFrame.")
        catalog = self._accept_rows(catalog, column_units)
        if self._storage["kind"] == "compact":  # refuse unstorable maps now, not at flush
            quantise(maps, self._storage["quantisation"], self._channels)
        self._commit_rows(catalog, column_units)
        self._map_buffer.append(np.asarray(maps, dtype=np.float32))
        self._n += len(maps)
        self._flush(final=False)

    def append_encoded(self, data: bytes, n_maps: int, catalog: pd.DataFrame,
                       column_units: dict[str, str] | None = None) -> None:
        """Add one chunk file of ``n_maps`` maps that `mapstore.encode_chunk` already encoded with
        this dataset's storage (in a worker process, say), and their ``n_maps`` catalogue rows.

        Maps given to `append` before must fill whole chunks (they are written first).
        """
        if self._closed:
            raise DatasetError("this dataset writer is closed; open a new one with append_to_dataset.")
        if self._map_buffer:
            raise DatasetError(f"append_encoded adds whole chunk files, but {sum(map(len, self._map_buffer))} "
                               f"maps appended before it do not fill a chunk of {self._chunk_maps}; append "
                               "them as encoded chunks too.")
        if not isinstance(catalog, pd.DataFrame) or len(catalog) != n_maps:
            raise DatasetError(f"got a chunk of {n_maps} maps but a catalogue of "
                               f"{len(catalog) if hasattr(catalog, '__len__') else '?'} rows; pass one "
                               "row per map as a pandas DataFrame.")
        check_encoded_chunk(data, n_maps, self._storage, self._map_shape)
        catalog = self._accept_rows(catalog, column_units)
        self._write_encoded_chunk(data, n_maps)
        self._commit_rows(catalog, column_units)
        self._n += n_maps
        self._flush(final=False)

    def _accept_rows(self, catalog: pd.DataFrame, column_units: dict[str, str] | None) -> pd.DataFrame:
        """The rows in the dataset's column order, after checking ids, columns and units."""
        catalog = self._check_catalog(catalog.reset_index(drop=True))
        for name, unit in (column_units or {}).items():
            if name not in catalog.columns:
                raise DatasetError(f"column_units names {name!r}, which is not a catalogue column.")
            if self._units.get(name) and self._units[name] != unit:
                raise DatasetError(f"column {name!r} already has unit {self._units[name]!r}, not "
                                   f"{unit!r}; convert the values to {self._units[name]!r}.")
        return catalog

    def _commit_rows(self, catalog: pd.DataFrame, column_units: dict[str, str] | None) -> None:
        self._columns = list(catalog.columns)
        self._units.update(column_units or {})
        self._ids.update(catalog["id"].tolist())
        self._row_buffer.append(catalog)

    def _check_catalog(self, catalog: pd.DataFrame) -> pd.DataFrame:
        if "id" not in catalog.columns:
            raise DatasetError("the catalogue has no 'id' column; add a unique int64 id per map.")
        ids = catalog["id"]
        if not pd.api.types.is_integer_dtype(ids):
            raise DatasetError(f"catalogue column 'id' has dtype {ids.dtype}; ids must be integers.")
        catalog = catalog.assign(id=ids.astype(np.int64))
        dup = catalog["id"][catalog["id"].duplicated()].tolist()
        dup += [i for i in catalog["id"].tolist() if i in self._ids]
        if dup:
            raise DatasetError(f"duplicate catalogue ids, e.g. {sorted(set(dup))[:5]}; every map needs "
                               "a unique id.")
        if self._columns is None:
            return catalog
        if set(catalog.columns) != set(self._columns):
            missing = sorted(set(self._columns) - set(catalog.columns))
            extra = sorted(set(catalog.columns) - set(self._columns))
            raise DatasetError(f"catalogue columns differ from the dataset's: missing {missing}, "
                               f"extra {extra}; every part must have the same columns.")
        return catalog[self._columns]

    def _flush(self, final: bool) -> None:
        buffered = sum(len(m) for m in self._map_buffer)
        if buffered >= self._chunk_maps or (final and buffered):
            maps = np.concatenate(self._map_buffer)
            cut = len(maps) if final else len(maps) - len(maps) % self._chunk_maps
            for lo in range(0, cut, self._chunk_maps):
                self._write_chunk(maps[lo:lo + self._chunk_maps])
            self._map_buffer = [maps[cut:]] if cut < len(maps) else []
        rows = sum(len(r) for r in self._row_buffer)
        if rows >= CATALOG_PART_ROWS or (final and rows):
            self._write_part(pd.concat(self._row_buffer, ignore_index=True))
            self._row_buffer = []

    def _write_chunk(self, maps: np.ndarray) -> None:
        self._write_encoded_chunk(encode_chunk_for(maps, self._storage, self._channels), len(maps))

    def _write_encoded_chunk(self, data: bytes, n_maps: int) -> None:
        start = self._flushed_maps
        name = f"{MAPS_DIR}/chunk-{start:010d}{chunk_suffix(self._storage)}"
        path = self._work / name
        _fsync_write(path, data, exclusive=True)
        self._new_files.append(path)
        self._manifest["chunks"].append({"file": name, "start": start, "n_maps": n_maps,
                                         CHECKSUM_KEY: _sha256(data)})
        self._flushed_maps += n_maps

    def _write_part(self, rows: pd.DataFrame) -> None:
        start = self._flushed_rows
        name = f"{CATALOG_DIR}/part-{start:010d}.parquet"
        table = pa.Table.from_pandas(rows, preserve_index=False)
        fields = [f.with_metadata({b"unit": self._units[f.name].encode()}) if self._units.get(f.name)
                  else f for f in table.schema]
        table = table.cast(pa.schema(fields, metadata=table.schema.metadata))
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        data = sink.getvalue().to_pybytes()
        path = self._work / name
        _fsync_write(path, data, exclusive=True)
        self._new_files.append(path)
        self._manifest["catalog_parts"].append({"file": name, "start": start, "n_rows": len(rows),
                                                CHECKSUM_KEY: _sha256(data)})
        self._flushed_rows += len(rows)

    def close(self) -> None:
        """Write the remaining buffers and commit (atomic rename or manifest replace)."""
        if self._closed:
            return
        try:
            self._flush(final=True)
            self._manifest["n_maps"] = self._n
            if self._committed_manifest is not None:
                self._check_unchanged()
            _write_manifest(self._work, self._manifest)
            if self._work != self._final:
                self._move_into_place()
        except BaseException:
            self.abort()
            raise
        self._closed = True
        self._lock.release()

    def _check_unchanged(self) -> None:
        """Refuse to commit an append over a manifest that another (lock-less) writer replaced."""
        file = self._final / MANIFEST
        if not file.is_file() or file.read_bytes() != self._committed_manifest:
            raise DatasetError(f"{self._final} was changed by another program while this append was "
                               "running (its manifest is not the one this writer started from), so this "
                               "append was discarded; append again.")

    def _move_into_place(self) -> None:
        old = None
        if self._final.exists():
            old = self._final.parent / f".{self._final.name}.replaced-{uuid.uuid4().hex}"
            os.replace(self._final, old)
        try:
            os.replace(self._work, self._final)
        except BaseException:
            if old is not None:  # put the old dataset back (a kill here is undone by the next writer)
                os.replace(old, self._final)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        """Discard everything written by this writer; the dataset stays as it was."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._work != self._final:
                shutil.rmtree(self._work, ignore_errors=True)
            else:
                for f in self._new_files:
                    f.unlink(missing_ok=True)
        finally:
            self._lock.release()

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def describe(dataset: Dataset) -> str:
    """Human-readable summary for `galexplore info`: counts, channels, storage, columns, provenance."""
    cat = dataset.catalog
    units = dataset.column_units
    c, h, w = dataset.map_shape
    m = dataset.manifest
    lines = [f"dataset {dataset.path}",
             f"  maps: {len(dataset)} x {c} x {h} x {w}"
             + (f", galaxies: {cat['galaxy_id'].nunique()}" if "galaxy_id" in cat else ""),
             "  channels: " + ", ".join(f"{ch} [{dataset.units[ch]}]" for ch in dataset.channels),
             f"  storage: {dataset.storage}, {len(m['chunks'])} chunk file(s) of up to "
             f"{m['storage']['chunk_maps']} maps, {len(m['catalog_parts'])} catalogue part(s), "
             f"{dataset.disk_bytes() / 1e6:.2f} MB on disk",
             f"  fingerprint: {dataset.fingerprint[:16]}"]
    listed = m["chunks"] + m["catalog_parts"]
    summed = sum(CHECKSUM_KEY in e for e in listed)
    lines.append("  checksums: " + (f"SHA-256 of all {len(listed)} files" if summed == len(listed)
                                    else f"SHA-256 of {summed} of {len(listed)} files" if summed
                                    else "none (written before galexplore recorded checksums)"))
    if m["storage"]["quantisation"]:
        lines.append("  quantisation: " + ", ".join(
            f"{ch} {q['mode']} step {q['step']:g}" for ch, q in zip(dataset.channels, m["storage"]["quantisation"])))
    lines.append(f"catalogue: {len(cat.columns)} columns")
    width = max([len(str(col)) for col in cat.columns] + [6])
    lines.append(f"  {'column':<{width}}  {'unit':<14} {'dtype':<8} {'min':>12} {'max':>12} {'NaN':>7}")
    for col in cat.columns:
        s = cat[col]
        if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s) and s.notna().any():
            lo, hi = f"{s.min():.6g}", f"{s.max():.6g}"
        else:
            lo = hi = "-"
        lines.append(f"  {col:<{width}}  {units.get(col, '') or '-':<14} {str(s.dtype):<8} {lo:>12} "
                     f"{hi:>12} {int(s.isna().sum()):>7}")
    lines.append("provenance:")
    prov = dataset.provenance
    if not prov:
        lines.append("  (none recorded)")
    for key, value in prov.items():
        if isinstance(value, list) and len(value) > 5:
            text = json.dumps(value[:3])[:-1] + f", ... ({len(value)} in all)]"
        else:
            text = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
        lines.append(f"  {key}: {text}")
    return "\n".join(lines)
