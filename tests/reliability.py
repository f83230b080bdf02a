"""The reliability corpus: bad FITS files, uploads, damaged datasets and model cards, made by
code, and the judge that sorts what galexplore does with each.

Shared by ``tests/test_reliability.py`` (each case must end in a clear error or a correct
result) and ``benchmarks/bench_reliability.py`` (prints the counts the README reports).

A case does what a user does with one bad input and returns the result. `judge` runs it:

* ``clear error``: a `GalexploreError` (or a CLI exit status != 0 with its message), for
  input that must be refused;
* ``handled``: input that must be accepted was, and the result is right (``check``);
* ``good input refused``: input that must be accepted was refused;
* ``traceback``: any other exception;
* ``silent garbage``: bad input accepted, or good input accepted with a wrong result;
* ``data lost``: a writer case lost or mixed up committed maps.
"""

from __future__ import annotations

import bz2
import contextlib
import functools
import gzip
import io
import json
import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from astropy.io import fits

from galexplore.errors import GalexploreError

CLEAR, HANDLED, REFUSED, TRACEBACK, GARBAGE, LOST = (
    "clear error", "handled", "good input refused", "traceback", "silent garbage", "data lost")
OUTCOMES = (CLEAR, HANDLED, REFUSED, TRACEBACK, GARBAGE, LOST)


@dataclass(frozen=True)
class Case:
    """One input and what a user does with it.

    run : does it, in a fresh directory, and returns what came out.
    check : for input that must be accepted: is the result right? (None: must be refused.)
        May also return `LOST` for writer cases.
    make : FITS cases: writes the input file alone (for the batch of bad files).
    """

    group: str
    name: str
    run: Callable[[Path], object]
    check: Callable[[object], bool | str] | None = None
    make: Callable[[Path], Path] | None = None  # FITS cases: writes the input file alone


class CliRefused(GalexploreError):
    """A `galexplore` command ended with a non-zero status and said why on stderr."""


def judge(case: Case, tmp: Path) -> tuple[str, str]:
    """(outcome, detail) of running ``case`` in the empty directory ``tmp``."""
    try:
        result = case.run(tmp)
    except GalexploreError as err:
        return (CLEAR if case.check is None else REFUSED), str(err)[:300]
    except Exception as err:  # noqa: BLE001 - what the judge exists to count
        return TRACEBACK, f"{type(err).__name__}: {err}"[:300]
    if case.check is None:
        return GARBAGE, f"accepted: {result!r}"[:300]
    try:
        verdict = case.check(result)
    except Exception as err:  # noqa: BLE001
        return GARBAGE, f"result cannot be checked ({type(err).__name__}: {err})"[:300]
    if verdict is True:
        return HANDLED, ""
    return (verdict if isinstance(verdict, str) else GARBAGE), f"wrong result: {result!r}"[:300]


def cli(*args: str) -> str:
    """Run ``galexplore ARGS`` in-process; stdout, or `CliRefused` with stderr on a non-zero exit."""
    from galexplore.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in args])
    if status != 0:
        if not err.getvalue().strip():
            raise RuntimeError(f"exit status {status} without a message")
        raise CliRefused(err.getvalue().strip())
    return out.getvalue()


# ============================================================================ FITS files
SIZE = 48


def disc(size: int = SIZE, pa_deg: float = 30.0, vmax: float = 200.0) -> np.ndarray:
    """A rotating disc's velocity field (km/s), receding side at ``pa_deg`` in the contract's
    orientation (north up, east left), NaN outside 0.45 of the side."""
    y, x = np.mgrid[0:size, 0:size] - (size - 1) / 2
    r = np.hypot(x, y)
    along = -np.sin(np.radians(pa_deg)) * x + np.cos(np.radians(pa_deg)) * y
    v = vmax * np.tanh(r / (0.1 * size)) * along / np.maximum(r, 1e-9)
    v[r > 0.45 * size] = np.nan
    return v


def write_fits(path: Path, data, header: dict | None = None, primary_only: bool = True) -> Path:
    hdr = fits.Header()
    for key, value in (header or {}).items():
        hdr[key] = value
    if primary_only:
        fits.PrimaryHDU(data, header=hdr).writeto(path, overwrite=True)
    else:
        fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data, header=hdr)]).writeto(path, overwrite=True)
    return path


def _good_bytes(data=None, header: dict | None = None) -> bytes:
    buf = io.BytesIO()
    hdr = fits.Header({"OBJECT": "PLACEHOLDER"})
    for key, value in (header or {}).items():
        hdr[key] = value
    fits.PrimaryHDU(disc() if data is None else data, header=hdr).writeto(buf)
    return buf.getvalue()


def _raw_header(**cards) -> bytes:
    """A primary header with exactly these cards (no data), padded to 2880 bytes."""
    header = fits.Header()
    header["SIMPLE"] = True
    for key, value in cards.items():
        header[key] = value
    return header.tostring().encode()


def _file(name: str, content: bytes) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        path = tmp / name
        path.write_bytes(content)
        return path
    return build


def _flip_byte(data: bytes, offset: int) -> bytes:
    out = bytearray(data)
    out[offset] ^= 0x5A
    return bytes(out)


def _gzip(data: bytes, level: int = 6) -> bytes:
    return gzip.compress(data, compresslevel=level, mtime=0)


