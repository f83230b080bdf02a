"""Mass models of the mock galaxies: stellar and gas discs inside an NFW halo.

A galaxy is drawn in five steps, each from a published relation:

1. stellar mass from the z ~ 0 double-Schechter stellar mass function of Baldry et al.
   (2012, MNRAS 421, 621), restricted to ``LOG_MSTAR_RANGE`` (the EAGLE selection
   M* > 5e9 Msun of Dawson et al. 2020);
2. halo mass M200c from the stellar-to-halo mass relation of Moster, Naab & White
   (2013, MNRAS 428, 3121), inverted numerically, with 0.15 dex scatter in stellar mass at
   fixed halo mass;
3. NFW concentration c200 from Dutton & Maccio (2014, MNRAS 441, 3359), 0.11 dex scatter;
4. stellar exponential disc scale length from the late-type size-mass relation of
   Shen et al. (2003, MNRAS 343, 978) (R50 = 1.678 Rd), with its log-normal scatter; the
   star-forming gas disc is 2.8 times larger (0.15 dex scatter): EAGLE's star-forming gas
   (a metallicity-dependent density threshold, Schaye & Dalla Vecchia 2008) includes much
   of the atomic gas, whose discs extend to about twice the optical radius (Broeils & Rhee
   1997, A&A 324, 877), and Dawson et al. (2020) find a median of 0.87 kpc per pixel for a
   98th-percentile radius of 32 pixels, i.e. a median 98th-percentile radius near 28 kpc;
5. cold-gas mass from a log-linear gas fraction, log(Mgas/M*) = -0.6 - 0.45 (log M* - 10),
   0.25 dex scatter: an approximate description of the decline of the cold-gas fraction
   with stellar mass in xGASS (Catinella et al. 2018, MNRAS 476, 875), truncated at
   Mgas > 1e9 Msun (the EAGLE gas selection of Dawson et al. 2020).

The rotation curve adds in quadrature the NFW halo and the two discs, each disc by the
Freeman (1970) razor-thin exponential disc formula. Enclosed masses of the discs within a
sphere of radius r are those of the razor-thin disc within cylindrical radius r.
Cosmology: H0 = 70 km/s/Mpc.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import optimize, special

from galexplore.errors import ParameterError

#: Gravitational constant in kpc (km/s)^2 / Msun.
G_KPC_KMS2_MSUN = 4.300917e-6
#: Hubble constant (km/s/Mpc) and dimensionless h.
H0_KMS_MPC = 70.0
LITTLE_H = H0_KMS_MPC / 100.0
#: Critical density of the Universe today, Msun / kpc^3 (3 H0^2 / 8 pi G).
RHO_CRIT_MSUN_KPC3 = 3.0 * (H0_KMS_MPC / 1000.0) ** 2 / (8.0 * np.pi * G_KPC_KMS2_MSUN)
#: Range of log10(M*/Msun) drawn from the stellar mass function.
LOG_MSTAR_RANGE = (np.log10(5e9), 11.5)
#: Lower limit on the cold-gas mass, log10(Msun).
LOG_MGAS_MIN = 9.0
#: log10 of the median ratio of the star-forming gas disc's scale length to the stellar one.
LOG_GAS_TO_STAR_SCALE = float(np.log10(2.8))
#: Half-mass radius of an exponential disc in units of its scale length.
EXP_DISC_HALF_MASS = 1.678346990016661


@dataclass(frozen=True)
class MassModel:
    """Stellar disc, cold-gas disc and NFW halo of one galaxy.

    Parameters
    ----------
    log_mstar, log_mgas, log_m200 : float
        log10 of the stellar, cold-gas and halo (M200c) masses in Msun.
    c200 : float
        NFW concentration r200 / r_s.
    rd_star_kpc, rd_gas_kpc : float
        Exponential scale lengths of the stellar and gas discs, kpc.
    """

    log_mstar: float
    log_mgas: float
    log_m200: float
    c200: float
    rd_star_kpc: float
    rd_gas_kpc: float

    def __post_init__(self) -> None:
        for name in ("c200", "rd_star_kpc", "rd_gas_kpc"):
            if not getattr(self, name) > 0:
                raise ParameterError(f"MassModel.{name} must be positive, got {getattr(self, name)}.")

    @property
    def r200_kpc(self) -> float:
        """Radius within which the mean density is 200 times critical, kpc."""
        return float((3.0 * 10**self.log_m200 / (800.0 * np.pi * RHO_CRIT_MSUN_KPC3)) ** (1.0 / 3.0))

    def dark_matter_enclosed(self, r_kpc) -> np.ndarray:
        """NFW dark-matter mass within a sphere of radius ``r_kpc`` (kpc), Msun."""
        x = np.asarray(r_kpc, dtype=float) * self.c200 / self.r200_kpc
        shape = np.log1p(x) - x / (1.0 + x)
        norm = np.log1p(self.c200) - self.c200 / (1.0 + self.c200)
        return 10**self.log_m200 * shape / norm

    def stellar_enclosed(self, r_kpc) -> np.ndarray:
        """Stellar mass within radius ``r_kpc`` (kpc) of the razor-thin exponential disc, Msun."""
        return 10**self.log_mstar * _exp_disc_fraction(np.asarray(r_kpc, dtype=float) / self.rd_star_kpc)

    def gas_enclosed(self, r_kpc) -> np.ndarray:
        """Cold-gas mass within radius ``r_kpc`` (kpc) of the razor-thin exponential disc, Msun."""
        return 10**self.log_mgas * _exp_disc_fraction(np.asarray(r_kpc, dtype=float) / self.rd_gas_kpc)

    def circular_velocity(self, r_kpc) -> np.ndarray:
        """Circular velocity in the disc plane at cylindrical radius ``r_kpc`` (kpc), km/s."""
        r = np.maximum(np.asarray(r_kpc, dtype=float), 1e-6)
        v2 = G_KPC_KMS2_MSUN * self.dark_matter_enclosed(r) / r
        v2 = v2 + _freeman_v2(r, 10**self.log_mstar, self.rd_star_kpc)
        v2 = v2 + _freeman_v2(r, 10**self.log_mgas, self.rd_gas_kpc)
        return np.sqrt(v2)

    @property
    def vmax_kms(self) -> float:
        """Maximum of the circular-velocity curve between 0.01 kpc and r200, km/s."""
        r = np.geomspace(0.01, self.r200_kpc, 600)
        return float(self.circular_velocity(r).max())

    @property
    def r_hsm_kpc(self) -> float:
        """Radius of the sphere holding half of the stellar mass, kpc."""
        return EXP_DISC_HALF_MASS * self.rd_star_kpc


def _exp_disc_fraction(x: np.ndarray) -> np.ndarray:
    """Fraction of an exponential disc's mass within ``x`` scale lengths."""
    return 1.0 - (1.0 + x) * np.exp(-x)


