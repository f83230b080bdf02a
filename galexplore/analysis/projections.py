"""Projections of latent vectors: PCA rotation, the folded (r, h) plane, and UMAP.

Dawson et al. (2020, sec. 2.6) rotate the 3-D latent space with a PCA and fold it about
the PCA z axis: ``r = sqrt(x**2 + y**2)``, ``h = |z|``. The classes follow scikit-learn's
style: parameters in ``__init__``, learned state with a trailing underscore after `fit`.
"""

from __future__ import annotations

import numpy as np

from galexplore.errors import ParameterError


def _as_2d(X, what: str = "X") -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] == 0:
        raise ParameterError(f"{what} must be a non-empty 2-D array (n_samples, n_features), got shape {X.shape}")
    if not np.isfinite(X).all():
        raise ParameterError(f"{what} contains NaN or infinite values; drop those rows before projecting")
    return X


class PCAProjection:
    """Principal-component rotation of latent vectors.

    Components are sorted by decreasing variance and each is signed so that its entry of
    largest magnitude is positive (a deterministic choice; any sign is a valid PCA).

    Parameters
    ----------
    n_components : int or None
        Number of components kept; None keeps all.

    Attributes
    ----------
    mean_ : ndarray (n_features,)
    components_ : ndarray (n_components, n_features), orthonormal rows.
    explained_variance_ : ndarray (n_components,), or None after `from_params`.
    explained_variance_ratio_ : ndarray (n_components,), or None after `from_params`.
    """

    def __init__(self, n_components: int | None = None):
        self.n_components = n_components

    def fit(self, X) -> PCAProjection:
        """Learn the mean and principal axes of ``X`` (n_samples, n_features)."""
        X = _as_2d(X)
        n, d = X.shape
        k = d if self.n_components is None else int(self.n_components)
        if not 1 <= k <= min(n, d):
            raise ParameterError(
                f"n_components={self.n_components} is out of range for {n} samples of {d} features; "
                f"choose 1..{min(n, d)} or None")
        self.mean_ = X.mean(axis=0)
        _, singular, vt = np.linalg.svd(X - self.mean_, full_matrices=False)
        largest = np.argmax(np.abs(vt), axis=1)
        vt = vt * np.sign(vt[np.arange(vt.shape[0]), largest])[:, None]
        variance = singular**2 / max(n - 1, 1)
        self.components_ = vt[:k]
        self.explained_variance_ = variance[:k]
        total = variance.sum()
        self.explained_variance_ratio_ = variance[:k] / total if total > 0 else np.zeros(k)
        return self

    @classmethod
    def from_params(cls, mean, components) -> PCAProjection:
        """A fitted projection from a published mean and component matrix (e.g. a model card's).

        Parameters
        ----------
        mean : array_like (n_features,)
        components : array_like (n_components, n_features)
        """
        mean = np.asarray(mean, dtype=np.float64)
        components = np.asarray(components, dtype=np.float64)
        if mean.ndim != 1 or components.ndim != 2 or components.shape[1] != mean.shape[0]:
            raise ParameterError(
                f"PCA parameters do not fit together: mean has shape {mean.shape}, components "
                f"{components.shape}; expected (d,) and (k, d)")
        projection = cls(n_components=components.shape[0])
        projection.mean_ = mean
        projection.components_ = components
        projection.explained_variance_ = None
        projection.explained_variance_ratio_ = None
        return projection

    def _check_fitted(self) -> None:
        if not hasattr(self, "components_"):
            raise ParameterError("this PCAProjection is not fitted yet: call fit(X) or use from_params first")

    def transform(self, X) -> np.ndarray:
        """Rotated coordinates (n_samples, n_components)."""
        self._check_fitted()
        X = _as_2d(X)
        if X.shape[1] != self.mean_.shape[0]:
            raise ParameterError(f"X has {X.shape[1]} features, the projection was fitted on {self.mean_.shape[0]}")
        return (X - self.mean_) @ self.components_.T

    def fit_transform(self, X) -> np.ndarray:
        """`fit` then `transform` on the same data."""
        return self.fit(X).transform(X)

    def inverse_transform(self, Y) -> np.ndarray:
        """Latent vectors (n_samples, n_features) of rotated coordinates (for latent traversals)."""
        self._check_fitted()
        Y = _as_2d(Y, "Y")
        if Y.shape[1] != self.components_.shape[0]:
            raise ParameterError(
                f"Y has {Y.shape[1]} columns, the projection has {self.components_.shape[0]} components")
        return Y @ self.components_ + self.mean_


