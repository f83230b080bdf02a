"""`galexplore evaluate MODEL DATASET`: the papers' metrics for a model on a dataset.

Which metrics are reported depends on the model and on the catalogue columns present:

- 3-D latent spaces (the Dawson et al. 2020 CAE) with a ``kappa`` column: the TP = TN
  boundary in the folded plane with its bootstrap uncertainty, the confusion matrix and
  mean recall; with ``pa`` and ``inc`` columns, the position-angle calibration and its
  residual sigma per 5-degree inclination bin.
- Every model: Spearman / normalised MI / KS between latents and catalogue properties,
  and the mean reconstruction MSE where the model reconstructs.
- Regressors: bias and scatter in dex for ``log_*`` targets, Delta_MSE / Delta_MAE per
  radius for the ``log_mdm_*`` profile, distance and peculiar-velocity errors for
  ``distance`` / ``distance_z``.

When the model card records its held-out test split (``training_data.test_ids``, or
``split_seed`` and ``test_fraction`` of a split by galaxy on the same dataset), boundaries
and calibrations are fitted on the training rows and scored on the test rows, as in the
paper; otherwise everything uses all rows.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from galexplore.analysis.boundaries import ClassifierBoundary, VerticalBoundary
from galexplore.analysis.position_angle import PositionAngleCalibration, latent_angle
from galexplore.analysis.stats import (
    bias_scatter_dex,
    delta_mse_mae_per_radius,
    distance_metrics,
    latent_property_statistics,
    mean_recall,
    pa_residual_sigma_by_inclination,
)
from galexplore.errors import ColumnError

#: Inclination ranges [deg] whose PA error is also reported as a whole: 30-40 (the paper's
#: 32.5 deg, sigma 23 deg), 40-60 and above 60 (its 82.5 deg, sigma 17 deg).
PA_INCLINATION_RANGES = (30.0, 40.0, 60.0, 90.0)
#: Catalogue columns that are bookkeeping or observing setup, not galaxy properties.
NON_PROPERTY_COLUMNS = ("id", "galaxy_id", "view", "snr")
#: Latent-property statistics are computed for at most this many latents (the first ones,
#: which for the VAE are the most informative).
MAX_LATENTS_FOR_STATISTICS = 16


def evaluate_model(model, dataset, device: str = "auto", recipe: str | None = None) -> dict:
    """All metrics that apply to ``model`` on ``dataset``.

    Parameters
    ----------
    model : checkpoint directory, zoo name, or a loaded ``galexplore.analysis.embed.LoadedModel``.
    dataset : dataset directory or ``galexplore.data.Dataset``.
    device : "auto", "cpu" or "cuda" (used only when the embedding is not cached).
    recipe : preprocessing to use instead of the card's (see `LoadedModel`); not with a loaded model.

    Returns
    -------
    dict, JSON-serialisable (see `evaluate_embedding`).
    """
    from galexplore.analysis.embed import LoadedModel, load_or_compute_embedding
    from galexplore.data.dataset import Dataset, open_dataset

    loaded = model if isinstance(model, LoadedModel) else LoadedModel(model, device=device, recipe=recipe)
    ds = dataset if isinstance(dataset, Dataset) else open_dataset(dataset)
    table = load_or_compute_embedding(loaded, ds, device=device)
    report = evaluate_embedding(loaded.card, ds.catalog, table, dataset_fingerprint=ds.fingerprint)
    report["dataset"] = str(ds.path)
    return report


def _test_ids(card, catalog: pd.DataFrame, dataset_fingerprint: str | None) -> np.ndarray | None:
    """Catalogue ids of the card's held-out test rows, or None if the card names no split."""
    info = getattr(card, "training_data", None) or {}
    if "test_ids" in info:
        return np.asarray(info["test_ids"], dtype=np.int64)
    same_data = dataset_fingerprint is not None and info.get("dataset_fingerprint") == dataset_fingerprint
    if same_data and "split_seed" in info and "test_fraction" in info:
        from galexplore.training.samplers import split_by_galaxy

        # the training run split the rows with finite labels by galaxy (galexplore.training.loops)
        rows = np.arange(len(catalog))
        label_columns = info.get("label_columns") or {}
        label_columns = label_columns.values() if isinstance(label_columns, dict) else label_columns
        labels = [c for c in label_columns if c in catalog.columns]
        if labels:
            rows = np.flatnonzero(np.isfinite(catalog[labels].to_numpy(dtype=np.float64)).all(axis=1))
        groups = catalog["galaxy_id"] if "galaxy_id" in catalog.columns else catalog["id"]
        _, test_index = split_by_galaxy(groups.to_numpy()[rows], float(info["test_fraction"]),
                                        int(info["split_seed"]))
        return catalog["id"].to_numpy()[rows[test_index]]
    return None


