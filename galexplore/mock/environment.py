"""Environment maps and measures (Gim, Moon & Yoon) for a mock volume or a real catalogue.

A map counts the neighbours of a target (the target itself excluded) in a square window of
``size_mpc_h`` (10 h^-1 Mpc) on the sky centred on it, with |dv| < ``dv_kms`` (1000 km/s)
along the line of sight, on ``npix`` x ``npix`` pixels. Orientation follows the sky
convention of docs/CONTRACTS.md: row 0 is the south edge (north up) and columns increase
towards the west (east left). Pixel (row, col) holds offsets
north in [-s/2 + row p, -s/2 + (row + 1) p) and east in (s/2 - (col + 1) p, s/2 - col p],
with p = s / npix.

For a mock `Volume` the sky plane is (x = east, y = north) and z is the line of sight, in
redshift space, with periodic wrapping. For a `SkyCatalog` each neighbour is projected onto
the tangent plane at the target (gnomonic) and scaled by the target's comoving distance.

Measures (`environment_measures`, units in `COLUMN_UNITS`) use the same velocity window:
``sigma5`` = 5 / (pi d5^2) with d5 the projected distance of the 5th nearest neighbour,
``n_1mpc`` neighbours within 1 Mpc projected, ``d_nn`` the nearest projected distance,
``delta_ls`` the density contrast in a sphere of 8 h^-1 Mpc (redshift space), and
``v_pec`` the line-of-sight peculiar velocity. Mpc use h = 0.7.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import brentq
from scipy.spatial import cKDTree

from galexplore.errors import ParameterError
from galexplore.mock.sky_catalog import SkyCatalog, read_table, sky_catalog_from_dataframe
from galexplore.mock.volume import H0_KMS_PER_MPC_H, LITTLE_H, Volume, clustered_volume, wrap_periodic

__all__ = [
    "COLUMN_UNITS", "CatalogEnvironment", "SkyCatalog", "Volume", "clustered_volume",
    "disturbed_probability", "environment_dataset_from_catalog", "environment_from_catalog",
    "environment_maps", "environment_measures",
]

#: Units of the columns of `environment_measures`.
COLUMN_UNITS = {"sigma5": "Mpc^-2", "n_1mpc": "count", "d_nn": "Mpc", "delta_ls": "", "v_pec": "km/s"}
#: Velocity window of every neighbour count, km/s.
VELOCITY_WINDOW_KMS = 1000.0
#: Projected radius of ``n_1mpc`` in h^-1 Mpc (1 Mpc with h = 0.7).
ONE_MPC_IN_MPC_H = 1.0 * LITTLE_H
#: Radius of the sphere of ``delta_ls``, h^-1 Mpc.
LARGE_SCALE_RADIUS_MPC_H = 8.0
#: Search radii (h^-1 Mpc) tried in turn for the 5th nearest neighbour; beyond the last, NaN.
NEIGHBOUR_SEARCH_RADII_MPC_H = (2.0, 4.0, 10.0)
#: 1 + delta is floored here in `disturbed_probability` so that empty spheres stay finite.
DENSITY_FLOOR = 0.05


@dataclass(frozen=True)
class _Offsets:
    """Neighbour pairs: position of the target in the target list, sky-plane offsets in h^-1 Mpc."""

    target: np.ndarray
    east: np.ndarray
    north: np.ndarray


def _flatten(lists: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(query index, found index) pairs from cKDTree.query_ball_point's array of lists."""
    lengths = np.fromiter((len(found) for found in lists), dtype=np.int64, count=len(lists))
    query = np.repeat(np.arange(len(lists)), lengths)
    found = np.fromiter((j for found in lists for j in found), dtype=np.int64, count=int(lengths.sum()))
    return query, found


