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
    circularity,
    draw_mass_model,
    make_galaxy,
)
from galexplore.mock.massmodel import MassModel

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
    row = make_galaxy(np.random.default_rng(0), mass_model=model, n_particles=1000).properties()
    got = [row[f"log_mdm_{k:02d}"] for k in range(20)]
    np.testing.assert_allclose(got, np.log10(expected), atol=1e-4)
    assert DM_PROFILE_RADII_KPC[0] == pytest.approx(1.0) and DM_PROFILE_RADII_KPC[-1] == pytest.approx(100.0)
    assert DM_PROFILE_RADII_KPC[1] / DM_PROFILE_RADII_KPC[0] == pytest.approx(100 ** (1 / 19))


def test_half_mass_columns():
    model = MassModel(log_mstar=10.3, log_mgas=9.6, log_m200=11.9, c200=9.0,
                      rd_star_kpc=2.0, rd_gas_kpc=2.6)
    row = make_galaxy(np.random.default_rng(0), mass_model=model, n_particles=1000).properties()
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
                     rd_star_kpc=2.2, rd_gas_kpc=2.4)


def test_regular_disc_is_a_cold_disc_with_spin_along_z(mass_model):
    galaxy = make_galaxy(np.random.default_rng(3), "none", 0.0, mass_model=mass_model)
    assert len(galaxy.masses) >= 5000
    assert galaxy.kappa > 0.97
    assert galaxy.masses.sum() == pytest.approx(10**9.7, rel=1e-9)
    weights = galaxy.masses / galaxy.masses.sum()
    pos = galaxy.positions - weights @ galaxy.positions
    vel = galaxy.velocities - weights @ galaxy.velocities
    spin = (galaxy.masses[:, None] * np.cross(pos, vel)).sum(axis=0)
    assert np.hypot(spin[0], spin[1]) < 1e-9 * spin[2]
    # Rotation speed of the disc follows the mass model's circular velocity.
    radius = np.hypot(galaxy.positions[:, 0], galaxy.positions[:, 1])
    v_phi = (galaxy.positions[:, 0] * galaxy.velocities[:, 1]
             - galaxy.positions[:, 1] * galaxy.velocities[:, 0]) / radius
    ring = (radius > 4) & (radius < 5)
    assert np.median(v_phi[ring]) == pytest.approx(float(mass_model.circular_velocity(4.5)), rel=0.03)
    # Exponential disc of scale length 2.4 kpc: half of its mass within 1.678 Rd.
    assert np.median(radius) == pytest.approx(1.678 * 2.4, rel=0.05)
    assert galaxy.r98_kpc == pytest.approx(np.percentile(np.linalg.norm(galaxy.positions, axis=1), 98))


@pytest.mark.parametrize("disturbance", DISTURBANCES[1:])
def test_each_mechanism_lowers_kappa(disturbance, mass_model):
    regular = make_galaxy(np.random.default_rng(4), "none", 0.0, mass_model=mass_model)
    weak = make_galaxy(np.random.default_rng(4), disturbance, 0.2, mass_model=mass_model)
    full = make_galaxy(np.random.default_rng(4), disturbance, 1.0, mass_model=mass_model)
    assert full.kappa < regular.kappa - 0.2
    assert full.kappa < weak.kappa <= regular.kappa + 0.01


def test_kappa_spans_zero_to_one(mass_model):
    rng = np.random.default_rng(5)
    kappas = [make_galaxy(rng, d, rng.uniform(), mass_model=mass_model, n_particles=1000).kappa
              for d in DISTURBANCES[1:] for _ in range(30)]
    kappas.append(make_galaxy(rng, "none", 0.0, mass_model=mass_model, n_particles=1000).kappa)
    counts, _ = np.histogram(kappas, bins=5, range=(0.0, 1.0))
    assert np.all(counts > 0), counts


def test_dispersion_mechanism_is_hot_and_inflow_is_radial(mass_model):
    hot = make_galaxy(np.random.default_rng(6), "dispersion", 1.0, mass_model=mass_model)
    assert np.std(hot.velocities[:, 2]) > 50.0  # vertical dispersion ~ v_c / sqrt(3)
    inflow = make_galaxy(np.random.default_rng(6), "radial_inflow", 1.0, mass_model=mass_model)
    radial = np.einsum("ij,ij->i", inflow.positions[:, :2], inflow.velocities[:, :2])
    assert np.mean(radial < 0) > 0.95


def test_properties_and_units_cover_the_same_columns(mass_model):
    galaxy = make_galaxy(np.random.default_rng(8), "tidal_tails", 0.5, mass_model=mass_model)
    row = galaxy.properties()
    assert set(row) == set(COLUMN_UNITS)
    assert row["disturbance"] == "tidal_tails" and row["disturbance_strength"] == 0.5
    assert row["kappa"] == galaxy.kappa and row["r98"] == galaxy.r98_kpc
    assert row["log_mgas"] == pytest.approx(9.7)
    assert all(np.isfinite(v) for k, v in row.items() if k != "disturbance")


def test_same_seed_same_bytes_different_seed_differs():
    a = make_galaxy(np.random.default_rng(11), "counter_rotating", 0.7)
    b = make_galaxy(np.random.default_rng(11), "counter_rotating", 0.7)
    c = make_galaxy(np.random.default_rng(12), "counter_rotating", 0.7)
    assert a.positions.tobytes() == b.positions.tobytes()
    assert a.velocities.tobytes() == b.velocities.tobytes()
    assert a.properties() == b.properties()
    assert a.positions.tobytes() != c.positions.tobytes()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"disturbance": "spiral"}, "Unknown disturbance 'spiral'"),
        ({"disturbance": "dispersion", "strength": 1.5}, r"strength must lie in \[0, 1\]"),
        ({"disturbance": "tidal_tails", "strength": -0.1}, r"strength must lie in \[0, 1\]"),
        ({"disturbance": "none", "strength": 0.3}, "has strength 0"),
        ({"n_particles": 50}, "n_particles must be an integer >= 1000"),
    ],
)
def test_bad_parameters_raise_clear_errors(kwargs, message):
    with pytest.raises(ParameterError, match=message):
        make_galaxy(np.random.default_rng(0), **kwargs)


def test_bad_mass_model_raises():
    with pytest.raises(ParameterError, match="rd_gas_kpc must be positive"):
        MassModel(log_mstar=10, log_mgas=9, log_m200=12, c200=8, rd_star_kpc=2, rd_gas_kpc=0)