def _records(frame: pd.DataFrame) -> list[dict]:
    return [{k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
            for row in frame.to_dict(orient="records")]


def evaluate_embedding(card, catalog: pd.DataFrame, embedding: pd.DataFrame,
                       dataset_fingerprint: str | None = None, n_bootstrap: int = 200) -> dict:
    """The metrics from an embedding table and its catalogue (no inference).

    Parameters
    ----------
    card : the model card (``name``, ``architecture``, ``extras``, ``training_data``).
    catalog : the dataset catalogue (``id`` column plus properties).
    embedding : the embedding table keyed by ``id`` (columns of docs/CONTRACTS.md).
    dataset_fingerprint : the dataset's fingerprint, to recognise the card's training data.
    n_bootstrap : bootstrap resamplings for the boundary uncertainty.

    Returns
    -------
    dict with ``model``, ``architecture``, ``n_rows``, ``split`` and, where they apply,
    ``reconstruction``, ``boundary``, ``classification``, ``position_angle``,
    ``latent_property_statistics``, ``regression``, ``dm_profile``, ``distance``.
    """
    for frame, what in ((catalog, "catalogue"), (embedding, "embedding")):
        if "id" not in frame.columns:
            raise ColumnError(f"the {what} has no 'id' column; rebuild it with galexplore (sample / embed)")
    pred_columns = [c for c in embedding.columns if c != "id" and c not in catalog.columns]
    rows = catalog.merge(embedding[["id", *pred_columns]], on="id", how="inner", validate="one_to_one")
    if rows.empty:
        raise ColumnError("the embedding and the catalogue share no ids: the embedding belongs to another "
                          "dataset; recompute it with `galexplore embed MODEL DATASET --force`")
    test_ids = _test_ids(card, catalog, dataset_fingerprint)
    test = rows["id"].isin(test_ids).to_numpy() if test_ids is not None else None
    if test is not None and (test.all() or not test.any()):
        test = None  # the card's split does not divide this dataset: score everything
    train = ~test if test is not None else np.ones(len(rows), dtype=bool)
    scored = test if test is not None else np.ones(len(rows), dtype=bool)
    report: dict = {
        "model": getattr(card, "name", "?"),
        "architecture": getattr(card, "architecture", "?"),
        "n_rows": int(len(rows)),
        "split": "test" if test is not None else "all",
        "n_scored": int(scored.sum()),
    }
    latent_columns = sorted((c for c in rows.columns if re.fullmatch(r"latent_\d+", c)),
                            key=lambda c: int(c.split("_")[1]))

    if "recon_mse" in rows.columns:
        recon = rows.loc[scored, "recon_mse"].to_numpy(dtype=np.float64)
        report["reconstruction"] = {"recon_mse_mean": float(np.nanmean(recon)),
                                    "recon_mse_median": float(np.nanmedian(recon))}

    if len(latent_columns) == 3 and "folded_r" in rows.columns and "kappa" in rows.columns:
        report.update(_dawson_metrics(card, rows, train, scored, n_bootstrap))

    if latent_columns:
        properties = rows.loc[scored, [c for c in catalog.columns
                                       if c not in NON_PROPERTY_COLUMNS and pd.api.types.is_numeric_dtype(catalog[c])]]
        latents = rows.loc[scored, latent_columns[:MAX_LATENTS_FOR_STATISTICS]]
        if len(latents) >= 4 and properties.shape[1]:
            table = latent_property_statistics(latents.reset_index(drop=True), properties.reset_index(drop=True))
            report["latent_property_statistics"] = _records(table)

    report.update(_regression_metrics(rows, scored))
    return report


def _dawson_metrics(card, rows: pd.DataFrame, train: np.ndarray, scored: np.ndarray, n_bootstrap: int) -> dict:
    """Boundary, confusion matrix and position angle of Dawson et al. (2020)."""
    extras = getattr(card, "extras", None) or {}
    published = extras.get("boundary") or {}
    threshold = float(published.get("kappa_threshold", 0.5))
    r = rows["folded_r"].to_numpy(dtype=np.float64)
    kappa = rows["kappa"].to_numpy(dtype=np.float64)
    out: dict = {}
    fitted = VerticalBoundary(kappa_threshold=threshold, n_bootstrap=n_bootstrap).fit(r[train], kappa[train])
    out["boundary"] = {"kappa_threshold": threshold, "fitted_position": fitted.position_,
                       "fitted_uncertainty": fitted.uncertainty_, "fitted_on": "train" if not train.all() else "all",
                       "card_position": float(published["folded_r"]) if "folded_r" in published else None}
    used = VerticalBoundary.from_position(published["folded_r"], threshold) if "folded_r" in published else fitted
    scores = used.metrics(r[scored], kappa[scored])
    out["classification"] = {
        "boundary_position": used.position_, "boundary_source": "card" if "folded_r" in published else "fitted",
        "confusion_matrix": scores["confusion_matrix"].tolist(), "mean_recall": scores["mean_recall"],
        "accuracy": scores["accuracy"], "n_positive": scores["n_positive"], "n_negative": scores["n_negative"],
    }
    out["latent_classifier"] = _latent_classifier_recall(rows, kappa > threshold, train, scored)
    pca_columns = ["pca_0", "pca_1", "pca_2"]
    pa_column = "pa_kin" if "pa_kin" in rows.columns else "pa"  # the kinematic PA, where the catalogue has it
    if all(c in rows.columns for c in pca_columns) and pa_column in rows.columns and "inc" in rows.columns:
        angle = latent_angle(rows[pca_columns].to_numpy(dtype=np.float64))
        pa = rows[pa_column].to_numpy(dtype=np.float64)
        card_calibration = extras.get("pa_calibration")
        if card_calibration:  # the model's own: every row is held out from it
            calibration = PositionAngleCalibration.from_params(card_calibration["sense"],
                                                               card_calibration["offset_deg"])
            source = "card"
        else:
            calibration = PositionAngleCalibration().fit(angle[train], pa[train])
            source = "fitted on train" if not train.all() else "fitted on all rows"
        residual = calibration.residuals(calibration.transform(angle[scored]), pa[scored])
        inc = rows["inc"].to_numpy(dtype=np.float64)[scored]
        by_inc = pa_residual_sigma_by_inclination(residual, inc)
        by_range = pa_residual_sigma_by_inclination(residual, inc, bins=PA_INCLINATION_RANGES)
        out["position_angle"] = {**calibration.to_dict(), "calibration": source, "against": pa_column,
                                 "sigma_deg": float(np.nanstd(residual, ddof=1)),
                                 "by_inclination": _records(by_inc[by_inc["n"] > 0]),
                                 "by_inclination_range": _records(by_range[by_range["n"] > 0])}
    return out


def _latent_classifier_recall(rows: pd.DataFrame, labels: np.ndarray, train: np.ndarray,
                              scored: np.ndarray) -> dict:
    """Mean recall of a gradient-boosted kappa classifier on the full latent vectors.

    The reference for the folded-radius boundary: how much kappa information the latents
    hold in any direction. Fitted on the training rows and scored on the test rows; without
    a split, 5-fold cross-validation grouped by galaxy (views of one galaxy never straddle folds).
    """
    from sklearn.model_selection import GroupKFold

    latents = rows[[c for c in rows.columns if re.fullmatch(r"latent_\d+", c)]].to_numpy(dtype=np.float64)
    y = labels.astype(int)
    if len(np.unique(y)) < 2:
        return {}
    if not np.array_equal(train, scored):  # the card's train/test split
        predicted = ClassifierBoundary("gradient_boosting").fit(latents[train], y[train]).predict(latents[scored])
        truth, how = y[scored], "train -> test"
    else:
        groups = rows["galaxy_id"].to_numpy() if "galaxy_id" in rows.columns else np.arange(len(rows))
        predicted = np.empty_like(y)
        for fit_rows, test_rows in GroupKFold(n_splits=5).split(latents, y, groups):
            model = ClassifierBoundary("gradient_boosting").fit(latents[fit_rows], y[fit_rows])
            predicted[test_rows] = model.predict(latents[test_rows])
        truth, how = y, "5-fold cross-validation by galaxy"
    return {"kind": "gradient_boosting", "scored_by": how, "mean_recall": mean_recall(truth, predicted)}


def _regression_metrics(rows: pd.DataFrame, scored: np.ndarray) -> dict:
    """Metrics of regressor outputs ``pred_<target>`` whose target is a catalogue column."""
    out: dict = {}
    targets = [c.removeprefix("pred_") for c in rows.columns
               if c.startswith("pred_") and c != "pred_class" and c.removeprefix("pred_") in rows.columns]
    sub = rows.loc[scored]
    profile = sorted(t for t in targets if re.fullmatch(r"log_mdm_\d+", t))
    for target in targets:
        if target.startswith("log_") and target not in profile:
            out.setdefault("regression", {})[target] = bias_scatter_dex(sub[f"pred_{target}"], sub[target])
    if profile:
        pred = sub[[f"pred_{t}" for t in profile]].to_numpy(dtype=np.float64)
        true = sub[profile].to_numpy(dtype=np.float64)
        delta_mse, delta_mae = delta_mse_mae_per_radius(pred, true)
        out["dm_profile"] = {"targets": profile, "delta_mse": delta_mse.tolist(), "delta_mae": delta_mae.tolist()}
    for target in ("distance", "distance_z"):
        if target in targets and "distance" in rows.columns:
            d_z = sub["distance_z"] if "distance_z" in rows.columns else None
            out.setdefault("distance", {})[target] = distance_metrics(sub[f"pred_{target}"], sub["distance"], d_z)
    return out


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if not np.isfinite(value) else f"{value:.4g}"
    return str(value)


def format_report(report: dict, top: int = 5) -> str:
    """Human-readable text of an `evaluate_model` report.

    Parameters
    ----------
    report : dict from `evaluate_model`.
    top : latent-property pairs listed per latent (largest |Spearman rho| first).
    """
    lines = [f"model {report['model']} ({report['architecture']}) on {report.get('dataset', 'dataset')}",
             f"rows: {report['n_rows']}; scored on: {report['split']} ({report['n_scored']} rows)"]
    if "reconstruction" in report:
        rec = report["reconstruction"]
        lines.append(f"reconstruction MSE: mean {_fmt(rec['recon_mse_mean'])}, median {_fmt(rec['recon_mse_median'])}")
    if "boundary" in report:
        b = report["boundary"]
        lines += ["", f"folded-plane boundary (kappa > {_fmt(b['kappa_threshold'])} positive, TP = TN crossing):",
                  f"  fitted on {b['fitted_on']}: r = {_fmt(b['fitted_position'])} +- {_fmt(b['fitted_uncertainty'])}"
                  f"; model card: {_fmt(b['card_position'])}"]
    if "classification" in report:
        c = report["classification"]
        (tn, fp), (fn, tp) = c["confusion_matrix"]
        lines += [f"classification with the {c['boundary_source']} boundary r = {_fmt(c['boundary_position'])}"
                  f" ({c['n_negative']} low-kappa, {c['n_positive']} high-kappa):",
                  "  normalised confusion matrix (rows true, columns predicted):",
                  f"    kappa < thr: {_fmt(tn)}  {_fmt(fp)}",
                  f"    kappa > thr: {_fmt(fn)}  {_fmt(tp)}",
                  f"  mean recall {_fmt(c['mean_recall'])}, accuracy {_fmt(c['accuracy'])}"]
    if report.get("latent_classifier"):
        lc = report["latent_classifier"]
        lines.append(f"  gradient boosting on the full latent vectors ({lc['scored_by']}): "
                     f"mean recall {_fmt(lc['mean_recall'])}")
    if "position_angle" in report:
        p = report["position_angle"]
        lines += ["", f"position angle: pa = {p['sense']:+d} x latent angle + {_fmt(p['offset_deg'])} deg; "
                      f"residual sigma {_fmt(p['sigma_deg'])} deg",
                  "  inc [deg]     n    mean   s.e.    std  sigma16-84"]
        for row in [*p["by_inclination"], *p.get("by_inclination_range", [])]:
            lines.append(f"  {row['inc_lo']:4.0f}-{row['inc_hi']:<4.0f} {row['n']:6d} {row['mean']:7.2f} "
                         f"{row['standard_error']:6.2f} {row['std']:6.2f} {row['sigma_16_84']:8.2f}")
    if "latent_property_statistics" in report:
        table = pd.DataFrame(report["latent_property_statistics"])
        lines += ["", "latents vs properties (Spearman rho, MI / MI_shuffled, KS top vs bottom quartile):"]
        for latent, group in table.groupby("latent", sort=False):
            best = group.reindex(group["spearman_rho"].abs().sort_values(ascending=False).index).head(top)
            cells = [f"{r.property} rho={_fmt(r.spearman_rho)} MI={_fmt(r.mi_normalised)} KS={_fmt(r.ks_statistic)}"
                     for r in best.itertuples()]
            lines.append(f"  {latent}: " + "; ".join(cells))
    if "regression" in report:
        lines += ["", "log-mass predictions (dex): bias, scatter, 16-84 half-width, n"]
        for target, m in report["regression"].items():
            lines.append(f"  {target}: {_fmt(m['bias'])}, {_fmt(m['scatter'])}, {_fmt(m['sigma_16_84'])}, {m['n']}")
    if "dm_profile" in report:
        d = report["dm_profile"]
        lines += ["", "dark-matter profile (dex): target Delta_MSE Delta_MAE"]
        lines += [f"  {t}: {_fmt(mse)} {_fmt(mae)}"
                  for t, mse, mae in zip(d["targets"], d["delta_mse"], d["delta_mae"])]
    if "distance" in report:
        lines.append("")
        for target, m in report["distance"].items():
            text = (f"distance from pred_{target} vs true D: RMS {_fmt(m['rms_mpc'])} Mpc "
                    f"({_fmt(100 * m['fractional_rms'])} % of mean D), L1 {_fmt(m['l1_mpc'])} Mpc")
            if "vp_rms_error_kms" in m:
                text += (f"; v_p = H0 (D_z - D_pred): RMS error {_fmt(m['vp_rms_error_kms'])} km/s "
                         f"(true v_p std {_fmt(m['vp_true_std_kms'])}), slope {_fmt(m['vp_slope'])}")
            lines.append(text)
    return "\n".join(lines)
