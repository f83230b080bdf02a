"""Star-forming gas particles of the mock galaxies: clumpy discs and six disturbance mechanisms.

The particles stand for the star-forming (SFR > 0) gas particles of a hydrodynamical
simulation such as EAGLE, which Dawson et al. (2020) observed with KinMS: equal masses of
about 1.8e6 Msun (`galexplore.mock.galaxies.PARTICLE_MASS_MSUN`), so a galaxy holds a few
hundred to a few ten thousand of them, and a map shows the gas as clumps and holes rather
than as a smooth exponential.

All functions work in the galaxy frame: origin at the centre of potential (the halo centre,
at rest), regular rotation counter-clockwise seen from +z. Positions in kpc, velocities in
km/s. Each generator takes the rng, the mass model, the number of particles n, the gas
velocity dispersion (km/s) and a strength s in [0, 1].

Regular gas (`clumpy_disc`): cloud complexes on circular orbits in a thin disc whose surface
density is exponential with, drawn per galaxy, a central hole (no star formation inside the
bulge), logarithmic spiral arms or a ring, and clumps of a few particles each (`DiscStructure`).

Disturbances, chosen so that what lowers the circularity is what an observer sees:

- ``merger``: a second gas disc of mass ratio q = 1/3 + 2s/3 (1 = equal masses), its spin
  tilted by 180 s degrees from the first (s = 1: counter-rotating), its centre 1.5 to 3.5
  gas scale lengths away and plunging towards the first on a nearly radial orbit at 0.8-1.5
  times the circular speed (about the escape speed of an infall from far away): two
  rotating systems with a velocity jump between them. Shocks turn orbital energy into
  turbulence: the clouds of both discs get random motions of 0.65 s v_c (`coherent_kicks`).
  (Eq. 1 squares j_z, so counter-rotation alone still counts as rotation; the circularity
  of a merger falls through its plunging orbit and its stirred gas.)
- ``clumps``: a fraction 0.3 + 0.6 s of the gas in 4-30 massive clumps, each on its own
  orbit whose plane is tilted from the disc by up to 180 s degrees, moving at the circular
  speed in a direction up to 90 s degrees away from circular (s = 1: random orbits); the
  rest in a regular disc.
- ``tidal``: a fraction 0.2 + 0.3 s of the gas pulled into one or two tails, in a plane
  tilted 30-150 degrees from the disc, streaming outwards at up to 0.2 + 0.4 s times the
  circular speed.
- ``lopsided``: an m = 1 density asymmetry of amplitude 0.3 + 0.6 s, and the whole gas disc
  displaced from the centre of potential by up to s gas scale lengths, sloshing with a bulk
  velocity of up to 0.2 s v_c.
- ``dispersion``: turbulent, pressure-supported gas: rotation falls to sqrt(1 - s) v_c and
  random motions of sqrt(s / 3) v_c per component take its place, shared by the particles
  of a clump (coherent on the scale of a clump, so a map shows them), in a disc thickened to
  a scale height of s Rd.
- ``radial_inflow``: bar-driven inflow, capped where it is physical: gas streams inwards at
  0.3 s v_c on otherwise circular orbits (kappa stays above ~0.9).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import special

from galexplore.mock.massmodel import MassModel

#: Aperture of the gas selection, kpc (Dawson et al. 2020 keep particles within 30 kpc).
GAS_APERTURE_KPC = 30.0
#: Exponential scale height of the regular gas disc, kpc.
DISC_SCALE_HEIGHT_KPC = 0.15
#: Random cloud motions stirred up by a merger at strength 1, in units of the circular speed.
MERGER_STIRRING = 0.65
#: Largest inflow speed of ``radial_inflow``, in units of the circular speed.
MAX_INFLOW_FRACTION = 0.3


@dataclass(frozen=True)
class DiscStructure:
    """The layout of a regular gas disc's cloud complexes.

    Parameters
    ----------
    pattern : "spiral", "ring" or "flocculent".
    arms : number of spiral arms (spiral only).
    pitch_deg : pitch angle of the logarithmic arms, degrees.
    pattern_fraction : fraction of the clumps on the arms or the ring.
    ring_radius_rd, ring_width_rd : ring radius and Gaussian width, in gas scale lengths.
    hole_radius_rd : radius of the central hole (no clumps inside), in gas scale lengths.
    clump_size_kpc : Gaussian size of a clump, kpc.
    particles_per_clump : mean number of particles per clump (Poisson).
    """

    pattern: str
    arms: int
    pitch_deg: float
    pattern_fraction: float
    ring_radius_rd: float
    ring_width_rd: float
    hole_radius_rd: float
    clump_size_kpc: float
    particles_per_clump: float

    @classmethod
    def draw(cls, rng: np.random.Generator) -> DiscStructure:
        """A random layout: spiral (50 %), ring (20 %) or flocculent (30 %); a central
        hole in half of the discs."""
        pattern = str(rng.choice(["spiral", "ring", "flocculent"], p=[0.5, 0.2, 0.3]))
        return cls(
            pattern=pattern,
            arms=int(rng.choice([2, 2, 3, 4])),
            pitch_deg=float(rng.uniform(10.0, 30.0)),
            pattern_fraction=float(rng.uniform(0.4, 0.8)),
            ring_radius_rd=float(rng.uniform(1.0, 3.0)),
            ring_width_rd=float(rng.uniform(0.15, 0.4)),
            hole_radius_rd=float(rng.uniform(0.3, 1.5)) if rng.random() < 0.5 else 0.0,
            clump_size_kpc=float(rng.uniform(0.2, 0.6)),
            particles_per_clump=float(rng.uniform(3.0, 12.0)),
        )


def sample_exponential_disc_radii(rng: np.random.Generator, n: int, rd_kpc: float,
                                  r_max_kpc: float = GAS_APERTURE_KPC, r_min_kpc: float = 0.0) -> np.ndarray:
    """Cylindrical radii (kpc) of an exponential disc of scale length ``rd_kpc`` between
    ``r_min_kpc`` and ``r_max_kpc``.

    The radii follow p(R) ~ R exp(-R / Rd); the inverse of its cumulative distribution,
    F(x) = 1 - (1 + x) exp(-x) with x = R / Rd, is x = -1 - W_{-1}(-(1 - F) / e).
    """
    def cdf(x: float) -> float:
        return 1.0 - (1.0 + x) * np.exp(-x)

    u = rng.uniform(cdf(r_min_kpc / rd_kpc), cdf(r_max_kpc / rd_kpc), n)
    x = -1.0 - special.lambertw(-(1.0 - u) / np.e, k=-1).real
    return x * rd_kpc


def _clump_centres(rng: np.random.Generator, n: int, rd: float, structure: DiscStructure) -> np.ndarray:
    """(n, 2) disc-plane positions (kpc) of clump centres laid out as ``structure`` says."""
    hole = min(structure.hole_radius_rd * rd, 0.5 * GAS_APERTURE_KPC)
    radius = sample_exponential_disc_radii(rng, n, rd, r_min_kpc=hole)
    phi = rng.uniform(0.0, 2.0 * np.pi, n)
    on_pattern = rng.random(n) < structure.pattern_fraction
    if structure.pattern == "spiral":
        arm = rng.integers(0, structure.arms, n)
        winding = np.log(np.maximum(radius, 1e-3) / rd) / np.tan(np.radians(structure.pitch_deg))
        phase = rng.uniform(0.0, 2.0 * np.pi)
        along_arm = phase + 2.0 * np.pi * arm / structure.arms + winding + rng.normal(0.0, 0.25, n)
        phi = np.where(on_pattern, along_arm, phi)
    elif structure.pattern == "ring":
        ring = np.abs(rng.normal(structure.ring_radius_rd, structure.ring_width_rd, n)) * rd
        radius = np.where(on_pattern, np.clip(ring, hole, GAS_APERTURE_KPC), radius)
    return np.column_stack([radius * np.cos(phi), radius * np.sin(phi)])


def clumpy_disc_positions(rng: np.random.Generator, n: int, rd_kpc: float,
                          structure: DiscStructure) -> np.ndarray:
    """(n, 3) positions (kpc) of a thin clumpy gas disc: particles scattered around clump centres."""
    n_clumps = max(1, int(round(n / structure.particles_per_clump)))
    centres = _clump_centres(rng, n_clumps, rd_kpc, structure)
    owner = rng.integers(0, n_clumps, n)
    xy = centres[owner] + rng.normal(0.0, structure.clump_size_kpc, (n, 2))
    z = rng.laplace(0.0, DISC_SCALE_HEIGHT_KPC, n)
    return np.column_stack([xy, z])


def circular_velocities(positions: np.ndarray, mass_model: MassModel, rng: np.random.Generator,
                        sigma_kms: float) -> np.ndarray:
    """Velocities (km/s) of circular orbits about the z axis at v_c(R), plus an isotropic dispersion."""
    radius, _, phi_hat = _cylindrical_unit_vectors(positions)
    v_c = mass_model.circular_velocity(radius)[:, None]
    return v_c * phi_hat + rng.normal(0.0, sigma_kms, positions.shape)


def clumpy_disc(rng: np.random.Generator, mass_model: MassModel, n: int, sigma_kms: float,
                rd_kpc: float | None = None,
                structure: DiscStructure | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A regular, clumpy gas disc on circular orbits.

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
    structure : DiscStructure, optional
        Layout of the clumps; drawn from ``rng`` when not given.

    Returns
    -------
    positions (n, 3) kpc, velocities (n, 3) km/s
    """
    rd = mass_model.rd_gas_kpc if rd_kpc is None else rd_kpc
    structure = DiscStructure.draw(rng) if structure is None else structure
    positions = clumpy_disc_positions(rng, n, rd, structure)
    return positions, circular_velocities(positions, mass_model, rng, sigma_kms)


