"""Single-galaxy timings of the mock generator: one galaxy, one observation.

Run: python benchmarks/bench_mock.py [repeats]

Each figure is printed with its ratio against a baseline timed in the same run:
- make_galaxy against drawing the bare clumpy-disc particles (the rest is the mass
  model, the disturbance, the aperture, the angular-momentum alignment, kappa and r98);
- the cube of `kinms_cube` and the whole `observe` (projection, kinematic PA, cube, mask,
  moments; with noise, also the noise and smooth masking) against the bare KinMS
  model_cube call on the same clouds, one thread each (``threadpoolctl``), so the ratio is
  per core. Target: observe >= 3x faster than the bare KinMS cube.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from kinms import KinMS

from threadpoolctl import threadpool_limits

from galexplore.mock.galaxies import DISTURBANCES, PARTICLE_MASS_MSUN, make_galaxy
from galexplore.mock.massmodel import MassModel
from galexplore.mock.observe import ObservingSetup, kinms_cube, observe, sky_projection
from galexplore.mock.particles import clumpy_disc


def median_time(function, repeats: int) -> float:
    """Median wall time of ``repeats`` calls, seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


#: A typical galaxy of the sample: 10^9.7 Msun of star-forming gas, 2,768 particles.
MODEL = MassModel(log_mstar=10.4, log_mgas=9.7, log_m200=11.9, c200=8.5, rd_star_kpc=2.2, rd_gas_kpc=6.2)


def main(repeats: int = 20) -> None:
    with threadpool_limits(1):
        run(repeats)


def run(repeats: int) -> None:
    rng = np.random.default_rng(0)
    model = MODEL
    n = int(round(10**model.log_mgas / PARTICLE_MASS_MSUN))
    baseline_disc = median_time(lambda: clumpy_disc(rng, model, n, 7.0), repeats)
    print(f"baseline clumpy_disc ({n} particles): {baseline_disc * 1e3:7.2f} ms")
    for name in DISTURBANCES:
        strength = 0.0 if name == "none" else 0.7
        t = median_time(lambda: make_galaxy(rng, name, strength, mass_model=model), repeats)
        print(f"make_galaxy {name:17s}: {t * 1e3:7.2f} ms  ({t / baseline_disc:5.1f} x baseline)")

    galaxy = make_galaxy(np.random.default_rng(1), "none", 0.0, mass_model=model)
    setup = ObservingSetup()
    scale = setup.r98_fill_arcsec / galaxy.r98_kpc
    west, north, v_los = sky_projection(galaxy.positions * scale, galaxy.velocities, 30.0, 60.0)
    n_channels = 2 * (int(np.ceil(np.abs(v_los).max() / setup.channel_kms)) + 1)
    clouds = np.column_stack([west, north, np.zeros_like(west)])

    def bare_kinms():
        KinMS(64.0, 64.0, n_channels * 10.0, 1.0, 10.0, 3.0, nSamps=len(v_los)).model_cube(
            0.0, 0.0, inClouds=clouds, vLOS_clouds=v_los, intFlux=1.0)

    baseline_kinms = median_time(bare_kinms, repeats)
    print(f"baseline bare KinMS cube ({n_channels} channels, {len(v_los)} clouds): {baseline_kinms * 1e3:7.2f} ms")
    t = median_time(lambda: kinms_cube(west, north, v_los, 1.0, n_channels, setup), repeats)
    print(f"kinms_cube (same cube, one FFT): {t * 1e3:7.2f} ms  ({baseline_kinms / t:5.2f} x faster than bare KinMS)")
    for snr in (None, 10.0):
        t = median_time(lambda: observe(galaxy, 30.0, 60.0, rng, snr=snr), repeats)
        label = "noiseless" if snr is None else f"S/N = {snr:g}"
        print(f"observe {label:10s}: {t * 1e3:7.2f} ms  ({baseline_kinms / t:5.2f} x faster than bare KinMS)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
