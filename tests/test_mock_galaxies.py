"""Mock galaxies: circularity, mass models, particle generators and catalogue columns."""

from __future__ import annotations

import numpy as np
import pytest
from astropy import constants as const
from astropy import units as u
from scipy import integrate

from galexplore.errors import ParameterError
from galexplore.mock.galaxies import (
    COLUMN_UNITS,
    DISTURBANCES,
    DM_PROFILE_RADII_KPC,
    TooFewParticles,
    circularity,
    draw_mass_model,
    make_galaxy,
)
from galexplore.mock.massmodel import MassModel
from galexplore.mock.particles import DiscStructure, clumpy_disc_positions

#: Irregularity (tests/referees.py) above which a velocity map is disturbed, and below which
#: it is a regular rotator.
IRREGULAR, REGULAR = 0.3, 0.15

G_KPC = const.G.to_value(u.kpc * u.km**2 / u.s**2 / u.Msun)


def _random_rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


# --- circularity (eq. 1), on particle sets built here ------------------------------------

def test_cold_circular_disc_has_kappa_one_in_any_frame():
    rng = np.random.default_rng(0)
    n = 5000
    radius = rng.uniform(0.5, 10.0, n)
    phi = rng.uniform(0, 2 * np.pi, n)
    pos = np.column_stack([radius * np.cos(phi), radius * np.sin(phi), np.zeros(n)])
    vel = 200.0 * np.column_stack([-np.sin(phi), np.cos(phi), np.zeros(n)])
    mass = rng.uniform(1.0, 2.0, n)
    assert circularity(pos, vel, mass) == pytest.approx(1.0, abs=0.01)
    # Tilted, displaced and moving: the centre-of-mass frame and the spin axis are found.
    rot = _random_rotation(rng)
    moved = circularity(pos @ rot.T + [3.0, -2.0, 7.0], vel @ rot.T + [150.0, 40.0, -90.0], mass)
    assert moved == pytest.approx(1.0, abs=0.01)


def test_isotropic_cloud_has_kappa_one_third():
    rng = np.random.default_rng(1)
    n = 20000
    pos = rng.normal(0.0, 5.0, (n, 3))
    vel = rng.normal(0.0, 120.0, (n, 3))
    assert circularity(pos, vel, np.ones(n)) == pytest.approx(1.0 / 3.0, abs=0.03)