@functools.lru_cache(maxsize=1)
def _gzip_bomb() -> bytes:
    """About 560 KB of gzip that inflate to a 12000 x 12000 float32 image of zeros (576 MB):
    the header, then one compressed 16 MiB block of zeros repeated (gzip allows many members)."""
    header = _raw_header(BITPIX=-32, NAXIS=2, NAXIS1=12000, NAXIS2=12000)
    block = 1 << 24
    n_blocks, rest = divmod(12000 * 12000 * 4, block)
    return (_gzip(header, level=9) + _gzip(bytes(block), level=9) * n_blocks
            + _gzip(bytes(rest), level=9))


def _stored_gzip_with_damaged_data() -> bytes:
    """The issue's case: a gzip whose stored (level 0) data has a changed byte, so it still
    inflates, to values of about +-2e307, and only the CRC-32 shows the damage."""
    good = _good_bytes(disc().astype(">f8"))
    packed = bytearray(_gzip(good, level=0))
    offset = len(packed) - 8 - 2880 + 100  # inside the data, not the padding
    packed[offset] = 0x7F
    return bytes(packed)


def _read_map(path: Path):
    from galexplore.data.fits_io import read_map

    return read_map(path)


def _read_cube(path: Path):
    from galexplore.data.fits_io import read_cube

    return read_cube(path)


def _map_case(name: str, build: Callable[[Path], Path], check=None, reader=_read_map) -> Case:
    return Case("FITS file", name, lambda tmp: reader(build(tmp)), check, make=build)


def _equals(expected: np.ndarray, atol: float = 1e-4):
    def check(result) -> bool:
        data = result.data
        return data.shape == expected.shape and bool(np.array_equal(np.isnan(data), np.isnan(expected))) \
            and bool(np.allclose(data[np.isfinite(data)], expected[np.isfinite(expected)], atol=atol))
    return check


def _cube(n_chan: int = 51, size: int = 24, spectral: dict | None = None) -> tuple[np.ndarray, dict]:
    """Gaussian lines (peak 1, sigma 20 km/s) centred on a disc's velocity field (+-100 km/s),
    in 10 km/s channels from -250 km/s, and a header with a VRAD axis in m/s."""
    v = -250.0 + 10.0 * np.arange(n_chan)
    centre = disc(size, 0.0, 100.0)
    cube = np.exp(-0.5 * ((v[:, None, None] - np.nan_to_num(centre)[None]) / 20.0) ** 2)
    header = {"CTYPE1": "RA---SIN", "CDELT1": -1e-4, "CRPIX1": 1, "CRVAL1": 10.0, "CUNIT1": "deg",
              "CTYPE2": "DEC--SIN", "CDELT2": 1e-4, "CRPIX2": 1, "CRVAL2": -30.0, "CUNIT2": "deg",
              "CTYPE3": "VRAD", "CDELT3": 10000.0, "CRPIX3": 1, "CRVAL3": -250000.0, "CUNIT3": "m/s",
              "BUNIT": "Jy/beam"}
    header.update(spectral or {})
    return cube, header