def _check_targets(source: Volume | SkyCatalog, targets: np.ndarray) -> np.ndarray:
    targets = np.asarray(targets)
    if targets.ndim != 1 or not np.issubdtype(targets.dtype, np.integer):
        raise ParameterError(f"targets must be a 1-D array of galaxy indices, got shape {targets.shape} "
                             f"and dtype {targets.dtype}.")
    if targets.size and (targets.min() < 0 or targets.max() >= len(source)):
        raise ParameterError(f"targets must index the {len(source)} galaxies (0 to {len(source) - 1}).")
    return targets.astype(np.int64)


def _box_offsets(volume: Volume, targets: np.ndarray, reach: float, window: float) -> _Offsets:
    """Pairs with |east|, |north| <= reach and |d los| < window in a periodic box (redshift space)."""
    box = volume.box_mpc_h
    if box <= 2 * reach or box <= 2 * window:
        raise ParameterError(
            f"the box ({box} h^-1 Mpc) must be wider than twice the search reach ({reach} h^-1 Mpc) and the "
            f"velocity window ({window} h^-1 Mpc); use a larger box.")
    squeeze = reach / window  # makes the velocity window as deep as the sky window is wide
    boxsize = np.array([box, box, box * squeeze])
    points = wrap_periodic(volume.redshift_positions * np.array([1.0, 1.0, squeeze]), boxsize)
    tree = cKDTree(points, boxsize=boxsize)
    query, found = _flatten(tree.query_ball_point(points[targets], reach, p=np.inf, return_sorted=False))
    delta = volume.redshift_positions[found] - volume.redshift_positions[targets[query]]
    delta = wrap_periodic(delta + box / 2, box) - box / 2
    keep = (found != targets[query]) & (np.abs(delta[:, 2]) < window)
    return _Offsets(query[keep], delta[keep, 0], delta[keep, 1])


def _sky_offsets(catalog: SkyCatalog, targets: np.ndarray, reach: float, window: float) -> _Offsets:
    """Pairs with |east|, |north| <= reach on the target's tangent plane and |d los| < window."""
    los = catalog.line_of_sight_mpc_h
    distance_h = catalog.distance_mpc[targets] * LITTLE_H
    max_angle = np.arctan(reach * np.sqrt(2.0) / distance_h)
    # A neighbour within max_angle and the velocity window lies within this redshift-space distance.
    radius = (los[targets] + window) * max_angle + window
    query_points = catalog.redshift_space_positions[targets]
    query, found = _flatten(catalog.redshift_space_tree.query_ball_point(query_points, radius,
                                                                         return_sorted=False))
    target = targets[query]
    keep = (found != target) & (np.abs(los[found] - los[target]) < window)
    query, found, target = query[keep], found[keep], target[keep]
    direction = catalog.unit_vectors[found]
    cos_angle = np.einsum("ij,ij->i", direction, catalog.unit_vectors[target])
    front = cos_angle > 0
    query, target, direction, cos_angle = query[front], target[front], direction[front], cos_angle[front]
    scale = distance_h[query] / cos_angle
    east = scale * np.einsum("ij,ij->i", direction, catalog.east_vectors[target])
    north = scale * np.einsum("ij,ij->i", direction, catalog.north_vectors[target])
    inside = (np.abs(east) <= reach) & (np.abs(north) <= reach)
    return _Offsets(query[inside], east[inside], north[inside])


def _offsets(source: Volume | SkyCatalog, targets: np.ndarray, reach: float, window: float) -> _Offsets:
    if isinstance(source, Volume):
        return _box_offsets(source, targets, reach, window)
    if isinstance(source, SkyCatalog):
        return _sky_offsets(source, targets, reach, window)
    raise ParameterError(f"environments need a Volume or a SkyCatalog, got {type(source).__name__}.")


