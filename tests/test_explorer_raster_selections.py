"""The map's raster kernels against NumPy, and selections, filters, clicks and named selections
of the application layer."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.path import Path as MplPath

from galexplore.errors import ColumnError, ParameterError, SelectionError
from galexplore.explorer import selections
from galexplore.explorer.bundles import BundleCache
from galexplore.explorer.raster import rasterize, spread
from galexplore.explorer.selections import PRIVATE, SHARED, Selection, SelectionStore
from ui_fixtures import build_ui_fixture


# ----------------------------------------------------------------------------- raster
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_counts_and_means_equal_numpy_histograms(dtype):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=5000).astype(dtype), rng.normal(size=5000).astype(dtype)
    v = rng.normal(size=5000)
    x[:10] = np.nan
    v[10:20] = np.nan
    ranges = ((-2.0, 2.5), (-1.5, 2.0))
    counts, _, _ = np.histogram2d(y, x, bins=(30, 40), range=(ranges[1], ranges[0]))
    sums, _, _ = np.histogram2d(y[np.isfinite(v)], x[np.isfinite(v)], bins=(30, 40), range=(ranges[1], ranges[0]),
                                weights=v[np.isfinite(v)])
    valued, _, _ = np.histogram2d(y[np.isfinite(v)], x[np.isfinite(v)], bins=(30, 40), range=(ranges[1], ranges[0]))
    raster = rasterize(x, y, *ranges, width=40, height=30, max_spread_px=0)
    np.testing.assert_array_equal(np.nan_to_num(raster.image), counts)
    assert raster.n_points == int(counts.sum())
    mean = rasterize(x, y, *ranges, width=40, height=30, values=v, max_spread_px=0).image
    with np.errstate(invalid="ignore"):
        expected = np.where(valued > 0, sums / valued, np.nan)
    np.testing.assert_allclose(mean, expected, rtol=1e-5)
    assert raster.image.dtype == np.float32 and np.isnan(raster.image[counts == 0]).all()


def test_kept_points_only_and_the_upper_edge_belongs_to_the_last_pixel():
    x = np.array([0.0, 1.0, 0.5, 0.99])
    y = np.array([0.0, 1.0, 0.5, 0.0])
    raster = rasterize(x, y, (0.0, 1.0), (0.0, 1.0), 2, 2, keep=np.array([True, True, False, True]), max_spread_px=0)
    np.testing.assert_array_equal(np.nan_to_num(raster.image), [[1, 1], [0, 1]])
    with pytest.raises(ParameterError, match="low < high"):
        rasterize(x, y, (1.0, 1.0), (0.0, 1.0), 2, 2)


def test_spreading_paints_empty_neighbours_with_the_nearest_value():
    image = np.full((7, 7), np.nan, dtype=np.float32)
    image[3, 3] = 5.0
    image[3, 6] = 1.0
    out = spread(image, 1)
    assert out[2, 3] == out[3, 2] == out[4, 4] == 5.0  # the 3 x 3 block around the point
    assert out[3, 5] == 1.0 and np.isnan(out[0, 0]) and out[3, 4] == 5.0
    np.testing.assert_array_equal(np.isnan(spread(image, 0)), np.isnan(image))
    lonely = rasterize(np.array([0.1, 0.9]), np.array([0.1, 0.9]), (0, 1), (0, 1), 20, 20)
    assert lonely.spread_px == 3  # isolated points get the largest spread


# ----------------------------------------------------------------------------- selections
@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return BundleCache().get(*build_ui_fixture(tmp_path_factory.mktemp("selections"), n=240))


def _triangle(x, y):
    return np.array([[np.percentile(x, 5), np.percentile(y, 5)], [np.percentile(x, 95), np.percentile(y, 20)],
                     [np.percentile(x, 40), np.percentile(y, 95)]])


def _inside(x, y, polygon):
    return set(np.flatnonzero(MplPath(polygon).contains_points(np.column_stack([x, y]))).tolist())


def test_lasso_selects_exactly_the_points_inside(bundle):
    x, y = bundle.xy("folded (r, h)")
    polygon = _triangle(x, y)
    chosen = selections.lasso(bundle, "folded (r, h)", Selection(), polygon)
    assert set(chosen.rows.tolist()) == _inside(x, y, polygon) and 0 < chosen.size < len(x)
    np.testing.assert_array_equal(chosen.polygon, polygon)
    assert chosen.history[0]["projection"] == ["folded_r", "folded_h"] and chosen.history[0]["mode"] == "new"


def test_modes_combine_like_sets_and_filters_hide_rows(bundle):
    x, y = bundle.xy("PCA 0 vs 1")
    first = _triangle(x, y)
    second = first + [np.ptp(x) * 0.2, 0.0]
    a, b = _inside(x, y, first), _inside(x, y, second)
    base = selections.lasso(bundle, "PCA 0 vs 1", Selection(), first)
    for mode, expected in (("add", a | b), ("subtract", a - b), ("intersect", a & b)):
        got = selections.lasso(bundle, "PCA 0 vs 1", base, second, mode)
        assert set(got.rows.tolist()) == expected and len(got.history) == 2
    kappa = bundle.column("kappa")
    filtered = selections.lasso(bundle, "PCA 0 vs 1", Selection(), first, filters={"kappa": (0.5, 1.0)})
    assert set(filtered.rows.tolist()) == {r for r in a if 0.5 <= kappa[r] <= 1.0}
    with pytest.raises(SelectionError, match="three"):
        selections.lasso(bundle, "PCA 0 vs 1", Selection(), first[:2])
    with pytest.raises(ColumnError):
        selections.check_filter(bundle, "nope", 0, 1)
    with pytest.raises(ParameterError, match="swap"):
        selections.check_filter(bundle, "kappa", 1, 0)


def test_box_and_click_on_the_nearest_visible_galaxy(bundle):
    x, y = bundle.xy("folded (r, h)")
    x0, x1, y0, y1 = np.percentile(x, 20), np.percentile(x, 60), np.percentile(y, 10), np.percentile(y, 70)
    chosen = selections.box(bundle, "folded (r, h)", Selection(), x0, y0, x1, y1)
    assert set(chosen.rows.tolist()) == set(np.flatnonzero((x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)).tolist())
    xr, yr = (float(x.min()), float(x.max())), (float(y.min()), float(y.max()))
    row = selections.nearest_visible(bundle, "folded (r, h)", x[17], y[17], xr, yr)
    assert row == 17
    kappa = bundle.column("kappa")
    hidden = (0.0, float(kappa[17]) - 1e-6) if kappa[17] > 0.2 else (float(kappa[17]) + 1e-6, 1.0)
    other = selections.nearest_visible(bundle, "folded (r, h)", x[17], y[17], xr, yr, {"kappa": hidden})
    assert other is not None and other != 17 and hidden[0] <= kappa[other] <= hidden[1]
    assert selections.nearest_visible(bundle, "folded (r, h)", x[17], y[17], xr, yr, {"kappa": (5.0, 6.0)}) is None
    assert selections.row_of_id(bundle, int(bundle.column("id")[9])) == 9


def test_named_selections_are_per_user_unless_shared(bundle, tmp_path):
    ids = bundle.column("id")[:30]
    alice = SelectionStore(tmp_path, "a" * 32)
    bob = SelectionStore(tmp_path, "b" * 32)
    alice.save("mine", ids, [{"mode": "new", "box": [0, 1, 0, 1]}])
    alice.save("for everyone", ids[:5], scope=SHARED)
    assert alice.entries() == [(PRIVATE, "mine"), (SHARED, "for everyone")]
    assert bob.entries() == [(SHARED, "for everyone")]  # bob never sees alice's own
    saved = alice.load("mine")
    restored, missing = selections.restore(bundle, Selection(), saved)
    assert missing == 0 and restored.rows.tolist() == list(range(30))
    assert restored.history[0]["restored_from"] == "mine"
    anonymous = SelectionStore(tmp_path, None)
    assert anonymous.entries() == [(SHARED, "for everyone")]
    with pytest.raises(SelectionError, match="reload"):
        anonymous.save("x", ids)
    assert SelectionStore(tmp_path, "../../etc").entries() == [(SHARED, "for everyone")]  # not a token
    assert not any("etc" in p.name for p in tmp_path.rglob("*"))
