"""What the detail view shows of one galaxy: its maps, the model's reconstruction, residual,
saliency, properties, position angles, latent neighbours and a latent traversal, as data and
as PNG images (drawn with NumPy and Pillow; no plotting library).

Maps come from the dataset in physical units; the model input, reconstruction, residual,
saliency and latent traversals are in the model's input space: the dataset's maps after
the card's recipe, which are dimensionless (``dawson2020`` scales each map so that its
2nd and 98th percentiles become -1 and +1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from galexplore.errors import ModelError
from galexplore.explorer.bundles import Bundle, latent_columns
from galexplore.explorer.images import Arrow, MapPanel, colourise, grid_png, map_limits, png_bytes, strip_png

#: Saliency methods offered in the page: label -> `galexplore.analysis.saliency` name.
SALIENCY_METHODS = {"vanilla gradient": "vanilla", "SmoothGrad": "smoothgrad",
                    "integrated gradients": "integrated_gradients"}
#: What each method's map shows: (label under the map, caption beside it).
SALIENCY_CAPTIONS = {
    "vanilla": ("|gradient|", "|d target / d input| at each pixel, summed over the input channels"),
    "smoothgrad": ("mean |gradient|", "|d target / d input| averaged over 25 noisy copies of the input "
                   "(SmoothGrad), summed over the input channels"),
    "integrated_gradients": ("|attribution|", "|attribution| of integrated gradients along the path from a "
                             "zero input (they sum to the change of the target), summed over the input channels"),
}
PA_COLUMNS = ("pa", "pa_deg", "position_angle")
#: Colormap of each known channel; velocities are diverging and centred on zero.
CHANNEL_CMAPS = {"mom0": "inferno", "mom1": "RdBu_r", "mom2": "viridis", "env": "magma"}
DIVERGING = {"mom1"}
#: Arrow colours of the true and the latent position angle on the velocity map.
TRUE_PA_COLOUR, LATENT_PA_COLOUR = "black", "#00a000"
ARROW_LENGTH_PX = 26.0
#: Panels per row and pixel enlargement of the detail images.
DETAIL_COLUMNS = 2
DETAIL_SCALE = 2


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
    from galexplore.analysis.inference import prepare_inputs

    return prepare_inputs(bundle.model.card, bundle.dataset, np.atleast_1d(rows))


def galaxy_detail(bundle: Bundle, row: int, k_neighbours: int = 8) -> GalaxyDetail:
    """Everything the detail view needs for table row ``row`` (loads the model's weights on
    first use)."""
    loaded = bundle.model.loaded()
    card, model = loaded.card, loaded.model
    dataset = bundle.dataset
    maps_all = np.asarray(dataset.maps[row], dtype=np.float32)
    maps = {name: maps_all[i] for i, name in enumerate(dataset.channels)}
    x = _model_input(bundle, row)
    reconstruction = residual = None
    if hasattr(model, "reconstruct"):
        with torch.inference_mode():
            recon = model.reconstruct(torch.from_numpy(x).to(loaded.device)).float().cpu().numpy()
        reconstruction, residual = recon[0], x[0] - recon[0]
    record = bundle.table.row(row)
    embedding_prefixes = ("latent_", "pca_", "folded_", "umap_", "pred_")
    predicted = {c for c in record if c.startswith(embedding_prefixes) or c in ("pa_latent", "recon_mse")}
    properties = {c: _scalar(value) for c, value in record.items() if c not in predicted}
    predictions = {c: _scalar(value) for c, value in record.items()
                   if c.startswith("pred_") or c in ("pa_latent", "recon_mse")}
    pa_true = next((_scalar(record[c]) for c in PA_COLUMNS if c in record), None)
    pa_latent = _scalar(record["pa_latent"]) if "pa_latent" in record else None
    z = np.array([[record[c] for c in latent_columns(bundle.columns)]], dtype=np.float64)
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
    return [*latent_columns(bundle.columns), *card.outputs]


def galaxy_saliency(bundle: Bundle, row: int, method: str, target: str) -> np.ndarray:
    """Saliency (C_model, 64, 64) of ``target`` for row ``row``; ``method`` is a key or value
    of `SALIENCY_METHODS`."""
    from galexplore.analysis.saliency import saliency, target_function

    method = SALIENCY_METHODS.get(method, method)
    x = _model_input(bundle, row)[0]
    return saliency(target_function(bundle.model.loaded().model, target), x, method=method)


def can_traverse(bundle: Bundle) -> bool:
    """True when the model has a decoder that needs no pooling indices (latent traversals)."""
    return bundle.model is not None and callable(getattr(bundle.model.loaded().model, "decode", None))


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
    columns = latent_columns(bundle.columns)
    if not 0 <= axis < len(columns):
        raise ModelError(f"latent axis {axis} does not exist; the model has {len(columns)} latent dimensions")
    z0 = np.array([bundle.column(c)[row] for c in columns], dtype=np.float64)
    sigma = float(np.nanstd(np.asarray(bundle.column(columns[axis]), dtype=np.float64))) or 1.0
    values = z0[axis] + np.linspace(-span_sigma, span_sigma, steps) * sigma
    z = np.repeat(z0[None], steps, axis=0)
    z[:, axis] = values
    loaded = bundle.model.loaded()
    with torch.inference_mode():
        decoded = loaded.model.decode(torch.as_tensor(z, dtype=torch.float32, device=loaded.device))
    return values, decoded.float().cpu().numpy()


def thumbnail_png(image: np.ndarray, cmap: str = "RdBu_r", vmin: float | None = None,
                  vmax: float | None = None, symmetric: bool = False, scale: int = 2) -> bytes:
    """A small PNG of a 2-D map (row 0 at the bottom, NaN transparent), for galleries.

    Limits not given are the map's 1st and 99th percentiles (``symmetric``: +-99th
    percentile of |value|, zero in the middle).
    """
    from PIL import Image

    lo, hi = map_limits(image, symmetric=symmetric, percentile=99.0)
    limits = (lo if vmin is None else vmin, hi if vmax is None else vmax)
    return png_bytes(Image.fromarray(colourise(image, cmap, limits, scale, blank=(0, 0, 0, 0))))


def pa_arrow_end(pa_deg: float) -> tuple[float, float]:
    """Pixel (column, row) at which an arrow from the map centre along ``pa_deg`` ends.

    A unit vector at PA theta (east of north) points along (d_col, d_row) = (-sin theta, cos theta).
    """
    theta = np.radians(pa_deg)
    return 31.5 - ARROW_LENGTH_PX * np.sin(theta), 31.5 + ARROW_LENGTH_PX * np.cos(theta)


def input_unit(recipe: str) -> str:
    """Caption of maps in a model's input space."""
    return f"dimensionless (recipe {recipe})"