def fits_cases() -> list[Case]:
    """Bad and tricky FITS files, each read as a map (or a cube) the way import-fits reads it."""
    good = _good_bytes()
    data_start = 2880
    d = disc()
    cases = [
        _map_case("random bytes", _file("noise.fits", np.random.default_rng(0).bytes(9000))),
        _map_case("empty file", _file("empty.fits", b"")),
        _map_case("text file", _file("notes.fits", b"velocity map of NGC 1234, see paper\n" * 50)),
        _map_case("truncated header", _file("cut-header.fits", good[:1000])),
        _map_case("truncated data", _file("cut-data.fits", good[: data_start + 4000])),
        _map_case("header only, no data", _file("nodata.fits", _raw_header(BITPIX=8, NAXIS=0))),
        _map_case("binary table only", lambda tmp: (fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(
            [fits.Column(name="v", format="E", array=np.ones(3))])]).writeto(tmp / "t.fits"), tmp / "t.fits")[1]),
        _map_case("cube given as a map", lambda tmp: write_fits(tmp / "c.fits", np.ones((5, 20, 20)))),
        _map_case("1-D spectrum", lambda tmp: write_fits(tmp / "s.fits", np.arange(100.0))),
        _map_case("rectangular 30 x 20", lambda tmp: write_fits(tmp / "r.fits", disc(30)[:20])),
        _map_case("2 x 2 map", lambda tmp: write_fits(tmp / "tiny.fits", np.arange(4.0).reshape(2, 2))),
        _map_case("8 x 8 map", lambda tmp: write_fits(tmp / "small.fits", disc(8))),
        _map_case("header declares 12000 x 12000", _file("big.fits", _raw_header(
            BITPIX=-32, NAXIS=2, NAXIS1=12000, NAXIS2=12000) + bytes(2880))),
        _map_case("header declares 100000 x 100000", _file("huge.fits", _raw_header(
            BITPIX=-32, NAXIS=2, NAXIS1=100000, NAXIS2=100000) + bytes(2880))),
        _map_case("negative NAXIS1", _file("neg.fits", _raw_header(BITPIX=-32, NAXIS=2, NAXIS1=-48, NAXIS2=48))),
        _map_case("NAXIS1 of 10^20", _file("overflow.fits", _raw_header(
            BITPIX=-32, NAXIS=2, NAXIS1=10**20, NAXIS2=48))),
        _map_case("BITPIX 13", _file("bitpix.fits", _raw_header(BITPIX=13, NAXIS=2, NAXIS1=48, NAXIS2=48)
                                      + bytes(2880 * 3))),
        _map_case("all NaN", lambda tmp: write_fits(tmp / "nan.fits", np.full((SIZE, SIZE), np.nan))),
        _map_case("all inf", lambda tmp: write_fits(tmp / "inf.fits", np.full((SIZE, SIZE), np.inf))),
        _map_case("all zero", lambda tmp: write_fits(tmp / "zero.fits", np.zeros((SIZE, SIZE)))),
        _map_case("constant 120 km/s", lambda tmp: write_fits(tmp / "const.fits", np.full((SIZE, SIZE), 120.0))),
        _map_case("10 finite pixels", lambda tmp: write_fits(tmp / "few.fits", np.where(
            np.arange(SIZE * SIZE).reshape(SIZE, SIZE) < 10, 50.0, np.nan))),
        _map_case("values of 2e307", lambda tmp: write_fits(tmp / "garbage.fits", np.where(
            np.isnan(d), np.nan, 2e307 * np.sign(np.nan_to_num(d) + 0.1)))),
        _map_case("values of 1e12", lambda tmp: write_fits(tmp / "huge-values.fits", d * 1e10)),
        _map_case("denormal values (1e-40)", lambda tmp: write_fits(tmp / "denormal.fits", (d * 1e-42).astype(">f4"))),
        _map_case("float32 written byte-swapped", lambda tmp: write_fits(
            tmp / "swapped32.fits", d.astype("<f4").view(">f4"))),
        _map_case("float64 written byte-swapped", lambda tmp: write_fits(
            tmp / "swapped64.fits", d.astype("<f8").view(">f8"))),
        _map_case("gzip with a changed byte (CRC)", _file("crc.fits.gz", _stored_gzip_with_damaged_data())),
        _map_case("gzip with a corrupt deflate stream", _file("bad.fits.gz", _flip_byte(_gzip(good), 400))),
        _map_case("gzip with a wrong CRC trailer", _file("trailer.fits.gz", _flip_byte(_gzip(good), -6))),
        _map_case("truncated gzip", _file("short.fits.gz", _gzip(good)[:-300])),
        _map_case("gzip bomb (560 KB -> 576 MB)", _file("bomb.fits.gz", _gzip_bomb())),
        _map_case("corrupt bzip2", _file("bad.fits.bz2", _flip_byte(bz2.compress(good), 200))),
        _map_case("zip archive", lambda tmp: _zip(tmp)),
        _map_case("BUNIT Jy/beam for a velocity map", lambda tmp: write_fits(tmp / "jy.fits", d, {"BUNIT": "Jy/beam"})),
        _map_case("BUNIT not a unit", lambda tmp: write_fits(tmp / "unit.fits", d, {"BUNIT": "furlongs/fortnight^^"})),
        _map_case("grid rotated by 30 deg", lambda tmp: write_fits(tmp / "rot.fits", d, {
            "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CDELT1": -1e-4, "CDELT2": 1e-4, "CROTA2": 30.0})),
        _map_case("CDELT1 = 0", lambda tmp: write_fits(tmp / "cdelt0.fits", d, {
            "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CDELT1": 0.0, "CDELT2": 1e-4})),
        _map_case("axes swapped (DEC, RA)", lambda tmp: write_fits(tmp / "swapaxes.fits", d, {
            "CTYPE1": "DEC--TAN", "CTYPE2": "RA---TAN", "CDELT1": 1e-4, "CDELT2": -1e-4})),
        _map_case("END card missing", _file("noend.fits", good.replace(b"END" + b" " * 77, b" " * 80, 1))),
        _map_case("corrupt tile-compressed data", _file("tiles.fits", _corrupt_tiles())),
        _map_case("BSCALE not a number", _file("bscale.fits", _int_map_bytes(bad_bscale=True))),
        _map_case("cube without a spectral axis", lambda tmp: write_fits(tmp / "nospec.fits", np.ones((5, 20, 20))),
                  reader=_read_cube),
        _map_case("frequency cube without RESTFRQ", lambda tmp: write_fits(tmp / "norest.fits", *_cube(spectral={
            "CTYPE3": "FREQ", "CUNIT3": "Hz", "CRVAL3": 230e9, "CDELT3": -7.7e6})), reader=_read_cube),
        _map_case("cube declaring 628 x 628 x 100000", _file("bigcube.fits", _raw_header(
            BITPIX=-32, NAXIS=3, NAXIS1=628, NAXIS2=628, NAXIS3=100000, CTYPE3="VRAD") + bytes(2880)),
            reader=_read_cube),
        _map_case("cube 2000 px wide", _file("widecube.fits", _raw_header(
            BITPIX=-32, NAXIS=3, NAXIS1=2000, NAXIS2=2000, NAXIS3=10, CTYPE3="VRAD") + bytes(2880)),
            reader=_read_cube),
        Case("FITS file", "all-zero cube, as moments", lambda tmp: _import_moments(
            write_fits(tmp / "zerocube.fits", np.zeros((51, 24, 24)), _cube()[1]), tmp)),
    ]
    # inputs that are unusual but valid: they must be read, and read right
    flipped = {"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CDELT1": 1e-4, "CDELT2": 1e-4}
    cases += [
        _map_case("little-endian float32 array (astropy converts)", lambda tmp: write_fits(
            tmp / "le.fits", d.astype("<f4")), _equals(d)),
        _map_case("int16 with BSCALE and BLANK", lambda tmp: _file("int.fits", _int_map_bytes())(tmp),
                  _equals(np.where(np.isnan(d), np.nan, np.round(np.nan_to_num(d) / 0.5) * 0.5), atol=1e-3)),
        _map_case("gzip-compressed map", _file("good.fits.gz", _gzip(good)), _equals(d)),
        _map_case("bzip2-compressed map", _file("good.fits.bz2", bz2.compress(good)), _equals(d)),
        _map_case("BUNIT m/s", lambda tmp: write_fits(tmp / "ms.fits", d * 1000.0, {"BUNIT": "m/s"}), _equals(d)),
        _map_case("BUNIT KM/S (upper case)", lambda tmp: write_fits(tmp / "kms.fits", d, {"BUNIT": "KM/S"}),
                  _equals(d)),
        _map_case("CDELT1 > 0 (east right)", lambda tmp: write_fits(tmp / "er.fits", d[:, ::-1], flipped), _equals(d)),
        _map_case("CDELT2 < 0 (north down)", lambda tmp: write_fits(tmp / "nd.fits", d[::-1], {
            **flipped, "CDELT1": -1e-4, "CDELT2": -1e-4}), _equals(d)),
        _map_case("CD matrix, east left", lambda tmp: write_fits(tmp / "cd.fits", d, {
            "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CD1_1": -1e-4, "CD2_2": 1e-4, "CD1_2": 0.0,
            "CD2_1": 0.0}), _equals(d)),
        _map_case("inf pixels", lambda tmp: write_fits(tmp / "someinf.fits", np.where(np.isnan(d), np.inf, d)),
                  _equals(d)),
        _map_case("4-D map with length-1 axes, in HDU 1", lambda tmp: write_fits(
            tmp / "4d.fits", d[None, None], primary_only=False), _equals(d)),
        _map_case("RICE tile-compressed map", lambda tmp: _rice(tmp / "rice.fits", d), _equals(d, atol=1.0)),
        _map_case("OBJECT with NUL, DEL and a tab", _file("obj.fits", good.replace(
            str(fits.Card("OBJECT", "PLACEHOLDER")).encode(),
            b"OBJECT  = 'NGC\x001\x7f\t<b>M31</b>'".ljust(80), 1)),
            lambda r: _equals(d)(r) and r.name == "obj"),  # the unparsable card is ignored
        Case("FITS file", "cube with inf voxels, as moments", lambda tmp: _import_moments(
            write_fits(tmp / "infcube.fits", np.where(np.arange(51)[:, None, None] == 3, np.inf, _cube()[0]),
                       _cube()[1]), tmp),
            lambda ds: bool(np.isfinite(ds.maps[0]).all(axis=0).sum() > 300)),
    ]
    return cases


