"""Mock galaxies: star-forming gas particles in a mass model, their circularity and catalogue row.

A galaxy's gas is a set of equal-mass particles, as the star-forming gas of EAGLE that
Dawson et al. (2020, sect. 2.2-2.3) observed: one particle per `PARTICLE_MASS_MSUN` of gas,
only particles within the 30 kpc aperture, and only galaxies with more than
`MIN_PARTICLES` of them. The particles are stored in the frame of the paper: origin at the
centre of potential (the halo centre, at rest), rotated so that the total angular momentum
of the gas (about its centre of mass) points along +z. Every catalogue column is computed
from the mass model or the particles of that galaxy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from galexplore.errors import ParameterError
from galexplore.mock.massmodel import MassModel, draw_mass_model
from galexplore.mock.particles import GAS_APERTURE_KPC, MECHANISMS, clumpy_disc

__all__ = [
    "COLUMN_UNITS",
    "DISTURBANCES",
    "DM_PROFILE_RADII_KPC",
    "MIN_PARTICLES",
    "PARTICLE_MASS_MSUN",
    "Galaxy",
    "MassModel",
    "TooFewParticles",
    "angular_momentum_rotation",
    "circularity",
    "draw_mass_model",
    "make_galaxy",
]

#: Names of the kinematic states; "none" is the regular, rotating disc.
DISTURBANCES: tuple[str, ...] = ("none", *MECHANISMS)
#: Radii (kpc) of the enclosed dark-matter masses log_mdm_00 .. log_mdm_19
#: (20 radii log-spaced from 1 to 100 kpc, de los Rios et al.).
DM_PROFILE_RADII_KPC = np.geomspace(1.0, 100.0, 20)
#: Mass of one gas particle, Msun: the initial gas particle mass of EAGLE's reference
#: runs (Schaye et al. 2015, Table 2: 1.81e6 Msun), which Dawson et al. (2020) observed.
PARTICLE_MASS_MSUN = 1.81e6
#: Galaxies need more than this many particles inside the aperture (Dawson et al. 2020, sect. 2.2).
MIN_PARTICLES = 200
#: Range of the regular gas disc's isotropic velocity dispersion, km/s.
GAS_DISPERSION_RANGE_KMS = (5.0, 10.0)

_LOG_MSUN = "log10(Msun)"
#: Unit of each column of ``Galaxy.properties()`` ("" = dimensionless).
COLUMN_UNITS: dict[str, str] = {
    "log_mstar": _LOG_MSUN,
    "log_mgas": _LOG_MSUN,
    "log_m200": _LOG_MSUN,
    "c200": "",
    "r200": "kpc",
    "rd_star": "kpc",
    "rd_gas": "kpc",
    "vmax": "km/s",
    "r_hsm": "kpc",
    "log_mstar_hsm": _LOG_MSUN,
    "log_mtot_hsm": _LOG_MSUN,
    **{f"log_mdm_{k:02d}": _LOG_MSUN for k in range(len(DM_PROFILE_RADII_KPC))},
    "r98": "kpc",
    "n_particles": "",
    "kappa": "",
    "disturbance": "",
    "disturbance_strength": "",
}


def angular_momentum_rotation(positions: np.ndarray, velocities: np.ndarray,
                              masses: np.ndarray) -> np.ndarray:
    """Rotation matrix that turns the total angular momentum of the particles onto +z.

    The angular momentum is taken in the mass-weighted centre-of-mass frame (position and
    velocity). Apply it as ``positions @ rotation.T``.

    Parameters
    ----------
    positions : (N, 3) array, kpc
    velocities : (N, 3) array, km/s
    masses : (N,) array, Msun

    Returns
    -------
    (3, 3) ndarray
    """
    pos, vel = _centre_of_mass_frame(positions, velocities, masses)
    total = (masses[:, None] * np.cross(pos, vel)).sum(axis=0)
    norm = np.linalg.norm(total)
    if norm == 0.0:
        return np.eye(3)
    axis_l = total / norm
    z = np.array([0.0, 0.0, 1.0])
    cos_angle = float(axis_l @ z)
    if cos_angle < -1.0 + 1e-12:  # antiparallel: half a turn about x
        return np.diag([1.0, -1.0, -1.0])
    k = np.cross(axis_l, z)
    k_cross = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + k_cross + k_cross @ k_cross / (1.0 + cos_angle)


def _centre_of_mass_frame(positions, velocities, masses):
    weights = masses / masses.sum()
    return positions - weights @ positions, velocities - weights @ velocities


def circularity(positions: np.ndarray, velocities: np.ndarray, masses: np.ndarray) -> float:
    """Circularity kappa = K_rot / K of a set of particles (Dawson et al. 2020, eq. 1).

    K_rot = sum m (j_z / R)^2 / 2 and K = sum m v^2 / 2, after moving to the mass-weighted
    centre-of-mass frame and rotating the total angular momentum onto +z (Sales et al.
    2012); R is the cylindrical radius about that axis. Particles on the axis (R = 0)
    contribute no rotational energy.

    Parameters
    ----------
    positions : (N, 3) array, kpc
    velocities : (N, 3) array, km/s
    masses : (N,) array, Msun

    Returns
    -------
    float
        kappa in [0, 1]; 0 for particles that do not move.
    """
    positions = np.asarray(positions, dtype=float)
    velocities = np.asarray(velocities, dtype=float)
    masses = np.asarray(masses, dtype=float)
    if positions.ndim != 2 or positions.shape[1] != 3 or velocities.shape != positions.shape \
            or masses.shape != (len(positions),):
        raise ParameterError(
            "circularity needs positions and velocities of shape (N, 3) and masses of shape (N,); "
            f"got {positions.shape}, {velocities.shape}, {masses.shape}."
        )
    rotation = angular_momentum_rotation(positions, velocities, masses)
    pos, vel = _centre_of_mass_frame(positions, velocities, masses)
    pos, vel = pos @ rotation.T, vel @ rotation.T
    kinetic = 0.5 * np.sum(masses * np.einsum("ij,ij->i", vel, vel))
    if kinetic == 0.0:
        return 0.0
    radius = np.hypot(pos[:, 0], pos[:, 1])
    j_z = pos[:, 0] * vel[:, 1] - pos[:, 1] * vel[:, 0]
    v_phi = np.divide(j_z, radius, out=np.zeros_like(j_z), where=radius > 0)
    return float(0.5 * np.sum(masses * v_phi**2) / kinetic)


@dataclass(frozen=True, eq=False)
class Galaxy:
    """One mock galaxy: cold-gas particles in the frame described in the module docstring.

    Attributes
    ----------
    positions : (N, 3) ndarray, kpc
    velocities : (N, 3) ndarray, km/s
    masses : (N,) ndarray, Msun (equal masses of `PARTICLE_MASS_MSUN`)
    disturbance : str
        One of ``DISTURBANCES``.
    strength : float
        Strength of the disturbance in [0, 1] (0 for "none").
    mass_model : MassModel
    gas_dispersion_kms : float
        Isotropic dispersion of the regular gas disc, km/s.
    kappa : float
        Circularity of the particles (eq. 1 of Dawson et al. 2020).
    r98_kpc : float
        98th percentile of the particles' distances from the centre, kpc.
    """

    positions: np.ndarray
    velocities: np.ndarray
    masses: np.ndarray
    disturbance: str
    strength: float
    mass_model: MassModel
    gas_dispersion_kms: float
    kappa: float
    r98_kpc: float

    def properties(self) -> dict[str, float | str]:
        """Catalogue row of this galaxy; units in ``COLUMN_UNITS``."""
        model = self.mass_model
        r_hsm = model.r_hsm_kpc
        m_tot_hsm = model.stellar_enclosed(r_hsm) + model.gas_enclosed(r_hsm) \
            + model.dark_matter_enclosed(r_hsm)
        dm_profile = np.log10(model.dark_matter_enclosed(DM_PROFILE_RADII_KPC))
        row: dict[str, float | str] = {
            "log_mstar": model.log_mstar,
            "log_mgas": float(np.log10(self.masses.sum())),
            "log_m200": model.log_m200,
            "c200": model.c200,
            "r200": model.r200_kpc,
            "rd_star": model.rd_star_kpc,
            "rd_gas": model.rd_gas_kpc,
            "vmax": model.vmax_kms,
            "r_hsm": r_hsm,
            "log_mstar_hsm": float(np.log10(model.stellar_enclosed(r_hsm))),
            "log_mtot_hsm": float(np.log10(m_tot_hsm)),
            **{f"log_mdm_{k:02d}": float(v) for k, v in enumerate(dm_profile)},
            "r98": self.r98_kpc,
            "n_particles": len(self.masses),
            "kappa": self.kappa,
            "disturbance": self.disturbance,
            "disturbance_strength": self.strength,
        }
        return row


class TooFewParticles(ParameterError):
    """A galaxy has too little star-forming gas inside the aperture to be selected."""


def make_galaxy(rng: np.random.Generator, disturbance: str = "none", strength: float = 0.0,
                mass_model: MassModel | None = None,
                particle_mass_msun: float = PARTICLE_MASS_MSUN) -> Galaxy:
    """Draw the star-forming gas particles of one galaxy.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of all randomness (same state, same bytes).
    disturbance : str
        One of ``DISTURBANCES``; see `galexplore.mock.particles` for the mechanisms.
    strength : float
        Strength of the disturbance in [0, 1]; must be 0 for "none".
    mass_model : MassModel, optional
        Drawn with ``draw_mass_model(rng)`` when not given.
    particle_mass_msun : float
        Mass of one particle, Msun: the gas mass sets the number of particles.

    Returns
    -------
    Galaxy

    Raises
    ------
    TooFewParticles
        When no more than `MIN_PARTICLES` particles lie inside the 30 kpc aperture (the
        selection of Dawson et al. 2020): draw another galaxy.
    """
    if disturbance not in DISTURBANCES:
        raise ParameterError(
            f"Unknown disturbance {disturbance!r}; choose one of {', '.join(DISTURBANCES)}."
        )
    strength = float(strength)
    if not 0.0 <= strength <= 1.0:
        raise ParameterError(f"Disturbance strength must lie in [0, 1], got {strength}.")
    if disturbance == "none" and strength != 0.0:
        raise ParameterError(
            f"A regular disc (disturbance 'none') has strength 0, got {strength}; "
            "pass strength=0 or pick a disturbance mechanism."
        )
    if not (np.isfinite(particle_mass_msun) and particle_mass_msun > 0):
        raise ParameterError(f"particle_mass_msun must be a positive number of Msun, got {particle_mass_msun}.")
    if mass_model is None:
        mass_model = draw_mass_model(rng)
    n_particles = int(round(10**mass_model.log_mgas / particle_mass_msun))
    if n_particles <= MIN_PARTICLES:
        raise TooFewParticles(f"{n_particles} particles of {particle_mass_msun:.3g} Msun make only "
                              f"10^{mass_model.log_mgas:.2f} Msun of gas; a galaxy needs more than "
                              f"{MIN_PARTICLES} (Dawson et al. 2020).")
    sigma = float(rng.uniform(*GAS_DISPERSION_RANGE_KMS))
    if disturbance == "none":
        positions, velocities = clumpy_disc(rng, mass_model, n_particles, sigma)
    else:
        positions, velocities = MECHANISMS[disturbance](rng, mass_model, n_particles, sigma, strength)
    inside = np.linalg.norm(positions, axis=1) <= GAS_APERTURE_KPC
    if inside.sum() <= MIN_PARTICLES:
        raise TooFewParticles(f"only {int(inside.sum())} of {n_particles} particles lie within the "
                              f"{GAS_APERTURE_KPC:g} kpc aperture; a galaxy needs more than {MIN_PARTICLES}.")
    positions, velocities = positions[inside], velocities[inside]
    masses = np.full(len(positions), float(particle_mass_msun))
    rotation = angular_momentum_rotation(positions, velocities, masses)
    positions = positions @ rotation.T
    velocities = velocities @ rotation.T
    for array in (positions, velocities, masses):
        array.flags.writeable = False
    return Galaxy(
        positions=positions,
        velocities=velocities,
        masses=masses,
        disturbance=disturbance,
        strength=strength,
        mass_model=mass_model,
        gas_dispersion_kms=sigma,
        kappa=circularity(positions, velocities, masses),
        r98_kpc=float(np.percentile(np.linalg.norm(positions, axis=1), 98.0)),
    )
