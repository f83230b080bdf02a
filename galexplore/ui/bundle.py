"""What one (dataset, model) pair gives the explorer: the joined table, spatial indices,
latent neighbours and the mapping of new latents into every projection.

A `Bundle` is read-only once built and shared by all browser sessions that look at the
same pair (pandas copy-on-write keeps the shared table safe), so a second session costs
no inference and no memory for another copy of the table.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from galexplore.analysis.embed import LoadedModel, load_or_compute_embedding
from galexplore.data.dataset import Dataset, open_dataset
from galexplore.errors import ColumnError, DatasetError, ModelError

#: How many latent dimensions get pairwise projections in the sidebar (d*(d-1)/2 pairs).
MAX_LATENT_PAIRS_DIMS = 6
#: Neighbours averaged to place a new galaxy in a non-linear (UMAP) projection.
UMAP_PLACEMENT_NEIGHBOURS = 10


def latent_columns(table: pd.DataFrame) -> list[str]:
    """The ``latent_<k>`` columns of an embedding table, in order of k."""
    cols = [c for c in table.columns if c.startswith("latent_") and c[7:].isdigit()]
    return sorted(cols, key=lambda c: int(c[7:]))


def projection_options(columns) -> dict[str, tuple[str, str]]:
    """Projections available for an embedding table: label -> (x column, y column).

    Pairs of latent dimensions, pairs of PCA components, the folded (r, h) space of
    Dawson et al. (2020) and UMAP, each only where its columns exist.
    """
    columns = list(columns)
    present = set(columns)
    options: dict[str, tuple[str, str]] = {}
    pca = sorted((c for c in columns if c.startswith("pca_") and c[4:].isdigit()), key=lambda c: int(c[4:]))
    for i in range(min(len(pca), 3)):
        for j in range(i + 1, min(len(pca), 3)):
            options[f"PCA {i} vs {j}"] = (pca[i], pca[j])
    if {"folded_r", "folded_h"} <= present:
        options["folded (r, h)"] = ("folded_r", "folded_h")
    if {"umap_0", "umap_1"} <= present:
        options["UMAP"] = ("umap_0", "umap_1")
    latent = sorted((c for c in columns if c.startswith("latent_") and c[7:].isdigit()), key=lambda c: int(c[7:]))
    for i in range(min(len(latent), MAX_LATENT_PAIRS_DIMS)):
        for j in range(i + 1, min(len(latent), MAX_LATENT_PAIRS_DIMS)):
            options[f"latent {i} vs {j}"] = (latent[i], latent[j])
    return options


@dataclass
class Bundle:
    """A dataset, a model and their joined catalogue + embedding table (row i <-> map i).

    Attributes
    ----------
    dataset : the opened `Dataset` (or None for a table-only bundle, e.g. benchmarks).
    model : the `LoadedModel` (or None).
    table : catalogue joined with the embedding on ``id``; row order of the catalogue.
    column_units : unit of each column ('' when unknown).
    """

    dataset: Dataset | None
    model: LoadedModel | None
    table: pd.DataFrame
    column_units: dict[str, str]
    _indices: dict = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def projections(self) -> dict[str, tuple[str, str]]:
        return projection_options(self.table.columns)

    @property
    def numeric_columns(self) -> list[str]:
        """Columns that can colour the map or be filtered on (numeric, not all NaN)."""
        return [c for c in self.table.columns
                if pd.api.types.is_numeric_dtype(self.table[c]) and not pd.api.types.is_bool_dtype(self.table[c])]

    def xy(self, projection: str) -> tuple[np.ndarray, np.ndarray]:
        """The two coordinates (float64 arrays) of every row in a projection."""
        xcol, ycol = self._projection_columns(projection)
        return (self.table[xcol].to_numpy(dtype=np.float64), self.table[ycol].to_numpy(dtype=np.float64))

    def _projection_columns(self, projection: str) -> tuple[str, str]:
        try:
            return self.projections[projection]
        except KeyError:
            raise ColumnError(f"unknown projection {projection!r}; available: {list(self.projections)}") from None

    def point_index(self, projection: str):
        """The `PointIndex` of a projection, built on first use and shared."""
        from galexplore.analysis.selection import PointIndex

        with self._lock:
            if ("points", projection) not in self._indices:
                x, y = self.xy(projection)
                self._indices[("points", projection)] = PointIndex(x, y)
            return self._indices[("points", projection)]

    def latent_neighbours(self):
        """A fitted `sklearn.neighbors.NearestNeighbors` on the latent vectors (shared)."""
        from sklearn.neighbors import NearestNeighbors

        with self._lock:
            if "latent" not in self._indices:
                z = self.table[latent_columns(self.table)].to_numpy(dtype=np.float64)
                self._indices["latent"] = NearestNeighbors().fit(z)
            return self._indices["latent"]

    def neighbours_of_latent(self, z: np.ndarray, k: int) -> np.ndarray:
        """Row indices (n, k) of the k nearest galaxies in latent space to each row of ``z``."""
        nn = self.latent_neighbours()
        k = min(k, len(self.table))
        return nn.kneighbors(np.atleast_2d(z), n_neighbors=k, return_distance=False)

    def place_latents(self, z: np.ndarray) -> pd.DataFrame:
        """Coordinates of new latent vectors ``z`` (n, d) in every projection of the table.

        PCA is an affine map of the latents, so it is recovered exactly by least squares
        on the table's own (latent, pca) pairs; the folded space follows from PCA as in
        Dawson et al. (2020): r = sqrt(p0^2 + p1^2), h = |p2|. UMAP has no closed form
        here, so a new point is placed at the mean UMAP position of its
        `UMAP_PLACEMENT_NEIGHBOURS` nearest neighbours in latent space.
        """
        z = np.atleast_2d(np.asarray(z, dtype=np.float64))
        lat = latent_columns(self.table)
        if z.shape[1] != len(lat):
            raise ModelError(f"latent vectors have {z.shape[1]} dimensions but the embedding has {len(lat)}")
        out = pd.DataFrame({c: z[:, k] for k, c in enumerate(lat)})
        pca = sorted((c for c in self.table.columns if c.startswith("pca_") and c[4:].isdigit()),
                     key=lambda c: int(c[4:]))
        if pca:
            sample = self.table.iloc[: min(len(self.table), 5000)]
            design = np.column_stack([sample[lat].to_numpy(np.float64), np.ones(len(sample))])
            coef, *_ = np.linalg.lstsq(design, sample[pca].to_numpy(np.float64), rcond=None)
            rotated = np.column_stack([z, np.ones(len(z))]) @ coef
            for k, c in enumerate(pca):
                out[c] = rotated[:, k]
            if len(pca) >= 3:
                out["folded_r"] = np.hypot(rotated[:, 0], rotated[:, 1])
                out["folded_h"] = np.abs(rotated[:, 2])
        if {"umap_0", "umap_1"} <= set(self.table.columns):
            rows = self.neighbours_of_latent(z, UMAP_PLACEMENT_NEIGHBOURS)
            out["umap_0"] = self.table["umap_0"].to_numpy()[rows].mean(axis=1)
            out["umap_1"] = self.table["umap_1"].to_numpy()[rows].mean(axis=1)
        return out

    def boundary_r(self) -> float | None:
        """Folded-space boundary radius: the card's (Dawson et al.) value, else a
        `VerticalBoundary` fitted on the table's kappa (None when neither is available)."""
        if self.model is not None:
            boundary = self.model.card.extras.get("boundary")
            if boundary and "folded_r" in boundary:
                return float(boundary["folded_r"])
        with self._lock:
            if "boundary" not in self._indices:
                self._indices["boundary"] = self._fit_boundary()
            return self._indices["boundary"]

    def _fit_boundary(self) -> float | None:
        if "folded_r" not in self.table.columns or "kappa" not in self.table.columns:
            return None
        from galexplore.analysis.boundaries import VerticalBoundary

        r = self.table["folded_r"].to_numpy(np.float64)
        kappa = self.table["kappa"].to_numpy(np.float64)
        ok = np.isfinite(r) & np.isfinite(kappa)
        if ok.sum() < 10:
            return None
        return float(VerticalBoundary(kappa_threshold=0.5).fit(r[ok], kappa[ok]).position_)