def _zip(tmp: Path) -> Path:
    path = tmp / "maps.fits"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("inner.fits", _good_bytes())
    return path


def _corrupt_tiles() -> bytes:
    buf = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(disc().astype(np.float32), compression_type="GZIP_1")]
                 ).writeto(buf)
    data = bytearray(buf.getvalue())
    data[-1500:-1460] = b"\x55" * 40
    return bytes(data)


def _int_map_bytes(bad_bscale: bool = False) -> bytes:
    d = disc()
    q = np.where(np.isnan(d), -32768, np.round(np.nan_to_num(d) / 0.5)).astype(">i2")
    hdu = fits.PrimaryHDU(q)
    hdu.header["BSCALE"] = 0.5
    hdu.header["BZERO"] = 0.0
    hdu.header["BLANK"] = -32768
    buf = io.BytesIO()
    hdu.writeto(buf)
    data = buf.getvalue()
    if bad_bscale:  # astropy refuses to write it, so the card is changed in the bytes
        data = data.replace(str(fits.Card("BSCALE", 0.5)).encode(), str(fits.Card("BSCALE", "abc")).encode(), 1)
    return data


def _rice(path: Path, d: np.ndarray) -> Path:
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(d.astype(np.float32), compression_type="RICE_1",
                                                       quantize_level=64)]).writeto(path)
    return path


def _import_moments(path: Path, tmp: Path):
    from galexplore.data import open_dataset
    from galexplore.data.fits_io import import_fits

    report = import_fits([path], tmp / "moments-ds", moments=True)
    return open_dataset(report.path)


def batch_of_bad_and_good(tmp: Path) -> tuple[Path, list[str], list[str]]:
    """A directory with every bad FITS map file of the corpus and 3 good maps; returns
    (directory, good names, bad names)."""
    folder = tmp / "batch"
    folder.mkdir()
    bad = []
    for k, case in enumerate(c for c in fits_cases() if c.check is None and "cube" not in c.name):
        work = tmp / f"work-{k}"
        work.mkdir()
        built = case.make(work)
        target = folder / f"bad-{k:02d}-{built.name}"
        shutil.copy(built, target)
        bad.append(target.name)
    good = []
    for k, pa in enumerate((20.0, 140.0, 260.0)):
        write_fits(folder / f"good-{k}.fits", disc(40 + 8 * k, pa), {"OBJECT": f"GOOD {k}"})
        good.append(f"good-{k}.fits")
    return folder, good, bad