def environment_maps(source: Volume | SkyCatalog, targets: np.ndarray, size_mpc_h: float = 10.0,
                     dv_kms: float = VELOCITY_WINDOW_KMS, npix: int = 64) -> np.ndarray:
    """Neighbour-count maps around each target (see the module docstring for the geometry).

    Parameters
    ----------
    source : a mock `Volume` or a real `SkyCatalog`.
    targets : (n,) integer indices of the target galaxies in ``source``.
    size_mpc_h : side of the square sky window in h^-1 Mpc.
    dv_kms : half-width of the line-of-sight velocity window in km/s.
    npix : pixels per side.

    Returns
    -------
    (n, npix, npix) float32 counts.
    """
    targets = _check_targets(source, targets)
    if not (size_mpc_h > 0 and dv_kms > 0 and npix >= 1):
        raise ParameterError(f"size_mpc_h, dv_kms and npix must be positive, got {size_mpc_h}, {dv_kms}, {npix}.")
    half = size_mpc_h / 2.0
    pixel = size_mpc_h / npix
    pairs = _offsets(source, targets, half, dv_kms / H0_KMS_PER_MPC_H)
    row = np.floor((pairs.north + half) / pixel).astype(np.int64)
    col = np.floor((half - pairs.east) / pixel).astype(np.int64)
    inside = (row >= 0) & (row < npix) & (col >= 0) & (col < npix)
    flat = (pairs.target[inside] * npix + row[inside]) * npix + col[inside]
    counts = np.bincount(flat, minlength=targets.size * npix * npix)
    return counts.reshape(targets.size, npix, npix).astype(np.float32)


