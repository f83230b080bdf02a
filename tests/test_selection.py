"""Lasso/box selection, selection algebra, click look-up and named selections."""

from __future__ import annotations

import json

import numpy as np
import pytest
from matplotlib.path import Path

from galexplore.analysis.selection import (
    NamedSelections,
    PointIndex,
    combine,
    points_in_box,
    points_in_polygon,
)
from galexplore.errors import ParameterError, SelectionError


def random_polygon(rng, kind: str, n: int = 25) -> np.ndarray:
    """convex, concave (star-shaped with deep notches) or self-intersecting (random order)."""
    angle = np.sort(rng.uniform(0, 2 * np.pi, n))
    if kind == "convex":
        radius = np.ones(n)
    elif kind == "concave":
        radius = rng.uniform(0.2, 1.0, n)
    else:
        angle = rng.permutation(angle)
        radius = rng.uniform(0.2, 1.0, n)
    centre = rng.uniform(-0.3, 0.3, 2)
    return np.column_stack([centre[0] + radius * np.cos(angle), centre[1] + radius * np.sin(angle)])


@pytest.mark.parametrize("kind", ["convex", "concave", "self-intersecting"])
@pytest.mark.parametrize("seed", range(4))
def test_polygon_matches_matplotlib_on_random_points(kind, seed):
    rng = np.random.default_rng(seed)
    x, y = rng.normal(0, 0.6, (2, 20_000))
    poly = random_polygon(rng, kind)
    expected = Path(poly).contains_points(np.column_stack([x, y]), radius=0.0)
    got = points_in_polygon(x, y, poly)
    assert got.dtype == bool and got.shape == x.shape
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(PointIndex(x, y).select_polygon(poly), expected)
    assert 0 < expected.sum() < len(x)  # the comparison is not vacuous


def test_index_equals_direct_test_including_exact_ties():
    """Grid-aligned points and vertices create many exact ties; both paths must agree on each."""
    rng = np.random.default_rng(11)
    x, y = (rng.integers(-40, 41, (2, 30_000)) / 8.0)
    x[::97] = np.nan
    y[::89] = np.inf
    index = PointIndex(x, y, points_per_cell=4)
    for trial in range(40):
        n = int(rng.integers(3, 40))
        poly = rng.integers(-44, 45, (n, 2)) / 8.0 * rng.uniform(0.05, 1.2)
        if trial % 3 == 0:
            poly = random_polygon(rng, "concave", n) * rng.uniform(0.01, 6.0)
        direct = points_in_polygon(x, y, poly)
        np.testing.assert_array_equal(index.select_polygon(poly), direct)


def test_index_equals_direct_test_for_points_on_edges():
    """Points interpolated along the edges sit within rounding of them: the hardest cases."""
    rng = np.random.default_rng(21)
    for _ in range(30):
        n = int(rng.integers(3, 12))
        poly = rng.uniform(-1, 1, (n, 2))
        i = rng.integers(0, n, 3000)
        t = rng.uniform(0, 1, (3000, 1))
        on_edges = poly[i] + t * (poly[(i + 1) % n] - poly[i])
        x = np.r_[on_edges[:, 0], rng.uniform(-1, 1, 500)]
        y = np.r_[on_edges[:, 1], rng.uniform(-1, 1, 500)]
        np.testing.assert_array_equal(PointIndex(x, y, points_per_cell=2).select_polygon(poly),
                                      points_in_polygon(x, y, poly))


def test_boundary_rule_on_unit_square():
    """Left and bottom edges are inside, right and top edges outside: [0, 1) x [0, 1)."""
    square = [(0, 0), (1, 0), (1, 1), (0, 1)]
    pts = {
        (0.0, 0.5): True, (1.0, 0.5): False, (0.5, 0.0): True, (0.5, 1.0): False,
        (0.0, 0.0): True, (1.0, 0.0): False, (0.0, 1.0): False, (1.0, 1.0): False,
        (0.5, 0.5): True, (-1e-12, 0.5): False, (0.999999, 0.999999): True,
    }
    x, y = np.array(list(pts)).T
    expected = np.array(list(pts.values()))
    np.testing.assert_array_equal(points_in_polygon(x, y, square), expected)
    np.testing.assert_array_equal(points_in_polygon(x, y, square[::-1]), expected)  # clockwise
    np.testing.assert_array_equal(PointIndex(x, y).select_polygon(square), expected)