# ============================================================================ uploads
def upload_cases() -> list[Case]:
    """The explorer's upload: bytes plus the file name the browser sent."""
    from galexplore.data.fits_io import MAX_UPLOAD_BYTES, read_uploaded_map

    good = _good_bytes()
    d = disc()

    def upload(content: bytes, name: str):
        def run(tmp: Path):
            before = sorted(p.name for p in tmp.parent.iterdir())
            result = read_uploaded_map(content, name)
            assert sorted(p.name for p in tmp.parent.iterdir()) == before  # nothing written
            return result
        return run

    def named_and_right(result) -> bool:
        return _equals(d)(result) and 0 < len(result.name) <= 80 and "\x00" not in result.name \
            and "/" not in result.name

    cases = [Case("upload", f"name {label}", upload(good, name), named_and_right) for label, name in [
        ("'..'", ".."), ("'../../etc/passwd'", "../../etc/passwd"), ("with NUL", "ngc\x001.fits"),
        ("of 300 characters", "n" * 295 + ".fits"), ("empty", ""), ("'C:\\\\x\\\\..\\\\y.fits'", "C:\\x\\..\\y.fits"),
        ("with a newline", "a\nb.fits"),
    ]]
    cases += [
        Case("upload", "gzip bomb", upload(_gzip_bomb(), "bomb.fits.gz")),
        Case("upload", "byte-swapped map", upload(_good_bytes(d.astype("<f4").view(">f4")), "x.fits")),
        Case("upload", "header declares 100000 x 100000", upload(_raw_header(
            BITPIX=-32, NAXIS=2, NAXIS1=100000, NAXIS2=100000) + bytes(2880), "big.fits")),
        Case("upload", "more than the upload limit", upload(bytes(MAX_UPLOAD_BYTES + 1), "big.fits")),
        Case("upload", "not FITS", upload(b"<html>hello</html>", "page.fits")),
    ]
    return cases


# ============================================================================ datasets
N_MAPS = 12


def _id_maps(ids) -> np.ndarray:
    ids = np.asarray(ids)
    return np.broadcast_to(ids[:, None, None, None].astype(np.float32), (len(ids), 1, 64, 64)).copy()


def make_dataset(path: Path, storage: str = "float32", chunk_maps: int = 4) -> Path:
    """12 maps whose pixels all hold their id (so any mix-up shows), chunks of 4 maps."""
    from galexplore.data import create_dataset

    with create_dataset(path, ["mom1"], {"mom1": "km/s"}, storage=storage, chunk_maps=chunk_maps) as writer:
        writer.append(_id_maps(np.arange(N_MAPS)), pd.DataFrame({"id": np.arange(N_MAPS, dtype=np.int64)}))
    return path


def read_everything(path: Path) -> np.ndarray:
    """What embedding a dataset reads: the catalogue and every map; returns the rows whose
    map is not their own (every pixel of map i holds catalogue id i)."""
    from galexplore.data import open_dataset

    ds = open_dataset(path)
    ids = ds.catalog["id"].to_numpy()
    maps = ds.maps[:]
    return np.flatnonzero(np.any(maps[:, 0] != ids[:, None, None], axis=(1, 2)))


def _manifest_edit(edit: Callable[[dict], None], storage: str = "float32"):
    def damage(path: Path) -> None:
        manifest = json.loads((path / "manifest.json").read_text())
        edit(manifest)
        (path / "manifest.json").write_text(json.dumps(manifest))
    return damage, storage


def _manifest_bytes(content: bytes):
    return (lambda path: (path / "manifest.json").write_bytes(content)), "float32"


def _chunk(path: Path, k: int) -> Path:
    return path / json.loads((path / "manifest.json").read_text())["chunks"][k]["file"]


def _part(path: Path) -> Path:
    return path / json.loads((path / "manifest.json").read_text())["catalog_parts"][0]["file"]


def _swap_chunks(path: Path) -> None:
    a, b = _chunk(path, 0), _chunk(path, 1)
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)


def _flip(file_of: Callable[[Path], Path]):
    def damage(path: Path) -> None:
        f = file_of(path)
        f.write_bytes(_flip_byte(f.read_bytes(), len(f.read_bytes()) // 2))
    return damage


def _truncate(file_of: Callable[[Path], Path]):
    def damage(path: Path) -> None:
        f = file_of(path)
        f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])
    return damage


def _without_checksums(damage: Callable[[Path], None]):
    def both(path: Path) -> None:
        manifest = json.loads((path / "manifest.json").read_text())
        for entry in manifest["chunks"] + manifest["catalog_parts"]:
            entry.pop("sha256", None)
        (path / "manifest.json").write_text(json.dumps(manifest))
        damage(path)
    return both


def _other_part(path: Path) -> None:
    from galexplore.data import create_dataset

    other = path.parent / "other"
    with create_dataset(other, ["mom1"], {"mom1": "km/s"}) as writer:
        writer.append(_id_maps(np.arange(N_MAPS)), pd.DataFrame({"id": np.arange(N_MAPS, dtype=np.int64)[::-1]}))
    shutil.copy(_part(other), _part(path))


def _rewritten_part(rows: pd.DataFrame):
    """Replace the catalogue by ``rows`` and record its checksum: damage the checksums cannot see."""
    def damage(path: Path) -> None:
        import hashlib

        rows.to_parquet(_part(path), index=False)
        manifest = json.loads((path / "manifest.json").read_text())
        manifest["catalog_parts"][0]["sha256"] = hashlib.sha256(_part(path).read_bytes()).hexdigest()
        (path / "manifest.json").write_text(json.dumps(manifest))
    return damage, "float32"


def _link_outside(path: Path) -> None:
    chunk = _chunk(path, 0)
    outside = path.parent / "outside.f32"
    os.replace(chunk, outside)
    chunk.symlink_to(outside)


