"""Mock CO(1-0) interferometric observations of mock galaxies, made the way KinMS makes them.

Follows Dawson et al. (2020, sect. 2.3-2.4): each galaxy is placed at the distance where
its 98th-percentile radius subtends half the field (32" of a 64" x 64" map) -- or, for a
galaxy observed smaller than the field, a chosen ``fill_arcsec`` --, projected at the
requested inclination and position angle, offset from the field centre by a pointing
offset, and turned into a cube with a 3" circular beam and 1" pixels. Channels are 10 km/s
wide, centred symmetrically on 0 km/s, and span every particle's line-of-sight velocity
plus one channel on each side. The projection is done here, so the angle conventions are
those of docs/CONTRACTS.md: the receding half of the major axis lies at the position angle,
measured east of north; east is to the left (columns increase westwards), north up;
inclination 0 is face-on.

The cube (`kinms_cube`) is the one ``KinMS.model_cube`` (Davis et al. 2013) makes from the
particles' sky positions (``inClouds``) and line-of-sight velocities (``vLOS_clouds``):
the same gridding of the clouds, KinMS's own beam (``KinMS.makebeam``), the same
normalisation to the integrated flux; only the beam convolution is done once for all
channels with an FFT instead of channel by channel in real space (tests compare the two:
identical masks, values within 1e-6 of the peak).

Flux scale: all cold gas is traced in CO(1-0) with alpha_CO = 4.3 Msun (K km/s pc^2)^-1
(Bolatto et al. 2013, helium included) and L'_CO = (c^2 / 2k) S dv nu^-2 D^2 (Solomon &
Vanden Bout 2005: 3.25e7 in K km/s pc^2, Jy km/s, GHz, Mpc) in the local-universe limit
z -> 0 (at the distances here, < 200 Mpc, the (1 + z) terms change fluxes by < 5 per
cent). The cube, in Jy/beam, holds the flux of
the particles that fall inside the field.

Noise (optional): Gaussian with sigma = (1 / (S/N)) x the mean over channels containing
emission of the channel peak (eq. 2), then smooth masking after Dame (2011): the noisy cube
is smoothed by a Gaussian of FWHM 1.5 beams on the sky and 2 channels in velocity, voxels
where the smoothed cube exceeds 3 times its noise (the noise of the smoothed cube follows
exactly from sigma and the smoothing kernel) form the mask, and the moments are taken from
the unsmoothed noisy cube inside the mask. Noiseless cubes are blank where the emission
falls below a surface-brightness sensitivity (``ObservingSetup.sensitivity_k``, a brightness
temperature per channel converted to Jy/beam with astropy), as an observation of fixed depth
would be: the faint outskirts and isolated clouds of a galaxy vanish, and how much of the
map is blank depends on its gas surface density, not on its peak.

Moments: mom0 = sum(I) dv (Jy/beam km/s), mom1 = sum(v I) / sum(I), mom2 = sqrt(sum(I (v -
mom1)^2) / sum(I)) (km/s), over masked voxels. Pixels with no masked voxel are NaN in all
three maps. With noise, mom1 and mom2 are also NaN where the pixel's sum(I) does not
exceed its noise, sigma sqrt(number of masked voxels) (without this, pixels whose masked
voxels are mostly noise get velocities far outside the cube) or where mom1 still falls
outside the band, and mom2 where the weighted variance is negative (both only possible
through negative noisy voxels inside the mask).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
from astropy import constants as const
from astropy import units as u
from astropy.io import fits
from scipy import fft, ndimage

from galexplore.errors import ParameterError
from galexplore.mock.galaxies import Galaxy

#: Arcseconds per radian.
ARCSEC_PER_RAD = 180.0 * 3600.0 / np.pi
#: Conversion between Gaussian FWHM and standard deviation.
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
#: c^2 / (2 k): L'_line (K km/s pc^2) per S dv (Jy km/s) x D^2 (Mpc^2) / nu^2 (GHz^2);
#: 3.25e7 in Solomon & Vanden Bout (2005).
LPRIME_CONSTANT = (const.c**2 / (2 * const.k_B) * u.Jy * u.km / u.s * u.Mpc**2 / u.GHz**2).to_value(
    u.K * u.km / u.s * u.pc**2)


@dataclass(frozen=True)
class ObservingSetup:
    """Instrument and processing parameters of a mock observation.

    Parameters
    ----------
    map_pixels : int
        Side of the square map, pixels.
    pixel_arcsec : float
        Pixel size, arcsec.
    beam_fwhm_arcsec : float
        FWHM of the circular Gaussian beam, arcsec.
    channel_kms : float
        Channel width, km/s.
    r98_fill_arcsec : float
        Angle subtended by the galaxy's 98th-percentile radius when it fills the field, arcsec.
    sensitivity_k : float
        Noiseless cubes: voxels below this brightness temperature (K, Rayleigh-Jeans, per
        channel and beam) are blank.
    mask_threshold_sigma : float
        Smooth masking: keep voxels where the smoothed cube exceeds this many of its sigma.
    smooth_spatial_beams : float
        FWHM of the spatial smoothing kernel, in beams.
    smooth_spectral_channels : float
        FWHM of the spectral smoothing kernel, in channels.
    moment_min_snr : float
        Noisy cubes: mom1 and mom2 need the pixel's masked sum(I) above this many times its
        noise.
    alpha_co : float
        CO(1-0)-to-gas conversion factor, Msun (K km/s pc^2)^-1.
    rest_frequency_ghz : float
        Rest frequency of the line, GHz (CO 1-0).
    """

    map_pixels: int = 64
    pixel_arcsec: float = 1.0
    beam_fwhm_arcsec: float = 3.0
    channel_kms: float = 10.0
    r98_fill_arcsec: float = 32.0
    sensitivity_k: float = 0.006
    mask_threshold_sigma: float = 3.0
    smooth_spatial_beams: float = 1.5
    smooth_spectral_channels: float = 2.0
    moment_min_snr: float = 1.0
    alpha_co: float = 4.3
    rest_frequency_ghz: float = 115.2712018

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not (np.isfinite(value) and value > 0):
                raise ParameterError(f"ObservingSetup.{name} must be a positive number, got {value}.")

    @property
    def beam_area_sr(self) -> float:
        """Solid angle of the Gaussian beam, sr (pi FWHM^2 / (4 ln 2))."""
        fwhm = self.beam_fwhm_arcsec / ARCSEC_PER_RAD
        return float(np.pi * fwhm**2 / (4.0 * np.log(2.0)))

    @cached_property
    def sensitivity_jy_beam(self) -> float:
        """`sensitivity_k` as a flux density per beam, Jy/beam."""
        return float((self.sensitivity_k * u.K).to_value(
            u.Jy, equivalencies=u.brightness_temperature(self.rest_frequency_ghz * u.GHz,
                                                         self.beam_area_sr * u.sr)))


@dataclass(frozen=True, eq=False)
class Observation:
    """A mock observation: cube, mask and moment maps.

    Attributes
    ----------
    mom0 : (H, W) float32 ndarray, Jy/beam km/s (NaN blank)
    mom1, mom2 : (H, W) float32 ndarray, km/s (NaN blank)
    cube : (n_channels, H, W) float64 ndarray, Jy/beam; axes [velocity, row (north), col (west)]
    mask : (n_channels, H, W) bool ndarray, voxels the moments use
    velocities_kms : (n_channels,) ndarray, channel centres, km/s
    distance_mpc : float
    pixel_kpc : float
        Physical size of a pixel at the galaxy's distance, kpc.
    noise_sigma : float
        Standard deviation of the added noise, Jy/beam (0 for a noiseless cube).
    line_flux_jy_kms : float
        Integrated CO(1-0) flux of the whole galaxy, Jy km/s.
    pa_deg, inc_deg : float
        Position angle of the disc's receding major axis and inclination, degrees.
    pa_kin_deg : float
        Kinematic position angle of the receding side measured from the particles
        (`kinematic_position_angle`), degrees.
    offset_arcsec : (float, float)
        Offset of the galaxy's centre of potential from the field centre towards (west, north), arcsec.
    snr : float or None
    setup : ObservingSetup
    """

    mom0: np.ndarray
    mom1: np.ndarray
    mom2: np.ndarray
    cube: np.ndarray
    mask: np.ndarray
    velocities_kms: np.ndarray
    distance_mpc: float
    pixel_kpc: float
    noise_sigma: float
    line_flux_jy_kms: float
    pa_deg: float
    inc_deg: float
    pa_kin_deg: float
    offset_arcsec: tuple[float, float]
    snr: float | None
    setup: ObservingSetup

    def cube_header(self) -> fits.Header:
        """FITS header (RA---SIN, DEC--SIN, VRAD in km/s) describing ``cube``."""
        setup = self.setup
        centre = (setup.map_pixels - 1) / 2.0 + 1.0  # FITS pixels count from 1
        header = fits.Header()
        header["NAXIS"] = 3
        header["NAXIS1"] = header["NAXIS2"] = setup.map_pixels
        header["NAXIS3"] = len(self.velocities_kms)
        header["CTYPE1"], header["CUNIT1"] = "RA---SIN", "deg"
        header["CRPIX1"], header["CRVAL1"], header["CDELT1"] = centre, 0.0, -setup.pixel_arcsec / 3600.0
        header["CTYPE2"], header["CUNIT2"] = "DEC--SIN", "deg"
        header["CRPIX2"], header["CRVAL2"], header["CDELT2"] = centre, 0.0, setup.pixel_arcsec / 3600.0
        header["CTYPE3"], header["CUNIT3"] = "VRAD", "km/s"
        header["CRPIX3"], header["CRVAL3"], header["CDELT3"] = 1.0, float(self.velocities_kms[0]), setup.channel_kms
        header["BUNIT"] = "Jy/beam"
        header["BMAJ"] = header["BMIN"] = setup.beam_fwhm_arcsec / 3600.0
        header["BPA"] = 0.0
        header["RESTFRQ"] = setup.rest_frequency_ghz * 1e9
        header["SPECSYS"] = "BARYCENT"
        return header


def line_flux_jy_kms(gas_mass_msun: float, distance_mpc: float, setup: ObservingSetup) -> float:
    """CO(1-0) flux S dv (Jy km/s) of a gas mass (Msun) at a distance (Mpc), z -> 0."""
    luminosity = gas_mass_msun / setup.alpha_co  # L'_CO, K km/s pc^2
    return luminosity * setup.rest_frequency_ghz**2 / (LPRIME_CONSTANT * distance_mpc**2)


def sky_projection(positions: np.ndarray, velocities: np.ndarray, pa_deg: float,
                   inc_deg: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Project galaxy-frame particles (spin along +z) onto the sky.

    The disc's +x axis becomes the receding half of the major axis, at ``pa_deg`` east of
    north; the spin axis is tilted by ``inc_deg`` from the line of sight, towards the
    observer.

    Returns
    -------
    west, north : (N,) ndarrays, same unit as ``positions``
        Offsets towards the west (map columns) and north (map rows).
    v_los : (N,) ndarray, km/s
        Line-of-sight velocity, positive receding.
    """
    pa, inc = np.radians(pa_deg), np.radians(inc_deg)
    # Observer frame (west, north, towards the observer) is right-handed.
    major = np.array([-np.sin(pa), np.cos(pa), 0.0])
    towards = np.array([0.0, 0.0, 1.0])
    in_sky_perp = np.cross(towards, major)
    x_axis = major
    y_axis = np.cos(inc) * in_sky_perp - np.sin(inc) * towards
    z_axis = np.cos(inc) * towards + np.sin(inc) * in_sky_perp
    to_observer = np.column_stack([x_axis, y_axis, z_axis])  # galaxy -> observer frame
    pos = positions @ to_observer.T
    vel = velocities @ to_observer.T
    return pos[:, 0], pos[:, 1], -vel[:, 2]