def _nearest_projected(source: Volume | SkyCatalog, targets: np.ndarray,
                       window: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Projected distances (h^-1 Mpc) of the 1st and 5th nearest neighbours, and counts within 1 Mpc."""
    first = np.full(targets.size, np.nan)
    fifth = np.full(targets.size, np.nan)
    within_one_mpc = np.zeros(targets.size, dtype=np.int64)
    pending = np.arange(targets.size)
    for step, radius in enumerate(NEIGHBOUR_SEARCH_RADII_MPC_H):
        if pending.size == 0:
            break
        pairs = _offsets(source, targets[pending], radius, window)
        distance = np.hypot(pairs.east, pairs.north)
        inside = distance <= radius
        owner, distance = pairs.target[inside], distance[inside]
        if step == 0:
            within_one_mpc = np.bincount(owner[distance < ONE_MPC_IN_MPC_H], minlength=targets.size)
        order = np.lexsort((distance, owner))
        owner, distance = owner[order], distance[order]
        count = np.bincount(owner, minlength=pending.size)
        start = np.concatenate([[0], np.cumsum(count)[:-1]])
        has_one = (count >= 1) & np.isnan(first[pending])
        first[pending[has_one]] = distance[start[has_one]]
        has_five = count >= 5
        fifth[pending[has_five]] = distance[start[has_five] + 4]
        pending = pending[~has_five]
    return first, fifth, within_one_mpc


def _large_scale_contrast(source: Volume | SkyCatalog, targets: np.ndarray) -> np.ndarray:
    """Counts in a redshift-space sphere of 8 h^-1 Mpc (target excluded) over the mean, minus 1."""
    radius = LARGE_SCALE_RADIUS_MPC_H
    sphere = 4.0 / 3.0 * np.pi * radius**3
    if isinstance(source, Volume):
        box = source.box_mpc_h
        if box <= 2 * radius:
            raise ParameterError(f"the box ({box} h^-1 Mpc) must be wider than {2 * radius} h^-1 Mpc.")
        tree = cKDTree(source.redshift_positions, boxsize=box)
        counts = tree.query_ball_point(source.redshift_positions[targets], radius, return_length=True) - 1
        expected = (len(source) - 1) * sphere / box**3
        return counts / expected - 1.0
    # Sky: the mean density is that of the catalogue in the shell spanned by the sphere (full sky).
    positions = source.redshift_space_positions[targets]
    counts = source.redshift_space_tree.query_ball_point(positions, radius, return_length=True) - 1
    los = source.line_of_sight_mpc_h[targets]
    ordered = source.sorted_line_of_sight
    in_shell = (np.searchsorted(ordered, los + radius, side="right")
                - np.searchsorted(ordered, los - radius, side="left") - 1)
    shell = 4.0 / 3.0 * np.pi * ((los + radius) ** 3 - np.maximum(los - radius, 0.0) ** 3)
    expected = in_shell * sphere / shell
    contrast = np.full(targets.size, np.nan)  # NaN where the shell holds no other galaxy
    np.divide(counts, expected, out=contrast, where=expected > 0)
    return contrast - 1.0


def environment_measures(source: Volume | SkyCatalog, targets: np.ndarray) -> pd.DataFrame:
    """Classical environment measures of each target, one row per target (units: `COLUMN_UNITS`).

    Parameters
    ----------
    source : a mock `Volume` or a real `SkyCatalog`.
    targets : (n,) integer indices of the target galaxies in ``source``.

    Returns
    -------
    DataFrame with ``sigma5`` (Mpc^-2; NaN when the 5th neighbour is beyond 10 h^-1 Mpc),
    ``n_1mpc``, ``d_nn`` (Mpc; NaN likewise), ``delta_ls`` (NaN for a catalogue target with
    no other galaxy in its distance shell) and ``v_pec`` (km/s; NaN for a catalogue without
    both distances and redshifts).
    """
    targets = _check_targets(source, targets)
    window = VELOCITY_WINDOW_KMS / H0_KMS_PER_MPC_H
    first, fifth, within_one_mpc = _nearest_projected(source, targets, window)
    fifth_mpc = fifth / LITTLE_H
    if isinstance(source, Volume):
        v_pec = source.velocities[targets, 2]
    else:
        v_pec = source.peculiar_velocity_kms[targets]
    return pd.DataFrame({
        "sigma5": 5.0 / (np.pi * fifth_mpc**2),
        "n_1mpc": within_one_mpc,
        "d_nn": first / LITTLE_H,
        "delta_ls": _large_scale_contrast(source, targets),
        "v_pec": v_pec,
    })


def disturbed_probability(delta_ls: np.ndarray, base_fraction: float, coupling: float) -> np.ndarray:
    """Probability that a galaxy's gas is disturbed, rising with its large-scale density.

    p_i = 1 / (1 + exp(-(a + coupling * u_i))), with u = log(max(1 + delta, 0.05)) standardised
    over the sample (zero mean, unit variance) and the intercept a solved so that mean(p) equals
    ``base_fraction`` exactly. coupling = 0 gives p = base_fraction everywhere.

    Parameters
    ----------
    delta_ls : (n,) large-scale density contrasts (> -1).
    base_fraction : mean probability over the sample, in [0, 1].
    coupling : slope per standard deviation of log density (>= 0).
    """
    delta_ls = np.asarray(delta_ls, dtype=np.float64)
    if not np.isfinite(delta_ls).all():
        raise ParameterError("delta_ls must be finite; compute it with environment_measures.")
    if not 0.0 <= base_fraction <= 1.0:
        raise ParameterError(f"base_fraction must lie in [0, 1], got {base_fraction}.")
    if not coupling >= 0:
        raise ParameterError(f"coupling must be >= 0 (0 switches it off), got {coupling}.")
    if base_fraction in (0.0, 1.0) or delta_ls.size == 0:
        return np.full(delta_ls.shape, float(base_fraction))
    log_density = np.log(np.maximum(1.0 + delta_ls, DENSITY_FLOOR))
    spread = log_density.std()
    standardised = (log_density - log_density.mean()) / spread if spread > 0 else np.zeros_like(log_density)
    slope = coupling * standardised

    def excess(intercept: float) -> float:
        return float(np.mean(1.0 / (1.0 + np.exp(-(intercept + slope))))) - base_fraction

    logit = np.log(base_fraction / (1.0 - base_fraction))
    span = abs(logit) + coupling * np.abs(standardised).max() + 1.0
    intercept = brentq(excess, -span, span, xtol=1e-12) if coupling > 0 else logit
    return 1.0 / (1.0 + np.exp(-(intercept + slope)))


@dataclass(frozen=True)
class CatalogEnvironment:
    """Environments of targets drawn from a real catalogue.

    Attributes
    ----------
    catalog : the prepared `SkyCatalog` (all usable galaxies).
    targets : (n,) indices of the targets in ``catalog``.
    maps : (n, 64, 64) float32 neighbour counts.
    measures : `environment_measures` of the targets.
    """

    catalog: SkyCatalog
    targets: np.ndarray
    maps: np.ndarray
    measures: pd.DataFrame

    @property
    def info(self) -> dict:
        """Columns used and rows dropped (see `SkyCatalog.info`)."""
        return self.catalog.info


def environment_from_catalog(df: pd.DataFrame, ra_column: str | None = None, dec_column: str | None = None,
                             distance_column: str | None = None, redshift_column: str | None = None, *,
                             n_targets: int = 2000, seed: int = 0) -> CatalogEnvironment:
    """Environment maps and measures of ``n_targets`` galaxies of a real catalogue.

    Columns are auto-detected when not named (see `sky_catalog_from_dataframe`); rows with
    NaN coordinates are dropped and counted in ``.info``. Targets are drawn with ``seed`` from
    the galaxies far enough from the catalogue's distance limits (`SkyCatalog.eligible_targets`).
    """
    catalog = sky_catalog_from_dataframe(df, ra_column, dec_column, distance_column, redshift_column)
    targets = catalog.select_targets(n_targets, np.random.default_rng(seed))
    return CatalogEnvironment(catalog, targets, environment_maps(catalog, targets),
                              environment_measures(catalog, targets))


def environment_dataset_from_catalog(catalog_path: str | os.PathLike, out: str | os.PathLike, n_targets: int,
                                     seed: int, ra_column: str | None = None, dec_column: str | None = None,
                                     distance_column: str | None = None, redshift_column: str | None = None,
                                     overwrite: bool = False) -> Path:
    """Write a galexplore dataset of environment maps (channel ``env``) from a CSV/Parquet catalogue.

    The dataset catalogue has ``id``, ``galaxy_id`` (row in the source table), ``view`` = 0,
    ``name`` (when the table has names), ``ra``, ``dec`` (deg), ``distance`` (Mpc) and the
    environment measures. Returns the dataset path.
    """
    from galexplore import __version__
    from galexplore.data.dataset import create_dataset

    table = read_table(catalog_path)
    env = environment_from_catalog(table, ra_column, dec_column, distance_column, redshift_column,
                                   n_targets=n_targets, seed=seed)
    sky, targets = env.catalog, env.targets
    columns = {
        "id": np.arange(targets.size, dtype=np.int64),
        "galaxy_id": sky.source_row[targets],
        "view": np.zeros(targets.size, dtype=np.int64),
    }
    if sky.names is not None:
        columns["name"] = sky.names[targets]
    columns.update(ra=sky.ra_deg[targets], dec=sky.dec_deg[targets], distance=sky.distance_mpc[targets])
    catalog = pd.concat([pd.DataFrame(columns), env.measures], axis=1)
    units = {"id": "", "galaxy_id": "", "view": "", "ra": "deg", "dec": "deg", "distance": "Mpc",
             **COLUMN_UNITS}
    if "name" in catalog:
        units["name"] = ""
    provenance = {
        "generator": "galexplore.mock.environment.environment_dataset_from_catalog",
        "generator_version": __version__,
        "source": str(Path(catalog_path).resolve()),
        "seed": int(seed),
        "n_targets": int(n_targets),
        "size_mpc_h": 10.0,
        "dv_kms": VELOCITY_WINDOW_KMS,
        **env.info,
    }
    with create_dataset(out, ["env"], {"env": "counts"}, provenance=provenance, overwrite=overwrite) as writer:
        writer.append(env.maps[:, None], catalog, column_units=units)
    return Path(out)
