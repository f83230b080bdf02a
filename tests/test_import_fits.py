"""`galexplore import-fits` (issue 8 item 8) and the FITS input checks (issue 11): units,
orientation, cubes, batches, the 30 real ALMA maps, uploads."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from astropy.io import fits

from galexplore.cli import main
from galexplore.data import open_dataset
from galexplore.data.fits_io import maps_to_dataset, read_uploaded_map, read_velocity_map
from galexplore.data.recipes import resize_nearest
from galexplore.errors import FitsError
from reliability import _cube, disc, write_fits

CELESTIAL = {"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRPIX1": 24.5, "CRPIX2": 24.5, "CRVAL1": 150.0,
             "CRVAL2": 2.0, "CUNIT1": "deg", "CUNIT2": "deg", "CDELT1": -1e-4, "CDELT2": 1e-4}


def imported(tmp_path, *args) -> tuple[int, object]:
    status = main(["import-fits", *map(str, args)])
    return status, open_dataset(args[-1]) if (args[-1]).is_dir() else None


def test_bunit_in_metres_per_second_is_stored_in_km_per_second(tmp_path):
    v = disc(48, 30.0)
    (tmp_path / "in").mkdir()
    write_fits(tmp_path / "in" / "ms.fits", v * 1000.0, {**CELESTIAL, "BUNIT": "m/s"})
    status, ds = imported(tmp_path, tmp_path / "in", tmp_path / "ds")
    assert status == 0 and ds.units == {"mom1": "km/s"} and ds.catalog["bunit"].tolist() == ["m/s"]
    np.testing.assert_allclose(ds.maps[0, 0], resize_nearest(v).astype(np.float32), rtol=1e-6)


def test_a_map_stored_east_right_is_flipped_so_that_pa_keeps_its_sense(tmp_path):
    """A disc receding at PA 60 deg (east of north), stored with east on the right (CDELT1 > 0):
    after import it must look like the same disc drawn in the contract's east-left frame."""
    east_left = disc(48, 60.0)
    (tmp_path / "in").mkdir()
    write_fits(tmp_path / "in" / "east-right.fits", east_left[:, ::-1], {**CELESTIAL, "CDELT1": 1e-4})
    write_fits(tmp_path / "in" / "east-left.fits", east_left, CELESTIAL)
    status, ds = imported(tmp_path, tmp_path / "in", tmp_path / "ds")
    assert status == 0
    assert ds.catalog["file"].tolist() == ["east-left.fits", "east-right.fits"]
    assert ds.catalog["flipped_ew"].tolist() == [False, True] and not ds.catalog["flipped_ns"].any()
    expected = resize_nearest(east_left).astype(np.float32)
    np.testing.assert_array_equal(ds.maps[0, 0], expected)
    np.testing.assert_array_equal(ds.maps[1, 0], expected)
    # the receding side lies at PA 60 deg: north-east of the centre, i.e. up and to the LEFT
    rows, cols = np.nonzero(ds.maps[1, 0] > 150.0)
    assert rows.mean() > 31.5 and cols.mean() < 31.5


def test_a_cube_becomes_moment_maps(tmp_path):
    cube, header = _cube(size=24)
    path = write_fits(tmp_path / "cube.fits", cube * 1e-3, {**header, "BUNIT": "Jy/beam", "OBJECT": "CUBE 1"})
    status, ds = imported(tmp_path, path, "--moments", tmp_path / "ds")
    assert status == 0 and ds.channels == ["mom0", "mom1", "mom2"]
    assert ds.units == {"mom0": "Jy/beam km/s", "mom1": "km/s", "mom2": "km/s"}
    centre = resize_nearest(np.nan_to_num(disc(24, 0.0, 100.0)))
    inside = np.isfinite(resize_nearest(disc(24, 0.0, 100.0)))
    maps = ds.maps[0]
    # Gaussian lines of peak 1 mJy/beam and sigma 20 km/s, well inside the band
    np.testing.assert_allclose(maps[0][inside], 1e-3 * 20.0 * np.sqrt(2 * np.pi), rtol=1e-3)
    np.testing.assert_allclose(maps[1][inside], centre[inside], atol=0.05)
    np.testing.assert_allclose(maps[2][inside], 20.0, rtol=1e-3)
    assert ds.catalog["name"].tolist() == ["CUBE 1"]
    status, ds = imported(tmp_path, path, "--moments", "--channel", "mom1", "--threshold", "1e-6",
                          tmp_path / "only-mom1")
    assert status == 0 and ds.channels == ["mom1"]
    np.testing.assert_allclose(ds.maps[0, 0][inside], centre[inside], atol=0.05)  # symmetric cut