def _freeman_v2(r_kpc: np.ndarray, mass_msun: float, rd_kpc: float) -> np.ndarray:
    """Squared circular velocity of a razor-thin exponential disc (Freeman 1970), (km/s)^2.

    v^2 = (2 G M / Rd) y^2 [I0(y) K0(y) - I1(y) K1(y)], y = R / (2 Rd); the exponentially
    scaled Bessel functions keep the products finite at large y.
    """
    y = r_kpc / (2.0 * rd_kpc)
    bessel = special.i0e(y) * special.k0e(y) - special.i1e(y) * special.k1e(y)
    return 2.0 * G_KPC_KMS2_MSUN * mass_msun / rd_kpc * y**2 * bessel


# --- the published relations -------------------------------------------------------------

def baldry2012_mass_function(log_mstar: np.ndarray) -> np.ndarray:
    """Double-Schechter stellar mass function of Baldry et al. (2012), per dex per Mpc^3."""
    m = 10 ** (np.asarray(log_mstar, dtype=float) - 10.66)
    phi1, alpha1, phi2, alpha2 = 3.96e-3, -0.35, 0.79e-3, -1.47
    return np.log(10.0) * np.exp(-m) * (phi1 * m ** (alpha1 + 1) + phi2 * m ** (alpha2 + 1))


