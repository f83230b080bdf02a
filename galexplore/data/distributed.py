"""A dataset as dask collections, for pipelines of your own (`Dataset.to_dask`).

The maps become a dask array with one block per chunk file; the catalogue a dask dataframe
with one partition per catalogue part, indexed by map row. Nothing is read until computed,
and tasks open the dataset by its path (once per worker process), so the collections run on
any dask scheduler whose workers see the same path::

    maps, catalog = open_dataset("universe").to_dask()
    mean_mom1 = dask.array.nanmean(maps[:, 1], axis=(1, 2)).compute()   # per map, block by block
    catalog[catalog.kappa < 0.5].index.compute()                        # rows of disturbed galaxies
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from galexplore.data.dataset import Dataset, open_dataset


@functools.lru_cache(maxsize=8)
def opened_dataset(path: str, fingerprint: str) -> Dataset:
    """The dataset at ``path``, opened once per process (checked against the fingerprint)."""
    dataset = open_dataset(path)
    if dataset.fingerprint != fingerprint:
        from galexplore.errors import DatasetError

        raise DatasetError(f"the dataset at {path} changed since its dask collections were made; make "
                           "them again with Dataset.to_dask().")
    return dataset


class _LazyMaps:
    """What `dask.array.from_array` reads blocks from: the dataset's maps, opened by path where read."""

    def __init__(self, dataset: Dataset) -> None:
        self.path = str(Path(dataset.path).resolve())
        self.fingerprint = dataset.fingerprint
        self.shape = (len(dataset),) + tuple(dataset.map_shape)
        self.dtype = np.dtype(np.float32)
        self.ndim = 4

    def __getitem__(self, key: tuple) -> np.ndarray:
        return opened_dataset(self.path, self.fingerprint).maps[key]


def _read_part(part: tuple[str, str, int, int]) -> pd.DataFrame:
    root, file, start, n_rows = part
    frame = pq.read_table(Path(root) / file).to_pandas()
    frame.index = pd.RangeIndex(start, start + n_rows, name="row")
    return frame


def dataset_to_dask(dataset: Dataset):
    """(maps, catalog): a dask array (N, C, H, W) float32, one block per chunk file (NaN blank),
    and a dask dataframe of the catalogue, one partition per part, indexed by map row."""
    import dask.array as da
    import dask.dataframe as dd

    manifest = dataset.manifest
    counts = tuple(int(c["n_maps"]) for c in manifest["chunks"])
    c, h, w = dataset.map_shape
    maps = da.from_array(_LazyMaps(dataset), chunks=(counts or (0,), (c,), (h,), (w,)),
                         name=f"galexplore-maps-{dataset.fingerprint[:16]}", asarray=False, fancy=False,
                         lock=False, meta=np.empty((0, 0, 0, 0), dtype=np.float32))
    root = str(Path(dataset.path).resolve())
    parts, start = [], 0
    for entry in manifest["catalog_parts"]:
        parts.append((root, entry["file"], start, int(entry["n_rows"])))
        start += int(entry["n_rows"])
    if not parts:
        return maps, dd.from_pandas(dataset.catalog, npartitions=1)
    meta = pq.read_schema(Path(root) / parts[0][1]).empty_table().to_pandas()
    meta.index = pd.RangeIndex(0, 0, name="row")
    divisions = [p[2] for p in parts] + [start - 1]
    catalog = dd.from_map(_read_part, parts, meta=meta, divisions=divisions,
                          label=f"galexplore-catalog-{dataset.fingerprint[:16]}", enforce_metadata=False)
    return maps, catalog
