"""Recipes: hand-worked examples of the published Dawson et al. (2020) preprocessing and friends."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from galexplore.data.recipes import get_recipe, list_recipes, nearest_indices, resize_nearest
from galexplore.errors import ParameterError


def ramp_map(values: np.ndarray) -> np.ndarray:
    """(1, 1, 64, 64) map with ``values`` in the first pixels (row-major) and NaN elsewhere."""
    m = np.full(64 * 64, np.nan, dtype=np.float32)
    m[: len(values)] = values
    return m.reshape(1, 1, 64, 64)


def test_list_recipes():
    assert list_recipes() == ["dawson2020", "dawson2020_noisy", "log_counts", "physical"]
    assert get_recipe("dawson2020").name == "dawson2020"


def test_dawson2020_hand_worked():
    # 100 finite pixels v_k = 10 + 3k (k = 0..99), the rest blank. With numpy's linear
    # percentiles, P2 sits at rank 0.02 * 99 = 1.98, i.e. k = 1.98; after subtracting it,
    # P98 sits at rank 97.02, i.e. k = 97.02, so the scaled value is (k - 1.98) / 95.04.
    # x2 - 1 gives [-1, 1] for 2 <= k <= 97; k = 0, 1, 98, 99 fall outside and become 0.
    k = np.arange(100)
    out = get_recipe("dawson2020")(ramp_map(10 + 3 * k))
    assert out.shape == (1, 1, 64, 64) and out.dtype == np.float32
    expected = np.where((k >= 2) & (k <= 97), (k - 1.98) / 95.04 * 2 - 1, 0.0)
    np.testing.assert_allclose(out.ravel()[:100], expected, atol=2e-6)
    assert np.all(out.ravel()[100:] == 0)  # blank -> 0
    assert out.ravel()[2] == pytest.approx(-1 + 0.04 / 95.04, abs=1e-6)


def test_dawson2020_resizes_first():
    # 32 px -> 64 px by nearest neighbour doubles every pixel (np.repeat, independent of the code)
    rng = np.random.default_rng(1)
    small = rng.normal(0, 100, (2, 1, 32, 32)).astype(np.float32)
    small[0, 0, :5] = np.nan
    doubled = small.repeat(2, axis=2).repeat(2, axis=3)
    recipe = get_recipe("dawson2020")
    np.testing.assert_array_equal(recipe(small), recipe(doubled))


def test_nearest_resize_matches_pytorch_for_every_published_size():
    for n in range(16, 629):  # PyTorch picks rows and columns independently: probe each axis
        row = torch.arange(n, dtype=torch.float64).reshape(1, 1, 1, n)
        ref_cols = torch.nn.functional.interpolate(row, size=(1, 64), mode="nearest")[0, 0, 0].numpy()
        ref_rows = torch.nn.functional.interpolate(row.reshape(1, 1, n, 1), size=(64, 1),
                                                   mode="nearest")[0, 0, :, 0].numpy()
        grid = np.arange(n * n, dtype=np.float64).reshape(1, 1, n, n)
        np.testing.assert_array_equal(resize_nearest(grid)[0, 0], ref_rows[:, None] * n + ref_cols,
                                      err_msg=f"size {n}")
    assert nearest_indices(128, 64).tolist() == list(range(0, 128, 2))


def test_dawson2020_noisy_blanks_beyond_the_96th_percentile_first():
    # v_k = k, k = 0..99: median 49.5, |v - median| = 0.5, 0.5, 1.5, 1.5, ..., 49.5, 49.5.
    # Its P96 sits at rank 95.04 of the sorted deviations: 47.5 + 0.04 = 47.54, so k = 0, 1,
    # 98, 99 (deviation 48.5 and 49.5) are blanked. dawson2020 on the 96 values 2..97:
    # P2 at rank 1.9 -> 3.9; P98 of v - 3.9 at rank 93.1 -> 95.1 - 3.9 = 91.2.
    k = np.arange(100)
    out = get_recipe("dawson2020_noisy")(ramp_map(k)).ravel()[:100]
    expected = np.where((k >= 4) & (k <= 95), (k - 3.9) / 91.2 * 2 - 1, 0.0)
    np.testing.assert_allclose(out, expected, atol=2e-6)


def test_dawson2020_noisy_removes_a_noise_spike_that_would_set_the_scale():
    k = np.arange(200, dtype=np.float32) - 100.0  # -100..99 km/s
    spiky = np.r_[k, np.full(5, 5000.0)]  # 5 noise pixels at 5000 km/s (2.4 % of the pixels)
    clean = get_recipe("dawson2020")(ramp_map(k)).ravel()[:200]
    noisy_plain = get_recipe("dawson2020")(ramp_map(spiky)).ravel()[:200]
    noisy_clipped = get_recipe("dawson2020_noisy")(ramp_map(spiky)).ravel()[:200]
    # without clipping, the spike squeezes the disc into a narrow range; with it, the range is back
    assert np.ptp(noisy_plain[noisy_plain != 0]) < 0.2 * np.ptp(clean[clean != 0])
    assert np.ptp(noisy_clipped[noisy_clipped != 0]) > 0.9 * np.ptp(clean[clean != 0])


def test_dawson2020_edge_cases_give_zeros_not_nan():
    blank = np.full((1, 1, 64, 64), np.nan, dtype=np.float32)
    constant = np.full((1, 1, 64, 64), 7.0, dtype=np.float32)
    for name in ("dawson2020", "dawson2020_noisy"):
        assert np.all(get_recipe(name)(blank) == 0)
        assert np.all(np.isfinite(get_recipe(name)(constant)))


def test_log_counts_and_physical():
    counts = np.array([0, 1, 3, np.nan], dtype=np.float32)
    out = get_recipe("log_counts")(ramp_map(counts)).ravel()[:4]
    np.testing.assert_allclose(out, [0.0, np.log(2.0), np.log(4.0), 0.0], rtol=1e-6)
    two = np.stack([ramp_map(np.array([100.0, np.nan]))[0, 0], ramp_map(np.array([3.0]))[0, 0]])[None]
    phys = get_recipe("physical")(two)
    assert phys[0, 0, 0, 0] == 100.0 and phys[0, 0, 0, 1] == 0.0
    scaled = get_recipe("physical", scale=[0.01, 2.0])(two)
    assert scaled[0, 0, 0, 0] == pytest.approx(1.0) and scaled[0, 1, 0, 0] == pytest.approx(6.0)


def test_recipe_errors():
    with pytest.raises(ParameterError, match="unknown recipe 'foo'"):
        get_recipe("foo")
    with pytest.raises(ParameterError, match="takes no option"):
        get_recipe("dawson2020", scale=[1.0])
    with pytest.raises(ParameterError, match=r"\(n, C, H, W\)"):
        get_recipe("dawson2020")(np.zeros((64, 64)))
    with pytest.raises(ParameterError, match="crop or pad"):
        get_recipe("dawson2020")(np.zeros((1, 1, 64, 60)))
    with pytest.raises(ParameterError, match="16 to 628"):
        get_recipe("physical")(np.zeros((1, 1, 8, 8)))
    with pytest.raises(ParameterError, match="one factor per input channel"):
        get_recipe("physical", scale=[1.0])(np.zeros((1, 2, 64, 64)))
    with pytest.raises(ParameterError, match="non-negative counts"):
        get_recipe("log_counts")(-np.ones((1, 1, 64, 64)))
