"""The numbers behind the Statistics tab: the papers' figures on every map or on a selection.

- Dawson et al. (2020) Figs 7-8: TP/TN/FP/FN rates against the folded-radius boundary
  position, and the row-normalised confusion matrix at the model's boundary, with the
  kappa threshold of the model card.
- Dawson et al. (2020) Figs 10-11: latent against true position angle, and the PA error
  against inclination (mean and standard error in 5-degree bins).
- Gim, Moon & Yoon (Fig. 6): Spearman rho and normalised mutual information of every
  latent against every catalogue property.
- Chu et al. (2024): predicted against true for every regressor output with a catalogue twin.

`compute` takes seconds for the sample (the mutual information's shuffles dominate): the
explorer runs it off its event loop. It says exactly which rows it used.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from galexplore.analysis.boundaries import VerticalBoundary
from galexplore.analysis.position_angle import PositionAngleCalibration
from galexplore.analysis.stats import bias_scatter_dex, latent_property_statistics, pa_residual_sigma_by_inclination
from galexplore.errors import SelectionError
from galexplore.explorer.bundles import Bundle, latent_columns

#: Rows above which the latent-property statistics use a random subsample (stated in the page).
MAX_CORRELATION_ROWS = 20_000
#: Shuffles of each property for the normalised mutual information (as `galexplore evaluate`).
N_SHUFFLES = 50
INC_COLUMNS = ("inc", "inc_deg", "inclination")
PA_COLUMNS = ("pa", "pa_deg", "position_angle")
#: Catalogue columns left out of the latent-property heatmaps (identifiers, not properties).
NOT_PROPERTIES = ("id", "galaxy_id", "view")
EMBEDDING_PREFIXES = ("latent_", "pca_", "folded_", "umap_", "pred_", "proba_")


def _first(columns, candidates) -> str | None:
    return next((c for c in candidates if c in columns), None)


@dataclass
class Statistics:
    """The Statistics tab's figures as numbers.

    Attributes
    ----------
    description : exactly what was computed on, for the page.
    boundary : Figs 7-8 (``curves``, ``crossing``, ``position``, ``position_source``,
        ``threshold``, ``confusion``, ``mean_recall``), or None.
    position_angle : Figs 10-11 (``pa_true``, ``pa_latent``, ``by_inclination``), or None.
    correlations : Fig. 6 table (`latent_property_statistics`), or None.
    correlation_note : rows and shuffles behind ``correlations``.
    masses : one dict per regressor output: ``target``, ``true``, ``predicted``, ``bias``, ``scatter``.
    """

    description: str
    boundary: dict | None = None
    position_angle: dict | None = None
    correlations: pd.DataFrame | None = None
    correlation_note: str = ""
    masses: list[dict] = field(default_factory=list)


def compute(bundle: Bundle, rows: np.ndarray | None = None, seed: int = 0) -> Statistics:
    """The papers' figures on ``rows`` of ``bundle``'s table (None: every row)."""
    if rows is not None and len(rows) == 0:
        raise SelectionError("the selection is empty; select galaxies or compute on every map")
    table = bundle.frame(rows=rows)
    n_galaxies = table["galaxy_id"].nunique() if "galaxy_id" in table.columns else len(table)
    scope = "the selection" if rows is not None else "every map"
    out = Statistics(description=f"Computed on {scope}: {len(table):,} maps of {n_galaxies:,} galaxies.")
    columns = set(table.columns)
    if {"folded_r", "kappa"} <= columns:
        out.boundary = _boundary(table, bundle)
    pa = _first(columns, PA_COLUMNS)
    if pa and "pa_latent" in columns:
        inc = _first(columns, INC_COLUMNS)
        pa_true, pa_latent = table[pa].to_numpy(np.float64), table["pa_latent"].to_numpy(np.float64)
        binned = None
        if inc is not None:
            residual = PositionAngleCalibration.residuals(pa_latent, pa_true)
            binned = pa_residual_sigma_by_inclination(residual, table[inc].to_numpy(np.float64)).dropna(subset=["mean"])
        out.position_angle = {"pa_true": pa_true, "pa_latent": pa_latent, "by_inclination": binned}
    if latent_columns(table):
        out.correlations, out.correlation_note = _correlations(table, seed)
    out.masses = _masses(table)
    return out


def _boundary(table: pd.DataFrame, bundle: Bundle) -> dict | None:
    r, kappa = table["folded_r"].to_numpy(np.float64), table["kappa"].to_numpy(np.float64)
    threshold = bundle.kappa_threshold
    positive = kappa[np.isfinite(kappa) & np.isfinite(r)] > threshold
    if positive.all() or not positive.any():
        return None
    fitted = VerticalBoundary(kappa_threshold=threshold, n_bootstrap=0).fit(r, kappa)
    position = bundle.boundary_r
    source = "the model card" if position is not None else "the TP = TN crossing of these maps"
    position = fitted.position_ if position is None else position
    metrics = VerticalBoundary.from_position(position, threshold).metrics(r, kappa)
    return {"curves": fitted.curves_, "crossing": float(fitted.position_), "position": float(position),
            "position_source": source, "threshold": threshold, "confusion": metrics["confusion_matrix"],
            "mean_recall": float(metrics["mean_recall"])}


def _correlations(table: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, str]:
    used = table if len(table) <= MAX_CORRELATION_ROWS else table.sample(MAX_CORRELATION_ROWS, random_state=seed)
    latents = used[latent_columns(used)]
    properties = used[[c for c in used.columns if not c.startswith(EMBEDDING_PREFIXES)
                       and c not in NOT_PROPERTIES and c not in ("pa_latent", "recon_mse")
                       and pd.api.types.is_numeric_dtype(used[c]) and not pd.api.types.is_bool_dtype(used[c])]]
    stats = latent_property_statistics(latents.reset_index(drop=True), properties.reset_index(drop=True),
                                       n_shuffles=N_SHUFFLES, random_state=seed)
    which = f"all {len(used):,} maps" if len(used) == len(table) else \
        f"a random {len(used):,} of the {len(table):,} maps (seed {seed})"
    return stats, f"On {which}; mutual information divided by its mean over {N_SHUFFLES} shuffles of the property."


def _masses(table: pd.DataFrame) -> list[dict]:
    panels = []
    for column in table.columns:
        target = column.removeprefix("pred_")
        if not column.startswith("pred_") or target not in table.columns or target == "class":
            continue
        pred, true = table[column].to_numpy(np.float64), table[target].to_numpy(np.float64)
        ok = np.isfinite(pred) & np.isfinite(true)
        if ok.sum() < 2:
            continue
        figures = bias_scatter_dex(pred[ok], true[ok])
        panels.append({"target": target, "true": true[ok], "predicted": pred[ok], "bias": figures["bias"],
                       "scatter": figures["scatter"]})
    return panels
