"""The README's realism figure: velocity maps of low- and high-kappa mocks beside real ALMA maps.

    python scripts/realism_figure.py UNIVERSE [OUT.png]

Each row holds eight maps in the model's view (64 x 64, the dawson2020 scaling to [-1, 1],
blank pixels white): mocks with kappa < 0.5, mocks with kappa > 0.5, then the 30 ALMA maps
of Dawson et al. (2020) from ../shared/real/dawson2020/fits. Mocks are drawn at random
(seed 0) from the universe given.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from galexplore.data import open_dataset  # noqa: E402
from galexplore.data.fits_io import read_velocity_map  # noqa: E402
from galexplore.data.recipes import get_recipe, resize_nearest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ALMA_FITS = REPO.parent / "shared" / "real" / "dawson2020" / "fits"
PER_ROW = 8


def scaled(maps: np.ndarray) -> np.ndarray:
    """Maps as the model sees them, with blank pixels NaN again for display."""
    x = get_recipe("dawson2020")(maps[:, None])[:, 0]
    return np.where(np.isfinite(resize_nearest(maps)), x, np.nan)


def main(universe: str, out: str = "docs/figures/realism.png") -> None:
    dataset = open_dataset(universe)
    kappa = dataset.catalog["kappa"].to_numpy()
    rng = np.random.default_rng(0)
    low = np.sort(rng.choice(np.flatnonzero(kappa < 0.5), 2 * PER_ROW, replace=False))
    high = np.sort(rng.choice(np.flatnonzero(kappa >= 0.5), 2 * PER_ROW, replace=False))
    mom1 = dataset.channel_index("mom1")
    rows = [("mock, kappa < 0.5", scaled(dataset.maps[low, mom1]), kappa[low]),
            ("mock, kappa > 0.5", scaled(dataset.maps[high, mom1]), kappa[high])]
    alma = [read_velocity_map(p) for p in sorted(ALMA_FITS.glob("*.fits"))]
    alma_maps = scaled(np.stack([resize_nearest(m) for _, m in alma]))
    rows.append(("ALMA (real)", alma_maps[:4 * PER_ROW], [name for name, _ in alma][:4 * PER_ROW]))
    n_rows = 4 + int(np.ceil(len(alma_maps) / PER_ROW))
    fig, axes = plt.subplots(n_rows, PER_ROW, figsize=(PER_ROW * 1.5, n_rows * 1.62))
    cmap = plt.get_cmap("RdBu_r").copy()
    cmap.set_bad("white")
    slots = iter(axes)
    for label, maps, notes in rows:
        for start in range(0, len(maps), PER_ROW):
            line = next(slots)
            for ax in line:
                ax.axis("off")
            for ax, image, note in zip(line, maps[start:start + PER_ROW], notes[start:start + PER_ROW]):
                ax.imshow(image, origin="lower", cmap=cmap, vmin=-1, vmax=1)
                ax.set_title(f"kappa {note:.2f}" if isinstance(note, float) else str(note), fontsize=7)
            line[0].text(-0.15, 0.5, label, transform=line[0].transAxes, rotation=90, va="center", ha="right",
                         fontsize=8)
    for line in slots:
        for ax in line:
            ax.axis("off")
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