def _duplicate_entry(manifest: dict) -> None:
    first = dict(manifest["chunks"][0])
    manifest["chunks"][1] = {**first, "start": 4}


def _set(key, value):
    return lambda m: m.__setitem__(key, value)


def _set_chunk(key, value, k: int = 0):
    return lambda m: m["chunks"][k].__setitem__(key, value)


DATASET_DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "manifest not UTF-8": _manifest_bytes(b'{"format": "galexplore-dataset", "x": "\xff\xfe"}'),
    "manifest not JSON": _manifest_bytes(b"{format: galexplore"),
    "manifest empty": _manifest_bytes(b""),
    "manifest a JSON list": _manifest_bytes(b"[1, 2, 3]"),
    "manifest nested 100000 deep": _manifest_bytes(b"[" * 100000 + b"]" * 100000),
    "n_maps of 10^30": _manifest_edit(_set("n_maps", 10**30)),
    "n_maps negative": _manifest_edit(_set("n_maps", -12)),
    "n_maps a string": _manifest_edit(_set("n_maps", "12")),
    "chunk n_maps of 10^30 (sums kept)": _manifest_edit(lambda m: (
        m["chunks"][0].__setitem__("n_maps", 10**30), m.__setitem__("n_maps", 10**30 + 8),
        m["catalog_parts"][0].__setitem__("n_rows", 10**30 + 8))),
    "map_shape 10^6 px": _manifest_edit(_set("map_shape", [1, 10**6, 10**6])),
    "map_shape of zeros": _manifest_edit(_set("map_shape", [0, 0, 0])),
    "channels do not match map_shape": _manifest_edit(_set("channels", [{"name": "a", "unit": "b"}] * 3)),
    "storage kind unknown": _manifest_edit(lambda m: m["storage"].__setitem__("kind", "zip")),
    "chunk_maps 0": _manifest_edit(lambda m: m["storage"].__setitem__("chunk_maps", 0)),
    "quantisation step NaN": _manifest_edit(lambda m: m["storage"]["quantisation"][0].__setitem__(
        "step", float("nan")), "compact"),
    "quantisation step 1e400": _manifest_bytes(b""),  # replaced below: needs a compact manifest
    "chunks field missing": _manifest_edit(lambda m: m.pop("chunks")),
    "chunk path absolute": _manifest_edit(_set_chunk("file", "/etc/passwd")),
    "chunk path with ..": _manifest_edit(_set_chunk("file", "../outside/chunk-0000000000.f32")),
    "chunk listed twice": _manifest_edit(_duplicate_entry),
    "chunk start wrong": _manifest_edit(_set_chunk("start", 3, 1)),
    "checksum not hexadecimal": _manifest_edit(_set_chunk("sha256", "z" * 64)),
    "format version 99": _manifest_edit(_set("format_version", 99)),
    "manifest missing": ((lambda path: (path / "manifest.json").unlink()), "float32"),
    "dataset path is a file": ((lambda path: (shutil.rmtree(path), path.write_text("x"))), "float32"),
    "chunk file missing": ((lambda path: _chunk(path, 1).unlink()), "float32"),
    "raw chunk truncated": (_truncate(lambda p: _chunk(p, 1)), "float32"),
    "compact chunk truncated": (_truncate(lambda p: _chunk(p, 1)), "compact"),
    "raw chunks swapped": (_swap_chunks, "float32"),
    "compact chunks swapped": (_swap_chunks, "compact"),
    "raw chunk with a changed byte": (_flip(lambda p: _chunk(p, 2)), "float32"),
    "compact chunk with a changed byte": (_flip(lambda p: _chunk(p, 2)), "compact"),
    "raw chunk linked outside the dataset": (_link_outside, "float32"),
    "catalogue part missing": ((lambda path: _part(path).unlink()), "float32"),
    "catalogue part corrupt": (_flip(_part), "float32"),
    "catalogue part truncated": (_truncate(_part), "float32"),
    "catalogue part of another dataset": (_other_part, "float32"),
    "catalogue with duplicate ids (checksum redone)": _rewritten_part(pd.DataFrame({"id": np.zeros(N_MAPS, np.int64)})),
    "catalogue of 5 rows (checksum redone)": _rewritten_part(pd.DataFrame({"id": np.arange(5, dtype=np.int64)})),
    "catalogue without id (checksum redone)": _rewritten_part(pd.DataFrame({"x": np.arange(N_MAPS)})),
    "old manifest: compact chunk truncated": (_without_checksums(_truncate(lambda p: _chunk(p, 1))), "compact"),
    "old manifest: raw chunk truncated": (_without_checksums(_truncate(lambda p: _chunk(p, 1))), "float32"),
}
DATASET_DAMAGE["quantisation step 1e400"] = (
    lambda path: (path / "manifest.json").write_text(
        (path / "manifest.json").read_text().replace('"step": 0.5', '"step": 1e400', 1)), "compact")


def dataset_cases() -> list[Case]:
    """Each damaged dataset, checked as a user checks one: ``galexplore info --verify``."""
    def run(damage, storage):
        def go(tmp: Path):
            path = make_dataset(tmp / "ds", storage=storage)
            damage(path)
            return cli("info", path, "--verify")
        return go
    return [Case("damaged dataset", name, run(damage, storage)) for name, (damage, storage) in DATASET_DAMAGE.items()]


