"""What an export of a selection holds: the selected rows with their units, and where they come
from (dataset fingerprint, model hash, projection, polygons, filters, the selection's
history, versions), as one zip for the browser or the command line."""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path

import numpy as np
import pandas as pd

from galexplore.errors import ParameterError, SelectionError
from galexplore.explorer.bundles import Bundle
from galexplore.explorer.selections import Selection


def provenance(bundle: Bundle, selection: Selection, projection: str | None = None,
               filters: dict | None = None) -> dict:
    """Where the selected rows come from (`galexplore.export.PROVENANCE_KEYS` and more)."""
    model = bundle.model
    axes = bundle.axes(projection) if projection is not None else (None, None)
    return {
        "dataset_path": str(bundle.dataset.path) if bundle.dataset is not None else None,
        "dataset_fingerprint": bundle.dataset.fingerprint if bundle.dataset is not None else None,
        "model_name": model.name if model is not None else None,
        "model_path": str(model.path) if model is not None else None,
        "model_hash": model.hash if model is not None else None,
        "projection": {"name": projection, "x": axes[0], "y": axes[1],
                       "projector": bundle.projector.to_dict() if bundle.projector is not None else None,
                       "kappa_threshold": bundle.kappa_threshold, "boundary_folded_r": bundle.boundary_r},
        "lasso_polygon": None if selection.polygon is None else np.asarray(selection.polygon).tolist(),
        "filters": {k: list(v) for k, v in (filters or {}).items()},
        "selection_history": list(selection.history),
        "n_selected": selection.size,
        "time_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def selection_zip(bundle: Bundle, selection: Selection, projection: str | None = None,
                  filters: dict | None = None, name: str = "selection") -> bytes:
    """The selection as a zip of ``<name>.csv`` and ``<name>.provenance.json`` (with the unit
    of every column); nothing is written to disk."""
    from galexplore.export import export_zip

    if selection.size == 0:
        raise SelectionError("nothing is selected; lasso or box-select galaxies before exporting")
    ids = bundle.column("id")[selection.rows]
    return export_zip(bundle.frame(rows=selection.rows), ids, name, provenance(bundle, selection, projection, filters),
                      column_units=bundle.column_units)


def rows_from_ids_file(bundle: Bundle, path: str | os.PathLike) -> np.ndarray:
    """Rows of the ids listed in a text file (one integer per line, or a CSV with an ``id``
    column); ParameterError for an unreadable file or ids not in the table."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ParameterError(f"cannot read the ids file {path.name!r} ({error}); give a text file of ids") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if lines and lines[0].split(",")[0].strip().lower() == "id":
        frame = pd.read_csv(path)
        values = frame["id"].tolist()
    else:
        values = lines
    try:
        ids = np.array([int(str(v).split(",")[0]) for v in values], dtype=np.int64)
    except ValueError:
        raise ParameterError(f"{path.name!r} must hold one integer id per line "
                             "(or a CSV with an 'id' column)") from None
    table_ids = bundle.column("id")
    missing = np.setdiff1d(ids, table_ids)
    if missing.size:
        raise SelectionError(f"{missing.size} id(s) of {path.name!r} are not in the dataset "
                             f"({', '.join(map(str, missing[:5]))}{', ...' if missing.size > 5 else ''})")
    return np.flatnonzero(np.isin(table_ids, ids))


def rows_from_query(bundle: Bundle, expression: str) -> np.ndarray:
    """Rows where a pandas query on the joined table holds, e.g. ``"kappa < 0.5 and pred_class == 1"``.

    Only column names, numbers, comparisons and ``and``/``or``/``not`` are allowed (no
    function calls, attributes or ``@`` variables)."""
    import re

    calls = {m.group(1) for m in re.finditer(r"\b([A-Za-z_]\w*)\s*\(", expression)} - {"and", "or", "not"}
    if calls or re.search(r"[@`\[\]]|__|\.\s*[A-Za-z_]", expression):
        raise ParameterError("a query may use column names, numbers, comparisons and and/or/not only; "
                             f"{expression!r} holds something else")
    named = [c for c in bundle.columns if re.search(rf"(?<![\w.]){re.escape(c)}(?!\w)", expression)]
    try:
        mask = bundle.frame(named).eval(expression, engine="python")
    except Exception as error:  # noqa: BLE001 -- pandas raises many types for a bad expression
        raise ParameterError(f"cannot evaluate the query {expression!r}: {error}") from None
    if not (isinstance(mask, pd.Series) and mask.dtype == bool):
        raise ParameterError(f"the query {expression!r} must give true or false for each row, "
                             "e.g. 'kappa < 0.5'")
    return np.flatnonzero(mask.to_numpy())


def export_command(dataset: str | os.PathLike, model: str | os.PathLike, out: str | os.PathLike,
                   ids_file: str | os.PathLike | None = None, query: str | None = None,
                   status_callback=None) -> list[Path]:
    """`galexplore export`: the rows of ``dataset`` chosen by an ids file or a query, with
    ``model``'s embedding, written as a zip (``out`` ending in ``.zip``) or as a CSV with its
    provenance JSON beside it. Returns the files written (existing files are never replaced)."""
    from galexplore.explorer.bundles import build_bundle
    from galexplore.export import export_selection

    if (ids_file is None) == (query is None):
        raise ParameterError("choose the rows with exactly one of --ids FILE or --query EXPR")
    bundle = build_bundle(dataset, model, status_callback=status_callback)
    if ids_file is not None:
        rows, step = rows_from_ids_file(bundle, ids_file), {"mode": "new", "ids_file": Path(ids_file).name}
    else:
        rows, step = rows_from_query(bundle, query), {"mode": "new", "query": query}
    if rows.size == 0:
        raise SelectionError("no row matches; nothing to export")
    selection = Selection(rows=rows, history=(step,))
    out = Path(out)
    if out.suffix.lower() == ".zip":
        if out.exists():
            raise ParameterError(f"{out} already exists; choose another file name")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(selection_zip(bundle, selection, name=out.stem))
        return [out]
    ids = bundle.column("id")[rows]
    return list(export_selection(bundle.frame(rows=rows), ids, out, provenance(bundle, selection),
                                 column_units=bundle.column_units))
