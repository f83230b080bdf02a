"""Cold-gas particles of the mock galaxies: a regular disc and four disturbance mechanisms.

All functions work in the galaxy frame: origin at the centre of potential (the halo
centre, at rest), disc plane z = 0, regular rotation counter-clockwise seen from +z.
Positions in kpc, velocities in km/s. Each mechanism takes a strength s in [0, 1]; at s = 0 it
draws a regular disc.

- ``dispersion``: pressure-supported gas. Ordered rotation falls to sqrt(1 - s) v_c and an
  isotropic dispersion sqrt(s / 3) v_c per component takes its place (the kinetic energy
  stays ~ v_c^2 / 2 per unit mass); the disc thickens to a vertical scale s * Rd.
- ``counter_rotating``: merger remnant. The gas within R_t = 2 s Rd forms a decoupled
  inner disc (as in NGC 4826, Braun et al. 1994) whose spin is tilted by 180 - 60 s
  degrees about the x axis from that of the outer disc (coplanar counter-rotation at
  small s, a strongly misaligned inner disc at s = 1); all gas is heated by an isotropic
  dispersion 0.3 s v_c per component.
- ``tidal_tails``: a fraction 0.6 s of the gas is pulled into two trailing tails from 2 Rd
  out to 8 Rd, moving outwards at up to 1.2 v_c(2 Rd) and conserving specific angular
  momentum.
- ``radial_inflow``: gas streams inwards at sqrt(s) v_c and rotates at sqrt(1 - s) v_c,
  so the speed stays v_c while the orbits turn from circular to radial (kappa ~ 1 - s).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import special

from galexplore.mock.massmodel import MassModel

#: Aperture of the gas selection, kpc (Dawson et al. 2020 select particles within 30 kpc).
GAS_APERTURE_KPC = 30.0
#: Exponential scale height of the regular gas disc in units of its scale length.
DISC_THICKNESS_RD = 0.03


def sample_exponential_disc_radii(rng: np.random.Generator, n: int, rd_kpc: float,
                                  r_max_kpc: float = GAS_APERTURE_KPC) -> np.ndarray:
    """Cylindrical radii (kpc) of an exponential disc of scale length ``rd_kpc``, cut at ``r_max_kpc``.

    The radii follow p(R) ~ R exp(-R / Rd); the inverse of its cumulative distribution,
    1 - (1 + x) exp(-x) with x = R / Rd, is x = -1 - W_{-1}(-(1 - u) / e).
    """
    x_max = r_max_kpc / rd_kpc
    u = rng.uniform(0.0, 1.0 - (1.0 + x_max) * np.exp(-x_max), n)
    x = -1.0 - special.lambertw(-(1.0 - u) / np.e, k=-1).real
    return x * rd_kpc


def regular_disc(rng: np.random.Generator, mass_model: MassModel, n: int, sigma_kms: float,
                 rd_kpc: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Thin exponential gas disc on circular orbits with an isotropic dispersion.

    Parameters
    ----------
    rng : numpy.random.Generator
    mass_model : MassModel
        Gives v_c(R) and, unless ``rd_kpc`` is given, the gas scale length.
    n : int
        Number of particles.
    sigma_kms : float
        Isotropic velocity dispersion per component, km/s.
    rd_kpc : float, optional
        Scale length, kpc; default the mass model's gas scale length.

    Returns
    -------
    positions (n, 3) kpc, velocities (n, 3) km/s
    """
    rd = mass_model.rd_gas_kpc if rd_kpc is None else rd_kpc
    radius = sample_exponential_disc_radii(rng, n, rd)
    phi = rng.uniform(0.0, 2.0 * np.pi, n)
    cos_phi, sin_phi = np.cos(phi), np.sin(phi)
    z = rng.laplace(0.0, DISC_THICKNESS_RD * rd, n)
    positions = np.column_stack([radius * cos_phi, radius * sin_phi, z])
    v_c = mass_model.circular_velocity(radius)
    velocities = np.column_stack([-v_c * sin_phi, v_c * cos_phi, np.zeros(n)])
    velocities += rng.normal(0.0, sigma_kms, (n, 3))
    return positions, velocities


