"""PCA rotation, folding and UMAP (galexplore.analysis.projections)."""

import numpy as np
import pytest

from galexplore.analysis.projections import PCAProjection, UMAPProjection, fold
from galexplore.errors import ParameterError


def _rotated_gaussian(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    angle = np.radians(30.0)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]])
    return rng.normal(size=(n, 3)) * [3.0, 2.0, 1.0] @ rotation.T + [1.0, -2.0, 0.5]


def test_pca_matches_eigendecomposition_of_covariance():
    X = _rotated_gaussian()
    pca = PCAProjection().fit(X)
    eigval, eigvec = np.linalg.eigh(np.cov(X, rowvar=False))
    order = np.argsort(eigval)[::-1]
    np.testing.assert_allclose(pca.explained_variance_, eigval[order], rtol=1e-10)
    for k in range(3):  # same axes up to sign
        assert abs(abs(pca.components_[k] @ eigvec[:, order[k]]) - 1.0) < 1e-10
        assert pca.components_[k][np.argmax(np.abs(pca.components_[k]))] > 0
    np.testing.assert_allclose(pca.explained_variance_ratio_.sum(), 1.0)
    np.testing.assert_allclose(pca.inverse_transform(pca.transform(X)), X, atol=1e-10)


def test_pca_from_published_params_by_hand():
    pca = PCAProjection.from_params([1.0, 0.0, 0.0], [[0, 1, 0], [0, 0, 1], [1, 0, 0]])
    np.testing.assert_allclose(pca.transform([[2.0, 3.0, 4.0]]), [[3.0, 4.0, 1.0]])


def test_pca_errors():
    with pytest.raises(ParameterError, match="not fitted"):
        PCAProjection().transform(np.zeros((2, 3)))
    with pytest.raises(ParameterError, match="n_components"):
        PCAProjection(n_components=4).fit(np.random.default_rng(0).normal(size=(10, 3)))
    with pytest.raises(ParameterError, match="NaN"):
        PCAProjection().fit([[0.0, np.nan], [1.0, 2.0]])


def test_fold_by_hand():
    r, h = fold([[3.0, 4.0, -2.0], [0.0, -1.0, 0.5]])
    np.testing.assert_allclose(r, [5.0, 1.0])
    np.testing.assert_allclose(h, [2.0, 0.5])
    with pytest.raises(ParameterError, match="3-D"):
        fold(np.zeros((4, 2)))


def test_umap_subsample_fit_places_all_rows_and_keeps_clusters_apart():
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0.0, 1.0, (50, 5)), rng.normal(8.0, 1.0, (50, 5))]
    projection = UMAPProjection(n_neighbors=10, subsample=60, random_state=0)
    Y = projection.fit_transform(X)
    assert Y.shape == (100, 2) and np.isfinite(Y).all()
    assert projection.fit_index_.size == 60
    np.testing.assert_allclose(Y[projection.fit_index_], projection.umap_.embedding_)
    a, b = Y[:50], Y[50:]
    gap = np.linalg.norm(a.mean(axis=0) - b.mean(axis=0))
    assert gap > 3 * max(np.linalg.norm(a.std(axis=0)), np.linalg.norm(b.std(axis=0)))


def test_published_dawson2020_classes_from_published_latents(shared_real, tmp_path):
    """The published PCA + fold + boundary reproduce the published class of all 30 ALMA maps."""
    import json

    import pandas as pd

    from galexplore.analysis.boundaries import VerticalBoundary
    from galexplore.models.zoo import import_dawson2020

    checkpoint = import_dawson2020(shared_real / "dawson2020", out=tmp_path / "dawson2020", trust_pickle=True)
    extras = json.loads((checkpoint / "card.json").read_text())["extras"]
    published = pd.read_csv(shared_real / "dawson2020" / "published_results.csv")
    pca = PCAProjection.from_params(extras["pca"]["mean"], extras["pca"]["components"])
    r, _ = fold(pca.transform(published[["latent_0", "latent_1", "latent_2"]].to_numpy()))
    boundary = VerticalBoundary.from_position(extras["boundary"]["folded_r"])
    assert boundary.position_ == 2.960960960960961
    np.testing.assert_array_equal(boundary.predict(r), published["published_class"].to_numpy())
