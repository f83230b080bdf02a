"""The explorer's table reads each column when first asked for: values and types as stored in
the catalogue's Parquet parts and the embedding's cache file, rows matched on ``id``, a
bounded set of columns held, and exports with every column at full precision."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pandas as pd
import pytest

from galexplore.analysis.embed import Embedding, load_embedding
from galexplore.analysis.selection import PointIndex
from galexplore.data.dataset import open_dataset
from galexplore.errors import ColumnError, DatasetError
from galexplore.explorer import bundles as bundles_module
from galexplore.explorer.bundles import build_bundle
from galexplore.explorer.columns import ColumnTable
from galexplore.explorer.exports import selection_zip
from galexplore.explorer.selections import Selection
from ui_fixtures import build_ui_fixture


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    return build_ui_fixture(tmp_path_factory.mktemp("columns"), n=90, seed=4)


@pytest.fixture
def bundle(paths):
    return build_bundle(*paths)  # a fresh bundle: nothing read but the ids


def _parquet_catalogue(dataset_path) -> pd.DataFrame:
    dataset = open_dataset(dataset_path)
    parts = [pd.read_parquet(dataset.path / p["file"]) for p in dataset.manifest["catalog_parts"]]
    return pd.concat(parts, ignore_index=True)


def _parquet_embedding(bundle) -> pd.DataFrame:
    return pd.read_parquet(load_embedding(bundle.model, bundle.dataset).path)


def test_a_new_bundle_reads_only_the_ids(bundle):
    assert bundle.table.held() == ["id"]
    assert bundle.dataset._catalog is None  # the whole catalogue was never loaded
    assert "kappa" in bundle.columns and "folded_r" in bundle.columns


def test_a_column_is_read_when_first_asked_for_with_its_stored_values_and_type(bundle, paths):
    catalogue, embedding = _parquet_catalogue(paths[0]), _parquet_embedding(bundle)
    assert "kappa" not in bundle.table.held()
    kappa = bundle.column("kappa")
    assert "kappa" in bundle.table.held()
    assert kappa.dtype == np.float64  # the catalogue's type: filters and exports see the exact values
    np.testing.assert_array_equal(kappa, catalogue["kappa"].to_numpy())
    assert bundle.column("kappa") is kappa  # read once
    assert not kappa.flags.writeable  # shared by every session: nobody may write into it
    folded = bundle.column("folded_r")
    assert folded.dtype == np.float32
    np.testing.assert_array_equal(folded, embedding["folded_r"].to_numpy())
    assert bundle.column("id").dtype == np.int64
    assert bundle.column("view").dtype == catalogue["view"].dtype


def test_numeric_columns_are_known_without_reading_them(bundle):
    assert {"kappa", "pa", "galaxy_id", "folded_r", "latent_0"} <= set(bundle.numeric_columns)
    assert bundle.table.held() == ["id"]


def test_unknown_columns_are_refused(bundle):
    with pytest.raises(ColumnError, match="unknown column 'nope'"):
        bundle.column("nope")


def test_one_row_is_read_without_loading_its_columns(bundle, paths):
    catalogue, embedding = _parquet_catalogue(paths[0]), _parquet_embedding(bundle)
    bundle.column("kappa")
    row = bundle.table.row(17)
    assert set(bundle.table.held()) == {"id", "kappa"}
    assert list(row) == bundle.columns
    for column in catalogue.columns:
        assert row[column] == catalogue[column].iloc[17]
    for column in ("latent_1", "folded_h", "pa_latent"):
        assert row[column] == embedding[column].iloc[17]


def test_frame_gives_the_columns_and_rows_asked_for(bundle, paths):
    catalogue = _parquet_catalogue(paths[0])
    rows = np.array([3, 0, 44])
    frame = bundle.frame(["id", "pa", "latent_2"], rows)
    assert list(frame.columns) == ["id", "pa", "latent_2"] and list(frame.index) == [0, 1, 2]
    np.testing.assert_array_equal(frame["pa"], catalogue["pa"].to_numpy()[rows])
    assert frame["latent_2"].dtype == np.float32


def test_columns_beyond_the_memory_budget_are_released_and_read_again(paths):
    dataset = open_dataset(paths[0])
    embedding = load_embedding(build_bundle(*paths).model, dataset)
    table = ColumnTable(dataset, embedding, max_held_bytes=3 * 90 * 8)  # room for three float64 columns
    kappa = table.column("kappa").copy()
    for name in ("pa", "inc", "vflat_kms"):
        table.column(name)
    assert "kappa" not in table.held() and len(table.held()) <= 3
    np.testing.assert_array_equal(table.column("kappa"), kappa)


def test_embedding_rows_are_matched_to_the_catalogue_by_id(paths):
    dataset = open_dataset(paths[0])
    cached = load_embedding(build_bundle(*paths).model, dataset)
    shuffled = cached.table.sample(frac=1.0, random_state=1).reset_index(drop=True)
    table = ColumnTable(dataset, Embedding(cached.projector, cached.path, shuffled))
    ids = table.column("id")
    by_id = shuffled.set_index("id").loc[ids]
    np.testing.assert_array_equal(table.column("latent_0"), by_id["latent_0"].to_numpy())
    assert table.row(5)["latent_0"] == by_id["latent_0"].iloc[5]
    stale = shuffled.assign(id=shuffled["id"] + 1)
    with pytest.raises(DatasetError, match="do not match one to one"):
        ColumnTable(dataset, Embedding(cached.projector, cached.path, stale))


def test_added_columns_live_in_a_derived_table(bundle):
    derived = bundle.with_columns({"score": np.arange(bundle.n_maps, dtype=np.float32)})
    assert "score" in derived.columns and "score" not in bundle.columns
    derived.column("kappa")
    assert "kappa" in bundle.table.held()  # the columns read are shared
    with pytest.raises(ColumnError, match="shape"):
        bundle.table.with_columns({"short": np.zeros(3)})


def test_an_export_holds_every_column_at_full_precision(bundle, paths):
    catalogue, embedding = _parquet_catalogue(paths[0]), _parquet_embedding(bundle)
    rows = np.array([2, 9, 31])
    data = selection_zip(bundle, Selection(rows=rows), "folded (r, h)", name="picked")
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        exported = pd.read_csv(io.BytesIO(archive.read("picked.csv")))
    assert set(exported.columns) == set(bundle.columns)
    exported = exported.set_index("id").loc[catalogue["id"].to_numpy()[rows]]
    for column in ("kappa", "pa", "inc", "log_mstar"):  # float64 values round-trip exactly
        np.testing.assert_array_equal(exported[column].to_numpy(), catalogue[column].to_numpy()[rows])
    np.testing.assert_allclose(exported["latent_0"], embedding["latent_0"].to_numpy()[rows], rtol=1e-7)


def test_latent_neighbours_scan_every_block_exactly(bundle, monkeypatch):
    monkeypatch.setattr(bundles_module, "NEIGHBOUR_BLOCK_ROWS", 16)  # 90 rows in 6 blocks
    z = bundle.frame(["latent_0", "latent_1", "latent_2"]).to_numpy(np.float64)
    queries = z[[0, 40, 89]] + 1e-3
    found = bundle.neighbours_of_latent(queries, 7)
    for query, rows in zip(queries, found):
        distance = np.linalg.norm(z - query, axis=1)
        assert rows.tolist() == np.argsort(distance, kind="stable")[:7].tolist()


def test_point_index_keeps_float32_coordinates_without_a_copy():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=5000).astype(np.float32), rng.normal(size=5000).astype(np.float32)
    index = PointIndex(x, y)
    assert index.x is x and index.y is y
    reference = PointIndex(x.astype(np.float64), y.astype(np.float64))
    polygon = np.array([[-1.0, -1.0], [1.2, -0.7], [0.4, 1.3], [-0.8, 0.6]])
    np.testing.assert_array_equal(index.select_polygon(polygon), reference.select_polygon(polygon))
    rows, dist = index.nearest(0.1, -0.2, k=40, x_range=(-3, 3), y_range=(-1, 1), return_distance=True)
    expected = np.hypot((x.astype(np.float64) - 0.1) / 6.0, (y.astype(np.float64) + 0.2) / 2.0)
    np.testing.assert_array_equal(rows, np.argsort(expected, kind="stable")[:40])
    np.testing.assert_allclose(dist, np.sort(expected)[:40], rtol=1e-12)
    far = index.nearest(50.0, 50.0, k=3)  # a click far outside the points
    far_expected = np.argsort(np.hypot(x - 50.0, y - 50.0), kind="stable")[:3]
    np.testing.assert_array_equal(far, far_expected)
