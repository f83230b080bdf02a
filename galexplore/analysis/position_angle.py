"""Position angle from the latent angle around the PCA z axis (Dawson et al. 2020, sec. 3.5).

The CAE encodes the kinematic position angle as an angle in the PCA x-y plane. The paper
measures it clockwise from the positive latent x axis and removes the median offset to the
true PA. Which sense (clockwise or counter-clockwise) matches PA depends on the trained
network and the PCA's signs, so `PositionAngleCalibration` finds it from the data.
"""

from __future__ import annotations

import numpy as np

from galexplore.errors import ParameterError


def wrap_degrees(angle) -> np.ndarray:
    """Angles wrapped to (-180, 180] degrees."""
    wrapped = np.mod(np.asarray(angle, dtype=np.float64), 360.0)
    return np.where(wrapped > 180.0, wrapped - 360.0, wrapped)


def latent_angle(pca_xyz) -> np.ndarray:
    """Clockwise angle around the latent z axis, from the positive x axis.

    "Clockwise" as seen looking down the +z axis on the x-y plane (x right, y up):
    (x, y) = (1, 0) -> 0, (0, -1) -> 90, (-1, 0) -> 180, (0, 1) -> 270.

    Parameters
    ----------
    pca_xyz : array_like (n, 2 or more), PCA coordinates; columns 0 and 1 are used.

    Returns
    -------
    ndarray (n,), degrees in [0, 360).
    """
    xyz = np.asarray(pca_xyz, dtype=np.float64)
    if xyz.ndim != 2 or xyz.shape[1] < 2:
        raise ParameterError(f"latent_angle needs (n, 2+) PCA coordinates, got shape {xyz.shape}")
    angle = np.degrees(np.arctan2(-xyz[:, 1], xyz[:, 0])) % 360.0
    return np.where(angle >= 360.0, 0.0, angle)  # -0.0 % 360 can round to 360


def _circular_median(angles: np.ndarray) -> float:
    """Median of angles (degrees): the linear median after centring on the circular mean.

    Exact when the angles lie within a half circle around their mean, which holds for the
    offsets between a trained encoder's latent angle and the true PA.
    """
    mean = np.degrees(np.arctan2(np.sin(np.radians(angles)).mean(), np.cos(np.radians(angles)).mean()))
    return float((mean + np.median(wrap_degrees(angles - mean))) % 360.0)


class PositionAngleCalibration:
    """Map latent angles to position angles: ``pa = (sense * angle + offset) mod 360``.

    Attributes
    ----------
    sense_ : int, +1 if PA grows with the (clockwise) latent angle, -1 if it decreases.
    offset_deg_ : float, median circular offset in degrees, [0, 360).
    sigma_deg_ : float, standard deviation of the calibrated residuals on the fitting data.
    """

    def fit(self, latent_angle, true_pa) -> PositionAngleCalibration:
        """Choose the sense and offset from paired latent angles and true PAs (degrees).

        Each sense gets its median offset; the sense whose residuals have the smaller median
        absolute value wins.
        """
        angle = np.asarray(latent_angle, dtype=np.float64).ravel()
        pa = np.asarray(true_pa, dtype=np.float64).ravel()
        if angle.shape != pa.shape:
            raise ParameterError(f"latent_angle and true_pa must have the same length, got {angle.size} and {pa.size}")
        good = np.isfinite(angle) & np.isfinite(pa)
        if good.sum() < 2:
            raise ParameterError("calibrating the position angle needs at least 2 galaxies with finite angles")
        angle, pa = angle[good], pa[good]
        best = None
        for sense in (1, -1):
            offset = _circular_median(pa - sense * angle)
            spread = np.median(np.abs(wrap_degrees(sense * angle + offset - pa)))
            if best is None or spread < best[0]:
                best = (spread, sense, offset)
        _, self.sense_, self.offset_deg_ = best
        self.sigma_deg_ = float(np.std(self.residuals(self.transform(angle), pa), ddof=1))
        return self

    @classmethod
    def from_params(cls, sense: int, offset_deg: float) -> PositionAngleCalibration:
        """A calibration with known sense and offset (e.g. a model card's ``pa_calibration``)."""
        if sense not in (1, -1):
            raise ParameterError(f"sense must be +1 or -1, got {sense}")
        calibration = cls()
        calibration.sense_, calibration.offset_deg_ = int(sense), float(offset_deg) % 360.0
        calibration.sigma_deg_ = float("nan")
        return calibration

    def to_dict(self) -> dict:
        """``{"sense": int, "offset_deg": float}``, the form stored in a model card's extras."""
        return {"sense": int(self.sense_), "offset_deg": float(self.offset_deg_)}

    def transform(self, latent_angle) -> np.ndarray:
        """Predicted PA in [0, 360) degrees for latent angles in degrees."""
        if not hasattr(self, "sense_"):
            raise ParameterError("this calibration is not fitted yet: call fit(latent_angle, true_pa) first")
        pa = (self.sense_ * np.asarray(latent_angle, dtype=np.float64) + self.offset_deg_) % 360.0
        return np.where(pa >= 360.0, 0.0, pa)

    @staticmethod
    def residuals(pred, true) -> np.ndarray:
        """``pred - true`` wrapped to (-180, 180] degrees."""
        return wrap_degrees(np.asarray(pred, dtype=np.float64) - np.asarray(true, dtype=np.float64))
