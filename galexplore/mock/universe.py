"""A mock universe: clustered volume -> environments -> particle galaxies -> KinMS views -> dataset.

How the work is split (`build_universe`):

1. Here: the clustered volume and the choice of targets, from one generator (an FFT of
   the box; seconds).
2. On the workers, in blocks of targets: the environment measures. Here: the probability
   that each target's gas is disturbed, which is calibrated over all targets.
3. On the workers, one task per chunk file of the dataset: the galaxies' environment maps,
   particles and KinMS views, encoded as the chunk file's bytes. Here: the bytes and the
   catalogue rows are written in order.

Workers are those of `galexplore.parallel.open_engine`: this process, a local dask cluster
or a remote one. The same seed gives the same bytes whatever the workers: every galaxy
draws from its own child of the root ``SeedSequence``, and environments are computed target
by target.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from galexplore.errors import ParameterError
from galexplore.mock.volume import Volume
from galexplore.parallel import SerialEngine, open_engine

H0_KMS_MPC = 70.0
#: Channels of a universe dataset, in store order, with their units.
CHANNELS = ("mom0", "mom1", "mom2", "env")
CHANNEL_UNITS = {"mom0": "Jy/beam km/s", "mom1": "km/s", "mom2": "km/s", "env": "counts"}
#: Quantisation of "compact" storage: mom0 to 1/256 of each map's peak, velocities to 1 km/s
#: (a tenth of the 10 km/s channel width), environment counts exactly.
COMPACT_QUANTISATION = {
    "mom0": {"mode": "relative", "step": 2.0**-8, "delta": True},
    "mom1": {"mode": "absolute", "step": 1.0, "delta": True},
    "mom2": {"mode": "absolute", "step": 1.0, "delta": True},
    "env": {"mode": "absolute", "step": 1.0, "delta": False},
}
#: Tracer galaxies per target galaxy in the clustered volume (the neighbours that environments count).
TRACERS_PER_TARGET = 12
#: Relative frequency of each disturbance mechanism among disturbed galaxies.
MECHANISM_WEIGHTS = {"merger": 0.2, "clumps": 0.2, "tidal": 0.2, "dispersion": 0.2, "lopsided": 0.1,
                     "radial_inflow": 0.1}
#: Attempts at drawing a galaxy with enough gas in the aperture before giving up.
MAX_DRAWS = 50
#: Maps per chunk file of a universe dataset (rounded down to whole galaxies): one worker task each.
UNIVERSE_CHUNK_MAPS = 128
#: Blocks of targets per worker for the environment measures (a block builds its own search trees).
MEASURE_BLOCKS_PER_WORKER = 2


@dataclass(frozen=True)
class UniverseConfig:
    """Everything that determines a mock universe; saved as its provenance.

    Parameters
    ----------
    n_galaxies : number of target galaxies (each observed ``views`` times).
    views : observations per galaxy, each at a random PA in [0, 360) and inclination in [5, 85] deg.
    seed : root seed; the same seed gives identical files.
    snr : S/N of eq. 2 of Dawson et al. (2020); None for noiseless cubes.
    disturbed_fraction : mean probability that a galaxy's gas is disturbed (sets the kappa imbalance).
    environment_coupling : how strongly the large-scale density raises that probability (0 = none).
    storage : map storage kind of the written dataset ("float32", "float16" or "compact").
    box_mpc_h : side of the periodic volume in h^-1 Mpc.
    strength_range : range of the disturbance strength of disturbed galaxies.
    smaller_fraction : fraction of views in which the galaxy's 98th-percentile radius subtends
        less than the field (16" to 32" instead of 32").
    pointing_sigma_arcsec : standard deviation of the offset of the map centre from the
        galaxy's centre of potential, per axis, arcsec.
    """

    n_galaxies: int = 2000
    views: int = 2
    seed: int = 0
    snr: float | None = None
    disturbed_fraction: float = 0.6
    environment_coupling: float = 1.0
    storage: str = "float32"
    box_mpc_h: float = 100.0
    strength_range: tuple[float, float] = field(default=(0.4, 1.0))
    smaller_fraction: float = 0.25
    pointing_sigma_arcsec: float = 1.0

    def validate(self) -> None:
        """Raise ParameterError for values that cannot make a universe."""
        if not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ParameterError(f"seed must be a non-negative integer, got {self.seed!r}.")
        if self.n_galaxies < 1:
            raise ParameterError(f"n_galaxies must be at least 1, got {self.n_galaxies}.")
        if self.views < 1:
            raise ParameterError(f"views must be at least 1, got {self.views}.")
        if self.snr is not None and not self.snr > 0:
            raise ParameterError(f"snr must be positive (or omitted for noiseless maps), got {self.snr}.")
        if not 0.0 <= self.disturbed_fraction <= 1.0:
            raise ParameterError(
                f"disturbed_fraction must lie in [0, 1], got {self.disturbed_fraction}.")
        if self.environment_coupling < 0:
            raise ParameterError(
                f"environment_coupling must be >= 0 (0 switches it off), got {self.environment_coupling}.")
        if self.box_mpc_h < 100.0:
            raise ParameterError(f"box_mpc_h must be at least 100 h^-1 Mpc, got {self.box_mpc_h}.")
        lo, hi = self.strength_range
        if not 0.0 <= lo <= hi <= 1.0:
            raise ParameterError(f"strength_range must satisfy 0 <= low <= high <= 1, got {self.strength_range}.")
        if not 0.0 <= self.smaller_fraction <= 1.0:
            raise ParameterError(f"smaller_fraction must lie in [0, 1], got {self.smaller_fraction}.")
        if not self.pointing_sigma_arcsec >= 0:
            raise ParameterError(f"pointing_sigma_arcsec must be >= 0, got {self.pointing_sigma_arcsec}.")


@dataclass(frozen=True)
class _GalaxyTask:
    """What one worker needs to make one galaxy and its views."""

    index: int
    seed_sequence: np.random.SeedSequence
    p_disturbed: float
    env_map: np.ndarray
    env_row: dict
    config: UniverseConfig


def _draw_galaxy(rng: np.random.Generator, config: UniverseConfig, p_disturbed: float):
    """A galaxy with enough star-forming gas in the aperture (drawn again until it has)."""
    from galexplore.mock.galaxies import TooFewParticles, make_galaxy

    for _ in range(MAX_DRAWS):
        if rng.random() < p_disturbed:
            names = list(MECHANISM_WEIGHTS)
            weights = np.array([MECHANISM_WEIGHTS[n] for n in names])
            disturbance = str(rng.choice(names, p=weights / weights.sum()))
            strength = float(rng.uniform(*config.strength_range))
        else:
            disturbance, strength = "none", 0.0
        try:
            return make_galaxy(rng, disturbance, strength)
        except TooFewParticles:
            continue
    raise ParameterError(f"no galaxy with enough gas in the aperture after {MAX_DRAWS} draws; "
                         "this mass model selects almost none")


def _make_galaxy_views(task: _GalaxyTask) -> tuple[np.ndarray, list[dict]]:
    """Build one galaxy, observe it ``views`` times; return (views, C, 64, 64) maps and catalogue rows."""
    from galexplore.mock.observe import ObservingSetup, observe

    config = task.config
    rng = np.random.default_rng(task.seed_sequence)
    galaxy = _draw_galaxy(rng, config, task.p_disturbed)
    properties = galaxy.properties()
    setup = ObservingSetup()

    maps = np.empty((config.views, len(CHANNELS), 64, 64), dtype=np.float32)
    rows = []
    for view in range(config.views):
        pa = float(rng.uniform(0.0, 360.0))
        inc = float(rng.uniform(5.0, 85.0))
        smaller = rng.random() < config.smaller_fraction
        fill = float(rng.uniform(0.5, 1.0) * setup.r98_fill_arcsec) if smaller else setup.r98_fill_arcsec
        offset = rng.normal(0.0, config.pointing_sigma_arcsec, 2)
        obs = observe(galaxy, pa, inc, rng, snr=config.snr, setup=setup, fill_arcsec=fill, offset_arcsec=offset)
        maps[view, 0], maps[view, 1], maps[view, 2] = obs.mom0, obs.mom1, obs.mom2
        maps[view, 3] = task.env_map
        v_pec = task.env_row["v_pec"]
        rows.append({
            "id": task.index * config.views + view,
            "galaxy_id": task.index,
            "view": view,
            "kappa": galaxy.kappa,
            "pa": pa,
            "pa_kin": obs.pa_kin_deg,
            "inc": inc,
            "snr": np.nan if config.snr is None else float(config.snr),
            "fill_arcsec": fill,
            "offset_west": float(offset[0]),
            "offset_north": float(offset[1]),
            "pixel_kpc": obs.pixel_kpc,
            "blank_fraction": float(np.mean(~np.isfinite(obs.mom1))),
            **properties,
            "distance": obs.distance_mpc,
            "distance_z": obs.distance_mpc + v_pec / H0_KMS_MPC,
            **task.env_row,
        })
    return maps, rows


def _column_units() -> dict[str, str]:
    from galexplore.mock.environment import COLUMN_UNITS as ENV_UNITS
    from galexplore.mock.galaxies import COLUMN_UNITS as GALAXY_UNITS

    return {
        "id": "", "galaxy_id": "", "view": "", "kappa": "", "pa": "deg", "pa_kin": "deg", "inc": "deg",
        "snr": "", "fill_arcsec": "arcsec", "offset_west": "arcsec", "offset_north": "arcsec", "pixel_kpc": "kpc",
        "blank_fraction": "",
        **GALAXY_UNITS, "distance": "Mpc", "distance_z": "Mpc", **ENV_UNITS,
    }


@dataclass(frozen=True)
class EnvironmentPlan:
    """Where the targets live.

    Attributes
    ----------
    volume : the clustered volume (tracers and targets).
    targets : (n_galaxies,) indices of the targets in ``volume``.
    measures : environment measures per target (Sigma_5, n_1mpc, d_nn, delta_ls, v_pec).
    p_disturbed : probability that each target's gas is disturbed, rising with density.
    """

    volume: Volume
    targets: np.ndarray
    measures: pd.DataFrame
    p_disturbed: np.ndarray


@dataclass(frozen=True)
class _ChunkTask:
    """One chunk file's galaxies: what a worker needs besides the volume and the storage."""

    first: int
    seed_sequences: tuple[np.random.SeedSequence, ...]
    p_disturbed: np.ndarray
    targets: np.ndarray
    env_rows: tuple[dict, ...]
    config: UniverseConfig


def _place_targets(config: UniverseConfig) -> tuple[Volume, np.ndarray]:
    from galexplore.mock.environment import clustered_volume

    rng = np.random.default_rng(np.random.SeedSequence(config.seed).spawn(1)[0])
    n_tracers = max(config.n_galaxies * TRACERS_PER_TARGET, 20000)
    volume = clustered_volume(n_tracers, rng, box_mpc_h=config.box_mpc_h)
    return volume, np.sort(rng.choice(len(volume.positions), size=config.n_galaxies, replace=False))


def _measure(targets: np.ndarray, volume: Volume) -> pd.DataFrame:
    from galexplore.mock.environment import environment_measures

    return environment_measures(volume, targets)


def _plan(config: UniverseConfig, engine, volume: Volume, targets: np.ndarray, shared_volume) -> EnvironmentPlan:
    """Measures on the workers in blocks of targets (a target's measures do not depend on the
    block), then the disturbance probabilities, calibrated over all targets, here."""
    from galexplore.mock.environment import disturbed_probability

    blocks = np.array_split(targets, min(len(targets), MEASURE_BLOCKS_PER_WORKER * engine.workers))
    measures = pd.concat(list(engine.ordered(_measure, blocks, shared_volume)), ignore_index=True)
    p_disturbed = disturbed_probability(
        measures["delta_ls"].to_numpy(), config.disturbed_fraction, config.environment_coupling)
    return EnvironmentPlan(volume, targets, measures, p_disturbed)


def plan_environment(config: UniverseConfig) -> EnvironmentPlan:
    """Place the targets in a clustered volume and measure their environments (in this process)."""
    volume, targets = _place_targets(config)
    return _plan(config, SerialEngine(), volume, targets, volume)


def _chunk_tasks(config: UniverseConfig, plan: EnvironmentPlan, per_chunk: int) -> Iterator[_ChunkTask]:
    galaxy_seeds = np.random.SeedSequence(config.seed).spawn(2)[1].spawn(config.n_galaxies)
    env_rows = plan.measures.astype(np.float64).to_dict("records")
    for first in range(0, config.n_galaxies, per_chunk):
        last = min(first + per_chunk, config.n_galaxies)
        yield _ChunkTask(first, tuple(galaxy_seeds[first:last]), plan.p_disturbed[first:last],
                         plan.targets[first:last], tuple(env_rows[first:last]), config)


def _make_chunk(task: _ChunkTask, volume: Volume, storage: dict) -> tuple[bytes, pd.DataFrame]:
    """A worker's task: the galaxies of one chunk file, their views encoded as its bytes, and their rows."""
    from galexplore.data.mapstore import encode_chunk_for
    from galexplore.mock.environment import environment_maps

    env_maps = environment_maps(volume, task.targets)
    maps, rows = [], []
    for k, seed_sequence in enumerate(task.seed_sequences):
        galaxy = _GalaxyTask(task.first + k, seed_sequence, float(task.p_disturbed[k]), env_maps[k],
                             task.env_rows[k], task.config)
        views, view_rows = _make_galaxy_views(galaxy)
        maps.append(views)
        rows.extend(view_rows)
    return encode_chunk_for(np.concatenate(maps), storage, list(CHANNELS)), pd.DataFrame(rows)


def build_universe(config: UniverseConfig, out: str | os.PathLike, *, workers: int | None = None,
                   scheduler: str | None = None, progress: bool = False, overwrite: bool = False) -> Path:
    """Generate a mock universe and write it as a galexplore dataset at ``out``.

    Parameters
    ----------
    config : what to generate (see `UniverseConfig`).
    out : dataset directory to create; it appears only once complete.
    workers : worker processes of a local dask cluster (default: all cores; 1 without a
        scheduler works in this process). The output does not depend on it.
    scheduler : ``"local"`` or the address of a dask scheduler (see `galexplore.parallel`).
    progress : show a progress bar (galaxies per second) on stderr.
    overwrite : replace an existing dataset at ``out``.
    """
    from galexplore import __version__
    from galexplore.data.dataset import create_dataset

    config.validate()
    per_chunk = max(1, UNIVERSE_CHUNK_MAPS // config.views)
    provenance = {
        "generator": "galexplore.mock.universe",
        "generator_version": __version__,
        "parameters": {k: v for k, v in asdict(config).items() if k != "storage"},
        "seed": config.seed,
        "kinms_version": _kinms_version(),
    }
    writer = create_dataset(out, CHANNELS, CHANNEL_UNITS, storage=config.storage, provenance=provenance,
                            overwrite=overwrite, chunk_maps=per_chunk * config.views,
                            quantisation=COMPACT_QUANTISATION if config.storage == "compact" else None)
    units = _column_units()
    with writer, open_engine(workers, scheduler) as engine:
        volume, targets = _place_targets(config)
        shared_volume = engine.share(volume)
        plan = _plan(config, engine, volume, targets, shared_volume)
        bar = _progress_bar(config.n_galaxies, progress)
        for data, rows in engine.ordered(_make_chunk, _chunk_tasks(config, plan, per_chunk), shared_volume,
                                         writer.storage):
            writer.append_encoded(data, len(rows), rows, column_units=units)
            bar.update(len(rows) // config.views)
        bar.close()
    return Path(out)


def _kinms_version() -> str:
    from importlib.metadata import version

    return version("kinms")


def _progress_bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="galaxy", disable=not enabled, desc="galaxies")
