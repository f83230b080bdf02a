"""What the detail view shows of one galaxy, computed without any plotting library.

Maps come from the dataset in physical units; the model input, reconstruction, residual,
saliency and latent traversals are in the model's recipe space.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from galexplore.errors import ModelError
from galexplore.ui.bundle import Bundle, latent_columns

#: Saliency methods offered in the page: label -> `galexplore.analysis.saliency` name.
SALIENCY_METHODS = {"vanilla gradient": "vanilla", "SmoothGrad": "smoothgrad",
                    "integrated gradients": "integrated_gradients"}
PA_COLUMNS = ("pa", "pa_deg", "position_angle")


@dataclass
class GalaxyDetail:
    """One galaxy as the detail view shows it.

    Attributes
    ----------
    row, galaxy_id : row in the table and catalogue ``id``.
    maps : channel name -> (64, 64) physical map (NaN blank), in dataset units.
    units : channel name -> unit.
    model_input : (C_model, 64, 64) the model's input after its recipe.
    reconstruction, residual : same shape as ``model_input`` (None if the model cannot reconstruct).
    model_channels : names of the model's input channels.
    properties : catalogue column -> value.
    predictions : embedding column (``pred_*``, ``pa_latent``, ``recon_mse``) -> value.
    pa_true, pa_latent : position angles in degrees east of north (None when unknown).
    neighbours : rows of the k nearest galaxies in latent space (the galaxy itself excluded).
    """

    row: int
    galaxy_id: int
    maps: dict[str, np.ndarray]
    units: dict[str, str]
    model_input: np.ndarray
    reconstruction: np.ndarray | None
    residual: np.ndarray | None
    model_channels: list[str]
    properties: dict[str, float]
    predictions: dict[str, float]
    pa_true: float | None
    pa_latent: float | None
    neighbours: np.ndarray


def _model_input(bundle: Bundle, rows) -> np.ndarray:
    from galexplore.analysis.embed import prepare_inputs

    return prepare_inputs(bundle.model.card, bundle.dataset, np.atleast_1d(rows))


def galaxy_detail(bundle: Bundle, row: int, k_neighbours: int = 8) -> GalaxyDetail:
    """Everything the detail view needs for table row ``row``."""
    table, card, model = bundle.table, bundle.model.card, bundle.model.model
    dataset = bundle.dataset
    maps_all = np.asarray(dataset.maps[row], dtype=np.float32)
    maps = {name: maps_all[i] for i, name in enumerate(dataset.channels)}
    x = _model_input(bundle, row)
    reconstruction = residual = None
    if hasattr(model, "reconstruct"):
        with torch.inference_mode():
            recon = model.reconstruct(torch.from_numpy(x).to(bundle.model.device)).float().cpu().numpy()
        reconstruction, residual = recon[0], x[0] - recon[0]
    record = table.iloc[row]
    embedding_prefixes = ("latent_", "pca_", "folded_", "umap_", "pred_")
    predicted = {c for c in table.columns if c.startswith(embedding_prefixes) or c in ("pa_latent", "recon_mse")}
    properties = {c: _scalar(record[c]) for c in table.columns if c not in predicted}
    predictions = {c: _scalar(record[c]) for c in table.columns
                   if c.startswith("pred_") or c in ("pa_latent", "recon_mse")}
    pa_true = next((_scalar(record[c]) for c in PA_COLUMNS if c in table.columns), None)
    pa_latent = _scalar(record["pa_latent"]) if "pa_latent" in table.columns else None
    z = table.iloc[[row]][latent_columns(table)].to_numpy(np.float64)
    near = bundle.neighbours_of_latent(z, k_neighbours + 1)[0]
    return GalaxyDetail(
        row=int(row), galaxy_id=int(record["id"]), maps=maps, units=dict(dataset.units),
        model_input=x[0], reconstruction=reconstruction, residual=residual,
        model_channels=list(card.channels), properties=properties, predictions=predictions,
        pa_true=pa_true, pa_latent=pa_latent, neighbours=near[near != row][:k_neighbours])


def _scalar(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def saliency_targets(bundle: Bundle) -> list[str]:
    """Saliency targets of the bundle's model: each latent dimension, then each prediction."""
    card = bundle.model.card
    return [*latent_columns(bundle.table), *card.outputs]


def galaxy_saliency(bundle: Bundle, row: int, method: str, target: str) -> np.ndarray:
    """Saliency (C_model, 64, 64) of ``target`` for row ``row``; ``method`` is a key or value
    of `SALIENCY_METHODS`."""
    from galexplore.analysis.saliency import saliency, target_function

    method = SALIENCY_METHODS.get(method, method)
    x = _model_input(bundle, row)[0]
    return saliency(target_function(bundle.model.model, target), x, method=method)


def can_traverse(bundle: Bundle) -> bool:
    """True when the model has a decoder that needs no pooling indices (latent traversals)."""
    return bundle.model is not None and callable(getattr(bundle.model.model, "decode", None))


def latent_traversal(bundle: Bundle, row: int, axis: int, steps: int = 7, span_sigma: float = 2.0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Decode a line through row ``row``'s latent point along latent ``axis``.

    The line runs over +-``span_sigma`` standard deviations of that latent over the table.

    Returns
    -------
    values : (steps,) latent values along the axis.
    decoded : (steps, C_model, 64, 64) maps in the model's recipe space.
    """
    if not can_traverse(bundle):
        raise ModelError(f"model {bundle.model.name!r} has no index-free decoder, so arbitrary latent points "
                         "cannot be decoded; train a `cae-free` or VAE model for traversals")
    columns = latent_columns(bundle.table)
    if not 0 <= axis < len(columns):
        raise ModelError(f"latent axis {axis} does not exist; the model has {len(columns)} latent dimensions")
    z0 = bundle.table.iloc[row][columns].to_numpy(np.float64)
    sigma = float(np.nanstd(bundle.table[columns[axis]].to_numpy(np.float64))) or 1.0
    values = z0[axis] + np.linspace(-span_sigma, span_sigma, steps) * sigma
    z = np.repeat(z0[None], steps, axis=0)
    z[:, axis] = values
    with torch.inference_mode():
        decoded = bundle.model.model.decode(torch.as_tensor(z, dtype=torch.float32, device=bundle.model.device))
    return values, decoded.float().cpu().numpy()


def thumbnail_png(image: np.ndarray, cmap: str = "RdBu_r", vmin: float | None = None,
                  vmax: float | None = None, symmetric: bool = False, scale: int = 2) -> bytes:
    """A small PNG of a 2-D map (row 0 at the bottom, NaN transparent), for galleries.

    Limits not given are the map's 1st and 99th percentiles (``symmetric``: +-99th
    percentile of |value|, zero in the middle).
    """
    from PIL import Image

    from galexplore.ui.map_images import colourise, map_limits, png_bytes

    lo, hi = map_limits(image, symmetric=symmetric, percentile=99.0)
    limits = (lo if vmin is None else vmin, hi if vmax is None else vmax)
    return png_bytes(Image.fromarray(colourise(image, cmap, limits, scale, blank=(0, 0, 0, 0))))
