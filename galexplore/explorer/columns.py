"""The explorer's table: a dataset's catalogue beside a model's embedding (row i <-> map i),
each column read when first asked for.

At 10^7 maps the sample's 48 catalogue columns (float64) and 13 embedding columns take
4.4 GB, while the map needs two float32 coordinates and the column it is coloured by. A
`ColumnTable` therefore reads only the ids when it is made (to match the catalogue with
the embedding); `column` reads one column from the catalogue's Parquet parts or the
embedding's cache file, and `frame` gives a DataFrame of some columns and rows (what
exports, statistics and the detail view use).

Columns are held as stored: the embedding's float32 (`galexplore embed` writes float32)
and the catalogue's own types (float64 and int64 in the sample). Filters, statistics,
fits and exports therefore see exactly the catalogue's values, and an export of a
selection carries every column at full precision. A catalogue column costs its stored
width (8 bytes a row, 80 MB at 10^7); columns read stay in memory, the least recently used
released first once they hold more than `MAX_HELD_BYTES` (an array a view still uses
lives on with it; the next `column` call reads it again).

Columns a session adds (a boundary's predictions) live in a derived table
(`with_columns`) that shares the columns read so far with the one it comes from.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa

from galexplore.errors import ColumnError, DatasetError

#: Bytes of columns read from disk that a table (and those derived from it) keeps in memory.
MAX_HELD_BYTES = 768 * 2**20


class _Held:
    """Columns read from disk, least recently used first; shared by a table and its derived ones."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._arrays: OrderedDict[str, np.ndarray | pd.api.extensions.ExtensionArray] = OrderedDict()
        self._lock = threading.Lock()
        self._reading: dict[str, threading.Lock] = {}

    def get(self, name: str, read: Callable[[], object]):
        with self._lock:
            if name in self._arrays:
                self._arrays.move_to_end(name)
                return self._arrays[name]
            reading = self._reading.setdefault(name, threading.Lock())
        with reading:  # one thread reads a column; the others wait for it
            with self._lock:
                if name in self._arrays:
                    return self._arrays[name]
            values = read()
            with self._lock:
                self._arrays[name] = values
                self._reading.pop(name, None)
                total = sum(v.nbytes for v in self._arrays.values())
                while total > self.max_bytes and len(self._arrays) > 1:
                    _, dropped = self._arrays.popitem(last=False)
                    total -= dropped.nbytes
            return values

    def names(self) -> list[str]:
        with self._lock:
            return list(self._arrays)


def _read_only(values):
    if isinstance(values, np.ndarray):
        values.flags.writeable = False
    return values


def _is_numeric(arrow_type: pa.DataType) -> bool:
    return pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type)