def _channel_panel(detail: GalaxyDetail, name: str) -> MapPanel:
    """A dataset channel in its units; velocities diverging around 0 with the PA arrows
    (unlabelled: `pa_legend` says which is which)."""
    image = detail.maps[name]
    unit = detail.units.get(name, "")
    arrows = []
    if name == "mom1":
        for pa, colour in ((detail.pa_true, TRUE_PA_COLOUR), (detail.pa_latent, LATENT_PA_COLOUR)):
            if pa is not None and np.isfinite(pa):
                arrows.append(Arrow((31.5, 31.5), pa_arrow_end(pa), colour))
    return MapPanel(image, CHANNEL_CMAPS.get(name, "viridis"), name, unit or "no unit",
                    map_limits(image, symmetric=name in DIVERGING), arrows=arrows)


def pa_legend(detail: GalaxyDetail) -> str:
    """What the arrows on the velocity map are, with their angles (plain text)."""
    parts = []
    if detail.pa_true is not None and np.isfinite(detail.pa_true):
        parts.append(f"black: true PA {detail.pa_true:.0f} deg")
    if detail.pa_latent is not None and np.isfinite(detail.pa_latent):
        parts.append(f"green: PA from the latent space {detail.pa_latent:.0f} deg")
    return "Arrows on mom1 (east of north): " + "; ".join(parts) if parts else ""