def moster2013_log_mstar(log_m200: np.ndarray) -> np.ndarray:
    """Mean log10 stellar mass (Msun) at halo mass log10 M200c (Moster et al. 2013, z = 0)."""
    log_m1, n10, beta, gamma = 11.590, 0.0351, 1.376, 0.608
    ratio = 10 ** (np.asarray(log_m200, dtype=float) - log_m1)
    return log_m200 + np.log10(2.0 * n10 / (ratio ** (-beta) + ratio**gamma))


def dutton_maccio2014_log_c200(log_m200: float) -> float:
    """Mean log10 NFW concentration c200 at z = 0 (Dutton & Maccio 2014, eq. 8)."""
    return 0.905 - 0.101 * (log_m200 - 12.0 + np.log10(LITTLE_H))


def shen2003_r50_kpc(log_mstar: float) -> tuple[float, float]:
    """Median half-light radius (kpc) and ln-scatter of late-type discs (Shen et al. 2003)."""
    mstar = 10**log_mstar
    alpha, beta, gamma, m0 = 0.14, 0.39, 0.10, 3.98e10
    r50 = gamma * mstar**alpha * (1.0 + mstar / m0) ** (beta - alpha)
    sigma1, sigma2 = 0.47, 0.34
    sigma_ln = sigma2 + (sigma1 - sigma2) / (1.0 + (mstar / m0) ** 2)
    return float(r50), float(sigma_ln)


@lru_cache(maxsize=1)
def _mass_function_cdf() -> tuple[np.ndarray, np.ndarray]:
    grid = np.linspace(*LOG_MSTAR_RANGE, 2001)
    pdf = baldry2012_mass_function(grid)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (pdf[1:] + pdf[:-1]) * np.diff(grid))])
    return grid, cdf / cdf[-1]


def _invert_moster(log_mstar: float) -> float:
    return optimize.brentq(lambda lm: moster2013_log_mstar(lm) - log_mstar, 9.0, 16.5, xtol=1e-8)


def draw_mass_model(rng: np.random.Generator) -> MassModel:
    """Draw the mass model of one galaxy from the relations in the module docstring.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of all randomness.

    Returns
    -------
    MassModel
    """
    grid, cdf = _mass_function_cdf()
    log_mstar = float(np.interp(rng.uniform(), cdf, grid))
    log_m200 = _invert_moster(log_mstar - rng.normal(0.0, 0.15))
    c200 = 10 ** (dutton_maccio2014_log_c200(log_m200) + rng.normal(0.0, 0.11))
    r50, sigma_ln = shen2003_r50_kpc(log_mstar)
    rd_star = r50 * np.exp(rng.normal(0.0, sigma_ln)) / EXP_DISC_HALF_MASS
    rd_gas = rd_star * 10 ** rng.normal(LOG_GAS_TO_STAR_SCALE, 0.15)
    mean_log_fgas = -0.6 - 0.45 * (log_mstar - 10.0)
    # Truncated normal: the gas fraction is redrawn inside the selection Mgas > 1e9 Msun.
    lower = (LOG_MGAS_MIN - log_mstar - mean_log_fgas) / 0.25
    u = rng.uniform(special.ndtr(lower), 1.0)
    log_mgas = log_mstar + mean_log_fgas + 0.25 * float(special.ndtri(u))
    return MassModel(
        log_mstar=log_mstar,
        log_mgas=log_mgas,
        log_m200=float(log_m200),
        c200=float(c200),
        rd_star_kpc=float(rd_star),
        rd_gas_kpc=float(rd_gas),
    )
