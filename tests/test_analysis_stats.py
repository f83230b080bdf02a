"""The papers' metrics, checked by hand or against independent implementations."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from galexplore.analysis.stats import (
    bias_scatter_dex,
    confusion_matrix,
    delta_mse_mae_per_radius,
    distance_metrics,
    latent_property_statistics,
    mean_recall,
    pa_residual_sigma_by_inclination,
)
from galexplore.errors import ParameterError


def test_confusion_matrix_and_mean_recall_by_hand():
    true, pred = [0, 0, 0, 1, 1], [0, 1, 0, 1, 1]
    np.testing.assert_allclose(confusion_matrix(true, pred, normalize=False), [[2, 1], [0, 2]])
    np.testing.assert_allclose(confusion_matrix(true, pred), [[2 / 3, 1 / 3], [0, 1]])
    assert mean_recall(true, pred) == pytest.approx(5 / 6)


def test_confusion_matrix_matches_scikit_learn():
    rng = np.random.default_rng(0)
    true, pred = rng.integers(0, 3, 500), rng.integers(0, 3, 500)
    np.testing.assert_allclose(confusion_matrix(true, pred), sk_confusion_matrix(true, pred, normalize="true"))
    with pytest.raises(ParameterError, match="not in the class list"):
        confusion_matrix([0, 2], [0, 1], labels=[0, 1])


def test_pa_sigma_per_inclination_bin_by_hand():
    residual = [1.0, -1.0, 3.0, -3.0, 10.0, 7.0]
    inc = [1.0, 2.0, 3.0, 4.0, 90.0, 87.0]
    table = pa_residual_sigma_by_inclination(residual, inc)
    assert len(table) == 18 and table["n"].sum() == 6
    first = table.iloc[0]
    assert first["n"] == 4 and first["mean"] == pytest.approx(0.0)
    assert first["std"] == pytest.approx(np.sqrt(20 / 3))
    assert first["standard_error"] == pytest.approx(np.sqrt(20 / 3) / 2)
    # 16th / 84th percentiles of (-3, -1, 1, 3), linear interpolation: -2.04 and 2.04
    assert first["sigma_16_84"] == pytest.approx(2.04)
    last = table.iloc[-1]  # 85-90 includes 90
    assert last["n"] == 2 and last["mean"] == pytest.approx(8.5)


def test_bias_scatter_dex_by_hand():
    true = np.array([10.0, 10.5, 11.0, 9.5])
    m = bias_scatter_dex(true + np.array([0.15, -0.05, 0.35, -0.25]), true)
    assert m["bias"] == pytest.approx(0.05)
    assert m["scatter"] == pytest.approx(np.sqrt(0.2 / 3))
    assert m["n"] == 4


def test_delta_mse_mae_by_hand():
    true = np.array([[10.0, 11.0], [10.5, 11.5], [np.nan, 12.0]])
    pred = true + np.array([[0.1, -0.2], [-0.3, 0.2], [0.0, 0.2]])
    mse, mae = delta_mse_mae_per_radius(pred, true)
    np.testing.assert_allclose(mse, [np.sqrt(0.05), 0.2])
    np.testing.assert_allclose(mae, [0.2, 0.2])


def test_distance_metrics_by_hand():
    m = distance_metrics([55.0, 95.0], [50.0, 100.0], [52.0, 104.0])
    assert m["rms_mpc"] == pytest.approx(5.0) and m["l1_mpc"] == pytest.approx(5.0)
    assert m["fractional_rms"] == pytest.approx(5.0 / 75.0)
    assert m["rms_fractional"] == pytest.approx(np.sqrt((0.1**2 + 0.05**2) / 2))
    # v_p,true = 70 (D_z - D) = (140, 280); v_p,pred = 70 (D_z - D_pred) = (-210, 630)
    assert m["vp_rms_error_kms"] == pytest.approx(350.0)
    assert m["vp_slope"] == pytest.approx(6.0) and m["vp_intercept_kms"] == pytest.approx(-1050.0)
    assert m["vp_true_std_kms"] == pytest.approx(140.0 / np.sqrt(2))
    assert m["l1_mpc_vs_dz"] == pytest.approx(6.0)


def test_latent_property_statistics_detects_monotonic_and_nonmonotonic_dependence():
    rng = np.random.default_rng(0)
    n = 2000
    z = rng.normal(size=n)
    latents = pd.DataFrame({"latent_0": z})
    properties = pd.DataFrame({
        "linear": 2 * z + 0.01 * rng.normal(size=n),
        "square": z**2,
        "independent": rng.normal(size=n),
        "label": pd.array(["a"] * n, dtype="string"),
        "with_nan": np.where(np.arange(n) < 100, np.nan, z),
    })
    table = latent_property_statistics(latents, properties).set_index("property")
    assert "label" not in table.index
    # Spearman rho equals the Pearson correlation of the ranks (computed independently)
    def ranks(values):  # no ties in continuous data
        return np.argsort(np.argsort(values))

    expected = np.corrcoef(ranks(z), ranks(properties["independent"].to_numpy()))[0, 1]
    assert table.loc["independent", "spearman_rho"] == pytest.approx(expected, abs=1e-9)
    assert table.loc["linear", "spearman_rho"] > 0.99
    assert abs(table.loc["square", "spearman_rho"]) < 0.1  # symmetric: no monotonic trend ...
    assert table.loc["square", "mi_normalised"] > 10  # ... but strong dependence
    assert table.loc["linear", "mi_normalised"] > 10
    # unrelated: MI is a draw from the shuffled distribution (relative spread ~7 % for 20 x 20 bins)
    assert 0.7 < table.loc["independent", "mi_normalised"] < 1.3
    # quartiles of a monotonic property hold disjoint latent values: KS = 1
    assert table.loc["linear", "ks_statistic"] == pytest.approx(1.0)
    assert table.loc["independent", "ks_statistic"] < 0.15
    assert table.loc["with_nan", "n"] == n - 100