def test_lassos_sharing_edges_partition_the_points():
    """A square cut along its diagonal and along x = 0.5: every point of [0,1)^2 is taken once."""
    g = np.arange(-2, 11) / 8.0
    x, y = (a.ravel() for a in np.meshgrid(g, g))
    pieces = [
        [(0, 0), (1, 0), (1, 1)],            # below the diagonal
        [(0, 0), (1, 1), (0.5, 1), (0.5, 0.5)],  # above it, right of x = 0.5
        [(0, 0), (0.5, 0.5), (0.5, 1), (0, 1)],  # above it, left of x = 0.5
    ]
    index = PointIndex(x, y)
    counts = sum(points_in_polygon(x, y, p).astype(int) for p in pieces)
    counts_index = sum(index.select_polygon(p).astype(int) for p in pieces)
    in_unit_square = (x >= 0) & (x < 1) & (y >= 0) & (y < 1)
    np.testing.assert_array_equal(counts, in_unit_square.astype(int))
    np.testing.assert_array_equal(counts_index, counts)


def test_self_intersecting_lassos_use_even_odd():
    bowtie = [(0, 0), (2, 2), (2, 0), (0, 2)]
    x = np.array([0.5, 1.5, 1.0, 1.0])
    y = np.array([1.0, 1.0, 0.5, 1.5])
    np.testing.assert_array_equal(points_in_polygon(x, y, bowtie), [True, True, False, False])
    # pentagram drawn in one stroke: the tips are inside, the central pentagon (crossed
    # twice) is outside under even-odd (the non-zero winding rule would select it)
    k = np.arange(5) * 2 % 5
    star = np.column_stack([np.sin(2 * np.pi * k / 5), np.cos(2 * np.pi * k / 5)])
    np.testing.assert_array_equal(points_in_polygon([0.0, 0.0], [0.0, 0.8], star), [False, True])


@pytest.mark.parametrize("poly", [
    [], [(0, 0)], [(0, 0), (1, 1)], [(0, 0), (1, 1), (2, 2), (3, 3)],
    [(0, 0), (0, 0), (1, 1), (1, 1)], [(0, 0), (1, 0), (0, 0)],
])
def test_degenerate_polygons_select_nothing(poly):
    x, y = np.meshgrid(np.linspace(-1, 4, 21), np.linspace(-1, 4, 21))
    poly = np.asarray(poly, dtype=float).reshape(-1, 2)
    assert not points_in_polygon(x.ravel(), y.ravel(), poly).any()
    assert not PointIndex(x.ravel(), y.ravel()).select_polygon(poly).any()
    with pytest.raises(SelectionError, match="empty"):
        points_in_polygon(x.ravel(), y.ravel(), poly, require_nonempty=True)


def test_closed_ring_equals_open_ring():
    rng = np.random.default_rng(3)
    x, y = rng.uniform(-1, 1, (2, 5000))
    poly = random_polygon(rng, "concave")
    closed = np.vstack([poly, poly[:1]])
    np.testing.assert_array_equal(points_in_polygon(x, y, closed), points_in_polygon(x, y, poly))


def test_non_finite_points_are_never_selected():
    x = np.array([np.nan, 0.5, np.inf, -np.inf, 0.5, np.nan])
    y = np.array([0.5, np.nan, 0.5, 0.5, 0.5, np.nan])
    huge = [(-1e300, -1e300), (1e300, -1e300), (1e300, 1e300), (-1e300, 1e300)]
    expected = [False, False, False, False, True, False]
    np.testing.assert_array_equal(points_in_polygon(x, y, huge), expected)
    index = PointIndex(x, y)
    np.testing.assert_array_equal(index.select_polygon(huge), expected)
    np.testing.assert_array_equal(points_in_box(x, y, -1e300, 1e300, -1e300, 1e300), expected)
    np.testing.assert_array_equal(index.select_box(-1e300, 1e300, -1e300, 1e300), expected)


