"""Environments of real galaxies (GWGC): columns, projection, brute-force counts, the CLI dataset."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from galexplore.cli import main
from galexplore.data import open_dataset
from galexplore.errors import ColumnError
from galexplore.mock.environment import environment_from_catalog, environment_maps, environment_measures
from galexplore.mock.sky_catalog import sky_catalog_from_dataframe

H = 0.7
H0 = 70.0


@pytest.fixture(scope="module")
def gwgc_path(shared_real):
    return shared_real / "gwgc" / "gwgc_good.csv"


@pytest.fixture(scope="module")
def gwgc(gwgc_path):
    return pd.read_csv(gwgc_path)


@pytest.fixture(scope="module")
def gwgc_env(gwgc):
    return environment_from_catalog(gwgc, n_targets=200, seed=1)


def _gnomonic(ra0, dec0, ra, dec):
    """Standard spherical-trigonometry tangent-plane coordinates (xi east, eta north), radians."""
    ra0, dec0, ra, dec = map(np.radians, (ra0, dec0, ra, dec))
    cos_c = np.sin(dec0) * np.sin(dec) + np.cos(dec0) * np.cos(dec) * np.cos(ra - ra0)
    xi = np.cos(dec) * np.sin(ra - ra0) / cos_c
    eta = (np.cos(dec0) * np.sin(dec) - np.sin(dec0) * np.cos(dec) * np.cos(ra - ra0)) / cos_c
    return xi, eta, cos_c


def _brute_force(gwgc, row):
    """Map and measures of source row ``row`` from every other GWGC galaxy, without a tree."""
    usable = gwgc[gwgc["Dist"] > 0]
    target = gwgc.loc[row]
    others = usable.drop(index=row)
    xi, eta, cos_c = _gnomonic(target.RAJ2000, target.DEJ2000, others.RAJ2000.to_numpy(),
                               others.DEJ2000.to_numpy())
    scale = target.Dist * H  # h^-1 Mpc
    east, north = scale * xi, scale * eta
    in_velocity = (np.abs(H0 * (others.Dist.to_numpy() - target.Dist)) < 1000.0) & (cos_c > 0)
    counts = np.zeros((64, 64))
    for e, n in zip(east[in_velocity], north[in_velocity]):
        r, c = int(np.floor((n + 5.0) / 0.15625)), int(np.floor((5.0 - e) / 0.15625))
        if 0 <= r < 64 and 0 <= c < 64:
            counts[r, c] += 1
    projected = np.sort(np.hypot(east, north)[in_velocity & (np.abs(east) <= 10) & (np.abs(north) <= 10)])
    projected = projected[projected <= 10.0]
    return counts, projected


def test_gwgc_maps_and_measures_equal_brute_force(gwgc, gwgc_env):
    assert gwgc_env.maps.shape == (200, 64, 64)
    assert gwgc_env.info["n_dropped_unphysical"] == int((gwgc["Dist"] <= 0).sum())
    rows = gwgc_env.catalog.source_row[gwgc_env.targets]
    for i in (0, 57, 123, 199):
        counts, projected = _brute_force(gwgc, int(rows[i]))
        np.testing.assert_array_equal(gwgc_env.maps[i], counts)
        measures = gwgc_env.measures.iloc[i]
        assert measures["d_nn"] == pytest.approx(projected[0] / H)
        assert measures["n_1mpc"] == np.sum(projected < 0.7)
        if projected.size >= 5:
            assert measures["sigma5"] == pytest.approx(5 / (np.pi * (projected[4] / H) ** 2))


def test_gwgc_denser_environments_have_fuller_maps(gwgc_env):
    totals = gwgc_env.maps.sum(axis=(1, 2))
    assert totals.sum() > 0
    for column in ("sigma5", "n_1mpc", "delta_ls"):
        rho = spearmanr(gwgc_env.measures[column], totals, nan_policy="omit").statistic
        assert rho > 0.5, column
    assert gwgc_env.measures["v_pec"].isna().all(), "GWGC has no redshifts: no peculiar velocities"


def test_targets_lie_inside_the_distance_limits_and_follow_the_seed(gwgc, gwgc_env):
    distance = gwgc_env.catalog.distance_mpc[gwgc_env.targets]
    # 1000 km/s window inside [min, max] of the catalogue; sky window within 30 deg of the target.
    assert distance.min() >= 5 * np.sqrt(2) / np.tan(np.radians(30)) / H
    assert distance.max() <= gwgc["Dist"].max() - 1000 / H0
    again = environment_from_catalog(gwgc.iloc[:5000], n_targets=20, seed=4)
    same = environment_from_catalog(gwgc.iloc[:5000], n_targets=20, seed=4)
    other = environment_from_catalog(gwgc.iloc[:5000], n_targets=20, seed=5)
    np.testing.assert_array_equal(again.targets, same.targets)
    assert not np.array_equal(again.targets, other.targets)


def test_sky_orientation_east_left_north_up_and_ra_wrap():
    # Target at RA = Dec = 0, D = 50 Mpc (35 h^-1 Mpc): a neighbour at RA = atan(2 / 35) lies exactly
    # 2 h^-1 Mpc east on the tangent plane -> col floor(3 / 0.15625) = 19, row 32.
    east_ra = np.degrees(np.arctan(2 / 35))
    north_dec = np.degrees(np.arctan(3 / 35))  # 3 north -> row floor(8 / 0.15625) = 51, col 32
    table = pd.DataFrame({
        "RA": [0.0, east_ra, 0.0, 360.0 - east_ra],
        "Dec": [0.0, 0.0, north_dec, 0.0],
        "distance": [50.0, 51.0, 49.0, 50.0],
    })
    sky = sky_catalog_from_dataframe(table)
    (map_,) = environment_maps(sky, np.array([0]))
    assert map_.sum() == 3
    assert map_[32, 19] == 1 and map_[51, 32] == 1
    assert map_[32, 44] == 1  # 2 west, across RA = 360 -> col floor(7 / 0.15625) = 44


def test_velocity_window_from_distances_and_redshifts():
    # 14.2 Mpc x 70 = 994 km/s (in), 14.3 Mpc = 1001 km/s (out).
    table = pd.DataFrame({"ra_deg": [10.0, 10.0, 10.0], "DEC": [5.0, 5.0, 5.0],
                          "Dist": [40.0, 54.2, 54.3]})
    sky = sky_catalog_from_dataframe(table)
    assert environment_maps(sky, np.array([0])).sum() == 1
    c = 299792.458
    z = np.array([0.01, 0.01 + 990 / c, 0.01 + 1010 / c])
    by_redshift = sky_catalog_from_dataframe(pd.DataFrame({"ra": [10.0] * 3, "dec": [5.0] * 3, "z": z}))
    assert environment_maps(by_redshift, np.array([0])).sum() == 1
    # Low-z Hubble law: D ~ cz / H0 (comoving distance differs by < 1% at z = 0.01).
    assert by_redshift.distance_mpc[0] == pytest.approx(c * 0.01 / H0, rel=0.01)
    both = sky_catalog_from_dataframe(pd.DataFrame({"ra": [10.0], "dec": [5.0], "z": [0.01],
                                                    "distance": [40.0]}),
                                      distance_column="distance", redshift_column="z")
    assert both.peculiar_velocity_kms[0] == pytest.approx(c * 0.01 - H0 * 40.0)
    assert environment_measures(both, np.array([0]))["v_pec"][0] == pytest.approx(c * 0.01 - H0 * 40.0)


def test_columns_detected_case_insensitively_and_nan_rows_dropped():
    table = pd.DataFrame({"raj2000": [1.0, np.nan, 3.0], "DeJ2000": [1.0, 2.0, 3.0],
                          "D_MPC": [20.0, 30.0, np.nan], "NED_name": ["a", "b", "c"]})
    sky = sky_catalog_from_dataframe(table)
    assert sky.info["n_dropped_nan"] == 2
    assert list(sky.source_row) == [0]
    assert list(sky.names) == ["a"]
    assert (sky.info["ra_column"], sky.info["dec_column"], sky.info["distance_column"]) == (
        "raj2000", "DeJ2000", "D_MPC")


def test_missing_or_unknown_columns_say_what_exists_and_which_flag():
    table = pd.DataFrame({"alpha": [1.0], "delta": [2.0], "dist": [20.0]})
    with pytest.raises(ColumnError) as err:
        sky_catalog_from_dataframe(table)
    assert "alpha" in str(err.value) and "--ra-column" in str(err.value)
    no_distance = pd.DataFrame({"ra": [1.0], "dec": [2.0], "vel": [1500.0]})
    with pytest.raises(ColumnError) as err:
        sky_catalog_from_dataframe(no_distance)
    assert "--distance-column" in str(err.value) and "vel" in str(err.value)
    with pytest.raises(ColumnError, match="'cz'"):
        sky_catalog_from_dataframe(no_distance, redshift_column="cz")
    assert sky_catalog_from_dataframe(table, ra_column="ALPHA", dec_column="delta").info["ra_column"] == "alpha"


def test_cli_writes_a_dataset_that_opens(gwgc, gwgc_path, tmp_path, capsys):
    out = tmp_path / "gwgc_env"
    assert main(["env-from-catalog", str(gwgc_path), str(out), "--n-targets", "40", "--seed", "3"]) == 0
    dataset = open_dataset(out)
    assert len(dataset) == 40 and dataset.channels == ["env"] and dataset.units == {"env": "counts"}
    catalog = dataset.catalog
    for column in ("id", "galaxy_id", "view", "name", "ra", "dec", "distance",
                   "sigma5", "n_1mpc", "d_nn", "delta_ls", "v_pec"):
        assert column in catalog.columns
    assert dataset.column_units["sigma5"] == "Mpc^-2" and dataset.column_units["distance"] == "Mpc"
    source = gwgc.loc[catalog["galaxy_id"].to_numpy()]
    assert list(catalog["name"]) == list(source["NED_name"])
    np.testing.assert_allclose(catalog["distance"], source["Dist"])
    assert (catalog["view"] == 0).all()
    maps = np.asarray(dataset.maps[:])
    assert maps.shape == (40, 1, 64, 64)
    np.testing.assert_array_equal(maps[:, 0], environment_from_catalog(gwgc, n_targets=40, seed=3).maps)

    parquet = tmp_path / "small.parquet"
    gwgc.iloc[:3000].rename(columns={"Dist": "dmpc"}).to_parquet(parquet)
    assert main(["env-from-catalog", str(parquet), str(tmp_path / "x"), "--n-targets", "5"]) == 2
    assert "--distance-column" in capsys.readouterr().err
    assert main(["env-from-catalog", str(parquet), str(tmp_path / "x"), "--n-targets", "5",
                 "--distance-column", "dmpc"]) == 0
    assert len(open_dataset(tmp_path / "x")) == 5
