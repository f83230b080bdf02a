"""Embeddings: one Parquet table per (model outputs, dataset) with latents, projections and
predictions, and the `LatentProjector` that made the projections.

The table is keyed by the dataset's ``id`` column and cached next to the dataset (or in
the user cache when the dataset directory is read-only). Its file name holds the digest of
what the model computes (`outputs_key`: the weights and the card fields that change the
forward pass), never the model's name or its boundary: a model saved again with another
boundary, PCA or name reuses the cached outputs, and only the projection columns are
derived again (milliseconds, UMAP included, since UMAP depends on the latents alone).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from galexplore.analysis.inference import run_model
from galexplore.analysis.projections import DEFAULT_KAPPA_THRESHOLD, LatentProjector
from galexplore.data.dataset import Dataset, open_dataset
from galexplore.data.recipes import get_recipe
from galexplore.errors import DatasetError
from galexplore.models.checkpoint import WEIGHTS_FILE, ModelCard, check_compatible, load_checkpoint, read_card
from galexplore.models.device import resolve_device
from galexplore.models.zoo import resolve_model
from galexplore.paths import data_dir

#: Rows above which UMAP is fitted on a subsample and applied to the rest.
UMAP_SUBSAMPLE = 20_000
#: Card fields that change what a model computes from its input, hence its cached outputs.
FORWARD_FIELDS = ("architecture", "hyperparameters", "channels", "recipe", "input_size", "outputs")
#: Parquet metadata key of the projector that made an embedding's projection columns.
PROJECTOR_KEY = b"galexplore.projector"
ProgressCallback = Callable[[int, int], None]
StatusCallback = Callable[[str], None]


class LoadedModel:
    """A model with its card, its hash and its checkpoint directory (the unit the app switches between).

    Parameters
    ----------
    path : checkpoint directory or zoo name.
    device : "auto", "cpu" or "cuda".
    recipe : preprocessing recipe to use instead of the card's (e.g. ``"dawson2020_noisy"``
        for maps with noise, as in sec. 2.4 of Dawson et al. 2020). Outputs are cached apart.
    """

    def __init__(self, path: str | os.PathLike, device: str = "auto", recipe: str | None = None):
        self.path = resolve_model(str(path))
        self.device = resolve_device(device)
        self.model, self.card = load_checkpoint(self.path, device=self.device)
        if recipe is not None and recipe != self.card.recipe:
            get_recipe(recipe)  # an unknown name fails here, listing the known ones
            self.card = dataclasses.replace(self.card, recipe=recipe)
        self.model.eval()
        self.hash = self.card.model_hash(self.model)

    @property
    def name(self) -> str:
        return self.card.name


def outputs_key(checkpoint: str | os.PathLike, card: ModelCard) -> str:
    """SHA-256 of a checkpoint's weights file and of the card fields in `FORWARD_FIELDS`.

    The key of cached model outputs: it changes when the weights or the forward pass do,
    and not when the name, metrics, boundary, PCA or PA calibration of the card do.
    Computed from the file, without loading the model.
    """
    digest = hashlib.sha256(b"galexplore-outputs-v1\n")
    with open(Path(checkpoint) / WEIGHTS_FILE, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    fields = {name: getattr(card, name) for name in FORWARD_FIELDS}
    digest.update(json.dumps(fields, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def embedding_table(card: ModelCard, ids: np.ndarray, outputs: dict[str, np.ndarray],
                    *, umap: bool = True, seed: int = 0) -> tuple[pd.DataFrame, LatentProjector]:
    """Raw model outputs as the embedding table (column names in docs/CONTRACTS.md), and the
    `LatentProjector` that made its projection columns (fitted with the card's extras)."""
    latent = outputs["latent"]
    projector = LatentProjector(umap=umap, umap_subsample=UMAP_SUBSAMPLE, random_state=seed)
    columns = projector.fit_transform(latent, extras=card.extras, ids=ids)
    return _assemble(ids, outputs, columns), projector


def _assemble(ids, outputs: dict[str, np.ndarray], columns: dict[str, np.ndarray]) -> pd.DataFrame:
    latent = outputs["latent"]
    table = {"id": np.asarray(ids, dtype=np.int64), **{f"latent_{k}": latent[:, k] for k in range(latent.shape[1])}}
    table.update({name: values for name, values in columns.items() if not name.startswith("umap_")})
    if "umap_0" in columns:
        table["umap_0"], table["umap_1"] = columns["umap_0"], columns["umap_1"]
    table.update({name: values for name, values in outputs.items() if name.startswith("pred_")})
    if "recon_mse" in outputs:
        table["recon_mse"] = outputs["recon_mse"]
    frame = pd.DataFrame(table)
    if "pred_class" in frame.columns:
        frame["pred_class"] = frame["pred_class"].astype(np.int8)
    floats = frame.columns[(frame.dtypes == np.float64).to_numpy()]
    return frame.astype({c: np.float32 for c in floats})  # float32 is ample for display; halves the cache


class Embedding:
    """An embedding table and the projector that made its projection columns.

    The table is kept in memory when it was computed here or derived again from cached
    latents; otherwise it stays in its cache file and `column` reads one column at a time
    (the explorer loads only the columns it shows), `table` every column (read once, kept).

    Attributes
    ----------
    projector : the fitted `LatentProjector`; its UMAP reference rows are in the table.
    path : the cache file it was read from or written to.
    columns : the table's column names, in order (keyed by ``id``, row order of the catalogue).
    schema : the `pyarrow.Schema` of the table (column types without reading a row).
    """

    def __init__(self, projector: LatentProjector, path: Path, table: pd.DataFrame | None = None):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.projector, self.path, self._table = projector, Path(path), table
        if table is None:
            parquet = pq.ParquetFile(self.path)
            self.schema, self._n_rows = parquet.schema_arrow, parquet.metadata.num_rows
        else:
            self.schema, self._n_rows = pa.Schema.from_pandas(table, preserve_index=False), len(table)
        self.columns: list[str] = list(self.schema.names)

    def __len__(self) -> int:
        return self._n_rows

    def column(self, name: str) -> np.ndarray:
        """One column as NumPy (as `table` holds it), read from the cache file unless in memory."""
        import pyarrow.parquet as pq

        if name not in self.columns:
            raise KeyError(name)
        if self._table is not None:
            return self._table[name].to_numpy()
        return pq.read_table(self.path, columns=[name]).to_pandas()[name].to_numpy()

    def row(self, row: int, columns: list[str]) -> dict[str, object]:
        """``columns`` at one row, read from the cache file without loading whole columns."""
        import pyarrow.parquet as pq

        from galexplore.data.dataset import parquet_row

        if self._table is not None:
            return {c: self._table[c].iloc[row] for c in columns}
        return parquet_row(pq.ParquetFile(self.path), row, columns)

    @property
    def table(self) -> pd.DataFrame:
        """Every column as a DataFrame (read from the cache file on first access)."""
        if self._table is None:
            self._table = pd.read_parquet(self.path)
        return self._table


def cache_candidates(checkpoint: str | os.PathLike, card: ModelCard, dataset: Dataset) -> list[Path]:
    """Where the outputs of the model at ``checkpoint`` on ``dataset`` may be cached: beside the
    dataset, then in the user cache. The name holds `outputs_key` and the dataset's fingerprint."""
    name = f"{outputs_key(checkpoint, card)[:24]}-{dataset.fingerprint[:16]}.parquet"
    return [Path(dataset.path) / "embeddings" / name, data_dir() / "embeddings" / name]


def cache_path(model, dataset: Dataset) -> Path | None:
    """The cached embedding file of ``model`` (a `LoadedModel`, or anything with ``path`` and
    ``card``) on ``dataset``, or None when there is none."""
    return next((p for p in cache_candidates(model.path, model.card, dataset) if p.is_file()), None)


def _card_part(extras: dict) -> dict:
    """The numbers of a card's extras (or of a projector's record) that a projector takes as
    given and that change the projection columns: the PCA rotation, the boundary's position
    and kappa threshold, the PA calibration. Notes such as ``fitted_on`` or the boundary's
    uncertainty change no column, so a card that differs only in them reuses the cached table."""
    pca, boundary, calibration = (extras.get(k) or {} for k in ("pca", "boundary", "pa_calibration"))
    return {"pca": [pca.get("mean"), pca.get("components")],
            "boundary": [boundary.get("folded_r"), boundary.get("kappa_threshold", DEFAULT_KAPPA_THRESHOLD)
                         if boundary.get("folded_r") is not None else None],
            "pa_calibration": [calibration.get("sense"), calibration.get("offset_deg")]}


def _read_cached(path: Path, card: ModelCard) -> Embedding | None:
    """The cached embedding (its columns left in the file); None when the file is not a
    readable galexplore embedding."""
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        record = json.loads((parquet.schema_arrow.metadata or {})[PROJECTOR_KEY])
        names = parquet.schema_arrow.names
        latent_names = _latent_columns(names)
        reference = None
        fit_ids = (record.get("umap") or {}).get("fit_ids")
        if fit_ids is not None and {"umap_0", "umap_1"} <= set(names):
            fit_ids, parts = np.asarray(fit_ids), []
            for group in range(parquet.num_row_groups):  # a row group at a time: 10^7 rows need no 10^7 array
                ids = parquet.read_row_group(group, columns=["id"]).column(0).to_numpy()
                hits = np.flatnonzero(np.isin(ids, fit_ids))
                if hits.size:
                    chunk = parquet.read_row_group(group, columns=[*latent_names, "umap_0", "umap_1"])
                    parts.append(chunk.take(hits).to_pandas())
            rows = pd.concat(parts, ignore_index=True) if parts else \
                pd.DataFrame({c: np.empty(0, np.float32) for c in [*latent_names, "umap_0", "umap_1"]})
            reference = (rows[latent_names].to_numpy(np.float64), rows[["umap_0", "umap_1"]].to_numpy(np.float64))
    except (OSError, KeyError, ValueError):
        return None  # unreadable or from an older galexplore: recomputed and replaced
    projector = LatentProjector.from_dict(record, umap_reference=reference)
    if _card_part(card.extras) == _card_part(record):
        return Embedding(projector, path)
    # the card's PCA, boundary or PA calibration changed (e.g. a boundary saved into a copy of the
    # model): derive the projections again from the cached latents, keeping UMAP
    table = pd.read_parquet(path)
    latent = table[latent_names].to_numpy(np.float64)
    fresh = LatentProjector(umap=False, umap_subsample=projector.umap_subsample,
                            umap_neighbors=projector.umap_neighbors, umap_min_dist=projector.umap_min_dist,
                            random_state=projector.random_state)
    columns = fresh.fit_transform(latent, extras=card.extras)
    fresh.umap_reference_, fresh.umap_ids_ = projector.umap_reference_, projector.umap_ids_
    table = _assemble(table["id"].to_numpy(), _outputs_of(table), {**columns, **_umap_of(table)})
    return Embedding(fresh, path, table)


def _latent_columns(table: pd.DataFrame | list[str]) -> list[str]:
    columns = table.columns if isinstance(table, pd.DataFrame) else table
    return sorted((c for c in columns if c.startswith("latent_") and c[7:].isdigit()), key=lambda c: int(c[7:]))


def _outputs_of(table: pd.DataFrame) -> dict[str, np.ndarray]:
    outputs = {"latent": table[_latent_columns(table)].to_numpy(np.float32)}
    outputs.update({c: table[c].to_numpy() for c in table.columns if c.startswith("pred_") and c != "pred_class"})
    if "recon_mse" in table.columns:
        outputs["recon_mse"] = table["recon_mse"].to_numpy()
    return outputs


def _umap_of(table: pd.DataFrame) -> dict[str, np.ndarray]:
    return {c: table[c].to_numpy() for c in ("umap_0", "umap_1") if c in table.columns}


def load_embedding(model, dataset, *, device: str = "auto", batch_size: int = 256, force: bool = False,
                   umap: bool = True, progress_callback: ProgressCallback | None = None,
                   status_callback: StatusCallback | None = None) -> Embedding:
    """The embedding of ``model`` on ``dataset`` and its projector, from the cache when present.

    Parameters
    ----------
    model : a `LoadedModel`, a checkpoint directory, a zoo name, or anything with ``path``,
        ``card`` and ``loaded()`` (returning a `LoadedModel`), such as the explorer's
        model handles. A cached embedding is read without loading the weights into torch.
    dataset : a `Dataset` or a dataset directory.
    force : recompute and overwrite the cache.
    umap : fit UMAP when computing (a cached table without UMAP gets it added).
    progress_callback : called with (maps encoded, maps in total) during inference.
    status_callback : called with one line on each step taken (encoding, fitting UMAP, writing).
    """
    say = status_callback or (lambda text: None)
    dataset = dataset if isinstance(dataset, Dataset) else open_dataset(dataset)
    if isinstance(model, LoadedModel):
        checkpoint, card, load = model.path, model.card, lambda: model
    elif hasattr(model, "loaded"):
        checkpoint, card, load = model.path, model.card, model.loaded
    else:
        checkpoint = resolve_model(str(model))
        card = read_card(checkpoint)
        load = lambda: LoadedModel(checkpoint, device=device)  # noqa: E731
    candidates = cache_candidates(checkpoint, card, dataset)
    cached = next((p for p in candidates if p.is_file()), None)
    found = None if force or cached is None else _read_cached(cached, card)
    if found is not None:
        _check_rows(len(found), dataset)
        if not umap or "umap_0" in found.columns or found.projector.n_features_in_ < 3:
            return found
    check_compatible(card, dataset)
    if found is not None:  # cached outputs that lack only UMAP
        outputs, ids = _outputs_of(found.table), found.table["id"].to_numpy()
    else:
        loaded = load()
        say(f"encoding {len(dataset):,} maps with {card.name}")
        outputs = run_model(loaded.model, card, dataset, device=loaded.device,
                            batch_size=batch_size, progress_callback=progress_callback)
        ids = dataset.catalog["id"].to_numpy()
    if umap and outputs["latent"].shape[1] > 2:
        say(f"fitting UMAP on {min(len(ids), UMAP_SUBSAMPLE):,} latent vectors "
            "(the first fit in a process also compiles UMAP: about a minute on 2 cores)")
    table, projector = embedding_table(card, ids, outputs, umap=umap)
    metadata = {"model": card.name, "outputs_key": outputs_key(checkpoint, card), "dataset": str(dataset.path),
                "dataset_fingerprint": dataset.fingerprint, "created_unix": f"{time.time():.0f}"}
    say("writing the embedding cache")
    beside, user_cache = candidates
    try:
        path = _write_atomically(table, beside, metadata, projector)
    except OSError:  # a read-only dataset directory: cache in the user's directory instead
        path = _write_atomically(table, user_cache, metadata, projector)
    return Embedding(projector, path, table)


def _check_rows(n_rows: int, dataset: Dataset) -> None:
    if n_rows != len(dataset):
        raise DatasetError(f"the cached embedding has {n_rows} rows but the dataset {len(dataset)}; "
                           "recompute it with `galexplore embed MODEL DATASET --force`")


def load_or_compute_embedding(model, dataset, *, device: str = "auto", batch_size: int = 256,
                              force: bool = False, umap: bool = True,
                              progress_callback: ProgressCallback | None = None) -> pd.DataFrame:
    """The embedding table of ``model`` on ``dataset`` (see `load_embedding`)."""
    return load_embedding(model, dataset, device=device, batch_size=batch_size, force=force, umap=umap,
                          progress_callback=progress_callback).table


def embed(model, dataset, *, device: str = "auto", batch_size: int = 256, force: bool = False,
          progress: bool = False) -> Path:
    """`galexplore embed`: compute (or find) the cached embedding and return its path."""
    from tqdm.auto import tqdm

    ds = dataset if isinstance(dataset, Dataset) else open_dataset(dataset)
    bar = tqdm(total=len(ds), unit="map", disable=not progress, desc="embedding")

    def advance(done: int, total: int) -> None:
        bar.update(done - bar.n)

    def say(text: str) -> None:
        if progress:
            bar.write(text, file=sys.stderr)

    found = load_embedding(model, ds, device=device, batch_size=batch_size, force=force,
                           progress_callback=advance, status_callback=say)
    bar.close()
    return found.path


def _write_atomically(table: pd.DataFrame, path: Path, metadata: dict[str, str],
                      projector: LatentProjector) -> Path:
    """Write the table (with the projector in its metadata) through a temporary file of a
    unique name in the same directory; returns ``path``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    arrow = arrow.replace_schema_metadata({
        **(arrow.schema.metadata or {}), **{f"galexplore.{k}": str(v) for k, v in metadata.items()},
        PROJECTOR_KEY: json.dumps(projector.to_dict(), allow_nan=False)})
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp-embed")
    os.close(fd)
    try:
        pq.write_table(arrow, tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path
