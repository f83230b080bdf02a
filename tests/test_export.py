"""CSV export of a selection: column order, formula escaping, provenance, atomic writes."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

import galexplore
from galexplore import export as export_module
from galexplore.data import create_dataset, open_dataset
from galexplore.errors import ParameterError, SelectionError
from galexplore.export import PROVENANCE_KEYS, export_selection, export_zip

HYPERLINK = '=HYPERLINK("http://evil.example","click")'


@pytest.fixture
def table() -> pd.DataFrame:
    """Catalogue joined with an embedding, columns deliberately interleaved."""
    return pd.DataFrame({
        "latent_0": [0.25, -1.5, 3.0, 0.125],
        "kappa": [0.9, 0.4, 0.75, 0.5],
        "pred_log_mstar": [10.5, 9.25, 11.0, 8.75],
        "id": np.array([10, 11, 12, 13], dtype=np.int64),
        "name": ["NGC 4429", HYPERLINK, "-cmd", "@SUM(A1)"],
        "pca_0": [1.0, 2.0, 3.0, 4.0],
        "v_sys": [-3.5, 1200.0, -0.001, 5.0],
        "latent_1": [0.5, 0.5, 0.5, 0.5],
        "recon_mse": [0.01, 0.02, 0.03, 0.04],
        "pred_class": [1, 0, 1, 0],
        "note": ["+1", "\tx", "\rx", "plain"],
    })


def test_round_trip_columns_rows_values(table, tmp_path):
    csv, prov = export_selection(table, [13, 10, 12, 10], tmp_path / "sel.csv", {})
    assert (csv, prov) == (tmp_path / "sel.csv", tmp_path / "sel.provenance.json")
    back = pd.read_csv(csv, keep_default_na=False)
    assert list(back.columns) == ["id", "kappa", "name", "v_sys", "note",
                                  "latent_0", "pca_0", "latent_1", "recon_mse",
                                  "pred_log_mstar", "pred_class"]
    assert back["id"].tolist() == [10, 12, 13]  # table order, duplicates dropped
    expected = table.set_index("id").loc[[10, 12, 13]]
    for col in ["kappa", "v_sys", "latent_0", "pca_0", "recon_mse", "pred_log_mstar"]:
        assert back[col].dtype == np.float64
        np.testing.assert_array_equal(back[col].to_numpy(), expected[col].to_numpy())
    assert back["pred_class"].tolist() == [1, 1, 0]


def test_formula_strings_are_escaped_numbers_are_not(table, tmp_path):
    csv, _ = export_selection(table, table["id"], tmp_path / "all", {})
    assert csv.name == "all.csv"
    back = pd.read_csv(csv, keep_default_na=False)
    assert back["name"].tolist() == ["NGC 4429", "'" + HYPERLINK, "'-cmd", "'@SUM(A1)"]
    assert back["note"].tolist() == ["'+1", "'\tx", "'\rx", "plain"]
    assert back["v_sys"].tolist() == [-3.5, 1200.0, -0.001, 5.0]
    raw = csv.read_bytes().decode()
    assert "\r\n10,0.9,NGC 4429,-3.5," in raw  # RFC 4180 line ends; the negative number is bare
    assert "'=HYPERLINK" in raw and ",=" not in raw


def test_formula_like_column_names_are_escaped(tmp_path):
    t = pd.DataFrame({"id": [1], "=cmd|' /C calc'!A0": ["x"]})
    csv, prov = export_selection(t, [1], tmp_path / "x.csv", {})
    assert list(pd.read_csv(csv).columns) == ["id", "'=cmd|' /C calc'!A0"]
    assert json.loads(prov.read_text())["columns"] == ["id", "'=cmd|' /C calc'!A0"]


def test_provenance_record(table, tmp_path):
    given = {
        "dataset_path": "/data/universe", "dataset_fingerprint": "f" * 64,
        "model_name": "dawson2020", "model_hash": "abc123",
        "projection": {"kind": "pca", "components": 3},
        "lasso_polygon": np.array([[0.0, 0.0], [1.0, 0.0], [0.5, 1.0]]),
        "filters": {"kappa": [0.5, 1.0]}, "selection_mode": "add",
    }
    before = datetime.now(timezone.utc).replace(microsecond=0)
    csv, prov = export_selection(table, [11, 12], tmp_path / "p.csv", given)
    record = json.loads(prov.read_text())
    for key in (*PROVENANCE_KEYS, "created_utc", "galexplore_version", "row_count", "csv_sha256"):
        assert key in record
    assert record["model_name"] == "dawson2020" and record["selection_mode"] == "add"
    assert record["lasso_polygon"] == [[0.0, 0.0], [1.0, 0.0], [0.5, 1.0]]
    assert record["row_count"] == 2
    assert record["galexplore_version"] == galexplore.__version__
    assert record["csv_sha256"] == hashlib.sha256(csv.read_bytes()).hexdigest()
    created = datetime.fromisoformat(record["created_utc"])
    assert created.utcoffset() == timedelta(0)
    assert before <= created <= datetime.now(timezone.utc)
    record_missing = json.loads(export_selection(table, [11], tmp_path / "q", None)[1].read_text())
    assert all(record_missing[k] is None for k in PROVENANCE_KEYS)


def test_empty_selection_and_unknown_ids(table, tmp_path):
    with pytest.raises(SelectionError, match=r"select at least one galaxy \(lasso or box\) before exporting"):
        export_selection(table, [], tmp_path / "e.csv", {})
    with pytest.raises(SelectionError, match="are not in the table .*99"):
        export_selection(table, [10, 99], tmp_path / "e.csv", {})
    assert list(tmp_path.iterdir()) == []


def test_never_overwrites_unless_asked(table, tmp_path):
    csv, prov = export_selection(table, [10], tmp_path / "s.csv", {})
    first = csv.read_bytes()
    with pytest.raises(ParameterError, match="already exists"):
        export_selection(table, [11, 12], tmp_path / "s.csv", {})
    assert csv.read_bytes() == first
    prov.unlink()  # the CSV alone still blocks the export
    with pytest.raises(ParameterError, match="already exists"):
        export_selection(table, [11, 12], tmp_path / "s.csv", {})
    export_selection(table, [11, 12], tmp_path / "s.csv", {}, overwrite=True)
    assert pd.read_csv(csv)["id"].tolist() == [11, 12]
    assert json.loads(prov.read_text())["row_count"] == 2


def test_no_partial_files_after_a_failure(table, tmp_path, monkeypatch):
    real_commit = export_module._commit
    calls = []

    def commit_then_fail(tmp, final, overwrite):
        calls.append(final)
        if final.name.endswith(".provenance.json"):
            raise OSError("disk full")
        real_commit(tmp, final, overwrite)

    monkeypatch.setattr(export_module, "_commit", commit_then_fail)
    with pytest.raises(OSError, match="disk full"):
        export_selection(table, [10, 11], tmp_path / "f.csv", {})
    assert len(calls) == 2  # the CSV had been committed before the failure
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(TypeError, match="not JSON serialisable"):
        export_selection(table, [10], tmp_path / "f.csv", {"filters": object()})
    assert list(tmp_path.iterdir()) == []


def test_dataset_and_embedding_convenience(tmp_path):
    catalog = pd.DataFrame({"id": np.array([5, 6, 7], dtype=np.int64),
                            "galaxy_id": np.array([0, 0, 1], dtype=np.int64),
                            "view": [0, 1, 0], "kappa": [0.8, 0.6, 0.3]})
    with create_dataset(tmp_path / "ds", ["mom1"], {"mom1": "km/s"}) as writer:
        writer.append(np.zeros((3, 1, 64, 64), dtype=np.float32), catalog)
    dataset = open_dataset(tmp_path / "ds")
    embedding = pd.DataFrame({"id": [7, 5, 6], "latent_0": [0.7, 0.5, 0.6], "pred_kappa": [0.2, 0.9, 0.5]})
    csv, prov = galexplore.export_selection(dataset, [5, 7], tmp_path / "out.csv",
                                            {"model_name": "m"}, embedding=embedding)
    back = pd.read_csv(csv)
    assert list(back.columns) == ["id", "galaxy_id", "view", "kappa", "latent_0", "pred_kappa"]
    assert back["id"].tolist() == [5, 7] and back["latent_0"].tolist() == [0.5, 0.7]
    record = json.loads(prov.read_text())
    assert record["dataset_fingerprint"] == dataset.fingerprint
    assert record["dataset_path"] == str(dataset.path)
    with pytest.raises(ParameterError, match="embedding"):
        export_selection(dataset, [5], tmp_path / "x.csv", {})


@pytest.mark.parametrize("prefix", [" ", "  ", "\n", "\u200b", "\ufeff", " \u200d", "\u00a0", "\u2060"])
@pytest.mark.parametrize("formula", ["=1+1", "+1", "-1", "@A1"])
def test_formulas_behind_spaces_line_feeds_and_invisible_characters_are_escaped(prefix, formula, tmp_path):
    table = pd.DataFrame({"id": [1, 2], "name": [prefix + formula, "a " + formula]})
    csv, _ = export_selection(table, [1, 2], tmp_path / "f.csv", {})
    back = pd.read_csv(csv, keep_default_na=False)
    assert back["name"].tolist() == ["'" + prefix + formula, "a " + formula]


def test_provenance_is_strict_json_without_nan_or_infinity(table, tmp_path):
    given = {"filters": {"kappa": [float("-inf"), float("nan")]}, "boundary": np.float32("nan"),
             "lasso_polygon": np.array([[0.0, np.inf], [1.0, 0.0], [0.5, 1.0]])}
    _, prov = export_selection(table, [10], tmp_path / "n.csv", given)
    text = prov.read_text()
    assert "NaN" not in text and "Infinity" not in text
    record = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in the provenance"))
    assert record["filters"]["kappa"] == [None, None] and record["boundary"] is None
    assert record["lasso_polygon"][0] == [0.0, None]


def test_zip_holds_the_csv_units_and_provenance(table, tmp_path):
    import io
    import zipfile

    data = export_zip(table, [12, 10], "my selection", {"model_hash": "abc"},
                      column_units={"kappa": "", "v_sys": "km/s"})
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert sorted(archive.namelist()) == ["my_selection.csv", "my_selection.provenance.json"]
        csv_bytes = archive.read("my_selection.csv")
        record = json.loads(archive.read("my_selection.provenance.json"))
    back = pd.read_csv(io.BytesIO(csv_bytes), keep_default_na=False)
    assert back["id"].tolist() == [10, 12]
    assert record["column_units"]["v_sys"] == "km/s" and record["column_units"]["kappa"] == ""
    assert list(record["column_units"]) == list(back.columns)
    assert record["csv_sha256"] == hashlib.sha256(csv_bytes).hexdigest()
    assert record["model_hash"] == "abc" and record["versions"]["galexplore"] == galexplore.__version__
    assert list(tmp_path.iterdir()) == []  # nothing written
