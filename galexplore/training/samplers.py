"""Which training images an epoch sees: kappa-balanced draws and splits by galaxy.

Dawson et al. (2020, sec. 2.6) draw a fixed number of images per epoch (6400) with
replacement, weighting each image so that every circularity bin of width 0.1 is drawn
equally often; held-out sets must not contain other views of a training galaxy. Training
selects its epoch on a validation set and reports figures on a separate test set.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from galexplore.errors import ParameterError

KAPPA_BIN_WIDTH = 0.1


def kappa_bins(kappa: np.ndarray, bin_width: float = KAPPA_BIN_WIDTH) -> np.ndarray:
    """Bin index of each circularity; -1 for a non-finite kappa.

    Parameters
    ----------
    kappa : array_like, shape (n,)
        Circularity (dimensionless, 0 to 1).
    bin_width : float
        Width of a bin in kappa. Kappa = 1 joins the last bin below it.

    Returns
    -------
    numpy.ndarray of int64, shape (n,)
    """
    if not bin_width > 0:
        raise ParameterError(f"kappa bin width must be positive, got {bin_width}")
    kappa = np.asarray(kappa, dtype=np.float64)
    n_bins = max(1, math.ceil(round(1.0 / bin_width, 9)))
    finite = np.isfinite(kappa)
    bins = np.full(kappa.shape, -1, dtype=np.int64)
    bins[finite] = np.clip(np.floor(kappa[finite] / bin_width + 1e-9), 0, n_bins - 1).astype(np.int64)
    return bins


def kappa_balanced_weights(kappa: np.ndarray, bin_width: float = KAPPA_BIN_WIDTH) -> np.ndarray:
    """Sampling weight of each image so that every occupied kappa bin is drawn equally often.

    Each image gets 1 / (number of images in its bin); images with non-finite kappa get 0.

    Parameters
    ----------
    kappa : array_like, shape (n,)
        Circularity of each image's galaxy.
    bin_width : float
        Width of a kappa bin (0.1 in Dawson et al. 2020).

    Returns
    -------
    numpy.ndarray of float64, shape (n,), summing to the number of occupied bins.
    """
    bins = kappa_bins(kappa, bin_width)
    valid = bins >= 0
    if not valid.any():
        raise ParameterError(
            "no image has a finite kappa, so kappa-balanced sampling is impossible; "
            "use a dataset with a 'kappa' column (e.g. from `galexplore sample`)"
        )
    counts = np.bincount(bins[valid])
    weights = np.zeros(bins.shape, dtype=np.float64)
    weights[valid] = 1.0 / counts[bins[valid]]
    return weights


def draw_epoch(weights: np.ndarray, images_per_epoch: int, generator: torch.Generator) -> np.ndarray:
    """Indices of the images one epoch sees, drawn with replacement in proportion to ``weights``.

    Parameters
    ----------
    weights : array_like, shape (n,)
        Non-negative sampling weights (need not sum to 1).
    images_per_epoch : int
        Number of draws (6400 in Dawson et al. 2020).
    generator : torch.Generator
        Source of randomness; the same generator state gives the same indices.

    Returns
    -------
    numpy.ndarray of int64, shape (images_per_epoch,)
    """
    if images_per_epoch < 1:
        raise ParameterError(f"images_per_epoch must be at least 1, got {images_per_epoch}")
    w = torch.as_tensor(np.asarray(weights, dtype=np.float64))
    if w.numel() == 0 or not bool((w >= 0).all()) or not float(w.sum()) > 0:
        raise ParameterError("sampling weights must be non-negative with a positive sum")
    return torch.multinomial(w, images_per_epoch, replacement=True, generator=generator).numpy()


def split_by_galaxy(galaxy_ids: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split map indices into train and test so that no galaxy has views in both.

    Parameters
    ----------
    galaxy_ids : array_like, shape (n,)
        Galaxy of each map (several views share one id).
    test_fraction : float
        Fraction of the *galaxies* held out, in (0, 1); at least one galaxy goes to each side.
    seed : int
        Seed of the shuffle of galaxies.

    Returns
    -------
    train_index, test_index : numpy.ndarray of int64
        Sorted row indices into ``galaxy_ids``.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ParameterError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction}")
    galaxy_ids = np.asarray(galaxy_ids)
    unique = np.unique(galaxy_ids)
    if unique.size < 2:
        raise ParameterError(
            f"a split by galaxy needs at least 2 galaxies, the dataset has {unique.size}; "
            "use a dataset with more galaxies"
        )
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(unique)
    n_test = min(max(1, int(round(test_fraction * unique.size))), unique.size - 1)
    is_test = np.isin(galaxy_ids, shuffled[:n_test])
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def split_train_validation_test(galaxy_ids: np.ndarray, validation_fraction: float, test_fraction: float,
                                seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split map indices three ways by galaxy: train, validation (model selection) and test
    (the card's held-out figures, never seen while training or choosing the epoch).

    The test set is the one `split_by_galaxy` (``test_fraction``, ``seed``) holds out, so
    that a card's split can be re-derived from its seed and fractions; the validation set
    is ``validation_fraction`` of all galaxies, drawn from the rest with seed ``seed + 1``.

    Returns
    -------
    train_index, validation_index, test_index : sorted numpy.ndarray of int64 into ``galaxy_ids``
    """
    if not 0.0 < validation_fraction < 1.0 or validation_fraction + test_fraction >= 1.0:
        raise ParameterError(f"validation_fraction must lie in (0, 1) and leave galaxies for training next to "
                             f"test_fraction {test_fraction}; got {validation_fraction}")
    galaxy_ids = np.asarray(galaxy_ids)
    rest, test_index = split_by_galaxy(galaxy_ids, test_fraction, seed)
    share_of_rest = validation_fraction / (1.0 - test_fraction)
    train_in_rest, validation_in_rest = split_by_galaxy(galaxy_ids[rest], share_of_rest, seed + 1)
    return rest[train_in_rest], rest[validation_in_rest], test_index
