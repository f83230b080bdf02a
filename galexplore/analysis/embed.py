"""Embeddings: one Parquet table per (model, dataset) with latents, projections and predictions.

The table is keyed by the dataset's ``id`` column and cached next to the dataset (or in
the user cache when the dataset directory is read-only), under a name built from the
model's hash and the dataset's fingerprint, so a second start costs no inference.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from galexplore.analysis.inference import run_model
from galexplore.data.dataset import Dataset, open_dataset
from galexplore.data.recipes import get_recipe
from galexplore.models.checkpoint import ModelCard, check_compatible, file_stem, load_checkpoint
from galexplore.models.device import resolve_device
from galexplore.models.zoo import resolve_model
from galexplore.paths import data_dir

#: Rows above which UMAP is fitted on a subsample and applied to the rest.
UMAP_SUBSAMPLE = 20_000
ProgressCallback = Callable[[int, int], None]


class LoadedModel:
    """A model with its card, its hash and its checkpoint directory (the unit the app switches between)."""

    def __init__(self, path: str | os.PathLike, device: str = "auto"):
        self.path = resolve_model(str(path))
        self.device = resolve_device(device)
        self.model, self.card = load_checkpoint(self.path, device=self.device)
        self.model.eval()
        self.hash = self.card.model_hash(self.model)

    @property
    def name(self) -> str:
        return self.card.name


def prepare_inputs(card: ModelCard, dataset: Dataset, index) -> np.ndarray:
    """Model input for rows ``index``: the card's channels through the card's recipe."""
    channel_idx = [dataset.channel_index(c) for c in card.channels]
    maps = np.asarray(dataset.maps[index], dtype=np.float32)[:, channel_idx]
    return get_recipe(card.recipe)(maps)


def embedding_table(card: ModelCard, ids: np.ndarray, outputs: dict[str, np.ndarray],
                    *, umap: bool = True, seed: int = 0) -> pd.DataFrame:
    """Turn raw model outputs into the embedding table (column names in docs/CONTRACTS.md)."""
    from galexplore.analysis.position_angle import PositionAngleCalibration, latent_angle
    from galexplore.analysis.projections import PCAProjection, UMAPProjection, fold

    latent = outputs["latent"]
    table = pd.DataFrame({"id": np.asarray(ids, dtype=np.int64)})
    for k in range(latent.shape[1]):
        table[f"latent_{k}"] = latent[:, k]

    pca_params = card.extras.get("pca")
    pca = (PCAProjection.from_params(np.asarray(pca_params["mean"]), np.asarray(pca_params["components"]))
           if pca_params else PCAProjection().fit(latent))
    rotated = pca.transform(latent)
    for k in range(rotated.shape[1]):
        table[f"pca_{k}"] = rotated[:, k]

    if rotated.shape[1] >= 3:
        r, h = fold(rotated[:, :3])
        table["folded_r"], table["folded_h"] = r, h
        angle = latent_angle(rotated[:, :3])
        calibration = card.extras.get("pa_calibration")
        if calibration:
            angle = PositionAngleCalibration.from_params(**calibration).transform(angle)
        table["pa_latent"] = angle
        boundary = card.extras.get("boundary")
        if boundary:
            table["pred_class"] = (r >= boundary["folded_r"]).astype(np.int8)

    if umap and latent.shape[1] > 2 and len(latent) >= 10:
        coords = UMAPProjection(subsample=UMAP_SUBSAMPLE, random_state=seed).fit_transform(latent)
        table["umap_0"], table["umap_1"] = coords[:, 0], coords[:, 1]
    elif latent.shape[1] == 2:
        table["umap_0"], table["umap_1"] = latent[:, 0], latent[:, 1]

    for name, values in outputs.items():
        if name.startswith("pred_"):
            table[name] = values
    if "recon_mse" in outputs:
        table["recon_mse"] = outputs["recon_mse"]
    floats = table.columns[(table.dtypes == np.float64).to_numpy()]
    return table.astype({c: np.float32 for c in floats})  # float32 is ample for display; halves the cache


def cache_candidates(model: LoadedModel, dataset: Dataset) -> list[Path]:
    """Where the embedding of ``model`` on ``dataset`` may be cached: beside the dataset, then the user cache."""
    name = f"{file_stem(model.card.name)}-{model.hash[:16]}-{dataset.fingerprint[:16]}.parquet"
    return [Path(dataset.path) / "embeddings" / name, data_dir() / "embeddings" / name]


def cache_path(model: LoadedModel, dataset: Dataset) -> Path | None:
    """The cached embedding file of ``model`` on ``dataset``, or None when there is none."""
    return next((p for p in cache_candidates(model, dataset) if p.is_file()), None)


def load_or_compute_embedding(model, dataset, *, device: str = "auto", batch_size: int = 256,
                              force: bool = False, umap: bool = True,
                              progress_callback: ProgressCallback | None = None) -> pd.DataFrame:
    """The embedding of ``model`` on ``dataset``, from the cache when present.

    Parameters
    ----------
    model : a `LoadedModel`, a checkpoint directory or a zoo name.
    dataset : a `Dataset` or a dataset directory.
    force : recompute and overwrite the cache.
    progress_callback : called with (maps done, maps total) during inference.
    """
    model = model if isinstance(model, LoadedModel) else LoadedModel(model, device=device)
    dataset = dataset if isinstance(dataset, Dataset) else open_dataset(dataset)
    cached = cache_path(model, dataset)
    if cached is not None and not force:
        return pd.read_parquet(cached)
    check_compatible(model.card, dataset)
    outputs = run_model(model.model, model.card, dataset, device=model.device,
                        batch_size=batch_size, progress_callback=progress_callback)
    table = embedding_table(model.card, dataset.catalog["id"].to_numpy(), outputs, umap=umap)
    metadata = {"model": model.card.name, "model_hash": model.hash, "dataset": str(dataset.path),
                "dataset_fingerprint": dataset.fingerprint, "created_unix": f"{time.time():.0f}"}
    beside, user_cache = cache_candidates(model, dataset)
    try:
        _write_atomically(table, beside, metadata)
    except OSError:  # a read-only dataset directory: cache in the user's directory instead
        _write_atomically(table, user_cache, metadata)
    return table


def embed(model, dataset, *, device: str = "auto", batch_size: int = 256, force: bool = False,
          progress: bool = False) -> Path:
    """`galexplore embed`: compute (or find) the cached embedding and return its path."""
    from tqdm.auto import tqdm

    loaded = model if isinstance(model, LoadedModel) else LoadedModel(model, device=device)
    ds = dataset if isinstance(dataset, Dataset) else open_dataset(dataset)
    bar = tqdm(total=len(ds), unit="map", disable=not progress, desc="embedding")

    def advance(done: int, total: int) -> None:
        bar.update(done - bar.n)

    load_or_compute_embedding(loaded, ds, batch_size=batch_size, force=force, progress_callback=advance)
    bar.close()
    return cache_path(loaded, ds)


def _write_atomically(table: pd.DataFrame, path: Path, metadata: dict[str, str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}),
                                           **{f"galexplore.{k}": str(v) for k, v in metadata.items()}})
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    try:
        pq.write_table(arrow, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
