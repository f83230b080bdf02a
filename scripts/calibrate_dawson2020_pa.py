"""Measure the position-angle calibration of the published Dawson et al. (2020) CAE.

Its latent angle (clockwise about the PCA z axis, from +x) encodes the kinematic PA up to a
sense and an offset that the paper does not publish. This script makes regular exponential
discs with KinMS directly (tests/referees.py: nothing of galexplore.mock), at random PAs,
inclinations, sizes and rotation speeds, encodes them with the published model and fits
`PositionAngleCalibration`. Its output is `DAWSON2020_PA_CALIBRATION` in
galexplore/models/zoo.py.

Run: python scripts/calibrate_dawson2020_pa.py [N_DISCS] [SEED]
(needs `galexplore zoo import-dawson2020 ../shared/real/dawson2020 --trust-pickle` once)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from referees import kinms_disc_map  # noqa: E402

from galexplore.analysis.embed import LoadedModel  # noqa: E402
from galexplore.analysis.position_angle import PositionAngleCalibration, latent_angle  # noqa: E402
from galexplore.analysis.projections import PCAProjection  # noqa: E402
from galexplore.data.recipes import get_recipe  # noqa: E402


def published_latent_angles(maps: np.ndarray) -> np.ndarray:
    """Latent angles (degrees) of velocity maps (n, 64, 64) under the published CAE and PCA."""
    import torch

    model = LoadedModel("dawson2020", device="cpu")
    x = get_recipe(model.card.recipe)(maps[:, None])
    with torch.inference_mode():
        z = model.model.encode(torch.from_numpy(x)).numpy()
    pca = model.card.extras["pca"]
    rotated = PCAProjection.from_params(np.asarray(pca["mean"]), np.asarray(pca["components"])).transform(z)
    return latent_angle(rotated)


def random_discs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(maps, PA, inclination) of ``n`` regular KinMS discs drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    pa = rng.uniform(0.0, 360.0, n)
    inc = rng.uniform(20.0, 85.0, n)
    maps = np.stack([kinms_disc_map(p, i, rng.uniform(3.0, 10.0), rng.uniform(100.0, 300.0), seed=k + 1)
                     for k, (p, i) in enumerate(zip(pa, inc))])
    return maps, pa, inc


def main(n: int = 120, seed: int = 2020) -> None:
    maps, pa, _ = random_discs(n, seed)
    calibration = PositionAngleCalibration().fit(published_latent_angles(maps), pa)
    print(f"{n} KinMS discs (seed {seed}): sense {calibration.sense_:+d}, offset {calibration.offset_deg_:.1f} deg, "
          f"residual sigma {calibration.sigma_deg_:.1f} deg")
    print(f"DAWSON2020_PA_CALIBRATION = {{'sense': {calibration.sense_}, 'offset_deg': {calibration.offset_deg_:.1f}}}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