class ColumnTable:
    """A dataset's catalogue joined with an embedding on ``id``, in the catalogue's row order.

    Parameters
    ----------
    dataset : the opened `Dataset` (catalogue columns come from its Parquet parts).
    embedding : the `galexplore.analysis.embed.Embedding` (its columns come from its cache
        file, or from memory when it was just computed); its columns that the catalogue
        also has are left out.
    max_held_bytes : see `MAX_HELD_BYTES`.

    Raises
    ------
    DatasetError : when the catalogue's ids are not unique or the embedding's ids are not the
        catalogue's (a stale embedding: recompute it).
    """

    def __init__(self, dataset, embedding, max_held_bytes: int = MAX_HELD_BYTES):
        self._held = _Held(max_held_bytes)
        self._added: dict[str, np.ndarray] = {}
        self._dataset, self._embedding = dataset, embedding
        self._types = {field.name: field.type for field in dataset.catalog_schema}
        self._catalogue = set(self._types)
        ids = self._held.get("id", lambda: self._read("id"))
        self.n_rows = len(ids)
        if not (np.all(ids[1:] > ids[:-1]) or np.unique(ids).size == ids.size):
            raise DatasetError(f"the catalogue of {dataset.path} has duplicate ids; regenerate the dataset.")
        self._order = self._embedding_order(ids, embedding.column("id"))
        self._types.update({f.name: f.type for f in embedding.schema if f.name not in self._catalogue})
        self.names: list[str] = list(self._types)

    @staticmethod
    def _embedding_order(ids: np.ndarray, embedded: np.ndarray) -> np.ndarray | None:
        """Embedding row of each catalogue row (None when the rows are in the same order)."""
        if len(embedded) == len(ids) and np.array_equal(embedded, ids):
            return None
        sorter = np.argsort(embedded, kind="stable")
        at = np.searchsorted(embedded, ids, sorter=sorter).clip(0, max(len(embedded) - 1, 0))
        order = sorter[at] if len(embedded) else at
        if len(embedded) != len(ids) or not np.array_equal(embedded[order], ids):
            raise DatasetError("the catalogue and the embedding do not match one to one on `id`; "
                               "recompute the embedding with `galexplore embed MODEL DATASET --force`")
        return order

    def __len__(self) -> int:
        return self.n_rows

    def __contains__(self, name: str) -> bool:
        return name in self._types

    def is_numeric(self, name: str) -> bool:
        """Whether a column holds numbers (integers or floats; not booleans, not text)."""
        return _is_numeric(self._types[name])

    def column(self, name: str) -> np.ndarray:
        """Every row of one column (read-only), read on first use; as stored (see the module
        docstring). ColumnError for an unknown column."""
        values = self._values(name)
        return values if isinstance(values, np.ndarray) else values.to_numpy()

    def _values(self, name: str):
        """The stored values: a NumPy array, or a pandas array for text."""
        if name not in self._types:
            raise ColumnError(f"unknown column {name!r}; the table has {', '.join(self.names)}")
        if name in self._added:
            return self._added[name]
        return self._held.get(name, lambda: self._read(name))

    def _read(self, name: str):
        if name in self._catalogue:
            values = self._dataset.read_catalog([name])[name]
        else:
            values = self._embedding.column(name)
            values = values if self._order is None else values[self._order]
        if isinstance(values, pd.Series):
            values = values.to_numpy() if isinstance(values.dtype, np.dtype) else values.array
        return _read_only(values)

    def frame(self, columns: list[str] | None = None, rows: np.ndarray | None = None) -> pd.DataFrame:
        """A DataFrame of ``columns`` (default: every column, in order) at ``rows`` (default:
        every row), indexed 0..n-1; columns not read yet are read."""
        columns = self.names if columns is None else list(columns)
        picked = None if rows is None else np.asarray(rows)
        data = {}
        for name in columns:
            values = self._values(name)
            data[name] = values if picked is None else values[picked]
        return pd.DataFrame(data, columns=columns)

    def row(self, row: int) -> dict[str, object]:
        """Every column's value at one row: from the columns in memory, the others read from
        their files without loading them whole (the detail of one galaxy)."""
        values, missing = {}, []
        for name in self.names:
            if name in self._added:
                values[name] = self._added[name][row]
            elif name in self._held.names():
                values[name] = self._values(name)[row]
            else:
                missing.append(name)
        catalogue = [c for c in missing if c in self._catalogue]
        embedded = [c for c in missing if c not in self._catalogue]
        if catalogue:
            values.update(self._dataset.read_catalog_row(int(row), catalogue))
        if embedded:
            values.update(self._embedding.row(int(row if self._order is None else self._order[row]), embedded))
        return {name: values[name] for name in self.names}

    def held(self) -> list[str]:
        """Names of the columns read from disk and kept (least recently used first)."""
        return self._held.names()

    def with_columns(self, columns: dict[str, np.ndarray], drop: tuple[str, ...] = ()) -> ColumnTable:
        """A table with ``columns`` added (or replacing columns of that name) and ``drop``
        removed; it shares the columns read so far with this one."""
        derived = object.__new__(ColumnTable)
        derived.__dict__.update(self.__dict__)
        derived._types = {n: t for n, t in self._types.items() if n not in drop}
        derived._added = {n: v for n, v in self._added.items() if n not in drop}
        for name, values in columns.items():
            values = np.asarray(values)
            if values.shape != (self.n_rows,):
                raise ColumnError(f"column {name!r} has shape {values.shape}; the table has {self.n_rows} rows")
            derived._types[name] = pa.from_numpy_dtype(values.dtype) if values.dtype != object else pa.string()
            derived._added[name] = _read_only(values.copy())
        derived.names = list(derived._types)
        return derived

    @classmethod
    def from_frame(cls, table: pd.DataFrame) -> ColumnTable:
        """A table of columns already in memory (a table-only bundle, e.g. in benchmarks)."""
        empty = object.__new__(ColumnTable)
        empty._held, empty.n_rows, empty._dataset, empty._embedding, empty._order = _Held(MAX_HELD_BYTES), len(table), \
            None, None, None
        empty._types, empty._catalogue, empty._added, empty.names = {}, set(), {}, []
        return empty.with_columns({c: table[c].to_numpy() for c in table.columns})