def test_index_of_only_non_finite_or_identical_points():
    nan = np.full(10, np.nan)
    assert not PointIndex(nan, nan).select_polygon([(0, 0), (1, 0), (0, 1)]).any()
    assert PointIndex(nan, nan).nearest(0.0, 0.0).size == 0
    same = np.full(10, 2.0)
    index = PointIndex(same, same)
    assert index.select_polygon([(1, 1), (3, 1), (3, 3), (1, 3)]).all()
    assert index.select_box(2, 2, 2, 2).all()
    assert len(PointIndex([], []).select_box(0, 1, 0, 1)) == 0


def test_box_is_closed_and_exact():
    rng = np.random.default_rng(5)
    x, y = rng.integers(0, 20, (2, 40_000)) / 4.0  # many points exactly on box edges
    x = x + rng.normal(0, 1e-3, x.shape) * (rng.random(x.shape) < 0.5)
    index = PointIndex(x, y, points_per_cell=2)
    for _ in range(30):
        x0, x1, y0, y1 = rng.integers(-2, 22, 4) / 4.0
        lo_x, hi_x, lo_y, hi_y = min(x0, x1), max(x0, x1), min(y0, y1), max(y0, y1)
        expected = (x >= lo_x) & (x <= hi_x) & (y >= lo_y) & (y <= hi_y)
        np.testing.assert_array_equal(points_in_box(x, y, x0, x1, y0, y1), expected)
        np.testing.assert_array_equal(index.select_box(x0, x1, y0, y1), expected)
    assert points_in_box([1.0], [2.0], 1, 1, 2, 2).all()  # a zero-size box holds its point


def test_bad_inputs_raise_parameter_errors():
    with pytest.raises(ParameterError, match="equal length"):
        points_in_polygon([0, 1], [0], [(0, 0), (1, 0), (0, 1)])
    with pytest.raises(ParameterError, match=r"\(n_vertices, 2\)"):
        points_in_polygon([0], [0], [0, 1, 2])
    with pytest.raises(ParameterError, match="NaN"):
        points_in_polygon([0], [0], [(0, 0), (np.nan, 0), (0, 1)])
    with pytest.raises(ParameterError, match="box"):
        points_in_box([0], [0], 0, np.nan, 0, 1)


def test_require_nonempty():
    x = np.array([0.1, 0.2])
    with pytest.raises(SelectionError, match="draw it around some points"):
        PointIndex(x, x).select_box(5, 6, 5, 6, require_nonempty=True)
    assert PointIndex(x, x).select_box(0, 1, 0, 1, require_nonempty=True).all()


def test_combine_masks_by_hand():
    cur = np.array([True, True, False, False])
    new = np.array([True, False, True, False])
    assert combine(cur, new, "new").tolist() == [True, False, True, False]
    assert combine(cur, new, "add").tolist() == [True, True, True, False]
    assert combine(cur, new, "subtract").tolist() == [False, True, False, False]
    assert combine(cur, new, "intersect").tolist() == [True, False, False, False]
    assert combine(None, new, "add").tolist() == new.tolist()
    with pytest.raises(SelectionError):
        combine(cur, ~cur, "intersect", require_nonempty=True)


def test_combine_ids_by_hand():
    cur = np.array([7, 3, 5, 3])
    new = np.array([5, 9])
    assert combine(cur, new, "new").tolist() == [5, 9]
    assert combine(cur, new, "add").tolist() == [3, 5, 7, 9]
    assert combine(cur, new, "subtract").tolist() == [3, 7]
    assert combine(cur, new, "intersect").tolist() == [5]
    assert combine(None, new, "subtract").tolist() == []