def fold(pca_xyz) -> tuple[np.ndarray, np.ndarray]:
    """Fold PCA-rotated 3-D latents into Dawson et al.'s symmetry-free plane.

    Parameters
    ----------
    pca_xyz : array_like (n, 3)
        PCA coordinates (x, y, z) = components 0, 1, 2.

    Returns
    -------
    r, h : ndarray (n,)
        ``r = sqrt(x**2 + y**2)``, ``h = |z|`` (latent units).
    """
    xyz = np.asarray(pca_xyz, dtype=np.float64)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ParameterError(f"fold needs (n, 3) PCA coordinates, got shape {xyz.shape}; "
                             "folding is defined for 3-D latent spaces only")
    return np.hypot(xyz[:, 0], xyz[:, 1]), np.abs(xyz[:, 2])


class UMAPProjection:
    """2-D UMAP of latent vectors, fitted on a random subsample and applied to every row.

    umap-learn compiles its numba kernels on the first fit in a process: about 20-40 s on
    a 2-core machine before any data is processed; later fits in the process reuse them.
    With a fixed ``random_state`` UMAP runs single-threaded (reproducible).

    Parameters
    ----------
    n_neighbors, min_dist : UMAP parameters.
    subsample : int
        At most this many rows are used to fit; the rest are placed with ``transform``.
    random_state : int
        Seed of the subsample and of UMAP.

    Attributes
    ----------
    umap_ : the fitted ``umap.UMAP``.
    fit_index_ : ndarray of int, rows of the fitting data used as the subsample.
    """

    def __init__(self, n_neighbors: int = 15, min_dist: float = 0.1, subsample: int = 20000,
                 random_state: int = 0):
        self.n_neighbors = n_neighbors
        self.min_dist = min_dist
        self.subsample = subsample
        self.random_state = random_state

    def _fit_rows(self, X: np.ndarray) -> np.ndarray:
        if self.subsample < 2:
            raise ParameterError(f"subsample must be at least 2 rows, got {self.subsample}")
        if X.shape[0] <= self.n_neighbors:
            raise ParameterError(
                f"UMAP with n_neighbors={self.n_neighbors} needs more than {self.n_neighbors} rows, "
                f"got {X.shape[0]}; lower n_neighbors")
        rng = np.random.default_rng(self.random_state)
        n = X.shape[0]
        return np.arange(n) if n <= self.subsample else np.sort(rng.choice(n, self.subsample, replace=False))

    def fit(self, X) -> UMAPProjection:
        """Fit UMAP on (a random subsample of) ``X`` (n_samples, n_features)."""
        self._fit_embedding(_as_2d(X))
        return self

    def _fit_embedding(self, X: np.ndarray) -> np.ndarray:
        import umap

        self.fit_index_ = self._fit_rows(X)
        self.umap_ = umap.UMAP(n_neighbors=self.n_neighbors, min_dist=self.min_dist, n_components=2,
                               random_state=self.random_state, n_jobs=1)
        return self.umap_.fit_transform(X[self.fit_index_])

    def transform(self, X) -> np.ndarray:
        """Place new rows in the fitted 2-D map; returns (n_samples, 2)."""
        if not hasattr(self, "umap_"):
            raise ParameterError("this UMAPProjection is not fitted yet: call fit(X) first")
        return np.asarray(self.umap_.transform(_as_2d(X)), dtype=np.float64)

    def fit_transform(self, X) -> np.ndarray:
        """Fit, then return the 2-D map of every row: the fitted embedding for subsample rows,
        ``transform`` for the others."""
        X = _as_2d(X)
        fitted = self._fit_embedding(X)
        out = np.empty((X.shape[0], 2), dtype=np.float64)
        out[self.fit_index_] = fitted
        rest = np.setdiff1d(np.arange(X.shape[0]), self.fit_index_)
        if rest.size:
            out[rest] = self.umap_.transform(X[rest])
        return out