def test_half_radial_half_tangential_orbits_give_one_half():
    # Every particle moves at 45 degrees between the radial and the azimuthal direction:
    # (j_z / R)^2 = v^2 / 2, so kappa = 1/2 exactly.
    n = 3600
    phi = np.linspace(0, 2 * np.pi, n, endpoint=False)
    radius = np.tile([2.0, 5.0, 9.0], n // 3)
    r_hat = np.column_stack([np.cos(phi), np.sin(phi), np.zeros(n)])
    phi_hat = np.column_stack([-np.sin(phi), np.cos(phi), np.zeros(n)])
    pos = radius[:, None] * r_hat
    vel = 100.0 * (r_hat + phi_hat) / np.sqrt(2.0)
    assert circularity(pos, vel, np.ones(n)) == pytest.approx(0.5, abs=1e-9)


def test_circularity_rejects_bad_shapes():
    with pytest.raises(ParameterError, match="shape"):
        circularity(np.zeros((5, 2)), np.zeros((5, 2)), np.ones(5))


# --- mass model against textbook and published numbers -----------------------------------

def test_freeman_disc_peak_velocity():
    # Pure exponential disc: v_c peaks at R = 2.15 Rd with v^2 = 0.3870 G M / Rd
    # (Binney & Tremaine 2008, eq. 2.165 and fig. 2.17).
    model = MassModel(log_mstar=10.5, log_mgas=0.0, log_m200=0.0, c200=10.0,
                      rd_star_kpc=3.0, rd_gas_kpc=3.0)
    radius = np.linspace(0.5, 20.0, 4000)
    v = model.circular_velocity(radius)
    assert radius[np.argmax(v)] == pytest.approx(2.15 * 3.0, rel=0.01)
    assert v.max() ** 2 == pytest.approx(0.3870 * G_KPC * 10**10.5 / 3.0, rel=0.003)
    # Far out the disc is Keplerian.
    assert model.circular_velocity(300.0) ** 2 == pytest.approx(G_KPC * 10**10.5 / 300.0, rel=0.01)


def test_nfw_enclosed_mass_matches_integrated_density():
    model = MassModel(log_mstar=10.0, log_mgas=9.5, log_m200=12.0, c200=8.0,
                      rd_star_kpc=2.5, rd_gas_kpc=3.0)
    h0 = 70.0 * u.km / u.s / u.Mpc
    rho_crit = (3 * h0**2 / (8 * np.pi * const.G)).to_value(u.Msun / u.kpc**3)
    r200 = (3 * 1e12 / (4 * np.pi * 200 * rho_crit)) ** (1 / 3)
    assert model.r200_kpc == pytest.approx(r200, rel=1e-4)
    r_s = r200 / 8.0

    def shell(r):
        return 4 * np.pi * r**2 / ((r / r_s) * (1 + r / r_s) ** 2)

    norm = 1e12 / integrate.quad(shell, 0, r200)[0]
    expected = [norm * integrate.quad(shell, 0, r)[0] for r in DM_PROFILE_RADII_KPC]
    row = make_galaxy(np.random.default_rng(0), mass_model=model).properties()
    got = [row[f"log_mdm_{k:02d}"] for k in range(20)]
    np.testing.assert_allclose(got, np.log10(expected), atol=1e-4)
    assert DM_PROFILE_RADII_KPC[0] == pytest.approx(1.0) and DM_PROFILE_RADII_KPC[-1] == pytest.approx(100.0)
    assert DM_PROFILE_RADII_KPC[1] / DM_PROFILE_RADII_KPC[0] == pytest.approx(100 ** (1 / 19))


def test_half_mass_columns():
    model = MassModel(log_mstar=10.3, log_mgas=9.6, log_m200=11.9, c200=9.0,
                      rd_star_kpc=2.0, rd_gas_kpc=2.6)
    row = make_galaxy(np.random.default_rng(0), mass_model=model).properties()
    r_hsm = row["r_hsm"]

    def disc_mass(mass, rd, r):
        return integrate.quad(lambda x: mass * x * np.exp(-x / rd) / rd**2, 0, r)[0]

    assert disc_mass(10**10.3, 2.0, r_hsm) == pytest.approx(0.5 * 10**10.3, rel=1e-6)
    assert row["log_mstar_hsm"] == pytest.approx(10.3 - np.log10(2.0), abs=1e-6)
    x = r_hsm * 9.0 / model.r200_kpc
    dm = 10**11.9 * (np.log1p(x) - x / (1 + x)) / (np.log(10.0) - 9.0 / 10.0)
    total = 0.5 * 10**10.3 + disc_mass(10**9.6, 2.6, r_hsm) + dm
    assert row["log_mtot_hsm"] == pytest.approx(np.log10(total), abs=1e-5)


def test_drawn_mass_models_follow_the_published_relations():
    rng = np.random.default_rng(7)
    models = [draw_mass_model(rng) for _ in range(400)]
    log_mstar = np.array([m.log_mstar for m in models])
    log_m200 = np.array([m.log_m200 for m in models])
    assert log_mstar.min() >= np.log10(5e9) and log_mstar.max() <= 11.5
    assert min(m.log_mgas for m in models) >= 9.0
    # Moster et al. (2013) z = 0 relation, written out here: residuals ~ N(0, 0.15 dex).
    ratio = 10 ** (log_m200 - 11.590)
    moster = log_m200 + np.log10(2 * 0.0351 / (ratio ** -1.376 + ratio**0.608))
    residual = log_mstar - moster
    assert abs(residual.mean()) < 0.03
    assert residual.std() == pytest.approx(0.15, abs=0.025)
    # Dutton & Maccio (2014): log c = 0.905 - 0.101 log(M / 1e12 h^-1 Msun), 0.11 dex scatter.
    log_c = np.log10([m.c200 for m in models])
    c_residual = log_c - (0.905 - 0.101 * (log_m200 - 12 + np.log10(0.7)))
    assert abs(c_residual.mean()) < 0.02
    assert c_residual.std() == pytest.approx(0.11, abs=0.02)
    # The mass function falls steeply above M* = 10^10.66: most galaxies are below 10^10.66.
    assert 0.6 < np.mean(log_mstar < 10.66) < 0.9


# --- generated galaxies -------------------------------------------------------------------

@pytest.fixture(scope="module")
def mass_model():
    return MassModel(log_mstar=10.4, log_mgas=9.7, log_m200=11.9, c200=8.5,
                     rd_star_kpc=2.2, rd_gas_kpc=5.5)


def _with_gas(model: MassModel, log_mgas: float) -> MassModel:
    return MassModel(**{**model.__dict__, "log_mgas": log_mgas})


def test_particle_count_follows_the_gas_mass_at_eagle_resolution(mass_model):
    counts = {}
    for log_mgas in (9.3, 9.7, 10.1):
        galaxy = make_galaxy(np.random.default_rng(1), "none", 0.0, mass_model=_with_gas(mass_model, log_mgas))
        expected = 10**log_mgas / 1.81e6
        assert np.all(galaxy.masses == 1.81e6)
        # all but the few particles scattered beyond the 30 kpc aperture
        assert 0.97 * expected <= len(galaxy.masses) <= expected + 1
        assert np.linalg.norm(galaxy.positions, axis=1).max() <= 30.0 + 1e-9
        counts[log_mgas] = len(galaxy.masses)
    assert counts[10.1] / counts[9.3] == pytest.approx(10**0.8, rel=0.03)
    assert galaxy.properties()["n_particles"] == counts[10.1]
    with pytest.raises(TooFewParticles, match="more than 200"):  # 10^8.5 Msun = 175 particles
        make_galaxy(np.random.default_rng(1), "none", 0.0, mass_model=_with_gas(mass_model, 8.5))


def _counts_in_cells_dispersion(xy: np.ndarray, cell_kpc: float, extent_kpc: float) -> float:
    """Variance / mean of particle counts in square cells: 1 for a Poisson (smooth) layout."""
    edges = np.arange(-extent_kpc, extent_kpc + cell_kpc, cell_kpc)
    counts, _, _ = np.histogram2d(xy[:, 0], xy[:, 1], bins=[edges, edges])
    return float(counts.var() / counts.mean())


def test_regular_disc_is_clumpy_cold_and_follows_the_rotation_curve(mass_model):
    galaxy = make_galaxy(np.random.default_rng(3), "none", 0.0, mass_model=mass_model)
    assert galaxy.kappa > 0.95
    weights = galaxy.masses / galaxy.masses.sum()
    pos = galaxy.positions - weights @ galaxy.positions
    vel = galaxy.velocities - weights @ galaxy.velocities
    spin = (galaxy.masses[:, None] * np.cross(pos, vel)).sum(axis=0)
    assert np.hypot(spin[0], spin[1]) < 1e-9 * spin[2]
    radius = np.hypot(galaxy.positions[:, 0], galaxy.positions[:, 1])
    v_phi = (galaxy.positions[:, 0] * galaxy.velocities[:, 1]
             - galaxy.positions[:, 1] * galaxy.velocities[:, 0]) / radius
    ring = (radius > 4) & (radius < 8)
    assert np.median(v_phi[ring] / mass_model.circular_velocity(radius[ring])) == pytest.approx(1.0, abs=0.03)
    assert galaxy.r98_kpc == pytest.approx(np.percentile(np.linalg.norm(galaxy.positions, axis=1), 98))
    # clumpy: counts in 1 kpc cells scatter far more than those of the same radii at random
    # azimuths (a smooth disc with the same radial profile)
    phi = np.random.default_rng(0).uniform(0, 2 * np.pi, len(radius))
    smooth = np.column_stack([radius * np.cos(phi), radius * np.sin(phi)])
    clumpy = _counts_in_cells_dispersion(galaxy.positions[:, :2], 1.0, 10.0)
    assert clumpy > 2.0 * _counts_in_cells_dispersion(smooth, 1.0, 10.0)


def _structure(**changes) -> DiscStructure:
    base = dict(pattern="flocculent", arms=2, pitch_deg=20.0, pattern_fraction=0.8, ring_radius_rd=2.0,
                ring_width_rd=0.2, hole_radius_rd=0.0, clump_size_kpc=0.3, particles_per_clump=6.0)
    return DiscStructure(**{**base, **changes})


def test_disc_layouts_have_arms_rings_and_holes():
    rng = np.random.default_rng(2)
    rd = 4.0
    spiral = clumpy_disc_positions(rng, 6000, rd, _structure(pattern="spiral", arms=2))
    flocculent = clumpy_disc_positions(rng, 6000, rd, _structure())
    phi = np.arctan2(spiral[:, 1], spiral[:, 0])
    radius = np.hypot(spiral[:, 0], spiral[:, 1])
    # arms: in an annulus, the m = 2 Fourier amplitude of the azimuths is large (a smooth disc: ~1/sqrt(n))
    annulus = (radius > 1.5 * rd) & (radius < 2.5 * rd)
    band = phi[annulus] - np.log(radius[annulus] / rd) / np.tan(np.radians(20.0))
    assert np.abs(np.mean(np.exp(2j * band))) > 0.3
    flat_phi = np.arctan2(flocculent[:, 1], flocculent[:, 0])
    flat_r = np.hypot(flocculent[:, 0], flocculent[:, 1])
    flat_band = flat_phi - np.log(np.maximum(flat_r, 1e-3) / rd) / np.tan(np.radians(20.0))
    assert np.abs(np.mean(np.exp(2j * flat_band[(flat_r > 1.5 * rd) & (flat_r < 2.5 * rd)]))) < 0.15
    # a ring: the radial distribution peaks at the ring, not at the centre
    ringed = clumpy_disc_positions(rng, 6000, rd, _structure(pattern="ring", ring_radius_rd=2.5))
    counts, edges = np.histogram(np.hypot(ringed[:, 0], ringed[:, 1]) / rd, bins=np.arange(0, 6, 0.25))
    assert 2.0 <= edges[np.argmax(counts)] <= 2.75
    # a hole: (almost) no gas inside it, beyond the clumps' own size
    holed = clumpy_disc_positions(rng, 6000, rd, _structure(hole_radius_rd=1.0))
    assert np.mean(np.hypot(holed[:, 0], holed[:, 1]) < 0.8 * rd) < 0.01


def test_an_equal_mass_counter_rotating_merger_is_disturbed_and_a_clumpy_disc_is_regular(mass_model):
    """Judged by the referee (pafit + plotbin) on the noiseless velocity maps."""
    from referees import irregularity

    from galexplore.mock.observe import observe

    for seed in (0, 1, 2):
        merger = make_galaxy(np.random.default_rng(seed), "merger", 1.0, mass_model=mass_model)
        disc = make_galaxy(np.random.default_rng(seed), "none", 0.0, mass_model=mass_model)
        merger_map = observe(merger, 40.0, 55.0, np.random.default_rng(0)).mom1
        disc_map = observe(disc, 40.0, 55.0, np.random.default_rng(0)).mom1
        assert merger.kappa < 0.5 and disc.kappa > 0.8
        assert irregularity(merger_map) > IRREGULAR and irregularity(disc_map) < REGULAR


def test_disturbances_lower_kappa_and_the_inflow_stays_physical(mass_model):
    regular = make_galaxy(np.random.default_rng(4), "none", 0.0, mass_model=mass_model).kappa
    for disturbance, most in (("merger", 0.5), ("clumps", 0.6), ("dispersion", 0.5), ("tidal", 0.9)):
        full = np.median([make_galaxy(np.random.default_rng(s), disturbance, 1.0, mass_model=mass_model).kappa
                          for s in range(5)])
        weak = np.median([make_galaxy(np.random.default_rng(s), disturbance, 0.2, mass_model=mass_model).kappa
                          for s in range(5)])
        assert full < most and full < weak < regular, (disturbance, full, weak, regular)
    inflow = make_galaxy(np.random.default_rng(6), "radial_inflow", 1.0, mass_model=mass_model)
    radius = np.hypot(inflow.positions[:, 0], inflow.positions[:, 1])
    v_radial = np.einsum("ij,ij->i", inflow.positions[:, :2], inflow.velocities[:, :2]) / radius
    v_c = mass_model.circular_velocity(radius)
    assert np.median(v_radial / v_c) == pytest.approx(-0.3, abs=0.03)  # capped at 0.3 v_c
    assert inflow.kappa > 0.85
    lopsided = make_galaxy(np.random.default_rng(6), "lopsided", 1.0, mass_model=mass_model)
    centroid = lopsided.positions.mean(axis=0)
    assert np.hypot(centroid[0], centroid[1]) > 1.0  # kpc off the centre of potential


def test_kappa_spans_zero_to_one(mass_model):
    rng = np.random.default_rng(5)
    kappas = [make_galaxy(rng, d, rng.uniform(), mass_model=mass_model).kappa
              for d in DISTURBANCES[1:] for _ in range(12)]
    kappas.append(make_galaxy(rng, "none", 0.0, mass_model=mass_model).kappa)
    counts, _ = np.histogram(kappas, bins=5, range=(0.0, 1.0))
    assert np.all(counts[1:] > 0), counts


def test_properties_and_units_cover_the_same_columns(mass_model):
    galaxy = make_galaxy(np.random.default_rng(8), "tidal", 0.5, mass_model=mass_model)
    row = galaxy.properties()
    assert set(row) == set(COLUMN_UNITS)
    assert row["disturbance"] == "tidal" and row["disturbance_strength"] == 0.5
    assert row["kappa"] == galaxy.kappa and row["r98"] == galaxy.r98_kpc
    assert row["log_mgas"] == pytest.approx(np.log10(len(galaxy.masses) * 1.81e6))
    assert all(np.isfinite(v) for k, v in row.items() if k != "disturbance")


def test_same_seed_same_bytes_different_seed_differs():
    a = make_galaxy(np.random.default_rng(11), "merger", 0.7)
    b = make_galaxy(np.random.default_rng(11), "merger", 0.7)
    c = make_galaxy(np.random.default_rng(12), "merger", 0.7)
    assert a.positions.tobytes() == b.positions.tobytes()
    assert a.velocities.tobytes() == b.velocities.tobytes()
    assert a.properties() == b.properties()
    assert a.positions.tobytes() != c.positions.tobytes()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"disturbance": "spiral"}, "Unknown disturbance 'spiral'"),
        ({"disturbance": "dispersion", "strength": 1.5}, r"strength must lie in \[0, 1\]"),
        ({"disturbance": "tidal", "strength": -0.1}, r"strength must lie in \[0, 1\]"),
        ({"disturbance": "none", "strength": 0.3}, "has strength 0"),
        ({"particle_mass_msun": 0.0}, "particle_mass_msun must be a positive number"),
    ],
)
def test_bad_parameters_raise_clear_errors(kwargs, message):
    with pytest.raises(ParameterError, match=message):
        make_galaxy(np.random.default_rng(0), **kwargs)


def test_bad_mass_model_raises():
    with pytest.raises(ParameterError, match="rd_gas_kpc must be positive"):
        MassModel(log_mstar=10, log_mgas=9, log_m200=12, c200=8, rd_star_kpc=2, rd_gas_kpc=0)
