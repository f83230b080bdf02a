"""The papers' metrics.

- Dawson et al. 2020 (000): normalised confusion matrix, mean recall (Fig. 8), position-angle
  error per inclination bin (Fig. 11).
- Gim, Moon & Yoon (004): Spearman rho, mutual information normalised by the mean of 50
  shuffled MIs, Kolmogorov-Smirnov statistic between latents and properties.
- Chu et al. 2024 (002): bias and 1-sigma scatter of log(pred / true) in dex.
- de los Rios et al. (001): Delta_MSE and Delta_MAE per radius (eqs. 2-3).
- Quigley, Hori & Croft (003): distance errors and peculiar velocities v_p = H0 (D_z - D_pred).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from galexplore.errors import ParameterError

H0_KMS_MPC = 70.0


def _paired(a, b, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ParameterError(f"{names[0]} and {names[1]} must have the same shape, got {a.shape} and {b.shape}")
    return a, b


def confusion_matrix(true, pred, normalize: bool = True, labels=None) -> np.ndarray:
    """Confusion matrix with rows = true class and columns = predicted class.

    Parameters
    ----------
    true, pred : array_like (n,), class labels.
    normalize : bool
        Divide each row by its total, so the diagonal holds each class's recall (as in
        Dawson et al. Fig. 8). A class with no members gives a row of NaN.
    labels : sequence, optional
        Class order; default the sorted union of the labels present.
    """
    true = np.asarray(true).ravel()
    pred = np.asarray(pred).ravel()
    if true.shape != pred.shape:
        raise ParameterError(f"true and pred must have the same length, got {true.size} and {pred.size}")
    labels = np.unique(np.concatenate([true, pred])) if labels is None else np.asarray(labels)
    index = {label: i for i, label in enumerate(labels.tolist())}
    unknown = set(np.unique(true).tolist()) | set(np.unique(pred).tolist())
    unknown -= set(index)
    if unknown:
        raise ParameterError(f"labels {sorted(unknown)} are not in the class list {labels.tolist()}")
    k = len(labels)
    counts = np.zeros((k, k), dtype=np.float64)
    np.add.at(counts, ([index[t] for t in true.tolist()], [index[p] for p in pred.tolist()]), 1.0)
    if not normalize:
        return counts
    totals = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return counts / totals


def mean_recall(true, pred, labels=None) -> float:
    """Mean over classes of the recall (the diagonal of the row-normalised confusion matrix);
    classes with no members are left out."""
    return float(np.nanmean(np.diag(confusion_matrix(true, pred, normalize=True, labels=labels))))


def pa_residual_sigma_by_inclination(residual, inc, bins=None) -> pd.DataFrame:
    """Position-angle error per inclination bin (Dawson et al. Fig. 11).

    Parameters
    ----------
    residual : array_like (n,), predicted - true PA in degrees, wrapped to (-180, 180].
    inc : array_like (n,), inclination in degrees.
    bins : array_like, optional
        Bin edges in degrees; default 5-degree bins from 0 to 90 (the paper's width). The
        last bin includes its upper edge.

    Returns
    -------
    DataFrame with one row per bin: ``inc_lo``, ``inc_hi``, ``n``, ``mean`` and
    ``standard_error`` (the paper's markers and error bars), ``std`` and ``sigma_16_84``
    (half the 16th-84th percentile range), all in degrees.
    """
    residual, inc = _paired(residual, inc, ("residual", "inc"))
    edges = np.arange(0.0, 90.0 + 5.0, 5.0) if bins is None else np.asarray(bins, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise ParameterError("bins must be at least two increasing inclination edges in degrees")
    which = np.searchsorted(edges, inc, side="right") - 1
    which[inc == edges[-1]] = edges.size - 2
    rows = []
    for k in range(edges.size - 1):
        values = residual[(which == k) & np.isfinite(residual)]
        n = values.size
        if n > 1:
            lo, hi = np.percentile(values, [16.0, 84.0])
        rows.append({
            "inc_lo": edges[k], "inc_hi": edges[k + 1], "n": n,
            "mean": values.mean() if n else np.nan,
            "standard_error": values.std(ddof=1) / np.sqrt(n) if n > 1 else np.nan,
            "std": values.std(ddof=1) if n > 1 else np.nan,
            "sigma_16_84": 0.5 * (hi - lo) if n > 1 else np.nan,
        })
    return pd.DataFrame(rows)


def bias_scatter_dex(pred, true) -> dict:
    """Bias and scatter of log10(pred / true) for log-mass predictions (Chu et al. 2024).

    Parameters
    ----------
    pred, true : array_like (n,), log10 masses (dex). NaN pairs are ignored.

    Returns
    -------
    dict: ``bias`` (mean of pred - true), ``scatter`` (its standard deviation),
    ``sigma_16_84`` (half the 16th-84th percentile range), ``n``; all in dex.
    """
    pred, true = _paired(pred, true, ("pred", "true"))
    diff = (pred - true)[np.isfinite(pred) & np.isfinite(true)]
    if diff.size < 2:
        raise ParameterError(f"bias and scatter need at least 2 finite (pred, true) pairs, got {diff.size}")
    lo, hi = np.percentile(diff, [16.0, 84.0])
    return {"bias": float(diff.mean()), "scatter": float(diff.std(ddof=1)),
            "sigma_16_84": float(0.5 * (hi - lo)), "n": int(diff.size)}


def delta_mse_mae_per_radius(pred, true) -> tuple[np.ndarray, np.ndarray]:
    """Delta_MSE and Delta_MAE of de los Rios et al. (eqs. 2-3) at each radius.

    Parameters
    ----------
    pred, true : array_like (n_galaxies, n_radii), log10 enclosed dark-matter mass (dex).
        NaN entries are left out of their radius.

    Returns
    -------
    delta_mse : ndarray (n_radii,), root mean squared error (dex).
    delta_mae : ndarray (n_radii,), mean absolute error (dex).
    """
    pred, true = _paired(pred, true, ("pred", "true"))
    if pred.ndim != 2:
        raise ParameterError(f"pred and true must be (n_galaxies, n_radii), got shape {pred.shape}")
    diff = pred - true
    with np.errstate(invalid="ignore"):
        return np.sqrt(np.nanmean(diff**2, axis=0)), np.nanmean(np.abs(diff), axis=0)


def distance_metrics(d_pred, d_true, d_z=None, h0: float = H0_KMS_MPC) -> dict:
    """Distance and peculiar-velocity errors of Quigley, Hori & Croft.

    Parameters
    ----------
    d_pred : array_like (n,), predicted distance (Mpc).
    d_true : array_like (n,), true distance D (Mpc).
    d_z : array_like (n,), optional, redshift distance D_z = cz / H0 (Mpc).
    h0 : float, Hubble constant (km/s/Mpc).

    Returns
    -------
    dict with ``n``, ``rms_mpc`` and ``l1_mpc`` (against D), ``fractional_rms`` (rms_mpc / mean D,
    the paper's "% of the average distance") and ``rms_fractional`` (RMS of (D_pred - D) / D).
    With ``d_z``: ``rms_mpc_vs_dz``, ``l1_mpc_vs_dz``, ``vp_rms_error_kms`` (RMS of
    v_p,pred - v_p,true with v_p,pred = H0 (D_z - D_pred) and v_p,true = H0 (D_z - D)),
    ``vp_true_std_kms``, and the least-squares line v_p,pred = slope v_p,true + intercept
    (``vp_slope``, ``vp_intercept_kms``).
    """
    d_pred, d_true = _paired(d_pred, d_true, ("d_pred", "d_true"))
    arrays = [d_pred, d_true]
    if d_z is not None:
        d_z, _ = _paired(d_z, d_true, ("d_z", "d_true"))
        arrays.append(d_z)
    good = np.logical_and.reduce([np.isfinite(a) for a in arrays])
    if good.sum() < 2:
        raise ParameterError(f"distance metrics need at least 2 finite rows, got {int(good.sum())}")
    d_pred, d_true = d_pred[good], d_true[good]
    err = d_pred - d_true
    out = {
        "n": int(good.sum()),
        "rms_mpc": float(np.sqrt(np.mean(err**2))),
        "l1_mpc": float(np.mean(np.abs(err))),
        "fractional_rms": float(np.sqrt(np.mean(err**2)) / np.mean(d_true)),
        "rms_fractional": float(np.sqrt(np.mean((err / d_true) ** 2))),
    }
    if d_z is not None:
        d_z = d_z[good]
        vp_true = h0 * (d_z - d_true)
        vp_pred = h0 * (d_z - d_pred)
        slope, intercept = np.polyfit(vp_true, vp_pred, 1) if np.ptp(vp_true) > 1e-6 else (np.nan, np.nan)
        out.update({
            "rms_mpc_vs_dz": float(np.sqrt(np.mean((d_pred - d_z) ** 2))),
            "l1_mpc_vs_dz": float(np.mean(np.abs(d_pred - d_z))),
            "vp_rms_error_kms": float(np.sqrt(np.mean((vp_pred - vp_true) ** 2))),
            "vp_true_std_kms": float(np.std(vp_true, ddof=1)),
            "vp_slope": float(slope),
            "vp_intercept_kms": float(intercept),
        })
    return out


def _quantile_bins(x: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-frequency bin index of each value; tied values share a bin."""
    edges = np.unique(np.quantile(x, np.linspace(0.0, 1.0, n_bins + 1)))
    return np.searchsorted(edges[1:-1], x, side="right")


def _histogram_mi(a: np.ndarray, b: np.ndarray, n_a: int, n_b: int) -> float:
    """Plug-in mutual information (nats) of two bin-index arrays."""
    joint = np.bincount(a * n_b + b, minlength=n_a * n_b).reshape(n_a, n_b) / a.size
    pa = joint.sum(axis=1, keepdims=True)
    pb = joint.sum(axis=0, keepdims=True)
    nz = joint > 0
    return float(np.sum(joint[nz] * np.log(joint[nz] / (pa @ pb)[nz])))


def latent_property_statistics(latents: pd.DataFrame, properties: pd.DataFrame, n_shuffles: int = 50,
                               random_state: int = 0, n_bins: int | None = None) -> pd.DataFrame:
    """Correlations between each latent and each property (Gim, Moon & Yoon).

    Rows are matched by position; rows where either value is NaN are left out of that pair.
    Non-numeric property columns are skipped.

    - Spearman rank correlation rho and its p-value (scipy).
    - Mutual information I(X, Y) = H(X) - H(X|Y), a plug-in estimate in nats on a 2-D
      histogram of equal-frequency bins (``n_bins`` per axis; default floor(sqrt(n / 5))
      clipped to 2..32). It is divided by the mean MI of ``n_shuffles`` random permutations
      of the property (MI_sh), as in the paper: about 1 for unrelated variables, larger for
      related ones. The normalisation also removes the histogram estimator's positive bias.
    - Kolmogorov-Smirnov: the poster does not define its KS test; here it is the two-sample
      KS statistic (and p-value) between the latent's values for galaxies in the top and
      in the bottom quartile of the property.

    Returns
    -------
    DataFrame with columns ``latent``, ``property``, ``n``, ``spearman_rho``, ``spearman_p``,
    ``mi``, ``mi_shuffled``, ``mi_normalised``, ``ks_statistic``, ``ks_p``.
    """
    from scipy import stats

    if len(latents) != len(properties):
        raise ParameterError(
            f"latents and properties must have the same rows, got {len(latents)} and {len(properties)}")
    if n_shuffles < 1:
        raise ParameterError(f"n_shuffles must be at least 1, got {n_shuffles}")
    rng = np.random.default_rng(random_state)
    numeric = [c for c in properties.columns if pd.api.types.is_numeric_dtype(properties[c])]
    rows = []
    for latent_name in latents.columns:
        z_all = latents[latent_name].to_numpy(dtype=np.float64)
        for prop in numeric:
            p_all = properties[prop].to_numpy(dtype=np.float64)
            good = np.isfinite(z_all) & np.isfinite(p_all)
            z, p = z_all[good], p_all[good]
            row = {"latent": latent_name, "property": prop, "n": int(good.sum()),
                   "spearman_rho": np.nan, "spearman_p": np.nan, "mi": np.nan, "mi_shuffled": np.nan,
                   "mi_normalised": np.nan, "ks_statistic": np.nan, "ks_p": np.nan}
            if z.size >= 4 and np.ptp(z) > 0 and np.ptp(p) > 0:
                result = stats.spearmanr(z, p)
                row["spearman_rho"], row["spearman_p"] = float(result.statistic), float(result.pvalue)
                bins = n_bins or int(np.clip(np.sqrt(z.size / 5.0), 2, 32))
                zb, pb = _quantile_bins(z, bins), _quantile_bins(p, bins)
                n_z, n_p = int(zb.max()) + 1, int(pb.max()) + 1
                mi = _histogram_mi(zb, pb, n_z, n_p)
                mi_sh = float(np.mean([_histogram_mi(zb, rng.permutation(pb), n_z, n_p) for _ in range(n_shuffles)]))
                row["mi"], row["mi_shuffled"] = mi, mi_sh
                row["mi_normalised"] = mi / mi_sh if mi_sh > 0 else np.nan
                q1, q3 = np.percentile(p, [25.0, 75.0])
                low, high = z[p <= q1], z[p >= q3]
                if low.size and high.size and q1 < q3:
                    ks = stats.ks_2samp(high, low)
                    row["ks_statistic"], row["ks_p"] = float(ks.statistic), float(ks.pvalue)
            rows.append(row)
    return pd.DataFrame(rows, columns=["latent", "property", "n", "spearman_rho", "spearman_p", "mi",
                                       "mi_shuffled", "mi_normalised", "ks_statistic", "ks_p"])
