"""Kappa-balanced sampling and the split by galaxy (Dawson et al. 2020, sec. 2.6)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from galexplore.errors import ParameterError
from galexplore.training.samplers import draw_epoch, kappa_balanced_weights, kappa_bins, split_by_galaxy


def _imbalanced_kappa(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Kappa heavily skewed towards 1, as in Fig. 2 of Dawson et al.: 3 maps in [0, 0.1),
    ... 400 in [0.9, 1.0]."""
    per_bin = np.array([3, 5, 10, 20, 40, 80, 150, 250, 350, 400])
    kappa = np.concatenate([rng.uniform(0.1 * b + 0.01, 0.1 * b + 0.09, n) for b, n in enumerate(per_bin)])
    return kappa, per_bin


def test_balanced_draws_fill_every_kappa_bin_equally():
    kappa, per_bin = _imbalanced_kappa(np.random.default_rng(1))
    n_draws = 20_000
    drawn = draw_epoch(kappa_balanced_weights(kappa), n_draws, torch.Generator().manual_seed(0))
    counts = np.bincount(np.floor(kappa[drawn] * 10).astype(int), minlength=10)
    # Equal bins: a multinomial with p = 1/10 each; Pearson's statistic follows chi2(9).
    expected = n_draws / 10
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < stats.chi2.ppf(0.999, df=9), counts
    # Drawing in proportion to the bin populations instead fails that bound by far.
    natural = n_draws * per_bin / per_bin.sum()
    assert ((natural - expected) ** 2 / expected).sum() > 100 * stats.chi2.ppf(0.999, df=9)


def test_bin_edges_and_non_finite_kappa():
    kappa = np.array([0.0, 0.1, 0.3, 0.7, 0.99, 1.0, np.nan])
    assert kappa_bins(kappa).tolist() == [0, 1, 3, 7, 9, 9, -1]
    weights = kappa_balanced_weights(kappa)
    # bins 0, 1, 3, 7 hold one map each; bin 9 holds two; NaN is never drawn
    assert weights.tolist() == [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.0]
    drawn = draw_epoch(weights, 500, torch.Generator().manual_seed(3))
    assert 6 not in drawn


def test_no_finite_kappa_is_an_error():
    with pytest.raises(ParameterError, match="kappa"):
        kappa_balanced_weights(np.full(5, np.nan))


def test_draws_repeat_with_the_same_seed_only():
    weights = np.ones(50)
    a = draw_epoch(weights, 64, torch.Generator().manual_seed(7))
    b = draw_epoch(weights, 64, torch.Generator().manual_seed(7))
    c = draw_epoch(weights, 64, torch.Generator().manual_seed(8))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_split_by_galaxy_keeps_every_galaxy_on_one_side():
    galaxy_ids = np.repeat(np.arange(100) * 7 + 3, 8)  # 100 galaxies, 8 views each
    train, test = split_by_galaxy(galaxy_ids, test_fraction=0.2, seed=0)
    assert not set(galaxy_ids[train]) & set(galaxy_ids[test])
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(galaxy_ids.size))
    assert np.unique(galaxy_ids[test]).size == 20
    again, _ = split_by_galaxy(galaxy_ids, 0.2, seed=0)
    other, _ = split_by_galaxy(galaxy_ids, 0.2, seed=1)
    assert np.array_equal(train, again)
    assert not np.array_equal(train, other)


def test_split_needs_two_galaxies_and_a_fraction_inside_0_1():
    with pytest.raises(ParameterError, match="at least 2 galaxies"):
        split_by_galaxy(np.zeros(10, dtype=int), 0.2, seed=0)
    with pytest.raises(ParameterError, match="test_fraction"):
        split_by_galaxy(np.arange(10), 1.0, seed=0)
    train, test = split_by_galaxy(np.arange(2), 0.01, seed=0)  # one galaxy always goes each way
    assert train.size == 1 and test.size == 1