def _cylindrical_unit_vectors(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    radius = np.hypot(positions[:, 0], positions[:, 1])
    safe = np.where(radius > 0, radius, 1.0)
    r_hat = np.column_stack([positions[:, 0] / safe, positions[:, 1] / safe, np.zeros(len(positions))])
    phi_hat = np.column_stack([-r_hat[:, 1], r_hat[:, 0], np.zeros(len(positions))])
    return radius, r_hat, phi_hat


def rotation_matrix(axis: np.ndarray, angle_rad: float) -> np.ndarray:
    """Rotation by ``angle_rad`` about the unit vector ``axis`` (Rodrigues' formula)."""
    axis = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    k = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    return np.eye(3) + np.sin(angle_rad) * k + (1.0 - np.cos(angle_rad)) * k @ k


def _random_in_plane_axis(rng: np.random.Generator) -> np.ndarray:
    angle = rng.uniform(0.0, 2.0 * np.pi)
    return np.array([np.cos(angle), np.sin(angle), 0.0])


def coherent_kicks(rng: np.random.Generator, positions: np.ndarray, cell_kpc: float,
                   sigma_kms: float) -> np.ndarray:
    """(n, 3) random velocities (km/s), one per cubic cell of side ``cell_kpc``: turbulence
    that moves whole clouds, so that it survives the averaging of many particles in a beam."""
    cells = np.floor(positions / cell_kpc).astype(np.int64)
    _, owner = np.unique(cells, axis=0, return_inverse=True)
    owner = owner.ravel()
    return rng.normal(0.0, sigma_kms, (int(owner.max()) + 1 if owner.size else 0, 3))[owner]


def _split(n: int, fraction: float) -> tuple[int, int]:
    moved = int(round(np.clip(fraction, 0.0, 1.0) * n))
    return n - moved, moved


def _merger(rng, mass_model, n, sigma_kms, strength):
    ratio = 1.0 / 3.0 + 2.0 * strength / 3.0
    n_main, n_second = _split(n, ratio / (1.0 + ratio))
    rd = mass_model.rd_gas_kpc
    pos_a, vel_a = clumpy_disc(rng, mass_model, n_main, sigma_kms)
    rd_b = rd * np.sqrt(ratio)
    pos_b, vel_b = clumpy_disc(rng, mass_model, n_second, sigma_kms, rd_kpc=rd_b)
    vel_b *= ratio**0.25  # a smaller galaxy rotates more slowly (Tully-Fisher-like v ~ M^(1/4))
    spin = rotation_matrix(_random_in_plane_axis(rng), np.radians(180.0 * strength + rng.normal(0.0, 10.0)))
    pos_b, vel_b = pos_b @ spin.T, vel_b @ spin.T
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    separation = rng.uniform(1.5, 3.5) * rd
    speed = float(mass_model.circular_velocity(separation)) * rng.uniform(0.8, 1.5)
    tangential = np.cross(direction, rng.normal(size=3))
    tangential /= np.linalg.norm(tangential)
    # a plunging orbit: mostly towards the main galaxy, a little angular momentum
    relative = speed * (-0.9 * direction + 0.3 * tangential)
    pos_b = pos_b + separation * direction
    vel_b = vel_b + relative
    # the two centres share the momentum: the main galaxy recoils
    vel_a = vel_a - relative * (n_second / max(n, 1))
    positions, velocities = np.vstack([pos_a, pos_b]), np.vstack([vel_a, vel_b])
    # the encounter shocks and stirs the gas of both discs on the scale of its clouds
    stirring = MERGER_STIRRING * strength * float(mass_model.circular_velocity(2.0 * rd))
    return positions, velocities + coherent_kicks(rng, positions, 1.0, stirring)


def _clumps(rng, mass_model, n, sigma_kms, strength):
    n_disc, n_clumped = _split(n, 0.3 + 0.6 * strength)
    pos_disc, vel_disc = clumpy_disc(rng, mass_model, n_disc, sigma_kms)
    rd = mass_model.rd_gas_kpc
    n_clumps = int(rng.integers(4, 31))
    owner = rng.integers(0, n_clumps, n_clumped)
    orbit_radius = sample_exponential_disc_radii(rng, n_clumps, 1.5 * rd)
    orbit_phase = rng.uniform(0.0, 2.0 * np.pi, n_clumps)
    size = rng.uniform(0.3, 1.0, n_clumps)
    eccentricity = rng.uniform(0.0, 0.5 * np.pi * strength, n_clumps)  # 0: circular, pi/2: a random direction
    positions = np.empty((n_clumped, 3))
    velocities = np.empty((n_clumped, 3))
    for k in range(n_clumps):
        members = owner == k
        tilt = rotation_matrix(_random_in_plane_axis(rng), np.radians(rng.uniform(0.0, 180.0 * strength)))
        centre = orbit_radius[k] * np.array([np.cos(orbit_phase[k]), np.sin(orbit_phase[k]), 0.0])
        v_c = float(mass_model.circular_velocity(orbit_radius[k]))
        circular = np.array([-np.sin(orbit_phase[k]), np.cos(orbit_phase[k]), 0.0])
        random = rng.normal(size=3)
        random /= np.linalg.norm(random)
        bulk = v_c * (np.cos(eccentricity[k]) * circular + np.sin(eccentricity[k]) * random)
        count = int(members.sum())
        positions[members] = (centre + rng.normal(0.0, size[k], (count, 3))) @ tilt.T
        velocities[members] = bulk @ tilt.T + rng.normal(0.0, sigma_kms, (count, 3))
    return np.vstack([pos_disc, positions]), np.vstack([vel_disc, velocities])


def _tidal(rng, mass_model, n, sigma_kms, strength):
    n_disc, n_tail = _split(n, 0.2 + 0.3 * strength)
    pos_disc, vel_disc = clumpy_disc(rng, mass_model, n_disc, sigma_kms)
    rd = mass_model.rd_gas_kpc
    r0 = 1.5 * rd
    v0 = float(mass_model.circular_velocity(r0))
    along = rng.uniform(0.0, 1.0, n_tail)
    which = rng.integers(0, 2 if rng.random() < 0.6 else 1, n_tail)
    phi = rng.uniform(0.0, 2.0 * np.pi) + np.pi * which + 0.8 * np.pi * along
    radius = r0 + rng.uniform(3.0, 6.0) * rd * along
    width = 0.2 * rd * (1.0 + along)
    cos_phi, sin_phi = np.cos(phi), np.sin(phi)
    positions = np.column_stack([radius * cos_phi, radius * sin_phi, np.zeros(n_tail)])
    positions += rng.normal(0.0, 1.0, (n_tail, 3)) * width[:, None]
    v_radial = v0 * (0.2 + 0.4 * strength) * along
    v_phi = v0 * r0 / radius
    velocities = np.column_stack([v_radial * cos_phi - v_phi * sin_phi, v_radial * sin_phi + v_phi * cos_phi,
                                  np.zeros(n_tail)]) + rng.normal(0.0, sigma_kms, (n_tail, 3))
    tilt = rotation_matrix(_random_in_plane_axis(rng), np.radians(rng.uniform(30.0, 150.0)))
    return np.vstack([pos_disc, positions @ tilt.T]), np.vstack([vel_disc, velocities @ tilt.T])


def _lopsided(rng, mass_model, n, sigma_kms, strength):
    rd = mass_model.rd_gas_kpc
    structure = DiscStructure.draw(rng)
    positions = clumpy_disc_positions(rng, 2 * n, rd, structure)
    amplitude = 0.3 + 0.6 * strength
    phi = np.arctan2(positions[:, 1], positions[:, 0])
    keep = rng.random(2 * n) < (1.0 + amplitude * np.cos(phi)) / (1.0 + amplitude)
    positions = positions[keep][:n]
    if len(positions) < n:  # rare: top up with an unweighted draw
        positions = np.vstack([positions, clumpy_disc_positions(rng, n - len(positions), rd, structure)])
    velocities = circular_velocities(positions, mass_model, rng, sigma_kms)
    offset_angle = rng.uniform(0.0, 2.0 * np.pi)
    offset = strength * rng.uniform(0.3, 1.0) * rd * np.array([np.cos(offset_angle), np.sin(offset_angle), 0.0])
    v_c = float(mass_model.circular_velocity(2.0 * rd))
    slosh = 0.2 * strength * v_c * rng.normal(size=3) / np.sqrt(3.0)
    return positions + offset, velocities + slosh


def _dispersion(rng, mass_model, n, sigma_kms, strength):
    rd = mass_model.rd_gas_kpc
    structure = DiscStructure.draw(rng)
    n_clumps = max(1, int(round(n / structure.particles_per_clump)))
    centres = _clump_centres(rng, n_clumps, rd, structure)
    centres = np.column_stack([centres, rng.laplace(0.0, max(strength * rd, DISC_SCALE_HEIGHT_KPC), n_clumps)])
    owner = rng.integers(0, n_clumps, n)
    positions = centres[owner] + rng.normal(0.0, structure.clump_size_kpc, (n, 3))
    radius, _, phi_hat = _cylindrical_unit_vectors(centres)
    v_c = mass_model.circular_velocity(radius)[:, None]
    clump_velocity = np.sqrt(1.0 - strength) * v_c * phi_hat + rng.normal(0.0, 1.0, (n_clumps, 3)) \
        * np.sqrt(strength / 3.0) * v_c
    velocities = clump_velocity[owner] + rng.normal(0.0, sigma_kms, (n, 3))
    return positions, velocities


def _radial_inflow(rng, mass_model, n, sigma_kms, strength):
    positions, _ = clumpy_disc(rng, mass_model, n, sigma_kms)
    radius, r_hat, phi_hat = _cylindrical_unit_vectors(positions)
    v_c = mass_model.circular_velocity(radius)[:, None]
    inflow = MAX_INFLOW_FRACTION * strength
    velocities = (np.sqrt(1.0 - inflow**2) * v_c * phi_hat - inflow * v_c * r_hat
                  + rng.normal(0.0, sigma_kms, positions.shape))
    return positions, velocities


#: Particle generator of each disturbance mechanism:
#: (rng, mass_model, n, sigma_kms, strength) -> (positions kpc, velocities km/s).
MECHANISMS: dict[str, Callable] = {
    "merger": _merger,
    "clumps": _clumps,
    "tidal": _tidal,
    "lopsided": _lopsided,
    "dispersion": _dispersion,
    "radial_inflow": _radial_inflow,
}