def test_mom0_of_a_cube_in_kelvin_is_refused_with_the_way_out(tmp_path):
    cube, header = _cube()
    path = write_fits(tmp_path / "k.fits", cube, {**header, "BUNIT": "K"})
    with pytest.raises(FitsError, match="BUNIT 'K' cannot be converted.*--channel mom1 --channel mom2"):
        from galexplore.data.fits_io import import_fits

        import_fits([path], tmp_path / "ds", moments=True)
    assert main(["import-fits", str(path), "--moments", "--channel", "mom1", "--channel", "mom2",
                 str(tmp_path / "ds")]) == 0


def test_hdu_and_channel_options(tmp_path):
    v = disc(40, 10.0)
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(v + 50.0, name="VEL"), fits.ImageHDU(np.abs(v) / 10 + 5.0,
                                                                                     name="DISP")]
                 ).writeto(tmp_path / "two.fits")
    status, ds = imported(tmp_path, tmp_path / "two.fits", "--hdu", "DISP", "--channel", "mom2", tmp_path / "a")
    assert status == 0 and ds.channels == ["mom2"] and ds.units == {"mom2": "km/s"}
    np.testing.assert_allclose(ds.maps[0, 0], resize_nearest(np.abs(v) / 10 + 5.0), rtol=1e-6)
    status, ds = imported(tmp_path, tmp_path / "two.fits", "--hdu", "1", tmp_path / "b")
    np.testing.assert_allclose(ds.maps[0, 0], resize_nearest(v + 50.0), rtol=1e-6)


def test_the_30_real_alma_maps_import_in_place(shared_real, tmp_path, capsys):
    folder = shared_real / "dawson2020"
    with open(folder / "published_results.csv") as fh:
        names = [row["name"] for row in csv.DictReader(fh)]
    status, ds = imported(tmp_path, folder / "fits", tmp_path / "alma")
    assert status == 0 and "imported 30 of 30" in capsys.readouterr().out
    assert sorted(ds.catalog["name"]) == sorted(names) and len(ds) == 30
    for i in (0, 12, 29):
        original = fits.getdata(folder / "fits" / ds.catalog["file"].iloc[i], 1).astype(np.float64)
        ref = torch.nn.functional.interpolate(torch.from_numpy(original)[None, None], size=(64, 64),
                                              mode="nearest")[0, 0].numpy().astype(np.float32)
        np.testing.assert_array_equal(ds.maps[i, 0], ref)  # no WCS, no BUNIT: taken as they are


@pytest.mark.parametrize("size", [2, 12000])
def test_maps_outside_the_recipes_size_range_are_refused(tmp_path, size):
    path = tmp_path / f"m{size}.fits"
    if size == 2:
        write_fits(path, np.arange(4.0).reshape(2, 2))
    else:  # declared in the header only: refused before any pixel is read
        header = fits.Header({"SIMPLE": True, "BITPIX": -32, "NAXIS": 2, "NAXIS1": size, "NAXIS2": size})
        path.write_bytes(header.tostring().encode() + bytes(2880))
    with pytest.raises(FitsError, match=f"{size} px a side, outside the 16 to 628 px"):
        maps_to_dataset([path], tmp_path / "ds")
    good = write_fits(tmp_path / "good.fits", disc(48))
    with pytest.warns(UserWarning, match=r"1 FITS file\(s\) skipped.*outside the 16 to 628 px"):
        out = maps_to_dataset([path, good], tmp_path / "ds")
    assert len(open_dataset(out)) == 1


def test_uploads_are_read_from_bytes_whatever_their_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    content = write_fits(tmp_path / "x.fits", disc(40), {"OBJECT": ""}).read_bytes()
    for name, shown in [("../../etc/passwd.fits", "passwd"), ("a\x00b.fits", "ab"),
                        ("n" * 300 + ".fits", "n" * 77 + "..."), ("..", ".."), ("", "upload")]:
        result = read_uploaded_map(content, name)
        assert result.name == shown
        np.testing.assert_array_equal(result.data, disc(40))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.fits"]
    with pytest.raises(FitsError, match="upload ab.fits is not a readable FITS file"):
        read_uploaded_map(b"not fits", "a\x00b.fits")


def test_read_velocity_map_keeps_its_contract(shared_real):
    name, m = read_velocity_map(shared_real / "dawson2020" / "fits" / "NGC0383.fits")
    assert name == "NGC0383" and m.shape == (200, 200) and m.dtype == np.float64