def dataset_read_cases() -> list[Case]:
    """The same damage met by reading everything (what `embed` does) without verifying first.
    Raw chunks are memory-mapped and not hashed on read, so swapped or edited raw chunks can
    only be found by ``--verify``; every other damage must give a clear error."""
    def run(damage, storage):
        def go(tmp: Path):
            from galexplore.data import open_dataset

            path = make_dataset(tmp / "ds", storage=storage)
            damage(path)
            wrong = read_everything(path)
            ids = open_dataset(path).catalog["id"].to_numpy()
            return np.union1d(wrong, np.flatnonzero(ids != np.arange(len(ids))))  # rows 0..11 hold ids 0..11
        return go
    return [Case("damaged dataset, plain read", name, run(damage, storage))
            for name, (damage, storage) in DATASET_DAMAGE.items()]


#: Damage that only ``galexplore info --verify`` finds: raw chunks are memory-mapped, and
#: hashing a whole chunk to read one map would defeat that, so a plain read returns their
#: (wrong) maps. Every other damage gives a clear error on a plain read too.
FOUND_BY_VERIFY_ONLY = {"raw chunks swapped", "raw chunk with a changed byte"}


# ============================================================================ model cards
def _checkpoint(root: Path) -> Path:
    import torch

    from galexplore.models.checkpoint import ModelCard, save_checkpoint
    from galexplore.models.registry import build_model

    torch.manual_seed(0)
    model = build_model("cae_free", in_channels=1, latent_dim=3)
    card = ModelCard(name="plain", architecture="cae_free", hyperparameters={"in_channels": 1, "latent_dim": 3},
                     channels=["mom1"], recipe="dawson2020", latent_names=["z0", "z1", "z2"])
    return save_checkpoint(model, card, root / "ckpt")


def _card_edit(edit: Callable[[dict], None], resign: bool = False):
    """Edit card.json; ``resign``: recompute the checksum, as anyone can (it is not a signature)."""
    def damage(directory: Path) -> None:
        import dataclasses

        import safetensors.torch

        from galexplore.models.checkpoint import ModelCard, compute_card_checksum

        card = json.loads((directory / "card.json").read_text())
        edit(card)
        if resign:
            state = safetensors.torch.load_file(str(directory / "model.safetensors"))
            fields = {f.name for f in dataclasses.fields(ModelCard)}
            card["checksum"] = compute_card_checksum(state, ModelCard(**{k: v for k, v in card.items() if k in fields}))
        (directory / "card.json").write_text(json.dumps(card))
    return damage


CARD_DAMAGE: dict[str, Callable[[Path], None]] = {
    "card missing": lambda d: (d / "card.json").unlink(),
    "card not JSON": lambda d: (d / "card.json").write_text("{name: x"),
    "card a JSON list": lambda d: (d / "card.json").write_text("[]"),
    "card not UTF-8": lambda d: (d / "card.json").write_bytes(b'{"name": "\xff"}'),
    "card of 100 MB": lambda d: (d / "card.json").write_bytes(b" " * (100 * 2**20)),
    "card nested 100000 deep": lambda d: (d / "card.json").write_text("[" * 100000 + "]" * 100000),
    "weights missing": lambda d: (d / "model.safetensors").unlink(),
    "weights truncated": lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:500]),
    "weights with a changed byte": lambda d: (d / "model.safetensors").write_bytes(
        _flip_byte((d / "model.safetensors").read_bytes(), -100)),
    "weights of another model": lambda d: shutil.copy(_other_weights(d), d / "model.safetensors"),
    "name edited": _card_edit(lambda c: c.__setitem__("name", "renamed")),
    "checksum emptied": _card_edit(lambda c: c.__setitem__("checksum", "")),
    "latent_dim of 10^12 (checksum redone)": _card_edit(
        lambda c: c["hyperparameters"].__setitem__("latent_dim", 10**12), resign=True),
    "unknown architecture (checksum redone)": _card_edit(lambda c: c.__setitem__("architecture", "os.system"),
                                                        resign=True),
    "hyperparameter of the wrong type (checksum redone)": _card_edit(
        lambda c: c["hyperparameters"].__setitem__("in_channels", "one"), resign=True),
    "unknown recipe (checksum redone)": _card_edit(lambda c: c.__setitem__("recipe", "../../x"), resign=True),
    "input_size 10^40": _card_edit(lambda c: c.__setitem__("input_size", 10**40)),
    "channels a string": _card_edit(lambda c: c.__setitem__("channels", "mom1")),
}


def _other_weights(directory: Path) -> Path:
    import torch

    from galexplore.models.checkpoint import ModelCard, save_checkpoint
    from galexplore.models.registry import build_model

    torch.manual_seed(1)
    model = build_model("cae_free", in_channels=1, latent_dim=3)
    card = ModelCard(name="other", architecture="cae_free", hyperparameters={"in_channels": 1, "latent_dim": 3},
                     channels=["mom1"], recipe="dawson2020", latent_names=["z0", "z1", "z2"])
    return save_checkpoint(model, card, directory.parent / "other") / "model.safetensors"


def card_cases() -> list[Case]:
    """Each damaged checkpoint, opened as the explorer opens one (and checked against a dataset)."""
    def run(damage):
        def go(tmp: Path):
            from galexplore.models.checkpoint import check_compatible, load_checkpoint

            directory = _checkpoint(tmp)
            damage(directory)
            model, card = load_checkpoint(directory)
            check_compatible(card, _Shape())
            return card
        return go
    return [Case("damaged model card", name, run(damage)) for name, damage in CARD_DAMAGE.items()]


