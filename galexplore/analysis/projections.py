"""Projections of latent vectors: PCA rotation, the folded (r, h) plane, UMAP, and the one
`LatentProjector` that combines them for a model.

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

    @classmethod
    def from_reference(cls, X_fit, embedding, n_neighbors: int = 15, min_dist: float = 0.1,
                       random_state: int = 0) -> UMAPProjection:
        """Rebuild a fitted projection from the rows it was fitted on and their coordinates.

        UMAP's neighbour graph is rebuilt (``transform_mode="graph"``: the graph only, no
        layout optimisation) and the saved coordinates become its ``embedding_``, so
        `transform` places new points exactly as the original object did (same seed, same
        graph). The first call in a process compiles umap-learn's Numba kernels (tens of
        seconds on 2 cores); later calls take well under a second for 10^4 rows.
        """
        import umap

        X_fit = _as_2d(X_fit, "X_fit")
        # row-major: umap-learn's kernels are compiled for C-contiguous rows, and coordinates
        # read from a table's columns come column-major
        embedding = np.ascontiguousarray(embedding, dtype=np.float32)
        if embedding.shape != (X_fit.shape[0], 2):
            raise ParameterError(f"the UMAP reference has {X_fit.shape[0]} rows but {embedding.shape} coordinates; "
                                 "expected one (x, y) pair per row")
        projection = cls(n_neighbors=n_neighbors, min_dist=min_dist, subsample=X_fit.shape[0],
                         random_state=random_state)
        projection.fit_index_ = np.arange(X_fit.shape[0])
        projection.umap_ = umap.UMAP(n_neighbors=n_neighbors, min_dist=min_dist, n_components=2,
                                     random_state=random_state, n_jobs=1, transform_mode="graph").fit(X_fit)
        projection.umap_.embedding_ = embedding
        projection.umap_.transform_mode = "embedding"
        return projection


#: Circularity separating disturbed from rotating gas when a model card names no threshold
#: (Dawson et al. 2020: kappa > 0.5 is the positive class).
DEFAULT_KAPPA_THRESHOLD = 0.5


class LatentProjector:
    """Every projection of one model's latent vectors, fitted once and reused everywhere.

    Embedding tables, the explorer (new galaxies placed among the old), training (the
    extras of a model card) and `galexplore evaluate` all go through one projector:

    - the PCA rotation: the model card's ``extras["pca"]``, else fitted on the latents;
    - for 3-D latents, the folded plane (r, h) of Dawson et al. (2020), the latent position
      angle calibrated by the card's ``pa_calibration`` (else fitted on true PAs, when
      given), and the folded-radius kappa boundary: the card's ``boundary`` (``folded_r``
      and ``kappa_threshold``), else the TP = TN crossing fitted on kappa, when given;
    - a 2-D UMAP, whose `transform` places new latent vectors in the fitted map.

    Parameters
    ----------
    umap : bool
        Fit UMAP (when the latents have more than 2 dimensions and more rows than
        ``umap_neighbors``).
    umap_subsample : int
        UMAP is fitted on at most this many rows; `fit_transform` places the others.
    umap_neighbors, umap_min_dist : UMAP's ``n_neighbors`` and ``min_dist``.
    random_state : int
        Seed of UMAP, its subsample and the boundary's bootstrap.

    Attributes
    ----------
    n_features_in_ : int, latent dimensions.
    pca_ : PCAProjection
    pa_calibration_ : PositionAngleCalibration or None
    boundary_ : VerticalBoundary or None; ``boundary_.position_`` is the folded radius.
    kappa_threshold_ : float, kappa above which a galaxy is in the positive class.
    umap_reference_ : (latents (m, d), coordinates (m, 2)) of the rows UMAP was fitted on,
        or None without UMAP; enough to rebuild it (`UMAPProjection.from_reference`).
    umap_ids_ : ndarray or None, ids of those rows when `fit_transform` was given ``ids``.
    sources_ : dict, where each part came from ("model card" or "fitted on N rows").
    """

    def __init__(self, umap: bool = True, umap_subsample: int = 20_000, umap_neighbors: int = 15,
                 umap_min_dist: float = 0.1, random_state: int = 0):
        self.umap = umap
        self.umap_subsample = umap_subsample
        self.umap_neighbors = umap_neighbors
        self.umap_min_dist = umap_min_dist
        self.random_state = random_state

    # ------------------------------------------------------------------ fitting
    def fit(self, latents, *, extras: dict | None = None, kappa=None, pa=None, ids=None) -> LatentProjector:
        """Fit on latent vectors (n, d); see `fit_transform`."""
        self.fit_transform(latents, extras=extras, kappa=kappa, pa=pa, ids=ids)
        return self

    def fit_transform(self, latents, *, extras: dict | None = None, kappa=None, pa=None,
                      ids=None) -> dict[str, np.ndarray]:
        """Fit every part and return the projection columns of ``latents`` (see `transform`).

        Parameters
        ----------
        latents : array_like (n, d)
        extras : a model card's ``extras``; its ``pca``, ``pa_calibration`` and ``boundary``
            are used as given rather than fitted.
        kappa : array_like (n,), optional; fits the boundary when ``extras`` has none.
        pa : array_like (n,) in degrees, optional; fits the PA calibration when ``extras`` has none.
        ids : array_like (n,) of int, optional; kept for the rows UMAP is fitted on (``umap_ids_``).
        """
        from galexplore.analysis.boundaries import VerticalBoundary
        from galexplore.analysis.position_angle import PositionAngleCalibration, latent_angle

        z = _as_2d(latents, "latents")
        extras = extras or {}
        n, self.n_features_in_ = z.shape
        self.sources_ = {}
        card_pca = extras.get("pca")
        if card_pca:
            self.pca_ = PCAProjection.from_params(card_pca["mean"], card_pca["components"])
            self.sources_["pca"] = "model card"
        else:
            self.pca_ = PCAProjection().fit(z)
            self.sources_["pca"] = f"fitted on {n} rows"
        card_boundary = extras.get("boundary") or {}
        self.kappa_threshold_ = float(card_boundary.get("kappa_threshold", DEFAULT_KAPPA_THRESHOLD))
        self.boundary_ = self.pa_calibration_ = None
        if self.n_features_in_ == 3:
            rotated = self.pca_.transform(z)
            r, _ = fold(rotated)
            if "folded_r" in card_boundary:
                self.boundary_ = VerticalBoundary.from_position(card_boundary["folded_r"], self.kappa_threshold_)
                self.sources_["boundary"] = "model card"
            elif kappa is not None:
                self.boundary_ = VerticalBoundary(self.kappa_threshold_, random_state=self.random_state).fit(r, kappa)
                self.sources_["boundary"] = f"fitted on {n} rows"
            calibration = extras.get("pa_calibration")
            if calibration:
                self.pa_calibration_ = PositionAngleCalibration.from_params(calibration["sense"],
                                                                            calibration["offset_deg"])
                self.sources_["pa_calibration"] = "model card"
            elif pa is not None:
                self.pa_calibration_ = PositionAngleCalibration().fit(latent_angle(rotated), pa)
                self.sources_["pa_calibration"] = f"fitted on {n} rows"
        columns = self.transform(z, umap=False)
        self.umap_ = self.umap_reference_ = self.umap_ids_ = None
        if self.umap and self.n_features_in_ > 2 and n > self.umap_neighbors:
            self.umap_ = UMAPProjection(n_neighbors=self.umap_neighbors, min_dist=self.umap_min_dist,
                                        subsample=self.umap_subsample, random_state=self.random_state)
            coords = self.umap_.fit_transform(z)
            rows = self.umap_.fit_index_
            self.umap_reference_ = (z[rows], coords[rows])
            self.umap_ids_ = None if ids is None else np.asarray(ids)[rows]
            columns["umap_0"], columns["umap_1"] = coords[:, 0], coords[:, 1]
            self.sources_["umap"] = f"fitted on {rows.size} rows"
        elif self.n_features_in_ == 2:
            columns["umap_0"], columns["umap_1"] = z[:, 0], z[:, 1]
        return columns

    # ------------------------------------------------------------------ applying
    def _check_fitted(self) -> None:
        if not hasattr(self, "pca_"):
            raise ParameterError("this LatentProjector is not fitted yet: call fit(latents) or from_dict first")

    def transform(self, latents, umap: bool = True) -> dict[str, np.ndarray]:
        """Projection columns of latent vectors (n, d).

        Returns
        -------
        dict of (n,) arrays: ``pca_<k>``; for 3-D latents ``folded_r``, ``folded_h`` and
        ``pa_latent`` (degrees east of north when calibrated, else the raw latent angle),
        ``pred_class`` (1: kappa above `kappa_threshold_`) when there is a boundary;
        ``umap_0``, ``umap_1`` with ``umap`` and a fitted UMAP (2-D latents: the latents).
        """
        from galexplore.analysis.position_angle import latent_angle

        self._check_fitted()
        z = _as_2d(latents, "latents")
        if z.shape[1] != self.n_features_in_:
            raise ParameterError(f"latent vectors have {z.shape[1]} dimensions; this projector was fitted on "
                                 f"{self.n_features_in_}: use the model the projector belongs to")
        rotated = self.pca_.transform(z)
        columns = {f"pca_{k}": rotated[:, k] for k in range(rotated.shape[1])}
        if self.n_features_in_ == 3:
            r, h = fold(rotated)
            columns["folded_r"], columns["folded_h"] = r, h
            angle = latent_angle(rotated)
            columns["pa_latent"] = angle if self.pa_calibration_ is None else self.pa_calibration_.transform(angle)
            if self.boundary_ is not None:
                columns["pred_class"] = self.boundary_.predict(r)
        if umap and self.umap_reference_ is not None:
            coords = self.fitted_umap().transform(z)
            columns["umap_0"], columns["umap_1"] = coords[:, 0], coords[:, 1]
        elif umap and self.n_features_in_ == 2:
            columns["umap_0"], columns["umap_1"] = z[:, 0], z[:, 1]
        return columns

    @property
    def umap_settings(self) -> dict:
        """UMAP's settings, as `UMAPProjection.from_reference` takes them."""
        return {"n_neighbors": self.umap_neighbors, "min_dist": self.umap_min_dist,
                "random_state": self.random_state}

    def fitted_umap(self) -> UMAPProjection:
        """The fitted UMAP, rebuilt from `umap_reference_` on first use after `from_dict`."""
        if self.umap_reference_ is None:
            raise ParameterError("this projector has no UMAP: the latents have fewer than 3 dimensions, "
                                 "or it was made with umap=False")
        if self.umap_ is None:
            self.umap_ = UMAPProjection.from_reference(*self.umap_reference_, **self.umap_settings)
        return self.umap_

    @property
    def boundary_r(self) -> float | None:
        """Folded radius of the kappa boundary, or None."""
        return None if self.boundary_ is None else float(self.boundary_.position_)

    # ------------------------------------------------------------------ saving
    def card_extras(self) -> dict:
        """What a model card keeps of this projector: ``pca``, and for 3-D latents
        ``boundary`` (``folded_r``, ``kappa_threshold``, ``uncertainty``) and ``pa_calibration``."""
        self._check_fitted()
        extras: dict = {"pca": {"mean": self.pca_.mean_.tolist(), "components": self.pca_.components_.tolist()}}
        if self.boundary_ is not None:
            uncertainty = float(self.boundary_.uncertainty_)
            extras["boundary"] = {"folded_r": float(self.boundary_.position_),
                                  "kappa_threshold": self.kappa_threshold_,
                                  "uncertainty": uncertainty if np.isfinite(uncertainty) else None}
        if self.pa_calibration_ is not None:
            extras["pa_calibration"] = self.pa_calibration_.to_dict()
        return extras

    def to_dict(self) -> dict:
        """The projector as JSON values. UMAP is described by its settings and the ids of the
        rows it was fitted on (``umap.fit_ids``, when known); the latents and coordinates of
        those rows travel with the embedding table (see `from_dict`)."""
        self._check_fitted()
        record = {"format": "galexplore-latent-projector-1", "n_features_in": self.n_features_in_,
                  "kappa_threshold": self.kappa_threshold_, "sources": dict(self.sources_),
                  **self.card_extras(),
                  "umap": None if self.umap_reference_ is None else {
                      **self.umap_settings, "subsample": self.umap_subsample,
                      "fit_ids": None if self.umap_ids_ is None else np.asarray(self.umap_ids_).tolist()}}
        return record

    @classmethod
    def from_dict(cls, record: dict, umap_reference: tuple[np.ndarray, np.ndarray] | None = None) -> LatentProjector:
        """A projector from `to_dict`'s record.

        Parameters
        ----------
        record : dict from `to_dict`.
        umap_reference : (latents (m, d), coordinates (m, 2)) of the rows UMAP was fitted on.
            UMAP is rebuilt from them (see `fitted_umap`) only when `transform` first needs
            it; without them the projector has no UMAP.
        """
        from galexplore.analysis.boundaries import VerticalBoundary
        from galexplore.analysis.position_angle import PositionAngleCalibration

        if not isinstance(record, dict) or record.get("format") != "galexplore-latent-projector-1":
            raise ParameterError("not a saved LatentProjector (format galexplore-latent-projector-1); "
                                 "recompute the embedding with `galexplore embed MODEL DATASET --force`")
        umap_settings = record.get("umap") or {}
        projector = cls(umap=bool(umap_settings), umap_subsample=umap_settings.get("subsample", 20_000),
                        umap_neighbors=umap_settings.get("n_neighbors", 15),
                        umap_min_dist=umap_settings.get("min_dist", 0.1),
                        random_state=umap_settings.get("random_state", 0))
        projector.n_features_in_ = int(record["n_features_in"])
        projector.kappa_threshold_ = float(record["kappa_threshold"])
        projector.sources_ = dict(record.get("sources", {}))
        projector.pca_ = PCAProjection.from_params(record["pca"]["mean"], record["pca"]["components"])
        projector.boundary_ = projector.pa_calibration_ = None
        if record.get("boundary"):
            projector.boundary_ = VerticalBoundary.from_position(record["boundary"]["folded_r"],
                                                                 projector.kappa_threshold_)
            uncertainty = record["boundary"].get("uncertainty")
            projector.boundary_.uncertainty_ = float("nan") if uncertainty is None else float(uncertainty)
        if record.get("pa_calibration"):
            projector.pa_calibration_ = PositionAngleCalibration.from_params(record["pa_calibration"]["sense"],
                                                                             record["pa_calibration"]["offset_deg"])
        projector.umap_ = projector.umap_ids_ = None
        projector.umap_reference_ = None
        if umap_settings and umap_reference is not None:
            latents, coords = (np.asarray(a, dtype=np.float64) for a in umap_reference)
            projector.umap_reference_ = (latents, coords)
        return projector

