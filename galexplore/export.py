"""Export a selection of galaxies as a spreadsheet-safe CSV with a provenance record beside it.

``export_selection`` writes ``<name>.csv`` (``id`` first, then the catalogue columns, then the
latent/projection columns, then the ``pred_*`` columns) and ``<name>.provenance.json`` (where
the rows came from, and the unit of every column). ``export_zip`` returns the same two files
as one zip archive in memory (the explorer's download; no file is written on the server).

Strings a spreadsheet would run as a formula are prefixed with a single quote: those that
start with ``=``, ``+``, ``-``, ``@``, tab, carriage return or line feed, also after leading
spaces or invisible characters (zero-width spaces, byte-order marks, ...), which spreadsheets
skip. Numeric columns are written as numbers, so ``-3.5`` stays ``-3.5``. The provenance is
strict JSON: NaN and infinite numbers are written as null. Both files appear atomically, and
an existing file is never replaced unless ``overwrite=True``.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import tempfile
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from galexplore.data.dataset import Dataset
from galexplore.errors import ColumnError, ParameterError, SelectionError

PROVENANCE_KEYS = ("dataset_path", "dataset_fingerprint", "model_name", "model_hash",
                   "projection", "lasso_polygon", "filters")
"""Keys the caller's provenance should give (written as null when missing); other keys are kept."""

#: A cell a spreadsheet may evaluate: a formula character after any run of whitespace and
#: invisible format characters (zero-width space/joiners, direction marks, word joiner, BOM),
#: or a leading tab, CR or LF.
_FORMULA = re.compile("^(?:[\\s\u00a0\u180e\u200b-\u200f\u2028-\u202f\u205f-\u2064\u3000\ufeff]*[=+\\-@]"
                      "|[\t\r\n])")
_EMBEDDING_COLUMN = re.compile(r"(latent|pca|umap)_\d+|folded_[rh]|pa_latent|recon_mse")


def _column_order(columns: list[str]) -> list[str]:
    """``id``, catalogue columns, latent/projection columns, then ``pred_*``; stable within groups."""
    rest = [c for c in columns if c != "id"]
    predictions = [c for c in rest if c.startswith("pred_")]
    embedding = [c for c in rest if _EMBEDDING_COLUMN.fullmatch(c)]
    catalogue = [c for c in rest if c not in set(predictions) | set(embedding)]
    return ["id", *catalogue, *embedding, *predictions]


def _escape_formula(value):
    """Prefix a quote to strings a spreadsheet would evaluate; anything else is returned as is."""
    if isinstance(value, str) and _FORMULA.match(value):
        return "'" + value
    return value


def _spreadsheet_safe(table: pd.DataFrame) -> pd.DataFrame:
    """Escape formula-like strings in text columns and column names; numbers are untouched."""
    out = {}
    for name in table.columns:
        col = table[name]
        numeric = (pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col)
                   or pd.api.types.is_datetime64_any_dtype(col))
        if not numeric:
            col = col.astype(object).map(_escape_formula)
        out[_escape_formula(str(name))] = col
    return pd.DataFrame(out, index=table.index)


def _joined_table(table, embedding: pd.DataFrame | None) -> pd.DataFrame:
    catalogue = table.catalog if isinstance(table, Dataset) else table
    if not isinstance(catalogue, pd.DataFrame):
        raise ParameterError(
            f"export_selection needs a DataFrame or a Dataset, got {type(table).__name__}"
        )
    if "id" not in catalogue.columns:
        raise ColumnError("the table has no 'id' column; export the catalogue joined with its embedding")
    if embedding is None:
        if isinstance(table, Dataset):
            raise ParameterError("exporting from a Dataset needs its embedding: pass embedding=DataFrame")
        return catalogue
    if "id" not in embedding.columns:
        raise ColumnError("the embedding has no 'id' column; load it with galexplore.analysis.embed")
    shared = sorted(set(catalogue.columns) & set(embedding.columns) - {"id"})
    if shared:
        raise ColumnError(
            f"the catalogue and the embedding both have columns {shared}; drop them from one"
        )
    return catalogue.merge(embedding, on="id", how="inner", validate="one_to_one")


