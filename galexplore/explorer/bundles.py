"""What one (dataset, model) pair gives the explorer, built once per server process and shared.

A `Bundle` holds the dataset, the model (its card at once, its weights when first needed),
the catalogue joined with the embedding as a `ColumnTable` (each column read when first
used), the units of every column, the `LatentProjector` and lazily built indices (one
`PointIndex` per projection, extents, column ranges). It is read-only: a session that adds
columns (a boundary's predictions) gets a derived bundle that shares the indices and the
columns read, never a modified shared one.

`BundleCache` builds each pair once, however many sessions ask at the same time, and keeps
at most `MAX_BUNDLES` of them (least recently used first out).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from galexplore.errors import ColumnError, ParameterError
from galexplore.explorer.columns import ColumnTable

#: Bundles a server process keeps; sessions hold theirs for as long as they show them.
MAX_BUNDLES = 4
#: How many latent dimensions get pairwise projections in the sidebar (d*(d-1)/2 pairs).
MAX_LATENT_PAIRS_DIMS = 6
#: Unit shown for latent, PCA, folded and UMAP coordinates (they have no physical unit).
LATENT_UNIT = "latent units"
#: Rows per block of the exact latent-neighbour scan (8 MB of float64 distances).
NEIGHBOUR_BLOCK_ROWS = 1 << 20


def latent_columns(table: pd.DataFrame | list[str]) -> list[str]:
    """The ``latent_<k>`` columns of an embedding table (or of a list of names), in order of k."""
    columns = table.columns if isinstance(table, pd.DataFrame) else table
    return sorted((c for c in columns if c.startswith("latent_") and c[7:].isdigit()), key=lambda c: int(c[7:]))


def projection_options(columns) -> dict[str, tuple[str, str]]:
    """Projections available for an embedding table: label -> (x column, y column).

    The folded (r, h) space of Dawson et al. (2020), pairs of PCA components, UMAP and
    pairs of latent dimensions, each only where its columns exist.
    """
    columns = list(columns)
    present = set(columns)
    options: dict[str, tuple[str, str]] = {}
    if {"folded_r", "folded_h"} <= present:
        options["folded (r, h)"] = ("folded_r", "folded_h")
    pca = sorted((c for c in columns if c.startswith("pca_") and c[4:].isdigit()), key=lambda c: int(c[4:]))
    for i in range(min(len(pca), 3)):
        for j in range(i + 1, min(len(pca), 3)):
            options[f"PCA {i} vs {j}"] = (pca[i], pca[j])
    if {"umap_0", "umap_1"} <= present:
        options["UMAP"] = ("umap_0", "umap_1")
    latent = latent_columns(columns)
    for i in range(min(len(latent), MAX_LATENT_PAIRS_DIMS)):
        for j in range(i + 1, min(len(latent), MAX_LATENT_PAIRS_DIMS)):
            options[f"latent {i} vs {j}"] = (latent[i], latent[j])
    return options


class ModelHandle:
    """A checkpoint as the explorer uses it: the card read at once, the weights loaded into
    torch (and the card's checksum verified) the first time `loaded` is called.

    Parameters
    ----------
    path : checkpoint directory or zoo name.
    """

    def __init__(self, path: str | os.PathLike):
        from galexplore.models.checkpoint import read_card
        from galexplore.models.zoo import resolve_model

        self.path = resolve_model(str(path))
        self.card = read_card(self.path)
        self._loaded = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def is_loaded(self) -> bool:
        return self._loaded is not None

    def loaded(self):
        """The `galexplore.analysis.embed.LoadedModel` (weights in torch, checksum verified);
        loaded once, on the first call, by whichever thread calls first."""
        with self._lock:
            if self._loaded is None:
                from galexplore.analysis.embed import LoadedModel

                self._loaded = LoadedModel(self.path)
            return self._loaded

    @property
    def hash(self) -> str:
        """`ModelCard.model_hash` of the weights and card (provenance of exports)."""
        return self.loaded().hash


class _Indices:
    """Lazily built, thread-safe spatial indices of one table's rows."""

    def __init__(self):
        self._built: dict = {}
        self._lock = threading.Lock()

    def get(self, key, build: Callable):
        with self._lock:
            if key not in self._built:
                self._built[key] = build()
            return self._built[key]


@dataclass(frozen=True, eq=False)
class Bundle:
    """A dataset, a model and their joined catalogue + embedding table (row i <-> map i).

    Attributes
    ----------
    dataset : the opened `Dataset` (None for a table-only bundle, e.g. benchmarks).
    model : the `ModelHandle` (or None).
    table : the `ColumnTable` of the catalogue joined with the embedding on ``id`` (row order
        of the catalogue); a DataFrame given here (a table-only bundle) becomes one.
    column_units : unit of each column ('' when it has none).
    projector : the `LatentProjector` of the embedding (None for a table-only bundle).
    """

    dataset: object | None
    model: ModelHandle | None
    table: ColumnTable = field(repr=False)
    column_units: dict[str, str] = field(repr=False)
    projector: object | None = None
    _indices: _Indices = field(default_factory=_Indices, repr=False)

    def __post_init__(self):
        if isinstance(self.table, pd.DataFrame):
            object.__setattr__(self, "table", ColumnTable.from_frame(self.table))

    @property
    def columns(self) -> list[str]:
        """Every column's name: the catalogue's, then the embedding's."""
        return self.table.names

    def column(self, name: str) -> np.ndarray:
        """Every row of one column (read-only; read on first use, as stored)."""
        return self.table.column(name)

    def frame(self, columns: list[str] | None = None, rows: np.ndarray | None = None) -> pd.DataFrame:
        """A DataFrame of ``columns`` (default: all) at ``rows`` (default: all), indexed 0..n-1."""
        return self.table.frame(columns, rows)

    @cached_property
    def projections(self) -> dict[str, tuple[str, str]]:
        return projection_options(self.columns)

    @cached_property
    def numeric_columns(self) -> list[str]:
        """Columns that can colour the map or be filtered on (numeric, not boolean)."""
        return [c for c in self.columns if self.table.is_numeric(c)]

    @property
    def n_maps(self) -> int:
        return len(self.table)

    @cached_property
    def n_galaxies(self) -> int:
        """Distinct galaxies (``galaxy_id``); every map is its own galaxy without that column."""
        if "galaxy_id" not in self.table:
            return self.n_maps
        values = self.column("galaxy_id")
        if np.issubdtype(values.dtype, np.integer):
            return int(np.unique(values).size)  # a sorted copy: less memory than a hash table of 10^7 ids
        return int(pd.Series(values, copy=False).nunique())

    @property
    def kappa_threshold(self) -> float:
        """Kappa above which a galaxy counts as rotating: the model card's, else 0.5."""
        from galexplore.analysis.projections import DEFAULT_KAPPA_THRESHOLD

        return self.projector.kappa_threshold_ if self.projector is not None else DEFAULT_KAPPA_THRESHOLD

    @property
    def boundary_r(self) -> float | None:
        """Folded radius of the model's kappa boundary, or None."""
        return None if self.projector is None else self.projector.boundary_r

    @property
    def name(self) -> str:
        """The model's name, or "table" for a table-only bundle."""
        return self.model.name if self.model is not None else "table"

    def unit(self, column: str) -> str:
        return self.column_units.get(column, "")

    def label(self, column: str) -> str:
        """'column [unit]', or the bare name for a column without a unit."""
        unit = self.unit(column)
        return f"{column} [{unit}]" if unit else column

    def axes(self, projection: str) -> tuple[str, str]:
        """(x column, y column) of a projection (ColumnError for an unknown one)."""
        try:
            return self.projections[projection]
        except KeyError:
            raise ColumnError(f"unknown projection {projection!r}; available: {', '.join(self.projections)}") from None

    def xy(self, projection: str) -> tuple[np.ndarray, np.ndarray]:
        """The two coordinates of every row in a projection (as stored: float32 for embeddings)."""
        xcol, ycol = self.axes(projection)
        return self.column(xcol), self.column(ycol)

    def extent(self, projection: str) -> tuple[tuple[float, float], tuple[float, float]]:
        """The finite data range of a projection, padded by 3 % on each side."""
        def padded(values: np.ndarray) -> tuple[float, float]:
            finite = values[np.isfinite(values)]
            if finite.size == 0:
                return (0.0, 1.0)
            lo, hi = float(finite.min()), float(finite.max())
            pad = 0.03 * (hi - lo) if hi > lo else 0.5
            return (lo - pad, hi + pad)

        return self._indices.get(("extent", projection), lambda: tuple(map(padded, self.xy(projection))))

    def point_index(self, projection: str):
        """The `PointIndex` of a projection, built on first use and shared."""
        from galexplore.analysis.selection import PointIndex

        return self._indices.get(("points", projection), lambda: PointIndex(*self.xy(projection)))

    def neighbours_of_latent(self, z: np.ndarray, k: int) -> np.ndarray:
        """Row indices (n, k) of the k nearest galaxies in latent space (Euclidean) to each row
        of ``z``, nearest first (equal distances: lower row first).

        An exact scan of the latent columns in blocks of `NEIGHBOUR_BLOCK_ROWS` rows, so that
        no index is held beside them (a tree over 10^7 latent vectors takes 320 MB); one
        query of 10^7 rows with 3 latents takes about 0.1 s.
        """
        latents = [self.column(c) for c in latent_columns(self.columns)]
        z = np.atleast_2d(np.asarray(z, dtype=np.float64))
        k = min(int(k), self.n_maps)
        out = np.empty((len(z), k), dtype=np.int64)
        for i, query in enumerate(z):
            rows, distances = [], []
            for start in range(0, self.n_maps, NEIGHBOUR_BLOCK_ROWS):
                d2 = np.zeros(min(NEIGHBOUR_BLOCK_ROWS, self.n_maps - start))
                for values, q in zip(latents, query):
                    d2 += np.square(values[start:start + d2.size].astype(np.float64) - q)
                best = np.argpartition(d2, k - 1)[:k] if d2.size > k else np.arange(d2.size)
                rows.append(best + start)
                distances.append(d2[best])
            rows, distances = np.concatenate(rows), np.concatenate(distances)
            out[i] = rows[np.lexsort((rows, distances))[:k]]
        return out

    def column_summary(self, column: str) -> tuple[float, float] | None:
        """(min, max) of a column's finite values (None when it has none); cached."""
        def build():
            values = np.asarray(self.column(column), dtype=np.float64)
            values = values[np.isfinite(values)]
            return (float(values.min()), float(values.max())) if values.size else None

        return self._indices.get(("summary", column), build)

    def with_columns(self, columns: dict[str, np.ndarray], units: dict[str, str] | None = None,
                     drop: tuple[str, ...] = ()) -> Bundle:
        """A bundle whose table has ``columns`` added or replaced and ``drop`` removed; the
        shared table is not modified (the derived one shares the columns read so far) and the
        spatial indices are shared, since the projections do not change."""
        protected = {c for pair in self.projections.values() for c in pair} | {"id"}
        clash = sorted(protected & (set(columns) | set(drop)))
        if clash:
            raise ParameterError(f"columns {clash} hold the projections or ids and cannot be replaced; "
                                 "choose other column names")
        table = self.table.with_columns(columns, drop=tuple(c for c in drop if c in self.table))
        new_units = {**{c: u for c, u in self.column_units.items() if c in table}, **{c: "" for c in columns},
                     **(units or {})}
        derived = dataclasses.replace(self, table=table, column_units=new_units)
        object.__setattr__(derived, "_indices", self._indices)
        return derived


def embedding_units(columns, card) -> dict[str, str]:
    """Units of the embedding's columns: degrees for the latent PA, the card's output units for
    predictions, `LATENT_UNIT` for coordinates in latent space."""
    units = {"pa_latent": "deg", "recon_mse": "(model input units)^2"}
    for column in columns:
        if column.startswith(("latent_", "pca_", "umap_")) or column in ("folded_r", "folded_h"):
            units[column] = LATENT_UNIT
    for name, unit in (getattr(card, "output_units", None) or {}).items():
        units[f"pred_{name}"] = unit
    return {k: v for k, v in units.items() if k in set(columns)}


def needs_inference(dataset: str | os.PathLike, model: str | os.PathLike) -> bool:
    """True when opening this pair would run the model (no cached embedding with UMAP)."""
    from galexplore.analysis.embed import cache_candidates
    from galexplore.data.dataset import open_dataset

    handle = ModelHandle(model)
    return not any(p.is_file() for p in cache_candidates(handle.path, handle.card, open_dataset(dataset)))


def build_bundle(dataset: str | os.PathLike, model: str | os.PathLike,
                 progress_callback: Callable[[int, int], None] | None = None,
                 status_callback: Callable[[str], None] | None = None) -> Bundle:
    """Open the dataset and the model's card, read (or compute) the embedding and join it."""
    from galexplore.analysis.embed import load_embedding
    from galexplore.data.dataset import open_dataset

    ds = open_dataset(dataset)
    handle = ModelHandle(model)
    embedding = load_embedding(handle, ds, progress_callback=progress_callback, status_callback=status_callback)
    table = ColumnTable(ds, embedding)
    units = {c: "" for c in table.names}
    units.update({c: u for c, u in ds.column_units.items() if c in table})
    units.update(embedding_units(table.names, handle.card))
    return Bundle(dataset=ds, model=handle, table=table, column_units=units, projector=embedding.projector)


class BundleCache:
    """Bundles by (dataset, model), each built once however many callers ask at the same time.

    Parameters
    ----------
    max_bundles : bundles kept; the least recently used is dropped first (sessions that
        show it keep it alive until they switch).
    """

    def __init__(self, max_bundles: int = MAX_BUNDLES):
        if max_bundles < 1:
            raise ParameterError(f"max_bundles must be at least 1, got {max_bundles}")
        self.max_bundles = max_bundles
        self._entries: OrderedDict[tuple[str, str], concurrent.futures.Future] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(dataset: str | os.PathLike, model: str | os.PathLike) -> tuple[str, str]:
        path = Path(model).expanduser()
        return str(Path(dataset).expanduser().resolve()), str(path.resolve()) if path.exists() else str(model)

    def get(self, dataset: str | os.PathLike, model: str | os.PathLike,
            progress_callback: Callable[[int, int], None] | None = None,
            status_callback: Callable[[str], None] | None = None) -> Bundle:
        """The bundle of a dataset directory and a checkpoint (directory or zoo name); the
        first caller builds it (reporting progress), later ones wait for it."""
        key = self.key(dataset, model)
        with self._lock:
            future = self._entries.get(key)
            owner = future is None
            if owner:
                future = concurrent.futures.Future()
                self._entries[key] = future
            self._entries.move_to_end(key)
        if owner:
            try:
                future.set_result(build_bundle(dataset, model, progress_callback, status_callback))
            except BaseException as error:
                with self._lock:
                    self._entries.pop(key, None)  # a failure is not cached: the next call tries again
                future.set_exception(error)
            self._evict()
        return future.result()

    def _evict(self) -> None:
        with self._lock:
            while len(self._entries) > self.max_bundles:
                oldest = next(iter(self._entries))
                if not self._entries[oldest].done():
                    break
                self._entries.pop(oldest)

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


#: The server process's bundles.
BUNDLES = BundleCache()
