"""A real galaxy catalogue (RA, Dec, distance or redshift) prepared for environment measurements.

Positions are comoving: a given distance column is used as it is (Mpc); a redshift is turned
into a comoving distance with a flat LambdaCDM cosmology (H0 = 70 km/s/Mpc, Omega_m = 0.3).
The line-of-sight velocity that sets the |dv| window is cz when a redshift is given, else
H0 * D. The catalogue is assumed to cover the whole sky; targets are kept away from its
distance limits (see `SkyCatalog.select_targets`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from galexplore.errors import ColumnError, DatasetError, ParameterError
from galexplore.mock.volume import H0_KMS_PER_MPC_H, LITTLE_H

H0_KMS_MPC = 100.0 * LITTLE_H
SPEED_OF_LIGHT_KMS = 299792.458
#: Lower-case column names recognised for each coordinate, in order of preference.
COLUMN_ALIASES = {
    "ra": ("ra", "raj2000", "ra_deg", "radeg", "_raj2000", "ra_j2000"),
    "dec": ("dec", "dej2000", "decj2000", "dec_deg", "decdeg", "_dej2000", "de", "dec_j2000"),
    "distance": ("dist", "distance", "d_mpc", "dist_mpc", "distance_mpc"),
    "redshift": ("z", "redshift", "zhelio", "z_helio", "zcmb"),
    "name": ("name", "ned_name", "objname", "object", "galaxy", "pgc_name"),
}
_FLAGS = {"ra": "--ra-column", "dec": "--dec-column", "distance": "--distance-column",
          "redshift": "--redshift-column"}


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet catalogue; raise DatasetError for a missing or unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"catalogue {path} does not exist; give the path of a CSV or Parquet file.")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if suffix in (".csv", ".txt", ".gz"):
            return pd.read_csv(path)
    except (ValueError, OSError) as err:
        raise DatasetError(f"cannot read catalogue {path}: {err}. Check that it is valid CSV/Parquet.") from err
    raise DatasetError(f"catalogue {path} has suffix {suffix!r}; use a .csv or .parquet file.")


def _find_column(df: pd.DataFrame, role: str, given: str | None, required: bool) -> str | None:
    """The column of ``df`` for ``role``: the given name (exact, then case-insensitive) or an alias."""
    by_lower = {str(c).lower(): str(c) for c in df.columns}
    if given is not None:
        if given in df.columns:
            return given
        if given.lower() in by_lower:
            return by_lower[given.lower()]
        raise ColumnError(
            f"column {given!r} ({role}) is not in the catalogue; it has columns {list(map(str, df.columns))}.")
    for alias in COLUMN_ALIASES[role]:
        if alias in by_lower:
            return by_lower[alias]
    if required:
        raise ColumnError(
            f"no {role} column found among {list(map(str, df.columns))}; name it with {_FLAGS[role]}.")
    return None


@dataclass(frozen=True)
class SkyCatalog:
    """Galaxies on the sky with comoving distances.

    Attributes
    ----------
    ra_deg, dec_deg : (N,) J2000 coordinates in degrees.
    distance_mpc : (N,) comoving distance in Mpc.
    velocity_kms : (N,) line-of-sight velocity in km/s (cz, or H0 * D without a redshift).
    source_row : (N,) int64 row of each galaxy in the source table (0-based position).
    peculiar_velocity_kms : (N,) cz - H0 D where both are known, else NaN.
    names : (N,) object array of names, or None when the table has no name column.
    info : columns used, rows read and rows dropped for non-finite or impossible coordinates.
    """

    ra_deg: np.ndarray
    dec_deg: np.ndarray
    distance_mpc: np.ndarray
    velocity_kms: np.ndarray
    source_row: np.ndarray
    peculiar_velocity_kms: np.ndarray
    names: np.ndarray | None = None
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ra_deg)

    @cached_property
    def unit_vectors(self) -> np.ndarray:
        """(N, 3) unit vectors towards each galaxy (equatorial Cartesian)."""
        ra, dec = np.radians(self.ra_deg), np.radians(self.dec_deg)
        return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=1)

    @cached_property
    def east_vectors(self) -> np.ndarray:
        """(N, 3) unit vectors pointing east (increasing RA) in each galaxy's sky plane."""
        ra = np.radians(self.ra_deg)
        return np.stack([-np.sin(ra), np.cos(ra), np.zeros_like(ra)], axis=1)

    @cached_property
    def north_vectors(self) -> np.ndarray:
        """(N, 3) unit vectors pointing north (increasing Dec) in each galaxy's sky plane."""
        ra, dec = np.radians(self.ra_deg), np.radians(self.dec_deg)
        return np.stack([-np.sin(dec) * np.cos(ra), -np.sin(dec) * np.sin(ra), np.cos(dec)], axis=1)

    @property
    def line_of_sight_mpc_h(self) -> np.ndarray:
        """(N,) velocity_kms / 100: the line-of-sight coordinate of redshift space in h^-1 Mpc."""
        return self.velocity_kms / H0_KMS_PER_MPC_H

    @cached_property
    def redshift_space_positions(self) -> np.ndarray:
        """(N, 3) Cartesian redshift-space positions in h^-1 Mpc (unit vector x velocity / 100)."""
        return self.unit_vectors * self.line_of_sight_mpc_h[:, None]

    @cached_property
    def redshift_space_tree(self) -> cKDTree:
        """KD-tree over `redshift_space_positions`."""
        return cKDTree(self.redshift_space_positions)

    @cached_property
    def sorted_line_of_sight(self) -> np.ndarray:
        """`line_of_sight_mpc_h` sorted ascending (for counting galaxies in shells)."""
        return np.sort(self.line_of_sight_mpc_h)

    def eligible_targets(self, half_window_mpc_h: float = 5.0, margin_mpc_h: float = 10.0,
                         max_angle_deg: float = 30.0) -> np.ndarray:
        """Indices of galaxies whose environment lies inside the catalogue's distance range.

        A target needs its whole line-of-sight window (``margin_mpc_h``, 10 h^-1 Mpc =
        1000 km/s) inside the catalogue's velocity range, and its square sky window no wider
        than ``max_angle_deg`` from it (so the tangent-plane projection stays accurate).
        """
        los = self.line_of_sight_mpc_h
        distance_h = self.distance_mpc * LITTLE_H
        nearest = half_window_mpc_h * np.sqrt(2.0) / np.tan(np.radians(max_angle_deg))
        ok = (los - margin_mpc_h >= los.min()) & (los + margin_mpc_h <= los.max()) & (distance_h >= nearest)
        return np.flatnonzero(ok)

    def select_targets(self, n_targets: int, rng: np.random.Generator) -> np.ndarray:
        """``n_targets`` sorted indices drawn without replacement from `eligible_targets`."""
        eligible = self.eligible_targets()
        if int(n_targets) != n_targets or n_targets < 1:
            raise ParameterError(f"n_targets must be a positive integer, got {n_targets}.")
        if n_targets > eligible.size:
            raise ParameterError(
                f"only {eligible.size} of {len(self)} galaxies lie far enough from the catalogue's "
                f"distance limits to be targets; ask for at most that many (--n-targets).")
        return np.sort(rng.choice(eligible, size=int(n_targets), replace=False))