class _Shape:
    channels = ["mom1"]
    map_shape = (1, 64, 64)


# ============================================================================ writers and crashes
REPO = Path(__file__).resolve().parents[1]
#: Appends 6 x 100 maps whose pixels hold their ids, from FIRST on, once GO exists.
APPENDER = """
import sys, time
from pathlib import Path
import numpy as np, pandas as pd
from galexplore.data import append_to_dataset
path, first, go = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
print("ready", flush=True)
while not go.exists():
    time.sleep(0.005)
with append_to_dataset(path) as writer:
    for batch in range(6):
        ids = np.arange(first + 100 * batch, first + 100 * (batch + 1))
        writer.append(np.broadcast_to(ids[:, None, None, None].astype(np.float32), (100, 1, 64, 64)),
                      pd.DataFrame({"id": ids}))
        time.sleep(0.05)
"""
#: Starts a writer (create or append), writes 10 maps (ids 500..509), then waits on stdin.
HOLDER = """
import sys
import numpy as np, pandas as pd
from galexplore.data import append_to_dataset, create_dataset
mode, path = sys.argv[1], sys.argv[2]
writer = (create_dataset(path, ["mom1"], {"mom1": "km/s"}, chunk_maps=4) if mode == "create"
          else append_to_dataset(path))
ids = np.arange(500, 510)
writer.append(np.broadcast_to(ids[:, None, None, None].astype(np.float32), (10, 1, 64, 64)),
              pd.DataFrame({"id": ids}))
print("holding", flush=True)
sys.stdin.readline()
writer.close()
print("committed", flush=True)
"""


def python(script: str, *args, stdin: bool = False):
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-c", script, *map(str, args)], text=True,
                            stdin=subprocess.PIPE if stdin else None, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)})


def hold_writer(mode: str, path: Path):
    proc = python(HOLDER, mode, path, stdin=True)
    if proc.stdout.readline().strip() != "holding":
        raise RuntimeError(f"the writer did not start: {proc.stderr.read()[-500:]}")
    return proc


def _committed_or_lost(expected_ids):
    """Check of a writer case: every committed map is there, with its own catalogue row."""
    def check(path: Path) -> bool | str:
        mismatched = read_everything(path)
        from galexplore.data import open_dataset

        ids = set(open_dataset(path).catalog["id"].tolist())
        return True if len(mismatched) == 0 and ids == set(expected_ids) else LOST
    return check


def _concurrent_appends(tmp: Path) -> Path:
    path = make_dataset(tmp / "ds", chunk_maps=64)
    go = tmp / "go"
    procs = [python(APPENDER, path, first, go) for first in (1000, 2000)]
    for proc in procs:
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(proc.stderr.read()[-500:])
    go.touch()
    for proc in procs:
        if proc.wait(timeout=300) != 0:
            raise RuntimeError(f"an appender failed: {proc.stderr.read()[-500:]}")
    return path


def _killed(mode: str):
    def run(tmp: Path) -> Path:
        import signal

        path = make_dataset(tmp / "ds") if mode == "append" else tmp / "ds"
        proc = hold_writer(mode, path)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        from galexplore.data import append_to_dataset, create_dataset

        writer = append_to_dataset(path) if mode == "append" else create_dataset(path, ["mom1"], {"mom1": "km/s"})
        with writer:
            writer.append(_id_maps([N_MAPS]), pd.DataFrame({"id": [N_MAPS]}))
        leftovers = [p.name for p in tmp.iterdir() if ".partial-" in p.name]
        if leftovers:
            raise RuntimeError(f"left behind: {leftovers}")
        return path
    return run


def _second_writer(tmp: Path):
    from galexplore.data import create_dataset

    path = tmp / "ds"
    proc = hold_writer("create", path)
    try:
        create_dataset(path, ["mom1"], {"mom1": "km/s"}, overwrite=True, lock_timeout=0.5)
    finally:
        proc.stdin.write("\n")
        proc.stdin.flush()
        proc.wait(timeout=120)


def _killed_between_renames(tmp: Path) -> Path:
    from galexplore.data import append_to_dataset

    path = make_dataset(tmp / "ds")
    os.replace(path, tmp / f".ds.replaced-{'a' * 32}")
    shutil.copytree(tmp / f".ds.replaced-{'a' * 32}", tmp / f".ds.partial-{'b' * 32}")
    with append_to_dataset(path) as writer:
        writer.append(_id_maps([N_MAPS]), pd.DataFrame({"id": [N_MAPS]}))
    return path


def writer_cases() -> list[Case]:
    """Concurrent and killed writers (each starts Python processes: a few seconds each)."""
    return [
        Case("writers and crashes", "two appends at once", _concurrent_appends,
             _committed_or_lost(list(range(N_MAPS)) + list(range(1000, 1600)) + list(range(2000, 2600)))),
        Case("writers and crashes", "append killed (kill -9), then another append", _killed("append"),
             _committed_or_lost(range(N_MAPS + 1))),
        Case("writers and crashes", "create killed (kill -9), then create again", _killed("create"),
             _committed_or_lost([N_MAPS])),
        Case("writers and crashes", "overwrite killed between its two renames", _killed_between_renames,
             _committed_or_lost(range(N_MAPS + 1))),
        Case("writers and crashes", "a second writer while one writes", _second_writer),
    ]


def all_cases() -> list[Case]:
    """Every case but the writer cases (which start processes)."""
    return fits_cases() + upload_cases() + dataset_cases() + dataset_read_cases() + card_cases()
