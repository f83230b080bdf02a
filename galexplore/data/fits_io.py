"""FITS input: 2-D moment/velocity maps, 3-D cubes and their moments, and datasets built from them.

Maps: the first image HDU holding 2-D data (after dropping length-1 axes) is read, unless an
HDU is named or numbered. The name is OBJECT from that HDU's or the primary header, else the
file stem. Cubes: the spectral axis is found from the WCS and converted to km/s with astropy
(frequency: radio convention with RESTFRQ; wavelength: optical convention with RESTWAV).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import astropy.units as u
import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.wcs import WCS

from galexplore.errors import FitsError, ParameterError

#: Units of the map channels a FITS-built dataset may hold (docs/CONTRACTS.md).
MAP_CHANNEL_UNITS = {"mom0": "Jy/beam km/s", "mom1": "km/s", "mom2": "km/s"}
_READ_ERRORS = (OSError, ValueError, TypeError, IndexError, KeyError, fits.VerifyError)


@dataclass(frozen=True)
class FitsCube:
    """A spectral cube read from FITS.

    Attributes
    ----------
    name : OBJECT or the file stem.
    data : (n_channels, ny, nx) float64 intensities, NaN blank.
    velocities_kms : (n_channels,) channel centres in km/s.
    unit : intensity unit (BUNIT), "" if absent.
    """

    name: str
    data: np.ndarray
    velocities_kms: np.ndarray
    unit: str


def _open(path: Path) -> fits.HDUList:
    if not path.is_file():
        raise FitsError(f"{path} does not exist; check the path.")
    try:
        return fits.open(path, memmap=False)
    except _READ_ERRORS as err:
        raise FitsError(f"{path} is not a readable FITS file ({err}); check that it is FITS and "
                        "not truncated.") from err


def _image_hdus(hdul: fits.HDUList, path: Path, hdu: int | str | None) -> list[tuple[int, object]]:
    """(index, HDU) of the requested HDU, or of every image HDU with data."""
    if hdu is not None:
        try:
            chosen = hdul[hdu]
        except (KeyError, IndexError) as err:
            raise FitsError(f"{path} has no HDU {hdu!r} (it has {len(hdul)} HDUs: "
                            f"{[h.name for h in hdul]}); pass another hdu.") from err
        return [(hdul.index_of(hdu), chosen)]
    return [(i, h) for i, h in enumerate(hdul)
            if isinstance(h, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU))]


def _data(h, path: Path) -> np.ndarray | None:
    try:
        data = h.data
    except _READ_ERRORS as err:
        raise FitsError(f"{path}: the data of HDU {h.name or '(unnamed)'} cannot be read ({err}); the "
                        "file is probably truncated or corrupt.") from err
    if data is None:
        return None
    if not isinstance(data, np.ndarray) or data.dtype.names is not None:
        return None
    return data


def _name(hdul: fits.HDUList, header: fits.Header, path: Path) -> str:
    for h in (header, hdul[0].header):
        obj = str(h.get("OBJECT", "")).strip()
        if obj:
            return obj
    return path.stem


def read_velocity_map(path: str | os.PathLike, hdu: int | str | None = None) -> tuple[str, np.ndarray]:
    """Read a square 2-D map (e.g. moment 1 in km/s) from a FITS file.

    Parameters
    ----------
    path : FITS file.
    hdu : HDU index or name; default: the first image HDU holding 2-D data.

    Returns
    -------
    (name, map) : OBJECT (or the file stem) and the (N, N) float64 map, NaN blank.
    """
    path = Path(path)
    with _open(path) as hdul:
        shapes = []
        for index, h in _image_hdus(hdul, path, hdu):
            data = _data(h, path)
            if data is None:
                continue
            squeezed = np.squeeze(data)
            if squeezed.ndim == 2:
                image, header = np.asarray(squeezed, dtype=np.float64), h.header
                break
            shapes.append((index, data.shape))
        else:
            if shapes:
                raise FitsError(f"{path} holds no 2-D map: image data of shape {shapes[0][1]} in HDU "
                                f"{shapes[0][0]}; for a cube use read_moment_maps, otherwise select a "
                                "2-D plane first.")
            raise FitsError(f"{path} has no image data{f' in HDU {hdu!r}' if hdu is not None else ''}; "
                            "it must hold a 2-D velocity map.")
        name = _name(hdul, header, path)
    if not np.isfinite(image).any():
        raise FitsError(f"{path} ({name}): the map is blank (all NaN); nothing to show.")
    if image.shape[0] != image.shape[1]:
        raise FitsError(f"{path} ({name}): the map is {image.shape[1]} x {image.shape[0]} px, not square; "
                        "crop or pad it to a square centred on the galaxy.")
    return name, image


def read_maps_from_fits(paths, hdu: int | str | None = None) -> tuple[list[str], list[np.ndarray]]:
    """`read_velocity_map` for each path; returns (names, maps)."""
    names, maps = [], []
    for p in paths:
        name, image = read_velocity_map(p, hdu=hdu)
        names.append(name)
        maps.append(image)
    return names, maps


def _spectral_axis_kms(wcs: WCS, n: int, path: Path) -> np.ndarray:
    """Channel centres of the WCS spectral axis in km/s."""
    spec = wcs.sub([wcs.wcs.spec + 1])
    values = spec.pixel_to_world_values(np.arange(n, dtype=np.float64))
    ctype = spec.wcs.ctype[0].upper()
    quantity = np.asarray(values, dtype=np.float64) * u.Unit(spec.wcs.cunit[0] or "")
    try:
        if quantity.unit.physical_type == "speed":
            return quantity.to_value(u.km / u.s)
        if ctype.startswith("FREQ"):
            rest = wcs.wcs.restfrq
            if not rest > 0:
                raise FitsError(f"{path}: the spectral axis is frequency but RESTFRQ is missing; add the "
                                "line's rest frequency (Hz) to the header.")
            return quantity.to_value(u.km / u.s, equivalencies=u.doppler_radio(rest * u.Hz))
        if ctype.startswith(("WAVE", "AWAV")):
            rest = wcs.wcs.restwav
            if not rest > 0:
                raise FitsError(f"{path}: the spectral axis is wavelength but RESTWAV is missing; add "
                                "the line's rest wavelength (m) to the header.")
            return quantity.to_value(u.km / u.s, equivalencies=u.doppler_optical(rest * u.m))
    except u.UnitConversionError as err:
        raise FitsError(f"{path}: cannot convert the spectral axis ({ctype}) to km/s ({err}).") from err
    raise FitsError(f"{path}: spectral axis type {ctype!r} cannot be converted to velocity; use a "
                    "FREQ, WAVE or velocity (VRAD/VOPT/VELO) axis.")


def read_cube(path: str | os.PathLike, hdu: int | str | None = None) -> FitsCube:
    """Read a spectral cube (velocity axis from the WCS, in km/s); length-1 axes are dropped."""
    path = Path(path)
    with _open(path) as hdul:
        for index, h in _image_hdus(hdul, path, hdu):
            data = _data(h, path)
            if data is not None:
                break
        else:
            raise FitsError(f"{path} has no image data; a cube needs a 3-D image HDU.")
        header = h.header
        name = _name(hdul, header, path)
    if sum(d > 1 for d in data.shape) < 3 or data.ndim > 4:
        raise FitsError(f"{path}: image of shape {data.shape} is not a cube (spectral + 2 spatial "
                        "axes); for a 2-D map use read_velocity_map.")
    try:
        wcs = WCS(header)
    except Exception as err:  # astropy raises assorted errors on malformed WCS keywords
        raise FitsError(f"{path}: the WCS of HDU {index} cannot be parsed ({err}).") from err
    if wcs.wcs.spec < 0:
        raise FitsError(f"{path}: HDU {index} has no spectral axis in its WCS (CTYPE3 = FREQ, VRAD, "
                        "...); it is not a spectral cube.")
    numpy_spec = data.ndim - 1 - wcs.wcs.spec  # numpy axes run opposite to FITS axes
    keep = [a for a in range(data.ndim) if a == numpy_spec or data.shape[a] > 1]
    if len(keep) != 3:
        raise FitsError(f"{path}: image of shape {data.shape} is not a cube (spectral + 2 spatial "
                        "axes); for a 2-D map use read_velocity_map.")
    squeezed = np.squeeze(data, axis=tuple(a for a in range(data.ndim) if a not in keep))
    cube = np.moveaxis(squeezed, keep.index(numpy_spec), 0)
    velocities = _spectral_axis_kms(wcs, cube.shape[0], path)
    return FitsCube(name, np.asarray(cube, dtype=np.float64), velocities, str(header.get("BUNIT", "")))


def moment_maps(cube: np.ndarray, velocities_kms: np.ndarray,
                threshold: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Moment 0, 1 and 2 maps of a (n_channels, ny, nx) cube.

    mom0 = sum_v I dv (cube unit x km/s, dv = |channel spacing|), mom1 = sum v I / sum I (km/s),
    mom2 = sqrt(sum I (v - mom1)^2 / sum I) (km/s, the dispersion). Only voxels with finite I
    (and I > ``threshold`` if given) count; a pixel without any is blank (NaN) in all three,
    and mom1/mom2 are blank where sum I <= 0.
    """
    v = np.asarray(velocities_kms, dtype=np.float64)
    if cube.ndim != 3 or v.shape != (cube.shape[0],):
        raise ParameterError(f"moment_maps needs a (n_channels, ny, nx) cube and n_channels velocities, "
                             f"got {cube.shape} and {v.shape}.")
    if len(v) < 2:
        raise ParameterError("moment_maps needs at least 2 channels.")
    dv = np.abs(np.gradient(v))[:, None, None]
    use = np.isfinite(cube)
    if threshold is not None:
        use &= np.where(use, cube, -np.inf) > threshold
    intensity = np.where(use, cube, 0.0)
    total = intensity.sum(axis=0)
    vv = v[:, None, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        mom0 = (intensity * dv).sum(axis=0)
        mom1 = (intensity * vv).sum(axis=0) / total
        mom2 = np.sqrt(np.clip((intensity * (vv - mom1) ** 2).sum(axis=0) / total, 0.0, None))
    none = ~use.any(axis=0)
    mom0[none] = np.nan
    bad = none | ~(total > 0)
    mom1[bad] = np.nan
    mom2[bad] = np.nan
    return mom0, mom1, mom2


def read_moment_maps(path: str | os.PathLike, hdu: int | str | None = None,
                     threshold: float | None = None) -> tuple[str, dict[str, np.ndarray]]:
    """Read a FITS cube and return (name, {"mom0": ..., "mom1": ..., "mom2": ...})."""
    cube = read_cube(path, hdu=hdu)
    mom0, mom1, mom2 = moment_maps(cube.data, cube.velocities_kms, threshold=threshold)
    return cube.name, {"mom0": mom0, "mom1": mom1, "mom2": mom2}


def maps_to_dataset(paths, out: str | os.PathLike, channel: str = "mom1", *,
                    hdu: int | str | None = None, storage: str = "float32",
                    overwrite: bool = False) -> Path:
    """Build a one-channel galexplore dataset from 2-D FITS maps (physical units kept).

    Each map is resized to 64 x 64 by nearest neighbour (`recipes.resize_nearest`). The
    catalogue has ``id`` = ``galaxy_id`` = file order, ``view`` = 0, ``name``,
    ``original_size_px`` and ``blank_fraction`` (of the original map).
    """
    from galexplore import __version__
    from galexplore.data.dataset import create_dataset
    from galexplore.data.recipes import resize_nearest

    if channel not in MAP_CHANNEL_UNITS:
        raise ParameterError(f"channel must be one of {', '.join(MAP_CHANNEL_UNITS)}, got {channel!r}.")
    paths = [Path(p) for p in paths]
    if not paths:
        raise FitsError("no FITS files given; pass at least one path.")
    names, images = read_maps_from_fits(paths, hdu=hdu)
    maps = np.stack([resize_nearest(im) for im in images])[:, None].astype(np.float32)
    n = len(images)
    catalog = pd.DataFrame({
        "id": np.arange(n, dtype=np.int64),
        "galaxy_id": np.arange(n, dtype=np.int64),
        "view": np.zeros(n, dtype=np.int64),
        "name": names,
        "original_size_px": np.array([im.shape[0] for im in images], dtype=np.int64),
        "blank_fraction": np.array([float(np.mean(~np.isfinite(im))) for im in images]),
    })
    provenance = {
        "generator": "galexplore.data.fits_io.maps_to_dataset",
        "generator_version": __version__,
        "parameters": {"channel": channel, "hdu": hdu, "resize": "nearest to 64 x 64"},
        "seed": None,
        "source_files": [str(p) for p in paths],
    }
    with create_dataset(out, [channel], {channel: MAP_CHANNEL_UNITS[channel]}, storage=storage,
                        provenance=provenance, overwrite=overwrite) as writer:
        writer.append(maps, catalog, column_units={"original_size_px": "pix"})
    return Path(out)