def detail_panels(detail: GalaxyDetail, recipe: str) -> list[MapPanel]:
    """Every input channel, then the model input, reconstruction and residual (model input
    space, diverging around 0; reconstruction and input share one colour scale)."""
    panels = [_channel_panel(detail, name) for name in detail.maps]
    channel = detail.model_channels[0]
    x = detail.model_input[0]
    shared = map_limits(x if detail.reconstruction is None else np.stack([x, detail.reconstruction[0]]),
                        symmetric=True)
    unit = input_unit(recipe)
    panels.append(MapPanel(x, "RdBu_r", f"model input ({channel})", unit, shared))
    if detail.reconstruction is not None:
        panels.append(MapPanel(detail.reconstruction[0], "RdBu_r", "reconstruction", unit, shared))
        panels.append(MapPanel(detail.residual[0], "RdBu_r", "residual (input - recon.)", unit,
                               map_limits(detail.residual[0], symmetric=True)))
    return panels


def detail_png(detail: GalaxyDetail, recipe: str) -> bytes:
    """One PNG of `detail_panels`, `DETAIL_COLUMNS` to a row."""
    return grid_png(detail_panels(detail, recipe), columns=DETAIL_COLUMNS, scale=DETAIL_SCALE)


def saliency_png(detail: GalaxyDetail, saliency: np.ndarray, target: str, method: str) -> bytes:
    """The saliency strength (sum of |values| over the model's channels) over the model input in grey."""
    strength = np.abs(saliency).sum(axis=0)
    shown = np.where(strength > 0, strength, np.nan)
    label, _ = SALIENCY_CAPTIONS[SALIENCY_METHODS.get(method, method)]
    panel = MapPanel(shown, "inferno", f"saliency of {target}", label, map_limits(shown),
                     underlay=detail.model_input[0], alpha=0.7)
    return grid_png([panel], columns=1, scale=DETAIL_SCALE)


#: Maps per row and enlargement of the neighbour and traversal strips.
STRIP_COLUMNS, STRIP_SCALE = 4, 1


def format_value(value) -> str:
    """A table value for a caption: whole numbers without a decimal point, others to 4 digits."""
    value = float(value)
    if not np.isfinite(value):
        return "nan"
    return f"{int(value)}" if value == int(value) and abs(value) < 1e15 else f"{value:.4g}"


def maps_png(bundle: Bundle, rows: np.ndarray, captions: list[str] | None = None,
             columns: int = STRIP_COLUMNS, scale: int = STRIP_SCALE) -> bytes:
    """The model's first input channel of each row (dataset units), captioned with its id (or
    ``captions``)."""
    channel = bundle.model.card.channels[0]
    order = np.argsort(rows)
    maps = np.asarray(bundle.dataset.maps[rows[order], bundle.dataset.channel_index(channel)], dtype=np.float32)
    maps = maps[np.argsort(order)]
    if captions is None:
        captions = [f"id {int(i)}" for i in bundle.column("id")[rows]]
    limits = [map_limits(m, symmetric=channel in DIVERGING, percentile=99.0) for m in maps]
    return strip_png(list(maps), captions, CHANNEL_CMAPS.get(channel, "viridis"), limits, columns=columns,
                     scale=scale)


def neighbours_png(bundle: Bundle, rows: np.ndarray) -> bytes:
    """The nearest neighbours' maps, captioned with their ids."""
    return maps_png(bundle, rows)


def traversal_png(values: np.ndarray, decoded: np.ndarray) -> bytes:
    """Decoded maps of a latent traversal (model input space, -1 to 1), captioned with the
    latent value."""
    return strip_png([d[0] for d in decoded], [f"{v:.3g}" for v in values], "RdBu_r", [(-1.0, 1.0)] * len(values),
                     columns=STRIP_COLUMNS, scale=STRIP_SCALE)
