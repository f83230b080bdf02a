"""Recipes: named, pure functions from physical maps to model input.

A recipe takes ``(n, C, H, W)`` maps in physical units (NaN blank, any square H = W from 16
to 628 px) and returns ``(n, C, 64, 64)`` float32. Models select their channels before
calling it. Every recipe first resizes to 64 x 64 with `resize_nearest`, which picks the same
source pixels as ``torch.nn.functional.interpolate(mode="nearest")`` (the published
Dawson et al. 2020 model was used with PyTorch).

Recipes
-------
``dawson2020``
    Published preprocessing of Dawson et al. (2020), per map and channel: subtract the 2nd
    percentile of the finite pixels, divide by the 98th percentile of the result, map to
    [-1, 1] with x * 2 - 1, then set NaN and every value outside [-1, 1] to 0 (so pixels
    below the 2nd or above the 98th percentile become 0, as in the published code).
``dawson2020_noisy``
    Section 2.4 of the paper: noisy moment-1 maps are "clipped at a fixed 96th percentile
    level" before normalising, so that noise spikes do not set the scale. We read this as:
    pixels whose distance from the map's median velocity, |v - median(v)|, exceeds the 96th
    percentile of that distance are blanked; then ``dawson2020`` is applied. For
    systemic-subtracted maps the median is ~0 and this is |v| > P96(|v|); measuring from
    the median keeps the recipe, like ``dawson2020``, independent of a velocity offset.
``log_counts``
    ``log1p`` of counts (environment maps, Gim et al.), NaN -> 0.
``physical``
    NaN -> 0, no scaling; option ``scale`` (one factor per channel, e.g. 1/300 for km/s)
    multiplies each channel by a fixed factor recorded with the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from galexplore.errors import ParameterError

MODEL_SIZE = 64
MIN_INPUT_SIZE, MAX_INPUT_SIZE = 16, 628
#: Percentile above which |v - median v| is blanked by ``dawson2020_noisy`` (Dawson et al. 2020, sec. 2.4).
NOISY_CLIP_PERCENTILE = 96.0
#: Maps x channels normalised together by `_percentile_scale` (their float64 copy fits in L2 cache).
_BLOCK_ROWS = 64


def nearest_indices(in_size: int, out_size: int) -> np.ndarray:
    """Source pixel of each output pixel for nearest-neighbour resizing, as PyTorch picks it.

    PyTorch computes ``floor(dst * scale)`` in single precision with
    ``scale = float32(in_size) / float32(out_size)``, clamped to ``in_size - 1``.
    """
    scale = np.float32(in_size) / np.float32(out_size)
    idx = np.floor(np.arange(out_size, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(idx, in_size - 1)


def resize_nearest(maps: np.ndarray, size: int = MODEL_SIZE) -> np.ndarray:
    """Resize ``(..., H, W)`` maps to ``(..., size, size)`` by nearest neighbour (PyTorch's choice)."""
    rows = nearest_indices(maps.shape[-2], size)
    cols = nearest_indices(maps.shape[-1], size)
    return maps[..., rows[:, None], cols[None, :]]


def _check(maps: np.ndarray) -> np.ndarray:
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim != 4:
        raise ParameterError(f"a recipe takes maps of shape (n, C, H, W), got shape {maps.shape}; "
                             "add the missing axes (e.g. maps[:, None] for one channel).")
    h, w = maps.shape[-2:]
    if h != w or not MIN_INPUT_SIZE <= h <= MAX_INPUT_SIZE:
        raise ParameterError(f"maps must be square with {MIN_INPUT_SIZE} to {MAX_INPUT_SIZE} px a side, "
                             f"got {h} x {w}; crop or pad them to a square first.")
    return maps if h == MODEL_SIZE else resize_nearest(maps)  # recipes never write into it


def _sorted_percentile(ordered: np.ndarray, counts: np.ndarray, q: float,
                       shift: np.ndarray | float = 0.0) -> np.ndarray:
    """``np.percentile(row[:count] - shift, q)`` (in float64) of every row of ``ordered``
    (ascending in its first ``count`` entries), bit for bit: numpy's "linear" method and its
    interpolation formula, applied to the two order statistics it needs."""
    virtual = (counts - 1) * (q / 100.0)
    below = np.floor(virtual)
    gamma = virtual - below
    last = np.maximum(counts - 1, 0)
    lower = np.minimum(below.astype(np.int64), last)
    upper = np.minimum(lower + 1, last)
    a = np.take_along_axis(ordered, lower[:, None], axis=1)[:, 0].astype(np.float64) - shift
    b = np.take_along_axis(ordered, upper[:, None], axis=1)[:, 0].astype(np.float64) - shift
    diff = b - a
    return np.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma)