def sky_catalog_from_dataframe(df: pd.DataFrame, ra_column: str | None = None,
                               dec_column: str | None = None, distance_column: str | None = None,
                               redshift_column: str | None = None) -> SkyCatalog:
    """Prepare a table of galaxies for environment measurements.

    Parameters
    ----------
    df : one row per galaxy.
    ra_column, dec_column : RA and Dec in degrees (auto-detected case-insensitively when None:
        ra/RAJ2000/ra_deg, dec/DEJ2000/dec_deg).
    distance_column : distance in Mpc (auto: Dist/distance/d_mpc).
    redshift_column : redshift (auto: z/redshift); used when there is no distance, and for the
        velocity window and peculiar velocities when both are present.

    Raises
    ------
    ColumnError : a named column does not exist, or no coordinate column can be found.
    """
    ra_name = _find_column(df, "ra", ra_column, required=True)
    dec_name = _find_column(df, "dec", dec_column, required=True)
    explicit = distance_column is not None or redshift_column is not None
    distance_name = _find_column(df, "distance", distance_column, required=False)
    redshift_name = _find_column(df, "redshift", redshift_column, required=False)
    if explicit:  # only what the user named
        distance_name = distance_name if distance_column is not None else None
        redshift_name = redshift_name if redshift_column is not None else None
    if distance_name is None and redshift_name is None:
        raise ColumnError(
            f"no distance or redshift column found among {list(map(str, df.columns))}; "
            f"name one with --distance-column (Mpc) or --redshift-column.")

    def numeric(name: str | None) -> np.ndarray | None:
        return None if name is None else pd.to_numeric(df[name], errors="coerce").to_numpy(np.float64)

    ra, dec = numeric(ra_name), numeric(dec_name)
    distance, redshift = numeric(distance_name), numeric(redshift_name)
    finite = np.isfinite(ra) & np.isfinite(dec)
    for values in (distance, redshift):
        if values is not None:
            finite &= np.isfinite(values)
    physical = (dec >= -90) & (dec <= 90)
    if distance is not None:
        physical &= distance > 0
    if redshift is not None:
        physical &= redshift > 0
    keep = finite & np.where(finite, physical, False)
    if not keep.any():
        raise ColumnError(
            f"no row has finite, physical coordinates in columns {ra_name}, {dec_name}, "
            f"{distance_name or redshift_name}; check the column choice and units (degrees, Mpc).")

    ra, dec = np.mod(ra[keep], 360.0), dec[keep]
    if distance is None:
        from astropy.cosmology import FlatLambdaCDM

        cosmology = FlatLambdaCDM(H0=H0_KMS_MPC, Om0=0.3)
        distance = cosmology.comoving_distance(redshift[keep]).to_value("Mpc")
        velocity = SPEED_OF_LIGHT_KMS * redshift[keep]
        peculiar = np.full(distance.shape, np.nan)
    elif redshift is None:
        distance = distance[keep]
        velocity = H0_KMS_MPC * distance
        peculiar = np.full(distance.shape, np.nan)
    else:
        distance = distance[keep]
        velocity = SPEED_OF_LIGHT_KMS * redshift[keep]
        peculiar = velocity - H0_KMS_MPC * distance

    name_column = _find_column(df, "name", None, required=False)
    names = None if name_column is None else df[name_column].astype(str).to_numpy(dtype=object)[keep]
    info = {
        "ra_column": ra_name, "dec_column": dec_name, "distance_column": distance_name,
        "redshift_column": redshift_name, "name_column": name_column, "n_rows": int(len(df)),
        "n_dropped_nan": int((~finite).sum()), "n_dropped_unphysical": int((finite & ~physical).sum()),
    }
    return SkyCatalog(ra, dec, distance, velocity, np.flatnonzero(keep).astype(np.int64), peculiar,
                      names, info)
