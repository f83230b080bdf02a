"""Print the figures of a mock universe that the README quotes (kappa distribution, disturbances,
environment coupling, blank fraction, pixel scale).

    python scripts/sample_figures.py [sample_data/universe]
"""

from __future__ import annotations

import sys

import numpy as np
from scipy.stats import spearmanr

from galexplore.data.dataset import open_dataset

def main(path: str = "sample_data/universe") -> None:
    dataset = open_dataset(path)
    catalog = dataset.catalog
    galaxies = catalog.groupby("galaxy_id").first()
    counts, _ = np.histogram(galaxies["kappa"], bins=np.linspace(0.0, 1.0, 11))
    disturbed = (galaxies["disturbance"] != "none").to_numpy()
    mom1 = dataset.maps[np.arange(len(dataset)), dataset.channel_index("mom1")]
    print(f"galaxies / maps: {len(galaxies)} / {len(dataset)}")
    print(f"kappa < 0.5 (per galaxy): {100 * np.mean(galaxies['kappa'] < 0.5):.1f} %")
    print(f"kappa histogram, bins of 0.1 from 0: {', '.join(map(str, counts))}")
    print("disturbances:", ", ".join(f"{k} {v}" for k, v in galaxies["disturbance"].value_counts().items()))
    print(f"Spearman(delta_ls, disturbed) = {spearmanr(galaxies['delta_ls'], disturbed)[0]:.2f}, "
          f"Spearman(delta_ls, kappa) = {spearmanr(galaxies['delta_ls'], galaxies['kappa'])[0]:.2f}")
    print(f"median blank fraction of mom1: {np.median(np.isnan(mom1).mean(axis=(1, 2))):.2f}")
    print(f"median pixel scale: {catalog['pixel_kpc'].median():.2f} kpc (1\" pixels)")


if __name__ == "__main__":
    main(*sys.argv[1:])