def join_catalog_embedding(catalog: pd.DataFrame, embedding: pd.DataFrame) -> pd.DataFrame:
    """Catalogue rows (in their order) with the embedding columns added, matched on ``id``."""
    extra = [c for c in embedding.columns if c == "id" or c not in catalog.columns]
    joined = catalog.merge(embedding[extra], on="id", how="left", validate="one_to_one")
    if len(joined) != len(catalog):
        raise DatasetError("the catalogue and the embedding do not match one to one on `id`; "
                           "recompute the embedding with `galexplore embed MODEL DATASET --force`")
    return joined.reset_index(drop=True)


_BUNDLES: dict[tuple[str, str], Bundle] = {}
_BUNDLES_LOCK = threading.Lock()


def load_bundle(dataset: str | os.PathLike, model: str | os.PathLike,
                progress_callback: Callable[[int, int], None] | None = None) -> Bundle:
    """The `Bundle` of a dataset directory and a checkpoint (directory or zoo name).

    Embeddings come from the cache next to the dataset, or are computed (reporting
    ``progress_callback(done, total)``). Bundles are kept per process and shared by sessions.
    """
    key = (str(Path(dataset).resolve()), str(model))
    with _BUNDLES_LOCK:
        if key in _BUNDLES:
            return _BUNDLES[key]
    ds = open_dataset(dataset)
    loaded = LoadedModel(model)
    embedding = load_or_compute_embedding(loaded, ds, progress_callback=progress_callback)
    table = join_catalog_embedding(ds.catalog, embedding)
    units = {c: "" for c in table.columns}
    units.update(ds.column_units)
    units.update(_embedding_units(table.columns, loaded))
    bundle = Bundle(dataset=ds, model=loaded, table=table, column_units=units)
    with _BUNDLES_LOCK:
        _BUNDLES.setdefault(key, bundle)
        return _BUNDLES[key]


def _embedding_units(columns, model: LoadedModel) -> dict[str, str]:
    units = {"pa_latent": "deg"}
    for name, unit in (getattr(model.card, "output_units", None) or {}).items():
        units[f"pred_{name}"] = unit
    return {k: v for k, v in units.items() if k in set(columns)}
