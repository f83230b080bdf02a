"""Latent angle and its median-offset calibration to position angle."""

import numpy as np
import pytest

from galexplore.analysis.position_angle import PositionAngleCalibration, latent_angle, wrap_degrees
from galexplore.errors import ParameterError


def test_latent_angle_is_clockwise_from_positive_x():
    xyz = [[1, 0, 5], [0, -1, 0], [-1, 0, 0], [0, 1, 0], [1, -1, 0], [1, 1e-12, 0]]
    np.testing.assert_allclose(latent_angle(xyz)[:5], [0, 90, 180, 270, 45])
    assert 0 <= latent_angle(xyz)[5] < 360


def test_wrap_and_residuals():
    np.testing.assert_allclose(wrap_degrees([190, -190, 180, -180, 360, 725]), [-170, 170, 180, 180, 0, 5])
    np.testing.assert_allclose(PositionAngleCalibration.residuals([350, 10, 190], [10, 350, 10]), [-20, 20, 180])


@pytest.mark.parametrize("sense, offset", [(-1, 100.0), (1, 355.0), (1, 3.0)])
def test_calibration_recovers_sense_and_offset(sense, offset):
    rng = np.random.default_rng(0)
    pa = rng.uniform(0, 360, 5000)
    noise = rng.normal(0, 8.0, pa.size)
    # construct latent angles so that pa = sense * angle + offset + noise (mod 360)
    angle = (sense * (pa - offset - noise)) % 360
    calibration = PositionAngleCalibration().fit(angle, pa)
    assert calibration.sense_ == sense
    assert abs(wrap_degrees(calibration.offset_deg_ - offset)) < 0.5
    residual = calibration.residuals(calibration.transform(angle), pa)
    assert np.std(residual) == pytest.approx(8.0, rel=0.05)
    assert calibration.sigma_deg_ == pytest.approx(8.0, rel=0.05)
    assert ((calibration.transform(angle) >= 0) & (calibration.transform(angle) < 360)).all()


def test_from_params_and_errors():
    calibration = PositionAngleCalibration.from_params(-1, 370.0)
    assert calibration.to_dict() == {"sense": -1, "offset_deg": 10.0}
    np.testing.assert_allclose(calibration.transform([0.0, 20.0, 5.0]), [10.0, 350.0, 5.0])
    with pytest.raises(ParameterError, match="sense"):
        PositionAngleCalibration.from_params(0, 10.0)
    with pytest.raises(ParameterError, match="not fitted"):
        PositionAngleCalibration().transform([1.0])