def _rows_for(table: pd.DataFrame, ids) -> pd.DataFrame:
    ids = np.unique(np.asarray(ids).ravel())
    if ids.size == 0:
        raise SelectionError("select at least one galaxy (lasso or box) before exporting")
    if not np.issubdtype(ids.dtype, np.integer):
        raise ParameterError(f"ids must be integer catalogue ids, got dtype {ids.dtype}")
    table_ids = table["id"].to_numpy()
    if pd.Series(table_ids).duplicated().any():
        raise ParameterError("the table has duplicate ids; export from a table keyed by a unique 'id'")
    missing = np.setdiff1d(ids, table_ids)
    if missing.size:
        shown = ", ".join(str(i) for i in missing[:5]) + (", ..." if missing.size > 5 else "")
        raise SelectionError(
            f"{missing.size} selected id(s) are not in the table ({shown}); "
            "the selection belongs to another dataset or embedding: select again"
        )
    return table[np.isin(table_ids, ids)]  # table order


def _commit(tmp: Path, final: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, final)
    else:
        os.link(tmp, final)  # atomic, and fails if final exists
        os.unlink(tmp)


def _prepare(table, ids, provenance: Mapping | None, embedding: pd.DataFrame | None,
             column_units: Mapping[str, str] | None) -> tuple[pd.DataFrame, dict]:
    """The escaped rows to write and the provenance record (without the CSV's digest)."""
    from galexplore import __version__

    joined = _joined_table(table, embedding)
    rows = _rows_for(joined, ids)
    columns = _column_order([str(c) for c in joined.columns])
    units = dict(column_units or {})
    if isinstance(table, Dataset) and not units:
        units = table.column_units
    record = dict.fromkeys(PROVENANCE_KEYS) | dict(provenance or {})
    if isinstance(table, Dataset):
        record["dataset_path"] = record["dataset_path"] or str(table.path)
        record["dataset_fingerprint"] = record["dataset_fingerprint"] or table.fingerprint
    record["column_units"] = {c: units.get(c, "") for c in columns}
    record["galexplore_version"] = __version__
    record["versions"] = {"galexplore": __version__, **_library_versions()}
    _json_text(record)  # fail on an unserialisable value before writing anything
    return _spreadsheet_safe(rows[columns]), record


