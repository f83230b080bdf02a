"""FITS input: the 30 real ALMA maps, cube moments, broken files, datasets from FITS."""

from __future__ import annotations

import csv
import warnings

import numpy as np
import pytest
import torch
from astropy.io import fits

from galexplore.data import open_dataset
from galexplore.data.fits_io import (
    maps_to_dataset,
    moment_maps,
    read_cube,
    read_maps_from_fits,
    read_moment_maps,
    read_velocity_map,
)
from galexplore.errors import FitsError

C_KMS = 299792.458


@pytest.fixture(scope="module")
def alma(shared_real):
    folder = shared_real / "dawson2020"
    with open(folder / "published_results.csv") as fh:
        names = [row["name"] for row in csv.DictReader(fh)]
    return [folder / "fits" / f"{n}.fits" for n in names], names


def test_reads_the_30_real_alma_maps(alma):
    paths, published_names = alma
    names, maps = read_maps_from_fits(paths)
    assert names == published_names  # OBJECT where present, else the file stem
    assert len(maps) == 30
    for m in maps:
        assert m.ndim == 2 and m.shape[0] == m.shape[1] and 16 <= m.shape[0] <= 628
        assert np.isnan(m).any() and np.isfinite(m).any()
    sizes = {n: m.shape[0] for n, m in zip(names, maps)}
    assert sizes["FCC207"] == 16 and sizes["NGC5064"] == 628  # smallest and largest


def test_maps_to_dataset_keeps_physical_units_and_resizes_like_pytorch(alma, tmp_path):
    paths, names = alma
    out = maps_to_dataset(paths, tmp_path / "alma")
    ds = open_dataset(out)
    assert len(ds) == 30 and ds.channels == ["mom1"] and ds.units == {"mom1": "km/s"}
    assert ds.catalog["name"].tolist() == names
    assert ds.provenance["source_files"] == [str(p) for p in paths]
    for i in (2, 7, 27):  # 16, 200 and 628 px
        original = fits.getdata(paths[i], 1).astype(np.float64)
        ref = torch.nn.functional.interpolate(torch.from_numpy(original)[None, None], size=(64, 64),
                                              mode="nearest")[0, 0].numpy().astype(np.float32)
        np.testing.assert_array_equal(ds.maps[i, 0], ref)
        assert ds.catalog["original_size_px"].iloc[i] == original.shape[0]
        assert ds.catalog["blank_fraction"].iloc[i] == pytest.approx(np.isnan(original).mean())


def _gaussian_cube(spectral: dict, n_chan: int = 60, stokes: bool = False):
    """A 24 x 20 x n_chan cube of Gaussian lines (sigma 20 km/s, centre = velocity gradient)."""
    ny = nx = 20
    v = -300.0 + 10.0 * np.arange(n_chan)  # km/s channel centres
    centre = np.linspace(-120, 120, nx)[None, :] + np.zeros((ny, 1))
    amp = 2.0
    cube = amp * np.exp(-0.5 * ((v[:, None, None] - centre[None]) / 20.0) ** 2)
    cube[:, :2, :2] = np.nan  # a blank corner
    header = fits.Header()
    header.update({"CTYPE1": "RA---SIN", "CRVAL1": 10.0, "CDELT1": -1e-4, "CRPIX1": 10, "CUNIT1": "deg",
                   "CTYPE2": "DEC--SIN", "CRVAL2": -30.0, "CDELT2": 1e-4, "CRPIX2": 10, "CUNIT2": "deg",
                   "BUNIT": "Jy/beam", "OBJECT": "MOCK1"})
    header.update(spectral)
    data = cube
    if stokes:
        header.update({"CTYPE4": "STOKES", "CRVAL4": 1.0, "CDELT4": 1.0, "CRPIX4": 1.0})
        data = cube[None]
    return data, header, v, centre


def _write(path, data, header=None):
    fits.PrimaryHDU(data, header=header).writeto(path)
    return path


def test_cube_with_velocity_axis_gives_analytic_moments(tmp_path):
    data, header, v, centre = _gaussian_cube(
        {"CTYPE3": "VRAD", "CRVAL3": -300000.0, "CDELT3": 10000.0, "CRPIX3": 1, "CUNIT3": "m/s"})
    cube = read_cube(_write(tmp_path / "c.fits", data, header))
    assert cube.name == "MOCK1" and cube.unit == "Jy/beam"
    np.testing.assert_allclose(cube.velocities_kms, v, atol=1e-9)
    mom0, mom1, mom2 = moment_maps(cube.data, cube.velocities_kms)
    ok = np.isfinite(mom1)
    assert not ok[:2, :2].any() and ok.sum() == 400 - 4
    # lines lie well inside the band: the sums are Gaussian integrals
    np.testing.assert_allclose(mom0[ok], 2.0 * 20.0 * np.sqrt(2 * np.pi), rtol=1e-6)
    np.testing.assert_allclose(mom1[ok], centre[ok], atol=1e-6)
    np.testing.assert_allclose(mom2[ok], 20.0, rtol=1e-6)


