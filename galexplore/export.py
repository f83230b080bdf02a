"""Export a selection of galaxies as a spreadsheet-safe CSV with a provenance record beside it.

``export_selection`` writes ``<name>.csv`` (``id`` first, then the catalogue columns, then the
latent/projection columns, then the ``pred_*`` columns) and ``<name>.provenance.json`` (where
the rows came from). Strings a spreadsheet would run as a formula (starting with ``=``, ``+``,
``-``, ``@``, tab or carriage return) are prefixed with a single quote; numeric columns are
written as numbers, so ``-3.5`` stays ``-3.5``. Both files appear atomically, and an
existing file is never replaced unless ``overwrite=True``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
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

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
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
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _commit(tmp: Path, final: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, final)
    else:
        os.link(tmp, final)  # atomic, and fails if final exists
        os.unlink(tmp)


def export_selection(table, ids, path, provenance: Mapping | None = None, *,
                     embedding: pd.DataFrame | None = None,
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
    from galexplore import __version__

    csv_path = Path(path)
    if csv_path.suffix.lower() != ".csv":
        csv_path = csv_path.with_name(csv_path.name + ".csv")
    prov_path = csv_path.with_name(csv_path.stem + ".provenance.json")

    joined = _joined_table(table, embedding)
    rows = _rows_for(joined, ids)
    columns = _column_order([str(c) for c in joined.columns])
    rows = _spreadsheet_safe(rows[columns])

    record = dict.fromkeys(PROVENANCE_KEYS) | dict(provenance or {})
    if isinstance(table, Dataset):
        record["dataset_path"] = record["dataset_path"] or str(table.path)
        record["dataset_fingerprint"] = record["dataset_fingerprint"] or table.fingerprint
    json.dumps(record, default=_jsonable)  # fail on an unserialisable value before writing anything
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
        with open(tmp_csv, "w", newline="", encoding="utf-8") as fh:
            rows.to_csv(fh, index=False, lineterminator="\r\n")  # RFC 4180; quotes fields with CR or LF
        record.update(
            created_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            galexplore_version=__version__,
            row_count=int(len(rows)),
            columns=[str(c) for c in rows.columns],
            csv_file=csv_path.name,
            csv_sha256=_sha256(tmp_csv),
        )
        tmp_prov.write_text(json.dumps(record, indent=2, default=_jsonable) + "\n", encoding="utf-8")
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


def _jsonable(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (Path, os.PathLike)):
        return os.fspath(value)
    raise TypeError(f"provenance value of type {type(value).__name__} is not JSON serialisable; "
                    "pass numbers, strings, lists or dicts")