def test_combine_rejects_mismatches():
    with pytest.raises(ParameterError, match="mode"):
        combine(np.array([1]), np.array([2]), "xor")
    with pytest.raises(ParameterError, match="integer ids"):
        combine(np.array([True]), np.array([2]), "add")
    with pytest.raises(ParameterError, match="same points"):
        combine(np.array([True]), np.array([True, False]), "add")


def test_nearest_matches_brute_force():
    rng = np.random.default_rng(8)
    x = rng.normal(0, 100.0, 3000)   # x spans ~600 units,
    y = rng.normal(0, 0.01, 3000)    # y ~0.06: anisotropic, as in a real latent plot
    x[:50] = np.nan
    index = PointIndex(x, y)
    finite = np.flatnonzero(np.isfinite(x))
    for _ in range(20):
        cx, cy = rng.normal(0, 100.0), rng.normal(0, 0.01)
        d = np.hypot(x[finite] - cx, y[finite] - cy)
        expected = finite[np.argsort(d)[:3]]
        rows, dist = index.nearest(cx, cy, k=3, return_distance=True)
        np.testing.assert_array_equal(rows, expected)
        np.testing.assert_allclose(dist, np.sort(d)[:3], rtol=1e-12)
        xr, yr = (-300.0, 300.0), (-0.03, 0.03)
        ds = np.hypot((x[finite] - cx) / 600.0, (y[finite] - cy) / 0.06)
        rows_screen = index.nearest(cx, cy, x_range=xr, y_range=yr)
        assert rows_screen.tolist() == [finite[np.argmin(ds)]]
    assert len(index.nearest(0.0, 0.0, k=10_000)) == len(finite)
    with pytest.raises(ParameterError):
        index.nearest(0.0, 0.0, x_range=(1.0, 1.0))


def test_named_selections_round_trip(tmp_path):
    store = NamedSelections(tmp_path / "selections")
    assert store.names() == []
    history = [
        {"mode": "new", "polygon": np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), "x": "pca_0"},
        {"mode": "subtract", "box": [0.1, 0.2, 0.1, 0.2]},
    ]
    path = store.save("discs", np.array([5, 1, 3, 1]), history, dataset_fingerprint="abc")
    assert path == tmp_path / "selections" / "discs.json"
    assert json.loads(path.read_text())["ids"] == [1, 3, 5]
    loaded = store.load("discs")
    assert loaded.ids.tolist() == [1, 3, 5] and loaded.ids.dtype == np.int64
    assert loaded.history[0]["polygon"] == [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]
    assert loaded.history[0]["x"] == "pca_0" and loaded.history[1]["mode"] == "subtract"
    assert loaded.dataset_fingerprint == "abc" and loaded.created_utc.endswith("+00:00")
    with pytest.raises(ParameterError, match="already exists"):
        store.save("discs", [2])
    assert store.load("discs").ids.tolist() == [1, 3, 5]
    store.save("discs", [2], overwrite=True)
    assert store.load("discs").ids.tolist() == [2]
    assert store.names() == ["discs"]
    assert [p.name for p in (tmp_path / "selections").iterdir()] == ["discs.json"]  # no temp files
    store.delete("discs")
    with pytest.raises(SelectionError, match="no saved selection"):
        store.load("discs")


def test_named_selections_validate(tmp_path):
    store = NamedSelections(tmp_path)
    for bad in ("../escape", "", "a/b", ".hidden"):
        with pytest.raises(ParameterError, match="invalid selection name"):
            store.save(bad, [1])
    with pytest.raises(ParameterError, match="mode"):
        store.save("x", [1], [{"mode": "merge", "box": [0, 1, 0, 1]}])
    with pytest.raises(ParameterError, match="exactly one"):
        store.save("x", [1], [{"mode": "new"}])
    with pytest.raises(ParameterError, match="integers"):
        store.save("x", [1.5])
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(SelectionError, match="is not readable"):
        store.load("broken")
    assert not (tmp_path / "x.json").exists()