def _percentile_scale(maps: np.ndarray) -> np.ndarray:
    """The dawson2020 normalisation of already resized (n, C, 64, 64) maps, all maps at once
    (float64 arithmetic in blocks of rows that stay in cache)."""
    flat = maps.reshape(maps.shape[0] * maps.shape[1], -1)
    finite = np.isfinite(flat)
    counts = finite.sum(axis=1)
    ordered = np.sort(np.where(finite, flat, np.float32(np.inf)), axis=1)  # finite values first
    out = np.zeros(flat.shape, dtype=np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        low = _sorted_percentile(ordered, counts, 2.0)
        high = _sorted_percentile(ordered, counts, 98.0, shift=low)
        for start in range(0, len(flat), _BLOCK_ROWS):
            rows = slice(start, start + _BLOCK_ROWS)
            y = flat[rows].astype(np.float64)
            y -= low[rows, None]
            y /= high[rows, None]
            y *= 2.0
            y -= 1.0
            keep = (y >= -1.0) & (y <= 1.0) & (counts[rows] > 0)[:, None]  # NaN fails both comparisons
            np.copyto(out[rows], y, where=keep, casting="same_kind")
    return out.reshape(maps.shape)


def dawson2020(maps: np.ndarray) -> np.ndarray:
    """Published preprocessing of Dawson et al. (2020); see the module docstring."""
    return _percentile_scale(_check(maps))


def clip_noisy(maps: np.ndarray, percentile: float = NOISY_CLIP_PERCENTILE) -> np.ndarray:
    """Blank pixels whose |v - median v| exceeds the given percentile of it, per map and channel."""
    out = np.array(maps, dtype=np.float32, copy=True)
    flat = out.reshape(-1, out.shape[-2] * out.shape[-1])
    for x in flat:
        finite = np.isfinite(x)
        if not finite.any():
            continue
        dev = np.abs(x - np.median(x[finite]))
        limit = np.percentile(dev[finite], percentile)
        x[finite & (dev > limit)] = np.nan
    return out


def dawson2020_noisy(maps: np.ndarray) -> np.ndarray:
    """``dawson2020`` after the 96th-percentile clip of noisy maps (sec. 2.4 of the paper)."""
    return _percentile_scale(clip_noisy(_check(maps)))


def log_counts(maps: np.ndarray) -> np.ndarray:
    """log(1 + counts) of environment maps; NaN -> 0."""
    x = _check(maps)
    if np.any(x < 0):
        raise ParameterError("log_counts takes non-negative counts, but the maps hold negative values; "
                             "use it only on count channels such as 'env'.")
    return np.nan_to_num(np.log1p(x), nan=0.0).astype(np.float32)


def physical(maps: np.ndarray, scale: tuple[float, ...] | None = None) -> np.ndarray:
    """Physical units with NaN -> 0, each channel optionally multiplied by a fixed factor."""
    x = np.nan_to_num(_check(maps), nan=0.0, posinf=0.0, neginf=0.0)
    if scale is not None:
        factors = np.asarray(scale, dtype=np.float32)
        if factors.shape != (x.shape[1],):
            raise ParameterError(f"physical recipe: {factors.size} scale factors for {x.shape[1]} "
                                 "channels; give one factor per input channel.")
        x = x * factors[None, :, None, None]
    return x.astype(np.float32)


_RECIPES: dict[str, Callable[..., np.ndarray]] = {
    "dawson2020": dawson2020,
    "dawson2020_noisy": dawson2020_noisy,
    "log_counts": log_counts,
    "physical": physical,
}


@dataclass(frozen=True)
class Recipe:
    """A named preprocessing step; call it on (n, C, H, W) physical maps.

    Parameters
    ----------
    name : one of `list_recipes`.
    options : keyword options of the recipe (only ``physical`` has one: ``scale``).
    """

    name: str
    options: dict = field(default_factory=dict)

    def __call__(self, maps: np.ndarray) -> np.ndarray:
        return _RECIPES[self.name](maps, **self.options)


def list_recipes() -> list[str]:
    """Names accepted by `get_recipe`."""
    return list(_RECIPES)


def get_recipe(name: str, **options) -> Recipe:
    """The recipe called ``name`` (ParameterError if unknown or given unknown options)."""
    if name not in _RECIPES:
        raise ParameterError(f"unknown recipe {name!r}; choose one of {', '.join(_RECIPES)}.")
    allowed = {"physical": {"scale"}}.get(name, set())
    unknown = set(options) - allowed
    if unknown:
        raise ParameterError(f"recipe {name!r} takes no option(s) {sorted(unknown)}; allowed: "
                             f"{sorted(allowed) or 'none'}.")
    if "scale" in options and options["scale"] is not None:
        options = {"scale": tuple(float(s) for s in options["scale"])}
    return Recipe(name, options)