def _cylindrical_unit_vectors(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    radius = np.hypot(positions[:, 0], positions[:, 1])
    safe = np.where(radius > 0, radius, 1.0)
    r_hat = np.column_stack([positions[:, 0] / safe, positions[:, 1] / safe, np.zeros(len(positions))])
    phi_hat = np.column_stack([-r_hat[:, 1], r_hat[:, 0], np.zeros(len(positions))])
    return radius, r_hat, phi_hat


def _dispersion(rng, mass_model, n, sigma_kms, strength):
    positions, velocities = regular_disc(rng, mass_model, n, sigma_kms)
    positions[:, 2] += rng.laplace(0.0, strength * mass_model.rd_gas_kpc, n)
    radius, _, phi_hat = _cylindrical_unit_vectors(positions)
    v_c = mass_model.circular_velocity(radius)[:, None]
    velocities = (np.sqrt(1.0 - strength) * v_c * phi_hat
                  + rng.normal(0.0, 1.0, (n, 3)) * np.sqrt(strength / 3.0) * v_c
                  + rng.normal(0.0, sigma_kms, (n, 3)))
    return positions, velocities


def _rotation_about_x(angle_rad: float) -> np.ndarray:
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _counter_rotating(rng, mass_model, n, sigma_kms, strength):
    positions, velocities = regular_disc(rng, mass_model, n, sigma_kms)
    inner = np.hypot(positions[:, 0], positions[:, 1]) < 2.0 * strength * mass_model.rd_gas_kpc
    tilt = _rotation_about_x(np.radians(180.0 - 60.0 * strength))
    positions[inner] = positions[inner] @ tilt.T
    velocities[inner] = velocities[inner] @ tilt.T
    v_c = mass_model.circular_velocity(np.linalg.norm(positions, axis=1))[:, None]
    velocities += rng.normal(0.0, 1.0, (n, 3)) * 0.3 * strength * v_c
    return positions, velocities


def _tidal_tails(rng, mass_model, n, sigma_kms, strength):
    n_tail = int(round(0.6 * strength * n))
    pos_disc, vel_disc = regular_disc(rng, mass_model, n - n_tail, sigma_kms)
    rd = mass_model.rd_gas_kpc
    r0 = 2.0 * rd
    v0 = float(mass_model.circular_velocity(r0))
    along = rng.uniform(0.0, 1.0, n_tail)
    which = rng.integers(0, 2, n_tail)
    phi = rng.uniform(0.0, 2.0 * np.pi) + np.pi * which - 0.7 * np.pi * along
    radius = r0 + 6.0 * rd * along
    width = 0.15 * rd * (1.0 + 2.0 * along)
    cos_phi, sin_phi = np.cos(phi), np.sin(phi)
    pos_tail = np.column_stack([radius * cos_phi, radius * sin_phi, np.zeros(n_tail)])
    pos_tail += rng.normal(0.0, 1.0, (n_tail, 3)) * width[:, None]
    v_radial = 1.2 * v0 * along
    v_phi = v0 * r0 / radius
    vel_tail = np.column_stack([v_radial * cos_phi - v_phi * sin_phi,
                                v_radial * sin_phi + v_phi * cos_phi,
                                np.zeros(n_tail)])
    vel_tail += rng.normal(0.0, sigma_kms, (n_tail, 3))
    return np.vstack([pos_disc, pos_tail]), np.vstack([vel_disc, vel_tail])


def _radial_inflow(rng, mass_model, n, sigma_kms, strength):
    positions, _ = regular_disc(rng, mass_model, n, sigma_kms)
    radius, r_hat, phi_hat = _cylindrical_unit_vectors(positions)
    v_c = mass_model.circular_velocity(radius)[:, None]
    velocities = (np.sqrt(1.0 - strength) * v_c * phi_hat - np.sqrt(strength) * v_c * r_hat
                  + rng.normal(0.0, sigma_kms, (n, 3)))
    return positions, velocities


#: Particle generator of each disturbance mechanism:
#: (rng, mass_model, n, sigma_kms, strength) -> (positions kpc, velocities km/s).
MECHANISMS: dict[str, Callable] = {
    "dispersion": _dispersion,
    "counter_rotating": _counter_rotating,
    "tidal_tails": _tidal_tails,
    "radial_inflow": _radial_inflow,
}