def kinematic_position_angle(west: np.ndarray, north: np.ndarray, v_los: np.ndarray,
                             pixel: float = 1.0) -> float:
    """Kinematic position angle of the receding side, degrees east of north in [0, 360).

    The particles are binned into pixels of side ``pixel`` (same unit as ``west`` and
    ``north``, whose origin is the centre of rotation); each occupied pixel holds the mean
    line-of-sight velocity of its particles, as a noiseless velocity map without a beam
    would. The first azimuthal harmonic of that map, fitted by least squares with every
    pixel weighted equally (v = v0 + a cos(phi) + b sin(phi), phi the angle of the pixel
    about the centre), points from the approaching to the receding side; its direction is
    the kinematic PA. For a disc in circular rotation it is the disc's PA; for an inflow,
    a warp or a merger it is the axis of the velocity field an observer would measure.

    Parameters
    ----------
    west, north : (N,) arrays, offsets from the centre of rotation.
    v_los : (N,) array, line-of-sight velocities, km/s.
    pixel : pixel size in the unit of ``west`` and ``north``.

    Returns
    -------
    float, or NaN when fewer than 3 pixels are occupied.
    """
    col = np.floor(np.asarray(west) / pixel).astype(np.int64)
    row = np.floor(np.asarray(north) / pixel).astype(np.int64)
    col_min, row_min = col.min(), row.min()
    width = int(col.max() - col_min) + 1
    keys, owner, counts = np.unique((row - row_min) * width + (col - col_min), return_inverse=True,
                                    return_counts=True)
    if len(keys) < 3:
        return float("nan")
    mean_v = np.bincount(owner, weights=np.asarray(v_los, dtype=np.float64)) / counts
    x = (keys % width + col_min + 0.5) * pixel
    y = (keys // width + row_min + 0.5) * pixel
    phi = np.arctan2(y, x)
    design = np.column_stack([np.ones_like(phi), np.cos(phi), np.sin(phi)])
    (_, a, b), *_ = np.linalg.lstsq(design, mean_v, rcond=None)
    # the receding direction is (west, north) = (a, b); PA theta has (west, north) = (-sin, cos)
    return float(np.degrees(np.arctan2(-a, b)) % 360.0)


@lru_cache(maxsize=8)
def _kinms_beam(map_pixels: int, pixel_arcsec: float, beam_fwhm_arcsec: float) -> np.ndarray:
    """The trimmed beam that ``KinMS.model_cube`` convolves with (KinMS's own ``makebeam``)."""
    from kinms import KinMS

    field = map_pixels * pixel_arcsec
    psf = KinMS(field, field, 10.0, pixel_arcsec, 10.0, beam_fwhm_arcsec, nSamps=1).psf
    psf.flags.writeable = False
    return psf


@lru_cache(maxsize=8)
def _beam_transform(map_pixels: int, pixel_arcsec: float, beam_fwhm_arcsec: float) -> tuple[np.ndarray, int]:
    """The 2-D real FFT of the normalised KinMS beam, zero-padded to a fast length that holds
    a map and the beam without wrapping; and that length."""
    psf = _kinms_beam(map_pixels, pixel_arcsec, beam_fwhm_arcsec)
    size = fft.next_fast_len(map_pixels + psf.shape[0] - 1, real=True)
    transform = fft.rfft2(psf / psf.sum(), s=(size, size))
    transform.flags.writeable = False
    return transform, size


def kinms_cube(west_arcsec: np.ndarray, north_arcsec: np.ndarray, v_los: np.ndarray, total_flux: float,
               n_channels: int, setup: ObservingSetup) -> np.ndarray:
    """The cube ``KinMS.model_cube`` makes from clouds at these sky positions and velocities.

    Equivalent to ``KinMS(field, field, n_channels * dv, pixel, dv, beam).model_cube(0, 0,
    inClouds=[west, north, 0], vLOS_clouds=v_los, intFlux=total_flux, phaseCent=[-pixel/2,
    -pixel/2], vOffset=-dv/2)`` transposed to [velocity, row, col]: clouds are binned to the
    nearest voxel as KinMS bins them (the field centre at pixel (H - 1) / 2, channel centres
    at (k - n/2 + 1/2) dv), every channel is convolved with KinMS's normalised beam (zero
    outside the field), and the cube is scaled so that it holds ``total_flux`` (Jy km/s)
    times the beam's sum, as KinMS scales it. The convolution is one FFT over all channels.

    Returns
    -------
    (n_channels, H, W) float64 ndarray, Jy/beam.
    """
    size, dv, pixel = setup.map_pixels, setup.channel_kms, setup.pixel_arcsec
    # KinMS: cent = size/2 + phaseCent/pixel = size/2 - 1/2; channel = round(v/dv + n/2 - 1/2)
    col = np.round(west_arcsec / pixel + size / 2 - 0.5)
    row = np.round(north_arcsec / pixel + size / 2 - 0.5)
    chan = np.round(v_los / dv + n_channels / 2 - 0.5)
    inside = (col >= 0) & (col < size) & (row >= 0) & (row < size) & (chan >= 0) & (chan < n_channels)
    flat = (chan[inside] * size + row[inside]) * size + col[inside]
    cube = np.bincount(flat.astype(np.int64), minlength=n_channels * size * size).astype(np.float64)
    cube = cube.reshape(n_channels, size, size)
    psf = _kinms_beam(size, pixel, setup.beam_fwhm_arcsec)
    beam, padded = _beam_transform(size, pixel, setup.beam_fwhm_arcsec)
    used = cube.reshape(n_channels, -1).any(axis=1)
    if used.any():
        # linear ("same") convolution: the full convolution of the zero-padded FFT, cropped
        # by half the beam on each side
        full = fft.irfft2(fft.rfft2(cube[used], s=(padded, padded)) * beam, s=(padded, padded))
        half = psf.shape[0] // 2
        cube[used] = full[:, half:half + size, half:half + size]
        total = cube.sum()
        if total > 0 and total_flux > 0:
            cube *= total_flux * psf.sum() / (total * dv)
    return cube


def _smoothing_sigmas(setup: ObservingSetup) -> tuple[float, float, float]:
    spatial = setup.smooth_spatial_beams * setup.beam_fwhm_arcsec / setup.pixel_arcsec / FWHM_PER_SIGMA
    return setup.smooth_spectral_channels / FWHM_PER_SIGMA, spatial, spatial


def smooth_mask(noisy_cube: np.ndarray, noise_sigma: float, setup: ObservingSetup) -> np.ndarray:
    """Smooth-masking (Dame 2011) of a noisy cube [v, row, col]: boolean mask of kept voxels."""
    sigmas = _smoothing_sigmas(setup)
    smoothed = ndimage.gaussian_filter(noisy_cube, sigmas, mode="constant")
    impulse = np.zeros(noisy_cube.shape)
    impulse[tuple(n // 2 for n in noisy_cube.shape)] = 1.0
    kernel = ndimage.gaussian_filter(impulse, sigmas, mode="constant")
    smoothed_sigma = noise_sigma * np.sqrt(np.sum(kernel**2))
    return smoothed > setup.mask_threshold_sigma * smoothed_sigma


def moment_maps(cube: np.ndarray, mask: np.ndarray, velocities_kms: np.ndarray, channel_kms: float,
                noise_sigma: float = 0.0, min_snr: float = 1.0,
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Moments 0, 1, 2 of a cube [v, row, col] over the masked voxels (see module docstring).

    mom1 and mom2 are blank where sum(I) over the masked voxels of a pixel does not exceed
    ``min_snr`` times its noise, ``noise_sigma`` sqrt(number of those voxels), or where
    mom1 falls outside the band (possible only with negative, noisy voxels). Only channels
    with masked voxels are summed.
    """
    used = mask.reshape(len(mask), -1).any(axis=1)
    cube, mask, v = cube[used], mask[used], velocities_kms[used][:, None, None]
    weights = np.where(mask, cube, 0.0)
    total = weights.sum(axis=0)
    has_data = mask.any(axis=0)
    total_noise = noise_sigma * np.sqrt(mask.sum(axis=0))
    positive = has_data & (total > min_snr * total_noise)
    safe_total = np.where(positive, total, 1.0)
    mom1 = (weights * v).sum(axis=0) / safe_total
    positive &= (mom1 >= velocities_kms.min()) & (mom1 <= velocities_kms.max())
    variance = (weights * (v - mom1) ** 2).sum(axis=0) / safe_total
    mom0 = np.where(has_data, total * channel_kms, np.nan)
    mom2 = np.where(positive & (variance >= 0), np.sqrt(np.abs(variance)), np.nan)
    mom1 = np.where(positive, mom1, np.nan)
    return mom0.astype(np.float32), mom1.astype(np.float32), mom2.astype(np.float32)


def observe(galaxy: Galaxy, pa_deg: float, inc_deg: float, rng: np.random.Generator,
            snr: float | None = None, setup: ObservingSetup = ObservingSetup(),
            fill_arcsec: float | None = None, offset_arcsec: tuple[float, float] = (0.0, 0.0)) -> Observation:
    """Observe a galaxy at a position angle and inclination.

    Parameters
    ----------
    galaxy : Galaxy
    pa_deg : float
        Position angle of the receding major axis, degrees east of north (any value; taken
        modulo 360).
    inc_deg : float
        Inclination in [0, 90] degrees (0 = face-on).
    rng : numpy.random.Generator
        Draws the noise (the noiseless cube uses no randomness).
    snr : float, optional
        Signal-to-noise S/N of eq. 2 of Dawson et al. (2020); None for a noiseless cube.
    setup : ObservingSetup
    fill_arcsec : float, optional
        Angle subtended by the 98th-percentile radius, arcsec (sets the distance); default
        ``setup.r98_fill_arcsec`` (the galaxy fills the field, as in the paper).
    offset_arcsec : (float, float)
        Offset of the centre of potential from the field centre towards (west, north), arcsec.

    Returns
    -------
    Observation
    """
    if not np.isfinite(pa_deg):
        raise ParameterError(f"Position angle must be a finite number of degrees, got {pa_deg}.")
    if not (np.isfinite(inc_deg) and 0.0 <= inc_deg <= 90.0):
        raise ParameterError(f"Inclination must lie in [0, 90] degrees (0 = face-on), got {inc_deg}.")
    if snr is not None and not (np.isfinite(snr) and snr > 0):
        raise ParameterError(f"snr must be a positive number (or None for no noise), got {snr}.")
    fill = setup.r98_fill_arcsec if fill_arcsec is None else float(fill_arcsec)
    if not (np.isfinite(fill) and fill > 0):
        raise ParameterError(f"fill_arcsec must be a positive number of arcsec, got {fill_arcsec}.")
    offset = tuple(float(o) for o in offset_arcsec)
    if len(offset) != 2 or not np.all(np.isfinite(offset)):
        raise ParameterError(f"offset_arcsec must be two finite numbers (west, north), got {offset_arcsec}.")
    pa_deg = float(pa_deg) % 360.0

    arcsec_per_kpc = fill / galaxy.r98_kpc
    distance_mpc = ARCSEC_PER_RAD / arcsec_per_kpc / 1000.0
    west, north, v_los = sky_projection(galaxy.positions * arcsec_per_kpc, galaxy.velocities, pa_deg, inc_deg)
    pa_kin = kinematic_position_angle(west, north, v_los, setup.pixel_arcsec)
    west, north = west + offset[0], north + offset[1]

    field = setup.map_pixels * setup.pixel_arcsec
    half_channels = int(np.ceil(np.abs(v_los).max() / setup.channel_kms)) + 1
    n_channels = 2 * half_channels
    velocities_kms = (np.arange(n_channels) - half_channels + 0.5) * setup.channel_kms
    inside = (west >= -field / 2) & (west < field / 2) & (north >= -field / 2) & (north < field / 2)
    total_flux = line_flux_jy_kms(float(galaxy.masses.sum()), distance_mpc, setup)
    flux_in_field = total_flux * float(galaxy.masses[inside].sum() / galaxy.masses.sum())
    cube = kinms_cube(west, north, v_los, flux_in_field, n_channels, setup)

    if snr is None:
        noise_sigma = 0.0
        mask = cube > setup.sensitivity_jy_beam
    else:
        channel_peaks = cube.max(axis=(1, 2))
        noise_sigma = float(channel_peaks[channel_peaks > 0].mean() / snr)
        cube = cube + rng.normal(0.0, noise_sigma, cube.shape)
        mask = smooth_mask(cube, noise_sigma, setup)
    mom0, mom1, mom2 = moment_maps(cube, mask, velocities_kms, setup.channel_kms,
                                   noise_sigma, setup.moment_min_snr)
    return Observation(
        mom0=mom0, mom1=mom1, mom2=mom2, cube=cube, mask=mask, velocities_kms=velocities_kms,
        distance_mpc=float(distance_mpc), pixel_kpc=float(setup.pixel_arcsec / arcsec_per_kpc),
        noise_sigma=noise_sigma, line_flux_jy_kms=float(total_flux), pa_deg=pa_deg, inc_deg=float(inc_deg),
        pa_kin_deg=pa_kin, offset_arcsec=offset, snr=None if snr is None else float(snr), setup=setup,
    )
