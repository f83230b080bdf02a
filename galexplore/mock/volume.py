"""A clustered, periodic box of galaxies: log-normal density field, linear velocities, redshift space.

The galaxy density is a log-normal random field (Coles & Jones 1991) whose two-point
function equals that of a linear CDM power spectrum (BBKS transfer function, Bardeen et
al. 1986, with the Sugiyama 1995 shape parameter; n_s = 0.96; normalised to ``sigma8``).
The Gaussian field behind the log-normal one is given the power spectrum of
ln(1 + xi(r)) on the grid (as in Agrawal et al. 2017), so the galaxies' correlation function
is the target one. Galaxies are drawn from the cells with probability proportional to
1 + delta (a Poisson process conditioned on the total) and placed uniformly inside them.
Peculiar velocities follow linear theory from the linear density field with the same
phases: v(k) = i f H0 delta(k) k / k^2, f = Omega_m^0.55.

Coordinates: x points east, y north, z away from the observer (the line of sight), so an
observer sees the (x, y) plane with north up and east to the left. Lengths are h^-1 Mpc;
with H0 = 100 h km/s/Mpc a velocity v shifts a galaxy by v / 100 h^-1 Mpc in redshift space.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy import fft, ndimage

from galexplore.errors import ParameterError

#: H0 in units of h km/s per h^-1 Mpc: redshift-space shift (h^-1 Mpc) = v (km/s) / 100.
H0_KMS_PER_MPC_H = 100.0
#: Primordial spectral index of the CDM power spectrum.
SPECTRAL_INDEX = 0.96
#: Dimensionless Hubble constant of the shape parameter (and of every Mpc <-> h^-1 Mpc conversion).
LITTLE_H = 0.7
#: Baryon density parameter in the Sugiyama (1995) shape parameter.
OMEGA_B = 0.049


def wrap_periodic(values: np.ndarray, period: float | np.ndarray) -> np.ndarray:
    """Map coordinates into [0, period) (float rounding can make ``np.mod`` return ``period``)."""
    wrapped = np.mod(values, period)
    return np.where(wrapped >= period, wrapped - period, wrapped)


@dataclass(frozen=True)
class Volume:
    """Galaxies in a periodic box.

    Attributes
    ----------
    positions : (N, 3) float64, real-space positions in h^-1 Mpc, each in [0, box_mpc_h).
    velocities : (N, 3) float64, peculiar velocities in km/s.
    box_mpc_h : side of the box in h^-1 Mpc.
    density_contrast : (n, n, n) float32 galaxy density contrast delta of the generating grid,
        or None for a volume built from given positions.
    """

    positions: np.ndarray
    velocities: np.ndarray
    box_mpc_h: float
    density_contrast: np.ndarray | None = None

    def __post_init__(self) -> None:
        positions = np.asarray(self.positions, dtype=np.float64)
        velocities = np.asarray(self.velocities, dtype=np.float64)
        if positions.ndim != 2 or positions.shape[1] != 3 or velocities.shape != positions.shape:
            raise ParameterError(
                f"positions and velocities must both be (N, 3) arrays, got {positions.shape} and "
                f"{velocities.shape}.")
        if not self.box_mpc_h > 0:
            raise ParameterError(f"box_mpc_h must be positive, got {self.box_mpc_h}.")
        if not (np.isfinite(positions).all() and np.isfinite(velocities).all()):
            raise ParameterError("positions and velocities must be finite; remove NaN/inf rows first.")
        object.__setattr__(self, "positions", wrap_periodic(positions, float(self.box_mpc_h)))
        object.__setattr__(self, "velocities", velocities)
        object.__setattr__(self, "box_mpc_h", float(self.box_mpc_h))

    def __len__(self) -> int:
        return len(self.positions)

    @cached_property
    def redshift_positions(self) -> np.ndarray:
        """(N, 3) redshift-space positions in h^-1 Mpc: s_z = z + v_z / 100, wrapped into the box."""
        shifted = self.positions.copy()
        shifted[:, 2] += self.velocities[:, 2] / H0_KMS_PER_MPC_H
        return wrap_periodic(shifted, self.box_mpc_h)

    @property
    def number_density(self) -> float:
        """Mean number density in h^3 Mpc^-3."""
        return len(self) / self.box_mpc_h**3


def bbks_power_spectrum(k: np.ndarray, sigma8: float = 0.8, omega_m: float = 0.31) -> np.ndarray:
    """Linear CDM power spectrum P(k) in h^-3 Mpc^3 at z = 0, normalised to ``sigma8``.

    Parameters
    ----------
    k : wavenumbers in h Mpc^-1 (k = 0 gives 0).
    sigma8 : rms linear density contrast in spheres of 8 h^-1 Mpc.
    omega_m : matter density parameter.
    """
    k = np.asarray(k, dtype=np.float64)
    unnormalised = _bbks_shape(k, omega_m)
    return sigma8**2 / _sigma_r_squared(8.0, omega_m) * unnormalised


def growth_rate(omega_m: float) -> float:
    """Linear growth rate f = d ln D / d ln a ~ Omega_m^0.55 at z = 0."""
    return omega_m**0.55


def _bbks_shape(k: np.ndarray, omega_m: float) -> np.ndarray:
    """k^n_s T(k)^2 with the BBKS transfer function (arbitrary normalisation)."""
    gamma = omega_m * LITTLE_H * np.exp(-OMEGA_B * (1.0 + np.sqrt(2.0 * LITTLE_H) / omega_m))
    q = np.where(k > 0, k, 1.0) / gamma
    transfer = (np.log1p(2.34 * q) / (2.34 * q)
                * (1 + 3.89 * q + (16.1 * q) ** 2 + (5.46 * q) ** 3 + (6.71 * q) ** 4) ** -0.25)
    return np.where(k > 0, k**SPECTRAL_INDEX * transfer**2, 0.0)


def _sigma_r_squared(radius: float, omega_m: float) -> float:
    """Variance of the unnormalised spectrum in a top-hat sphere of ``radius`` h^-1 Mpc."""
    k = np.logspace(-5, 3, 8000)
    x = k * radius
    window = 3.0 * (np.sin(x) - x * np.cos(x)) / x**3
    return float(np.trapezoid(k**3 * _bbks_shape(k, omega_m) * window**2, np.log(k)) / (2 * np.pi**2))


def clustered_volume(n_galaxies: int, rng: np.random.Generator, box_mpc_h: float = 100.0, *,
                     n_grid: int = 128, sigma8: float = 0.8, omega_m: float = 0.31) -> Volume:
    """Galaxies in a clustered periodic box (log-normal field, linear velocities).

    Parameters
    ----------
    n_galaxies : number of galaxies; 20,000-50,000 in the default box gives a realistic
        0.02-0.05 h^3 Mpc^-3.
    rng : random generator; the same seed gives the same bytes.
    box_mpc_h : side of the periodic box in h^-1 Mpc.
    n_grid : cells per side of the density grid (128 in a 100 h^-1 Mpc box: 0.78 h^-1 Mpc cells).
    sigma8 : rms linear density contrast in 8 h^-1 Mpc spheres (galaxies trace matter, bias 1).
    omega_m : matter density parameter (sets the spectrum's shape and the growth rate).

    Returns
    -------
    Volume with real-space positions (h^-1 Mpc), linear-theory velocities (km/s) and the
    galaxy density-contrast grid.
    """
    if int(n_galaxies) != n_galaxies or n_galaxies < 1:
        raise ParameterError(f"n_galaxies must be a positive integer, got {n_galaxies}.")
    if not box_mpc_h > 0:
        raise ParameterError(f"box_mpc_h must be positive, got {box_mpc_h}.")
    if int(n_grid) != n_grid or n_grid < 8 or n_grid % 2:
        raise ParameterError(f"n_grid must be an even integer >= 8, got {n_grid}.")
    if not sigma8 > 0:
        raise ParameterError(f"sigma8 must be positive, got {sigma8}.")
    if not 0 < omega_m <= 1:
        raise ParameterError(f"omega_m must lie in (0, 1], got {omega_m}.")
    n_galaxies, n_grid = int(n_galaxies), int(n_grid)
    cell = box_mpc_h / n_grid
    cell_volume = cell**3

    kx = 2 * np.pi * fft.fftfreq(n_grid, d=cell)
    kz = 2 * np.pi * fft.rfftfreq(n_grid, d=cell)
    k_vectors = np.meshgrid(kx, kx, kz, indexing="ij", sparse=True)
    k = np.sqrt(k_vectors[0] ** 2 + k_vectors[1] ** 2 + k_vectors[2] ** 2)
    power = bbks_power_spectrum(k, sigma8, omega_m)

    # Gaussian field whose exponential has the target correlation function on the grid.
    xi_target = fft.irfftn(power, s=(n_grid,) * 3) / cell_volume
    xi_gaussian = np.log1p(np.maximum(xi_target, -0.999))
    power_gaussian = np.maximum(fft.rfftn(xi_gaussian).real * cell_volume, 0.0)

    white = fft.rfftn(rng.standard_normal((n_grid,) * 3))
    gaussian = fft.irfftn(white * np.sqrt(power_gaussian / cell_volume), s=(n_grid,) * 3)
    weight = np.exp(gaussian - gaussian.max())
    probability = (weight / weight.sum()).ravel()

    counts = rng.multinomial(n_galaxies, probability)
    cells = np.repeat(np.arange(counts.size), counts)
    corner = np.stack(np.unravel_index(cells, (n_grid,) * 3), axis=1).astype(np.float64)
    positions = (corner + rng.random((n_galaxies, 3))) * cell

    linear_k = white * np.sqrt(power / cell_volume)
    k_squared = np.where(k > 0, k**2, 1.0)
    velocities = np.empty((n_galaxies, 3))
    scale = growth_rate(omega_m) * H0_KMS_PER_MPC_H
    # Grid point i sits at i * cell; galaxy coordinates in grid units are x / cell.
    grid_coordinates = (positions / cell).T
    for axis in range(3):
        velocity_grid = fft.irfftn(1j * scale * k_vectors[axis] / k_squared * linear_k, s=(n_grid,) * 3)
        velocities[:, axis] = ndimage.map_coordinates(velocity_grid, grid_coordinates, order=1,
                                                      mode="grid-wrap")

    density_contrast = (probability * probability.size - 1.0).reshape((n_grid,) * 3).astype(np.float32)
    return Volume(positions, velocities, box_mpc_h, density_contrast)