def _library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("numpy", "pandas", "torch", "scikit-learn", "umap-learn"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def _finish(record: dict, rows: pd.DataFrame, csv_name: str, csv_bytes: bytes) -> dict:
    return {**record, "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "row_count": int(len(rows)), "columns": [str(c) for c in rows.columns], "csv_file": csv_name,
            "csv_sha256": hashlib.sha256(csv_bytes).hexdigest()}


def _csv_bytes(rows: pd.DataFrame) -> bytes:
    buffer = io.StringIO()
    rows.to_csv(buffer, index=False, lineterminator="\r\n")  # RFC 4180; quotes fields with CR or LF
    return buffer.getvalue().encode("utf-8")


def export_zip(table, ids, name: str = "selection", provenance: Mapping | None = None, *,
               embedding: pd.DataFrame | None = None, column_units: Mapping[str, str] | None = None) -> bytes:
    """The selected galaxies as a zip archive: ``<name>.csv`` and ``<name>.provenance.json``.

    Same rows, columns, escaping and provenance as `export_selection`; nothing is written
    to disk. ``column_units`` (column -> unit) goes into the provenance as ``column_units``.

    Returns
    -------
    bytes of the zip archive.
    """
    name = _safe_stem(name)
    rows, record = _prepare(table, ids, provenance, embedding, column_units)
    csv_bytes = _csv_bytes(rows)
    record = _finish(record, rows, f"{name}.csv", csv_bytes)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{name}.csv", csv_bytes)
        archive.writestr(f"{name}.provenance.json", _json_text(record))
    return buffer.getvalue()


def _safe_stem(name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._") or "selection"
    return stem[:80]


def export_selection(table, ids, path, provenance: Mapping | None = None, *,
                     embedding: pd.DataFrame | None = None, column_units: Mapping[str, str] | None = None,
                     overwrite: bool = False) -> tuple[Path, Path]:
    """Write the selected galaxies to CSV and their provenance to JSON beside it.

    Parameters
    ----------
    table : pandas.DataFrame or galexplore.data.Dataset
        The catalogue joined with the embedding, one row per unique ``id``; or a Dataset,
        whose catalogue is joined with ``embedding`` on ``id``.
    ids : array_like of int
        Catalogue ids of the selected galaxies (duplicates ignored). Rows are written in
        table order.
    path : path
        The CSV file; ``.csv`` is appended when missing. The provenance goes to
        ``<name>.provenance.json`` in the same directory (created when missing).
    provenance : mapping, optional
        Where the rows come from: :data:`PROVENANCE_KEYS` (``dataset_path``,
        ``dataset_fingerprint``, ``model_name``, ``model_hash``, ``projection`` parameters,
        ``lasso_polygon`` vertices, ``filters``) plus any other JSON values. Dataset path and
        fingerprint default to those of a Dataset ``table``.
    embedding : pandas.DataFrame, optional
        Embedding table (``id``, ``latent_*``, projections, ``pred_*``) joined to ``table``.
    column_units : mapping, optional
        Unit of each column, written to the provenance as ``column_units`` (a Dataset's
        catalogue units by default).
    overwrite : bool
        Replace existing files; otherwise an existing CSV or provenance file is an error.

    Returns
    -------
    (csv_path, provenance_path) : tuple of pathlib.Path

    Raises
    ------
    SelectionError
        ``ids`` is empty or names galaxies that are not in the table.
    ParameterError
        A target file exists and ``overwrite`` is False.
    """
    csv_path = Path(path)
    if csv_path.suffix.lower() != ".csv":
        csv_path = csv_path.with_name(csv_path.name + ".csv")
    prov_path = csv_path.with_name(csv_path.stem + ".provenance.json")

    rows, record = _prepare(table, ids, provenance, embedding, column_units)
    for name in (csv_path, prov_path):
        if name.exists() and not overwrite:
            raise ParameterError(f"{name} already exists; choose another file name or pass overwrite=True")

    csv_path.parent.mkdir(parents=True, exist_ok=True)
    temporaries = []
    committed = []
    try:
        for final in (csv_path, prov_path):
            fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp-export")
            os.close(fd)
            temporaries.append(Path(tmp))
        tmp_csv, tmp_prov = temporaries
        csv_bytes = _csv_bytes(rows)
        tmp_csv.write_bytes(csv_bytes)
        tmp_prov.write_text(_json_text(_finish(record, rows, csv_path.name, csv_bytes)), encoding="utf-8")
        for tmp, final in ((tmp_csv, csv_path), (tmp_prov, prov_path)):
            try:
                _commit(tmp, final, overwrite)
            except FileExistsError:
                raise ParameterError(
                    f"{final} appeared while exporting; choose another file name or pass overwrite=True"
                ) from None
            committed.append(final)
    except BaseException:
        if not overwrite:  # never leave half an export; replaced files cannot be restored anyway
            for final in committed:
                final.unlink(missing_ok=True)
        raise
    finally:
        for tmp in temporaries:
            tmp.unlink(missing_ok=True)
    return csv_path, prov_path


def _finite(value):
    """``value`` with NumPy types made plain and NaN or infinite floats replaced by None."""
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, np.ndarray):
        return _finite(value.tolist())
    if isinstance(value, np.generic):
        return _finite(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (Path, os.PathLike)):
        return os.fspath(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"provenance value of type {type(value).__name__} is not JSON serialisable; "
                    "pass numbers, strings, lists or dicts")


def _json_text(record: Mapping) -> str:
    """Strict JSON (no NaN or Infinity) of a provenance record."""
    return json.dumps(_finite(dict(record)), indent=2, allow_nan=False) + "\n"
