"""Single-galaxy timings of the mock generator: one galaxy, one observation.

Run: python benchmarks/bench_mock.py [repeats]

Each figure is printed with its ratio against a baseline timed in the same run:
- make_galaxy against drawing the bare regular-disc particles (the rest is the mass
  model, the disturbance, the angular-momentum alignment, kappa and r98);
- observe against the bare KinMS model_cube call on the same clouds (the rest is the
  projection, the moments and, with noise, the noise and smooth masking).
Targets: < 0.1 s per galaxy, < 0.2 s per observation (3 moments).
"""

from __future__ import annotations

import sys
import time

import numpy as np
from kinms import KinMS

from galexplore.mock.galaxies import DEFAULT_N_PARTICLES, DISTURBANCES, make_galaxy
from galexplore.mock.massmodel import draw_mass_model
from galexplore.mock.observe import ObservingSetup, observe, sky_projection
from galexplore.mock.particles import regular_disc


def median_time(function, repeats: int) -> float:
    """Median wall time of ``repeats`` calls, seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main(repeats: int = 20) -> None:
    rng = np.random.default_rng(0)
    model = draw_mass_model(rng)
    baseline_disc = median_time(lambda: regular_disc(rng, model, DEFAULT_N_PARTICLES, 7.0), repeats)
    print(f"baseline regular_disc ({DEFAULT_N_PARTICLES} particles): {baseline_disc * 1e3:7.2f} ms")
    for name in DISTURBANCES:
        strength = 0.0 if name == "none" else 0.7
        t = median_time(lambda: make_galaxy(rng, name, strength), repeats)
        print(f"make_galaxy {name:17s}: {t * 1e3:7.2f} ms  ({t / baseline_disc:5.1f} x baseline)")

    galaxy = make_galaxy(np.random.default_rng(1), "none", 0.0)
    setup = ObservingSetup()
    scale = setup.r98_fill_arcsec / galaxy.r98_kpc
    west, north, v_los = sky_projection(galaxy.positions * scale, galaxy.velocities, 30.0, 60.0)
    n_channels = 2 * (int(np.ceil(np.abs(v_los).max() / setup.channel_kms)) + 1)
    clouds = np.column_stack([west, north, np.zeros_like(west)])

    def bare_kinms():
        KinMS(64.0, 64.0, n_channels * 10.0, 1.0, 10.0, 3.0, nSamps=len(v_los)).model_cube(
            0.0, 0.0, inClouds=clouds, vLOS_clouds=v_los, intFlux=1.0)

    baseline_kinms = median_time(bare_kinms, repeats)
    print(f"baseline bare KinMS cube ({n_channels} channels): {baseline_kinms * 1e3:7.2f} ms")
    for snr in (None, 10.0):
        t = median_time(lambda: observe(galaxy, 30.0, 60.0, rng, snr=snr), repeats)
        label = "noiseless" if snr is None else f"S/N = {snr:g}"
        print(f"observe {label:10s}: {t * 1e3:7.2f} ms  ({t / baseline_kinms:5.2f} x bare KinMS)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