def test_moments_match_spectral_cube(tmp_path):
    from spectral_cube import SpectralCube

    rng = np.random.default_rng(3)
    data, header, v, _ = _gaussian_cube(
        {"CTYPE3": "VRAD", "CRVAL3": -300000.0, "CDELT3": 10000.0, "CRPIX3": 1, "CUNIT3": "m/s"})
    data = data + rng.normal(0, 0.1, data.shape)
    path = _write(tmp_path / "noisy.fits", data, header)
    name, moments = read_moment_maps(path, threshold=0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc = SpectralCube.read(path).with_spectral_unit("km/s")
        sc = sc.with_mask(sc > 0.3 * sc.unit)
        ref0 = sc.moment(order=0).value
        ref1 = sc.moment(order=1).value
        ref2 = np.sqrt(sc.moment(order=2).value)
    np.testing.assert_allclose(moments["mom0"], ref0, rtol=1e-6, equal_nan=True)
    np.testing.assert_allclose(moments["mom1"], ref1, rtol=1e-6, atol=1e-6, equal_nan=True)
    np.testing.assert_allclose(moments["mom2"], ref2, rtol=1e-6, equal_nan=True)


def test_frequency_axis_uses_the_radio_convention_and_drops_stokes(tmp_path):
    rest = 230.538e9  # CO(2-1), Hz
    df = -rest * 10.0 / C_KMS  # 10 km/s channels
    data, header, _, _ = _gaussian_cube(
        {"CTYPE3": "FREQ", "CRVAL3": rest, "CDELT3": df, "CRPIX3": 31, "CUNIT3": "Hz",
         "RESTFRQ": rest, "SPECSYS": "LSRK"}, stokes=True)
    cube = read_cube(_write(tmp_path / "f.fits", data, header))
    freq = rest + df * (np.arange(60) + 1 - 31)
    np.testing.assert_allclose(cube.velocities_kms, C_KMS * (1 - freq / rest), atol=1e-6)
    assert cube.data.shape == (60, 20, 20)
    del header["RESTFRQ"]
    with pytest.raises(FitsError, match="RESTFRQ is missing"):
        read_cube(_write(tmp_path / "norest.fits", data, header))


def test_broken_files_give_clear_errors(tmp_path):
    (tmp_path / "noise.fits").write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(FitsError, match="not a readable FITS file"):
        read_velocity_map(tmp_path / "noise.fits")
    good = _write(tmp_path / "good.fits", np.ones((40, 40)))
    (tmp_path / "cut.fits").write_bytes(good.read_bytes()[:4000])
    with pytest.raises(FitsError, match="truncated"):
        read_velocity_map(tmp_path / "cut.fits")
    with pytest.raises(FitsError, match="does not exist"):
        read_velocity_map(tmp_path / "absent.fits")
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(
        [fits.Column(name="v", format="E", array=np.ones(3))])]).writeto(tmp_path / "table.fits")
    with pytest.raises(FitsError, match="no image data"):
        read_velocity_map(tmp_path / "table.fits")
    with pytest.raises(FitsError, match="no 2-D map.*shape \\(5, 8, 8\\).*read_moment_maps"):
        read_velocity_map(_write(tmp_path / "cube.fits", np.ones((5, 8, 8))))
    with pytest.raises(FitsError, match="all NaN"):
        read_velocity_map(_write(tmp_path / "blank.fits", np.full((20, 20), np.nan)))
    with pytest.raises(FitsError, match="30 x 20 px, not square; crop or pad"):
        read_velocity_map(_write(tmp_path / "rect.fits", np.ones((20, 30))))
    with pytest.raises(FitsError, match="has no HDU 'VEL'"):
        read_velocity_map(good, hdu="VEL")
    with pytest.raises(FitsError, match="no spectral axis"):
        read_cube(tmp_path / "cube.fits")
    with pytest.raises(FitsError, match="not a cube"):
        read_cube(good)


def test_map_hdu_selection_and_name_fallback(tmp_path):
    image = np.arange(400.0).reshape(20, 20)
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.arange(324.0).reshape(18, 18), name="OTHER"),
                  fits.ImageHDU(image[None], name="VEL")]).writeto(tmp_path / "g.fits")
    name, m = read_velocity_map(tmp_path / "g.fits", hdu="VEL")  # length-1 axis dropped
    assert name == "g"
    np.testing.assert_array_equal(m, image)
    assert read_velocity_map(tmp_path / "g.fits")[1].shape == (18, 18)  # first 2-D image HDU
