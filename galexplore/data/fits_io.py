"""FITS input: 2-D moment/velocity maps, 3-D cubes and their moments, and datasets built from them.

Maps: the first image HDU holding 2-D data (after dropping length-1 axes) is read, unless an
HDU is named or numbered. The name is OBJECT from that HDU's or the primary header, else the
file stem. Cubes: the spectral axis is found from the WCS and converted to km/s with astropy
(frequency: radio convention with RESTFRQ; wavelength: optical convention with RESTWAV).

Everything read here comes from files a user was handed, so nothing is trusted:

* **Compression.** gzip and bzip2 files are decompressed in full before FITS parsing, so
  their checksums (gzip CRC-32, bzip2 block CRCs) are checked, into a spooled temporary file
  (memory use stays under `SPOOL_BYTES`) and never beyond `MAX_DECOMPRESSED_BYTES`.
* **Size.** Image sizes are read from the header and refused before any pixel is read:
  maps must be square with `MIN_MAP_SIZE` to `MAX_MAP_SIZE` px a side (the recipes' range),
  cubes hold at most `MAX_CUBE_BYTES` as float64.
* **Values.** Infinities become NaN (blank). Maps and cubes with values beyond
  +-`MAX_ABS_VALUE`, or whose typical non-zero magnitude is below `MIN_TYPICAL_ABS_VALUE`, are
  refused: no velocity or intensity map holds such numbers; they come from corrupt files or
  data written with the wrong byte order (the message says when swapping the bytes would give
  plausible values). Maps with fewer than `MIN_FINITE_PIXELS` values, or whose values are
  all equal (e.g. all zero), are refused.
* **Units.** BUNIT is converted with astropy units to the channel's unit (km/s for mom1 and
  mom2, Jy/beam km/s for mom0); a missing BUNIT is taken to be that unit already.
* **Orientation.** Maps are returned north up (row 0 south) and east left (columns run
  west), the convention of docs/CONTRACTS.md: a map stored with CDELT1 > 0 (east right) is
  flipped left-right, one with CDELT2 < 0 upside down, so position angles keep their sense.
  A pixel grid rotated from north (CROTA2, PC or CD terms) is refused. Files without
  CDELT/CD keywords are taken to follow the convention.

Every batch reader (`read_fits_batch`, `import_fits`, `maps_to_dataset`) reads each file on its
own, keeps the good ones and reports every bad one with its reason.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import os
import tempfile
import unicodedata
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import astropy.units as u
import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.wcs import WCS

from galexplore.data.recipes import MAX_INPUT_SIZE, MIN_INPUT_SIZE, resize_nearest
from galexplore.errors import FitsError, ParameterError

#: Units of the map channels a FITS-built dataset may hold (docs/CONTRACTS.md).
MAP_CHANNEL_UNITS = {"mom0": "Jy/beam km/s", "mom1": "km/s", "mom2": "km/s"}
_ASTROPY_UNITS = {"mom0": u.Jy / u.beam * u.km / u.s, "mom1": u.km / u.s, "mom2": u.km / u.s}
#: Side of a map in pixels: the range the recipes take (`galexplore.data.recipes`).
MIN_MAP_SIZE, MAX_MAP_SIZE = MIN_INPUT_SIZE, MAX_INPUT_SIZE
#: Largest cube, as float64 in memory (moments need a few times this).
MAX_CUBE_BYTES = 256 * 2**20
#: Largest decompressed size of a gzip or bzip2 FITS file, and the part of it kept in memory.
MAX_DECOMPRESSED_BYTES = MAX_CUBE_BYTES + 64 * 2**20
SPOOL_BYTES = 16 * 2**20
#: Largest uploaded file (bytes as received).
MAX_UPLOAD_BYTES = 256 * 2**20
#: Fewest finite pixels a map must hold.
MIN_FINITE_PIXELS = 25
#: Plausible magnitudes of map and cube values, in any unit a FITS map of a galaxy uses.
MAX_ABS_VALUE = 1e10
MIN_TYPICAL_ABS_VALUE = 1e-30
#: Largest rotation of the pixel grid from north-up that is taken as north-up (degrees).
MAX_GRID_ROTATION_DEG = 0.5
#: FITS file name endings read from a directory.
FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz", ".fits.bz2")
#: Longest name (OBJECT or file stem) kept, in characters.
MAX_NAME_CHARS = 80

_GZIP_MAGIC, _BZIP2_MAGIC, _ZIP_MAGIC = b"\x1f\x8b", b"BZh", b"PK\x03\x04"
_UNIT_WORDS = {"KM": "km", "M": "m", "S": "s", "JY": "Jy", "MJY": "mJy", "BEAM": "beam", "K": "K",
               "HZ": "Hz", "SEC": "s"}


@dataclass(frozen=True)
class FitsMap:
    """A 2-D map read from FITS, in the channel's unit and the contract's orientation.

    Attributes
    ----------
    name : OBJECT or the file stem (control characters removed, at most `MAX_NAME_CHARS`).
    data : (N, N) float64 map, NaN blank.
    source_unit : BUNIT as written in the file ("" if absent: taken to be the channel's unit).
    flipped_ew, flipped_ns : whether the map was flipped left-right (CDELT1 > 0) or upside down
        (CDELT2 < 0) to put east left and north up.
    """

    name: str
    data: np.ndarray
    source_unit: str
    flipped_ew: bool
    flipped_ns: bool


@dataclass(frozen=True)
class FitsCube:
    """A spectral cube read from FITS.

    Attributes
    ----------
    name : OBJECT or the file stem.
    data : (n_channels, ny, nx) float64 intensities, NaN blank, north up and east left.
    velocities_kms : (n_channels,) channel centres in km/s.
    unit : intensity unit (BUNIT), "" if absent.
    flipped_ew, flipped_ns : see `FitsMap`.
    """

    name: str
    data: np.ndarray
    velocities_kms: np.ndarray
    unit: str
    flipped_ew: bool = False
    flipped_ns: bool = False


@dataclass
class FitsBatch:
    """What a batch read found: the maps it could read and, for every other file, why not.

    Attributes
    ----------
    names, maps, paths : name, map (`FitsMap.data`) and file of each map read, in input order.
    failures : ``(file, reason)`` for each file that could not be read.
    """

    names: list[str] = field(default_factory=list)
    maps: list[np.ndarray] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class ImportReport:
    """Result of `import_fits`.

    Attributes
    ----------
    path : the dataset written.
    imported : the files imported, in dataset order (row i <-> imported[i]).
    skipped : ``(file, reason)`` of each file that could not be imported.
    """

    path: Path
    imported: list[str]
    skipped: list[tuple[str, str]]


# ---------------------------------------------------------------------------- opening files
def clean_name(text: str) -> str:
    """``text`` without control or format characters (NUL, newlines, zero-width), stripped
    and cut to `MAX_NAME_CHARS`; for names taken from headers and file names."""
    kept = "".join(" " if ch in "\t\n\r" else ch for ch in str(text)
                   if ch in "\t\n\r" or unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co", "Cn"))
    kept = " ".join(kept.split())
    return kept if len(kept) <= MAX_NAME_CHARS else kept[:MAX_NAME_CHARS - 3] + "..."


def _declared_bytes(head: bytes) -> int | None:
    """Data bytes the primary header at the start of ``head`` declares; None until its END card."""
    for start in range(0, len(head) - 79, 80):
        if head[start:start + 8] == b"END     ":
            try:
                header = fits.Header.fromstring(head[:start + 80].decode("ascii", "replace"))
                dims = [int(header.get(f"NAXIS{k}", 0)) for k in range(1, int(header.get("NAXIS", 0)) + 1)]
                return abs(int(header.get("BITPIX", 8))) // 8 * int(np.prod(dims, dtype=object)) if dims else 0
            except (ValueError, TypeError, OverflowError):
                return 0  # not a header galexplore can size: left to astropy to refuse
    return None


def _decompress(stream, opener, label: str, kind: str):
    """Decompress ``stream`` in full (so its checksum is checked) into a spooled temporary file;
    refuses as soon as the primary header declares more data than any map or cube read here."""
    out = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
    total, head, declared = 0, b"", None
    try:
        with opener(stream) as source:
            while block := source.read(1 << 20):
                total += len(block)
                if declared is None and len(head) < SPOOL_BYTES:
                    head += block
                    declared = _declared_bytes(head)
                    if declared is not None and declared > MAX_DECOMPRESSED_BYTES:
                        raise FitsError(f"{label}: its header declares {declared / 2**20:.0f} MiB of data, "
                                        "more than a map or cube galexplore reads; crop it first (or it is a "
                                        "decompression bomb).")
                if total > MAX_DECOMPRESSED_BYTES:
                    raise FitsError(f"{label}: the {kind} file decompresses to more than "
                                    f"{MAX_DECOMPRESSED_BYTES // 2**20} MiB, more than a map or cube "
                                    "galexplore reads; crop it first (or it is a decompression bomb).")
                out.write(block)
    except FitsError:
        out.close()
        raise
    except (OSError, EOFError, zlib.error, ValueError) as err:
        out.close()
        raise FitsError(f"{label}: the {kind} data are corrupt or truncated ({err}); the file was damaged "
                        "in transfer or on disk: get a fresh copy.") from err
    out.seek(0)
    return out


@contextlib.contextmanager
def _open_fits(source: Path | bytes, label: str):
    """The HDU list of a FITS file (path) or of uploaded bytes, decompressing gzip/bzip2 first."""
    if isinstance(source, Path):
        if not source.is_file():
            raise FitsError(f"{label} does not exist; check the path.")
        handle = open(source, "rb")
    else:
        handle = io.BytesIO(source)
    with contextlib.ExitStack() as stack:
        stack.enter_context(handle)
        magic = handle.read(4)
        handle.seek(0)
        if magic.startswith(_GZIP_MAGIC):
            handle = stack.enter_context(_decompress(handle, lambda s: gzip.GzipFile(fileobj=s), label, "gzip"))
        elif magic.startswith(_BZIP2_MAGIC):
            handle = stack.enter_context(_decompress(handle, bz2.BZ2File, label, "bzip2"))
        elif magic.startswith(_ZIP_MAGIC):
            raise FitsError(f"{label} is a zip archive, not a FITS file; unzip it and import the FITS "
                            "files inside.")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                hdul = fits.open(handle, memmap=False)
        except Exception as err:  # astropy raises many kinds of error on garbage input
            raise FitsError(f"{label} is not a readable FITS file ({type(err).__name__}: {err}); check "
                            "that it is FITS and not truncated.") from err
        stack.enter_context(hdul)
        yield hdul


def _hdu_list(hdul: fits.HDUList, label: str) -> list:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return list(hdul)
    except Exception as err:  # a later HDU's header is damaged
        raise FitsError(f"{label}: an HDU header cannot be parsed ({type(err).__name__}: {err}); the "
                        "file is truncated or corrupt.") from err


def _image_hdus(hdul: fits.HDUList, label: str, hdu: int | str | None) -> list[tuple[int, object]]:
    """(index, HDU) of the requested HDU, or of every image HDU."""
    hdus = _hdu_list(hdul, label)
    if hdu is not None:
        try:
            chosen = hdul[hdu]
        except (KeyError, IndexError) as err:
            raise FitsError(f"{label} has no HDU {hdu!r} (it has {len(hdus)} HDUs: "
                            f"{[clean_name(h.name) for h in hdus]}); pass another hdu.") from err
        return [(hdul.index_of(hdu), chosen)]
    return [(i, h) for i, h in enumerate(hdus)
            if isinstance(h, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU))]


def _declared_shape(h, label: str) -> tuple[int, ...]:
    """The data shape (numpy order) the header declares, checked before anything is read."""
    header = h.header
    naxis = header.get("NAXIS", 0)
    if not isinstance(naxis, int) or isinstance(naxis, bool) or not 0 <= naxis <= 999:
        raise FitsError(f"{label}: NAXIS = {naxis!r} is not a number of axes; the header is corrupt.")
    dims = []
    for k in range(naxis, 0, -1):
        n = header.get(f"NAXIS{k}")
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise FitsError(f"{label}: NAXIS{k} = {n!r} is not an axis length; the header is corrupt.")
        dims.append(n)
    return tuple(dims) if naxis and all(dims) else ()


def _read_data(h, label: str, shape: tuple[int, ...]) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = h.data
    except Exception as err:  # truncated data, bad compression tiles, bad BSCALE, ...
        raise FitsError(f"{label}: the data of HDU {clean_name(h.name) or '(unnamed)'} cannot be read "
                        f"({type(err).__name__}: {err}); the file is probably truncated or corrupt.") from err
    if not isinstance(data, np.ndarray) or data.dtype.names is not None or data.shape != shape:
        raise FitsError(f"{label}: HDU {clean_name(h.name) or '(unnamed)'} declares data of shape {shape} "
                        "but holds no such image; the file is probably truncated or corrupt.")
    return data


def _text_card(header: fits.Header, key: str, label: str) -> str:
    """A string card's value ("" if absent), cleaned by `clean_name`."""
    try:
        return clean_name(header.get(key, ""))
    except (fits.VerifyError, ValueError) as err:
        raise FitsError(f"{label}: the {key} card cannot be parsed ({err}); fix the header.") from err


def _name(hdul: fits.HDUList, header: fits.Header, fallback: str, label: str) -> str:
    """OBJECT of the HDU or the primary header (an unparsable card counts as absent), else ``fallback``."""
    for h in (header, hdul[0].header):
        with contextlib.suppress(FitsError):
            if obj := _text_card(h, "OBJECT", label):
                return obj
    return clean_name(fallback) or "unnamed"


# ---------------------------------------------------------------------------- checks
def _plausible(values: np.ndarray) -> bool:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return False
    nonzero = np.abs(finite[finite != 0])
    return bool(np.max(np.abs(finite)) <= MAX_ABS_VALUE
                and (nonzero.size == 0 or np.median(nonzero) >= MIN_TYPICAL_ABS_VALUE))


def _physical(data: np.ndarray, label: str) -> np.ndarray:
    """float64 copy with inf -> NaN; refuses blank data and implausible magnitudes."""
    with np.errstate(invalid="ignore", over="ignore"):
        x = np.array(data, dtype=np.float64)
    x[~np.isfinite(x)] = np.nan
    if not np.isfinite(x).any():
        raise FitsError(f"{label}: the image is blank (all NaN or inf); nothing to read.")
    if not _plausible(x):
        finite = np.abs(x[np.isfinite(x)])
        nonzero = finite[finite > 0]
        seen = (f"values up to {finite.max():.3g}" if finite.max() > MAX_ABS_VALUE
                else f"a typical magnitude of {np.median(nonzero):.3g}")
        hint = "the file is corrupt"
        with np.errstate(invalid="ignore", over="ignore"):
            swapped = np.asarray(data).byteswap().astype(np.float64)
        if data.dtype.kind == "f" and _plausible(swapped):
            hint = ("the data look byte-swapped (swapping the bytes of each value gives plausible "
                    "values): the file was written with the wrong byte order; rewrite it with astropy")
        raise FitsError(f"{label}: the image holds {seen}, beyond any map of a galaxy (|value| <= "
                        f"{MAX_ABS_VALUE:g}, typical >= {MIN_TYPICAL_ABS_VALUE:g}); {hint}.")
    return x


def _check_map(x: np.ndarray, label: str) -> None:
    finite = x[np.isfinite(x)]
    if finite.size < MIN_FINITE_PIXELS:
        raise FitsError(f"{label}: only {finite.size} pixels hold values (at least {MIN_FINITE_PIXELS} "
                        "are needed); the map is (nearly) blank.")
    if finite.min() == finite.max():
        what = "zero" if finite.min() == 0 else f"{finite.min():g}"
        raise FitsError(f"{label}: all {finite.size} pixels are {what}; a constant map carries no "
                        "kinematics (is it a mask or a failed moment map?).")


def _check_side(n: int, label: str, what: str) -> None:
    if not MIN_MAP_SIZE <= n <= MAX_MAP_SIZE:
        raise FitsError(f"{label}: the {what} is {n} px a side, outside the {MIN_MAP_SIZE} to {MAX_MAP_SIZE} "
                        "px the recipes take; "
                        + ("rebin or crop it to the galaxy." if n > MAX_MAP_SIZE else "it is too small to classify."))


def _parse_unit(text: str, label: str) -> u.UnitBase:
    """A BUNIT string as an astropy unit; factors separated by spaces, '.' or '*' each carry
    their own '/' ("Jy/beam km/s" = Jy/beam x km/s, as astronomers mean it)."""
    def parse(s: str) -> u.UnitBase:
        return u.Unit(s, format="fits")

    def words(s: str) -> str:
        out, token = [], ""
        for ch in s + " ":
            if ch.isalpha():
                token += ch
                continue
            out.append(_UNIT_WORDS.get(token, token) if token.isupper() else token)
            token = ""
            out.append(ch)
        return "".join(out[:-1])

    candidates = []
    for s in (text, words(text)):
        factors = s.replace("*", " ").replace(".", " ").split() if "(" not in s else [s]
        candidates.append(factors)
    for factors in candidates:
        try:
            result = u.dimensionless_unscaled
            for f in factors:
                result = result * parse(f)
            return result
        except ValueError:
            continue
    raise FitsError(f"{label}: BUNIT {text!r} is not a unit astropy understands; fix the header (e.g. "
                    "'km/s' or 'Jy/beam km/s').")


def _unit_factor(bunit: str, target: u.UnitBase, label: str, what: str) -> float:
    """Factor converting values in ``bunit`` (a missing BUNIT means ``target``) to ``target``."""
    if not bunit.strip():
        return 1.0
    source = _parse_unit(bunit.strip(), label)
    try:
        return float(source.to(target))
    except u.UnitConversionError as err:
        raise FitsError(f"{label}: BUNIT {bunit!r} cannot be converted to {target} for {what}; "
                        "import it as another channel, or convert it first.") from err


def _orientation(header: fits.Header, label: str) -> tuple[bool, bool]:
    """(flip east-west, flip north-south) that bring the image to east left, north up."""
    keys = ("CDELT1", "CDELT2", "CD1_1", "CD1_2", "CD2_1", "CD2_2", "PC1_2", "PC2_1", "CROTA2")
    if not any(k in header for k in keys):
        return False, False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wcs = WCS(header, naxis=2)
            matrix = wcs.pixel_scale_matrix
    except Exception as err:  # astropy raises assorted errors on malformed WCS keywords
        raise FitsError(f"{label}: the WCS keywords cannot be parsed ({type(err).__name__}: {err}); fix "
                        "or remove CDELT/CD/PC in the header.") from err
    if wcs.wcs.lng == 1 and wcs.wcs.lat == 0:
        raise FitsError(f"{label}: axis 1 is declination and axis 2 right ascension; transpose the map "
                        "so that columns run along right ascension.")
    diag = max(abs(matrix[0, 0]), abs(matrix[1, 1]))
    if not np.all(np.isfinite(matrix)) or diag == 0:
        raise FitsError(f"{label}: the pixel scale (CDELT/CD) is zero or not finite; fix the header.")
    rotation = np.degrees(np.arctan2(max(abs(matrix[0, 1]), abs(matrix[1, 0])), diag))
    if rotation > MAX_GRID_ROTATION_DEG:
        raise FitsError(f"{label}: the pixel grid is rotated by about {rotation:.1f} deg from north-up "
                        "(CROTA2, PC or CD terms), so position angles would be measured in the wrong "
                        "frame; reproject the map to north-up first (e.g. with the reproject package).")
    return bool(matrix[0, 0] > 0), bool(matrix[1, 1] < 0)


def _orient(x: np.ndarray, flips: tuple[bool, bool]) -> np.ndarray:
    if flips[0]:
        x = x[..., :, ::-1]
    if flips[1]:
        x = x[..., ::-1, :]
    return np.ascontiguousarray(x)


# ---------------------------------------------------------------------------- maps
def _read_map(source: Path | bytes, label: str, stem: str, hdu: int | str | None,
              channel: str) -> FitsMap:
    if channel not in MAP_CHANNEL_UNITS:
        raise ParameterError(f"channel must be one of {', '.join(MAP_CHANNEL_UNITS)}, got {channel!r}.")
    with _open_fits(source, label) as hdul:
        shapes = []
        for index, h in _image_hdus(hdul, label, hdu):
            shape = _declared_shape(h, label)
            if not shape:
                continue
            squeezed = tuple(n for n in shape if n > 1)
            if len(squeezed) == 2:
                break
            shapes.append((index, shape))
        else:
            if shapes:
                raise FitsError(f"{label} holds no 2-D map: image data of shape {shapes[0][1]} in HDU "
                                f"{shapes[0][0]}; for a cube use read_moment_maps (galexplore import-fits "
                                "--moments), otherwise select a 2-D plane first.")
            raise FitsError(f"{label} has no image data{f' in HDU {hdu!r}' if hdu is not None else ''}; "
                            "it must hold a 2-D velocity map.")
        ny, nx = squeezed
        if ny != nx:
            raise FitsError(f"{label}: the map is {nx} x {ny} px, not square; crop or pad it to a square "
                            "centred on the galaxy.")
        _check_side(nx, label, "map")
        header = h.header
        bunit = _text_card(header, "BUNIT", label)
        factor = _unit_factor(bunit, _ASTROPY_UNITS[channel], label, channel)
        flips = _orientation(header, label)
        raw = _read_data(h, label, shape).reshape(squeezed)
        name = _name(hdul, header, stem, label)
    image = _physical(raw, label) * factor
    _check_map(image, label)
    return FitsMap(name, _orient(image, flips), bunit, *flips)


def read_map(path: str | os.PathLike, hdu: int | str | None = None, channel: str = "mom1") -> FitsMap:
    """Read a square 2-D moment map from a FITS file (plain, gzip or bzip2), checked, in the
    channel's unit and the contract's orientation (see the module docstring).

    Parameters
    ----------
    path : FITS file.
    hdu : HDU index or name; default: the first image HDU holding 2-D data.
    channel : "mom1" or "mom2" (km/s) or "mom0" (Jy/beam km/s): the unit BUNIT is converted to.

    Raises
    ------
    FitsError : the file cannot be read, or its map fails a check (the message says which).
    """
    path = Path(path)
    return _read_map(path, str(path), _stem(path.name), hdu, channel)


def read_velocity_map(path: str | os.PathLike, hdu: int | str | None = None) -> tuple[str, np.ndarray]:
    """Read a square 2-D velocity map (km/s) from a FITS file; see `read_map`.

    Returns
    -------
    (name, map) : OBJECT (or the file stem) and the (N, N) float64 map in km/s, NaN blank.
    """
    result = read_map(path, hdu=hdu, channel="mom1")
    return result.name, result.data


def read_uploaded_map(content: bytes, filename: str, hdu: int | str | None = None,
                      channel: str = "mom1") -> FitsMap:
    """Read a map from the bytes of an uploaded FITS file, with every check of `read_map`.

    The file name is only shown, never used as a path: nothing is written to disk (gzip and
    bzip2 uploads are decompressed into a spooled temporary file), and a name holding
    ``..``, NUL, control characters or hundreds of characters is reduced by `clean_name`.
    The map's name is OBJECT, else the cleaned file name without its FITS suffix.

    Parameters
    ----------
    content : the uploaded file's bytes (at most `MAX_UPLOAD_BYTES`).
    filename : the name the browser sent.
    hdu, channel : as in `read_map`.
    """
    shown = clean_name(str(filename).replace("\\", "/").rsplit("/", 1)[-1]) or "upload"
    if not isinstance(content, (bytes, bytearray, memoryview)):
        raise FitsError(f"upload {shown}: expected the file's bytes, got {type(content).__name__}.")
    if len(content) > MAX_UPLOAD_BYTES:
        raise FitsError(f"upload {shown}: {len(content) / 2**20:.0f} MiB is more than the "
                        f"{MAX_UPLOAD_BYTES // 2**20} MiB a FITS map upload may have.")
    return _read_map(bytes(content), f"upload {shown}", _stem(shown), hdu, channel)


def _stem(name: str) -> str:
    lower = name.lower()
    for suffix in sorted(FITS_SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def read_fits_batch(paths, hdu: int | str | None = None, channel: str = "mom1") -> FitsBatch:
    """`read_map` for each path; keeps the maps it can read and the reason for every other file."""
    batch = FitsBatch()
    for p in paths:
        try:
            result = read_map(p, hdu=hdu, channel=channel)
        except FitsError as err:
            batch.failures.append((str(p), str(err)))
            continue
        batch.names.append(result.name)
        batch.maps.append(result.data)
        batch.paths.append(str(p))
    return batch


def read_maps_from_fits(paths, hdu: int | str | None = None) -> tuple[list[str], list[np.ndarray]]:
    """`read_velocity_map` for each path; returns (names, maps), or raises one FitsError that
    lists every file that cannot be read (`read_fits_batch` keeps the others instead)."""
    batch = read_fits_batch(paths, hdu=hdu)
    if batch.failures:
        listed = "; ".join(reason for _, reason in batch.failures[:5])
        more = f" (and {len(batch.failures) - 5} more)" if len(batch.failures) > 5 else ""
        raise FitsError(f"{len(batch.failures)} of {len(batch.failures) + len(batch.maps)} FITS files cannot "
                        f"be read: {listed}{more}. Remove or fix them, or import the rest with "
                        "`galexplore import-fits`.")
    return batch.names, batch.maps


def fits_files(sources) -> list[Path]:
    """The FITS files named by ``sources``: files as given, directories expanded to the FITS
    files directly inside them (sorted by name)."""
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    files: list[Path] = []
    for source in map(Path, sources):
        if source.is_dir():
            files += sorted(p for p in source.iterdir()
                            if p.is_file() and p.name.lower().endswith(FITS_SUFFIXES))
        else:
            files.append(source)
    return files


# ---------------------------------------------------------------------------- cubes and moments
def _spectral_axis_kms(wcs: WCS, n: int, label: str) -> np.ndarray:
    """Channel centres of the WCS spectral axis in km/s."""
    spec = wcs.sub([wcs.wcs.spec + 1])
    values = spec.pixel_to_world_values(np.arange(n, dtype=np.float64))
    ctype = spec.wcs.ctype[0].upper()
    try:
        quantity = np.asarray(values, dtype=np.float64) * u.Unit(spec.wcs.cunit[0] or "")
        if quantity.unit.physical_type == "speed":
            return quantity.to_value(u.km / u.s)
        if ctype.startswith("FREQ"):
            rest = wcs.wcs.restfrq
            if not rest > 0:
                raise FitsError(f"{label}: the spectral axis is frequency but RESTFRQ is missing; add the "
                                "line's rest frequency (Hz) to the header.")
            return quantity.to_value(u.km / u.s, equivalencies=u.doppler_radio(rest * u.Hz))
        if ctype.startswith(("WAVE", "AWAV")):
            rest = wcs.wcs.restwav
            if not rest > 0:
                raise FitsError(f"{label}: the spectral axis is wavelength but RESTWAV is missing; add "
                                "the line's rest wavelength (m) to the header.")
            return quantity.to_value(u.km / u.s, equivalencies=u.doppler_optical(rest * u.m))
    except (u.UnitConversionError, ValueError) as err:
        raise FitsError(f"{label}: cannot convert the spectral axis ({ctype}) to km/s ({err}).") from err
    raise FitsError(f"{label}: spectral axis type {ctype!r} cannot be converted to velocity; use a "
                    "FREQ, WAVE or velocity (VRAD/VOPT/VELO) axis.")


def read_cube(path: str | os.PathLike, hdu: int | str | None = None) -> FitsCube:
    """Read a spectral cube (velocity axis from the WCS, in km/s); length-1 axes are dropped.

    Sizes are checked from the header first (spatial axes square or not, each within the
    recipes' range; at most `MAX_CUBE_BYTES` as float64); inf becomes NaN; the spatial axes
    are put north up and east left.
    """
    path = Path(path)
    label = str(path)
    with _open_fits(path, label) as hdul:
        for index, h in _image_hdus(hdul, label, hdu):
            shape = _declared_shape(h, label)
            if shape:
                break
        else:
            raise FitsError(f"{label} has no image data; a cube needs a 3-D image HDU.")
        header = h.header
        if sum(d > 1 for d in shape) < 3 or len(shape) > 4:
            raise FitsError(f"{label}: image of shape {shape} is not a cube (spectral + 2 spatial "
                            "axes); for a 2-D map use read_velocity_map.")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                wcs = WCS(header)
        except Exception as err:  # astropy raises assorted errors on malformed WCS keywords
            raise FitsError(f"{label}: the WCS of HDU {index} cannot be parsed ({err}).") from err
        if wcs.wcs.spec < 0:
            raise FitsError(f"{label}: HDU {index} has no spectral axis in its WCS (CTYPE3 = FREQ, VRAD, "
                            "...); it is not a spectral cube.")
        numpy_spec = len(shape) - 1 - wcs.wcs.spec  # numpy axes run opposite to FITS axes
        keep = [a for a in range(len(shape)) if a == numpy_spec or shape[a] > 1]
        if len(keep) != 3:
            raise FitsError(f"{label}: image of shape {shape} is not a cube (spectral + 2 spatial "
                            "axes); for a 2-D map use read_velocity_map.")
        spatial = [shape[a] for a in keep if a != numpy_spec]
        for n in spatial:
            _check_side(n, label, "cube's spatial axis")
        nbytes = 8 * int(np.prod(shape, dtype=np.float64))
        if nbytes > MAX_CUBE_BYTES:
            raise FitsError(f"{label}: the cube of shape {shape} needs {nbytes / 2**20:.0f} MiB, more than "
                            f"the {MAX_CUBE_BYTES // 2**20} MiB galexplore reads; crop it spectrally or "
                            "spatially first (e.g. with spectral-cube).")
        flips = _orientation(header, label)
        bunit = _text_card(header, "BUNIT", label)
        data = _read_data(h, label, shape)
        name = _name(hdul, header, _stem(path.name), label)
    squeezed = np.squeeze(data, axis=tuple(a for a in range(data.ndim) if a not in keep))
    cube = _physical(np.moveaxis(squeezed, keep.index(numpy_spec), 0), label)
    velocities = _spectral_axis_kms(wcs, cube.shape[0], label)
    return FitsCube(name, _orient(cube, flips), velocities, bunit, *flips)


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
    """Read a FITS cube and return (name, {"mom0": ..., "mom1": ..., "mom2": ...}); mom0 is in
    the cube's unit x km/s, mom1 and mom2 in km/s."""
    cube = read_cube(path, hdu=hdu)
    mom0, mom1, mom2 = moment_maps(cube.data, cube.velocities_kms, threshold=threshold)
    return cube.name, {"mom0": mom0, "mom1": mom1, "mom2": mom2}


# ---------------------------------------------------------------------------- datasets
def _read_moment_channels(path: Path, channels: list[str], hdu, threshold) -> tuple[FitsCube, list[np.ndarray]]:
    cube = read_cube(path, hdu=hdu)
    label = str(path)
    factor = 1.0
    if "mom0" in channels:
        bunit = cube.unit or "Jy/beam"  # a missing BUNIT is taken to be the channel's unit
        factor = _unit_factor(bunit, u.Jy / u.beam, label, "mom0 (import the other moments with "
                                                           "--channel mom1 --channel mom2)")
    moments = dict(zip(("mom0", "mom1", "mom2"), moment_maps(cube.data, cube.velocities_kms, threshold)))
    moments["mom0"] = moments["mom0"] * factor
    maps = [moments[c] for c in channels]
    for c, m in zip(channels, maps):
        _check_map(m, f"{label} ({c})")
    return cube, maps


def import_fits(sources, out: str | os.PathLike, channels=None, *, hdu: int | str | None = None,
                moments: bool = False, threshold: float | None = None, storage: str = "float32",
                overwrite: bool = False) -> ImportReport:
    """Build a galexplore dataset from FITS maps or cubes, importing every file that passes
    the checks and reporting the others (`galexplore import-fits`).

    Parameters
    ----------
    sources : FITS files and/or directories (their FITS files, see `fits_files`).
    out : dataset directory to write.
    channels : dataset channels. Maps: one of "mom1" (default), "mom2", "mom0", the channel
        each 2-D map is stored as. Cubes (``moments=True``): any of "mom0", "mom1", "mom2"
        (default all three), computed by `moment_maps`.
    hdu : HDU index or name in every file (default: the first image HDU with the right data).
    moments : the files are spectral cubes; store their moment maps.
    threshold : cubes only: voxels at or below it (cube units) are left out of the moments.
    storage, overwrite : as in `galexplore.data.create_dataset`.

    Each map is put in the contract's units and orientation (see the module docstring), then
    resized to 64 x 64 by nearest neighbour (`recipes.resize_nearest`). The catalogue has
    ``id`` = ``galaxy_id`` = row, ``view`` = 0, ``name``, ``file``, ``original_size_px``,
    ``blank_fraction`` (of the original mom1 map, else of the first channel), ``bunit`` (as
    written), ``flipped_ew`` and ``flipped_ns``. The provenance lists the imported and the skipped
    files with the reasons.

    Raises
    ------
    FitsError : no file could be imported (the message lists why), or no file was given.
    """
    from galexplore import __version__
    from galexplore.data.dataset import create_dataset

    default = ["mom0", "mom1", "mom2"] if moments else ["mom1"]
    channels = list(dict.fromkeys(channels or default))
    unknown = [c for c in channels if c not in MAP_CHANNEL_UNITS]
    if unknown:
        raise ParameterError(f"unknown channel(s) {unknown}; use {', '.join(MAP_CHANNEL_UNITS)}.")
    if not moments and len(channels) != 1:
        raise ParameterError(f"a 2-D map fills one channel, but {channels} were asked for; pass one "
                             "--channel, or --moments for cubes.")
    files = fits_files(sources)
    if not files:
        raise FitsError("no FITS files given (directories are searched for "
                        f"{', '.join(FITS_SUFFIXES)}); pass files or a directory holding them.")
    rows, maps, skipped = [], [], []
    for path in files:
        try:
            if moments:
                cube, images = _read_moment_channels(path, channels, hdu, threshold)
                name, bunit, flips = cube.name, cube.unit, (cube.flipped_ew, cube.flipped_ns)
            else:
                result = read_map(path, hdu=hdu, channel=channels[0])
                images = [result.data]
                name, bunit, flips = result.name, result.source_unit, (result.flipped_ew, result.flipped_ns)
        except FitsError as err:
            skipped.append((str(path), str(err)))
            continue
        maps.append(np.stack([resize_nearest(im) for im in images]).astype(np.float32))
        rows.append({"name": name, "file": clean_name(path.name), "original_size_px": images[0].shape[0],
                     "blank_fraction": float(np.mean(~np.isfinite(images[channels.index("mom1")]
                                                             if "mom1" in channels else images[0]))),
                     "bunit": bunit,
                     "flipped_ew": flips[0], "flipped_ns": flips[1], "source": str(path)})
    if not maps:
        listed = "; ".join(reason for _, reason in skipped[:5])
        raise FitsError(f"none of the {len(files)} FITS files could be imported: {listed}"
                        + (f" (and {len(skipped) - 5} more)" if len(skipped) > 5 else ""))
    n = len(maps)
    catalog = pd.DataFrame(rows).drop(columns="source")
    catalog.insert(0, "view", np.zeros(n, dtype=np.int64))
    catalog.insert(0, "galaxy_id", np.arange(n, dtype=np.int64))
    catalog.insert(0, "id", np.arange(n, dtype=np.int64))
    imported = [r["source"] for r in rows]
    provenance = {
        "generator": "galexplore.data.fits_io.import_fits",
        "generator_version": __version__,
        "parameters": {"channels": channels, "hdu": hdu, "moments": moments, "threshold": threshold,
                       "resize": "nearest to 64 x 64"},
        "seed": None,
        "source_files": imported,
        "skipped_files": [{"file": f, "reason": r} for f, r in skipped],
    }
    with create_dataset(out, channels, {c: MAP_CHANNEL_UNITS[c] for c in channels}, storage=storage,
                        provenance=provenance, overwrite=overwrite) as writer:
        writer.append(np.stack(maps), catalog, column_units={"original_size_px": "pix"})
    return ImportReport(Path(out), imported, skipped)


def maps_to_dataset(paths, out: str | os.PathLike, channel: str = "mom1", *,
                    hdu: int | str | None = None, storage: str = "float32",
                    overwrite: bool = False) -> Path:
    """Build a one-channel galexplore dataset from 2-D FITS maps (physical units kept);
    `import_fits` with one channel. Files that cannot be imported are skipped, listed in the
    provenance (``skipped_files``) and reported by a `FitsImportWarning`."""
    if channel not in MAP_CHANNEL_UNITS:
        raise ParameterError(f"channel must be one of {', '.join(MAP_CHANNEL_UNITS)}, got {channel!r}.")
    report = import_fits(list(paths), out, [channel], hdu=hdu, storage=storage, overwrite=overwrite)
    if report.skipped:
        warnings.warn(f"{len(report.skipped)} FITS file(s) skipped: "
                      + "; ".join(reason for _, reason in report.skipped), FitsImportWarning, stacklevel=2)
    return report.path


class FitsImportWarning(UserWarning):
    """Some files of a batch import were skipped (the message says which and why)."""
