"""Clustered volume, environment maps and measures against brute force, linear theory and hand values."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.spatial import cKDTree

from galexplore.errors import ParameterError
from galexplore.mock.environment import (
    COLUMN_UNITS,
    Volume,
    clustered_volume,
    disturbed_probability,
    environment_maps,
    environment_measures,
)

H = 0.7


# --- independent linear theory (BBKS 1986 + Sugiyama 1995 shape, n_s = 0.96, sigma8 = 0.8) ---------

def _bbks_unnormalised(k, omega_m=0.31, omega_b=0.049):
    gamma = omega_m * H * np.exp(-omega_b * (1 + np.sqrt(2 * H) / omega_m))
    q = k / gamma
    transfer = np.log(1 + 2.34 * q) / (2.34 * q) * (
        1 + 3.89 * q + (16.1 * q) ** 2 + (5.46 * q) ** 3 + (6.71 * q) ** 4) ** -0.25
    return k**0.96 * transfer**2


def _k_integral(kernel):
    """(1 / 2 pi^2) int k^3 P(k) kernel(k) d ln k, for the unnormalised spectrum."""
    def integrand(log_k):
        k = np.exp(log_k)
        return k**3 * _bbks_unnormalised(k) * kernel(k) / (2 * np.pi**2)
    return quad(integrand, np.log(1e-4), np.log(1e2), limit=500)[0]


def _top_hat(x):
    return 3 * (np.sin(x) - x * np.cos(x)) / x**3


def _linear_variance(radius, sigma8=0.8):
    """sigma^2(R) of the linear field in a top-hat sphere of radius R (h^-1 Mpc)."""
    norm = sigma8**2 / _k_integral(lambda k: _top_hat(8 * k) ** 2)
    return norm * _k_integral(lambda k: _top_hat(radius * k) ** 2)


@pytest.fixture(scope="module")
def volume():
    return clustered_volume(30000, np.random.default_rng(0))


def test_volume_has_requested_galaxies_box_and_density(volume):
    assert len(volume) == 30000
    assert volume.box_mpc_h == 100.0
    assert volume.positions.shape == volume.velocities.shape == (30000, 3)
    assert (volume.positions >= 0).all() and (volume.positions < 100).all()
    assert volume.number_density == pytest.approx(0.03)
    assert volume.density_contrast.mean() == pytest.approx(0.0, abs=1e-3)


def test_same_seed_same_bytes_and_other_seed_differs():
    a = clustered_volume(20000, np.random.default_rng(7))
    b = clustered_volume(20000, np.random.default_rng(7))
    c = clustered_volume(20000, np.random.default_rng(8))
    assert a.positions.tobytes() == b.positions.tobytes()
    assert a.velocities.tobytes() == b.velocities.tobytes()
    assert not np.array_equal(a.positions, c.positions)


def test_counts_in_cells_variance_matches_linear_spectrum(volume):
    """Variance of 10 h^-1 Mpc cells = Poisson + mean^2 sigma^2, sigma^2 from the input P(k)."""
    counts, _ = np.histogramdd(volume.positions, bins=10, range=[(0, 100)] * 3)
    mean = counts.mean()
    assert counts.var() > 10 * mean, "far more variance than Poisson: the volume is clustered"
    measured = (counts.var() - mean) / mean**2
    # A cube of side 10 has about the variance of the sphere of equal volume.
    predicted = _linear_variance(10 * (3 / (4 * np.pi)) ** (1 / 3))
    assert 0.6 < measured / predicted < 1.5


def test_pairs_fall_towards_each_other_as_linear_theory_says(volume):
    """Mean radial pairwise velocity v12(r) = -(2/3) f H0 r xi_bar(r) / (1 + xi(r)) (Peebles 1980)."""
    sample = volume.positions[:8000]
    velocity = volume.velocities[:8000]
    pairs = cKDTree(sample, boxsize=100.0).query_pairs(10.0, output_type="ndarray")
    separation = sample[pairs[:, 1]] - sample[pairs[:, 0]]
    separation = (separation + 50.0) % 100.0 - 50.0
    r = np.linalg.norm(separation, axis=1)
    radial = np.einsum("ij,ij->i", velocity[pairs[:, 1]] - velocity[pairs[:, 0]], separation) / r
    measured = radial[(r > 6.0) & (r < 10.0)].mean()

    r0 = 8.0
    norm = 0.64 / _k_integral(lambda k: _top_hat(8 * k) ** 2)
    xi_bar = norm * _k_integral(lambda k: _top_hat(r0 * k))
    xi = norm * _k_integral(lambda k: np.sinc(k * r0 / np.pi))
    predicted = -2 / 3 * 0.31**0.55 * 100.0 * r0 * xi_bar / (1 + xi)
    assert measured < 0
    assert 0.5 < measured / predicted < 2.0


def test_redshift_space_shifts_along_z_and_wraps():
    vol = Volume(np.array([[10.0, 20.0, 99.0], [1.0, 2.0, 50.0]]),
                 np.array([[500.0, -300.0, 300.0], [0.0, 0.0, -150.0]]), 100.0)
    np.testing.assert_allclose(vol.redshift_positions, [[10.0, 20.0, 2.0], [1.0, 2.0, 48.5]])


def test_kaiser_effect_boosts_clustering_in_redshift_space(volume):
    """Coherent infall raises large-scale clustering along the line of sight (Kaiser 1987)."""
    real, _ = np.histogramdd(volume.positions, bins=10, range=[(0, 100)] * 3)
    redshift, _ = np.histogramdd(volume.redshift_positions, bins=10, range=[(0, 100)] * 3)
    excess = lambda c: (c.var() - c.mean()) / c.mean() ** 2  # noqa: E731
    assert excess(redshift) / excess(real) > 1.2


# --- maps against a brute-force loop --------------------------------------------------------------

def _random_volume(seed, n=700, box=30.0):
    rng = np.random.default_rng(seed)
    positions = rng.random((n, 3)) * box
    positions[: n // 4] = np.mod(rng.normal(0.5, 2.0, (n // 4, 3)), box)  # a clump across the corner
    velocities = rng.normal(0.0, 500.0, (n, 3))
    return Volume(positions, velocities, box)


def _brute_force_map(vol, target, size=10.0, dv=1000.0, npix=64):
    box = vol.box_mpc_h
    counts = np.zeros((npix, npix))
    s = vol.redshift_positions
    for j in range(len(vol)):
        if j == target:
            continue
        d = [(s[j, a] - s[target, a] + box / 2) % box - box / 2 for a in range(3)]
        if abs(d[2]) * 100.0 >= dv:
            continue
        row = int(np.floor((d[1] + size / 2) / (size / npix)))
        col = int(np.floor((size / 2 - d[0]) / (size / npix)))
        if 0 <= row < npix and 0 <= col < npix:
            counts[row, col] += 1
    return counts


def test_maps_equal_brute_force_counts_with_periodic_wrap():
    vol = _random_volume(1)
    targets = np.array([0, 3, 10, 200, 450, 699])
    maps = environment_maps(vol, targets)
    assert maps.shape == (6, 64, 64) and maps.dtype == np.float32
    for map_, target in zip(maps, targets):
        np.testing.assert_array_equal(map_, _brute_force_map(vol, target))
    assert maps[:3].sum() > 20, "the clump around the box corner must be counted across the wrap"


def test_map_orientation_target_exclusion_and_velocity_cut():
    positions = np.array([
        [50.0, 50.0, 50.0],   # target
        [52.0, 53.0, 50.0],   # 2 east, 3 north: row 51, col 19
        [50.0, 50.0, 59.99],  # 999 km/s behind: counted in the central pixel
        [50.0, 50.0, 60.01],  # 1001 km/s behind: outside the window
        [46.0, 50.0, 45.0],   # 4 west: row 32, col 57
        [56.0, 50.0, 50.0],   # 6 east: outside the 10 h^-1 Mpc window
    ])
    vol = Volume(positions, np.zeros_like(positions), 100.0)
    (map_,) = environment_maps(vol, np.array([0]))
    assert map_.sum() == 3
    assert map_[51, 19] == 1 and map_[32, 32] == 1 and map_[32, 57] == 1


def test_map_counts_neighbours_across_the_box_edge():
    positions = np.array([[0.5, 99.5, 0.2], [99.0, 1.0, 99.8]])  # 1.5 west, 1.5 north, 0.4 in front
    vol = Volume(positions, np.zeros_like(positions), 100.0)
    maps = environment_maps(vol, np.array([0, 1]))
    assert maps[0, 41, 41] == 1  # row floor(6.5 / 0.15625), col floor(6.5 / 0.15625)
    assert maps[1, 22, 22] == 1  # the mirror offset: 1.5 east, 1.5 south


# --- measures -------------------------------------------------------------------------------------

def test_measures_by_hand():
    r = np.array([0.5, 1.0, 3.0, 5.0, 6.0])  # projected distances (h^-1 Mpc) of five neighbours
    angle = np.arange(5) * 1.3
    neighbours = np.stack([50 + r * np.cos(angle), 50 + r * np.sin(angle), np.full(5, 52.0)], axis=1)
    near_but_far_in_velocity = [[50.2, 50.0, 65.0]]
    positions = np.vstack([[[50.0, 50.0, 50.0]], neighbours, near_but_far_in_velocity])
    velocities = np.zeros_like(positions)
    velocities[0, 2] = -123.0
    vol = Volume(positions, velocities, 100.0)
    row = environment_measures(vol, np.array([0])).iloc[0]
    # 0.5 h^-1 Mpc = 0.714 Mpc and 1.0 h^-1 Mpc = 1.43 Mpc; the target's redshift position moves
    # by -1.23 h^-1 Mpc, still well inside the window of all five.
    assert row["d_nn"] == pytest.approx(0.5 / H)
    assert row["n_1mpc"] == 1
    assert row["sigma5"] == pytest.approx(5 / (np.pi * (6.0 / H) ** 2))
    assert row["v_pec"] == -123.0
    assert row["delta_ls"] == pytest.approx(5 / (6 * 4 / 3 * np.pi * 8**3 / 100**3) - 1)
    assert set(COLUMN_UNITS) == {"sigma5", "n_1mpc", "d_nn", "delta_ls", "v_pec"}


def test_measures_equal_brute_force():
    vol = _random_volume(2, n=900)
    targets = np.arange(0, 900, 37)
    got = environment_measures(vol, targets)
    s = vol.redshift_positions
    box = vol.box_mpc_h
    for i, t in enumerate(targets):
        d = (s - s[t] + box / 2) % box - box / 2
        others = np.arange(len(vol)) != t
        window = others & (np.abs(d[:, 2]) * 100 < 1000)
        projected = np.sort(np.hypot(d[window, 0], d[window, 1]))
        projected = projected[projected <= 10.0]
        assert got["d_nn"][i] == pytest.approx(projected[0] / H)
        expected_sigma5 = 5 / (np.pi * (projected[4] / H) ** 2) if projected.size >= 5 else np.nan
        assert got["sigma5"][i] == pytest.approx(expected_sigma5, nan_ok=True)
        assert got["n_1mpc"][i] == np.sum(projected < 0.7)
        in_sphere = np.sum(others & (np.linalg.norm(d, axis=1) <= 8.0))
        mean = (len(vol) - 1) * 4 / 3 * np.pi * 8**3 / box**3
        assert got["delta_ls"][i] == pytest.approx(in_sphere / mean - 1)
        assert got["v_pec"][i] == vol.velocities[t, 2]


def test_denser_targets_have_fuller_maps(volume):
    targets = np.arange(0, 30000, 60)
    maps = environment_maps(volume, targets)
    measures = environment_measures(volume, targets)
    totals = maps.sum(axis=(1, 2))
    dense = measures["sigma5"] > measures["sigma5"].median()
    assert totals[dense.to_numpy()].mean() > 1.5 * totals[~dense.to_numpy()].mean()


def test_small_box_and_bad_targets_are_refused():
    vol = Volume(np.zeros((3, 3)), np.zeros((3, 3)), 15.0)
    with pytest.raises(ParameterError, match="larger box"):
        environment_maps(vol, np.array([0]))
    big = Volume(np.zeros((3, 3)), np.zeros((3, 3)), 100.0)
    with pytest.raises(ParameterError, match="index"):
        environment_maps(big, np.array([3]))
    with pytest.raises(ParameterError, match="1-D"):
        environment_measures(big, np.array([0.5]))
    with pytest.raises(ParameterError):
        clustered_volume(0, np.random.default_rng(0))


# --- coupling of disturbed gas to density ---------------------------------------------------------

def test_disturbed_probability_mean_and_monotonic():
    delta = np.random.default_rng(3).lognormal(0.0, 1.0, 5000) - 1.0
    p = disturbed_probability(delta, 0.35, 1.5)
    assert p.mean() == pytest.approx(0.35, abs=1e-9)
    assert ((p >= 0) & (p <= 1)).all()
    order = np.argsort(delta)
    assert (np.diff(p[order]) >= 0).all()
    assert p[order[-500:]].mean() > 2 * p[order[:500]].mean()


def test_disturbed_probability_flat_without_coupling_and_refuses_bad_input():
    delta = np.array([-1.0, 0.0, 3.0, 10.0])
    np.testing.assert_array_equal(disturbed_probability(delta, 0.2, 0.0), np.full(4, 0.2))
    np.testing.assert_array_equal(disturbed_probability(delta, 1.0, 2.0), np.ones(4))
    assert np.isfinite(disturbed_probability(delta, 0.5, 3.0)).all()
    with pytest.raises(ParameterError):
        disturbed_probability(delta, 1.2, 1.0)
    with pytest.raises(ParameterError):
        disturbed_probability(delta, 0.3, -1.0)
    with pytest.raises(ParameterError):
        disturbed_probability(np.array([np.nan]), 0.3, 1.0)
