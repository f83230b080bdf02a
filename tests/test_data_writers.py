"""Writers of a dataset: concurrent appends, the writer lock, leftovers of dead writers,
chunk checksums, the fingerprint and `galexplore info [--verify]`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from galexplore.data import append_to_dataset, create_dataset, open_dataset
from galexplore.errors import DatasetError

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def id_maps(ids) -> np.ndarray:
    """(n, 1, 64, 64) maps whose every pixel holds the map's id: a mismatch shows at once."""
    ids = np.asarray(ids)
    return np.broadcast_to(ids[:, None, None, None].astype(np.float32), (len(ids), 1, 64, 64)).copy()


def base_dataset(path: Path, n: int = 12, storage: str = "float32", chunk_maps: int = 64) -> Path:
    with create_dataset(path, ["mom1"], {"mom1": "km/s"}, storage=storage, chunk_maps=chunk_maps) as writer:
        writer.append(id_maps(np.arange(n)), pd.DataFrame({"id": np.arange(n, dtype=np.int64)}))
    return path


def assert_maps_match_ids(path: Path) -> np.ndarray:
    ds = open_dataset(path)
    ids = ds.catalog["id"].to_numpy()
    assert len(set(ids)) == len(ids) == len(ds)
    maps = ds.maps[:]
    mismatched = int(np.sum(np.any(maps[:, 0] != ids[:, None, None], axis=(1, 2))))
    assert mismatched == 0, f"{mismatched} maps do not belong to their catalogue row"
    return ids


APPENDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import numpy as np, pandas as pd
    from galexplore.data import append_to_dataset
    from galexplore.errors import DatasetError
    path, first, go = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.005)
    try:
        with append_to_dataset(path) as writer:
            for batch in range(6):
                ids = np.arange(first + 100 * batch, first + 100 * (batch + 1))
                maps = np.broadcast_to(ids[:, None, None, None].astype(np.float32), (100, 1, 64, 64))
                writer.append(maps, pd.DataFrame({"id": ids}))
                time.sleep(0.05)
    except DatasetError as err:
        print("refused:", err, flush=True)
        sys.exit(3)
""")


def test_two_concurrent_appends_lose_no_rows_and_mismatch_no_maps(tmp_path):
    """Issue 11: two appends started together lost 1,200 rows and mismatched 512, both exiting 0."""
    path = base_dataset(tmp_path / "ds")
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", APPENDER, str(path), str(first), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
             for first in (1000, 2000)]
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready"
    go.touch()
    outcomes = [(proc.wait(timeout=300), proc.stdout.read(), proc.stderr.read()) for proc in procs]
    for code, out, err in outcomes:
        assert code in (0, 3), err  # done, or refused with a clear DatasetError: never a traceback
    ids = assert_maps_match_ids(path)
    expected = set(range(12))
    for (code, _, _), first in zip(outcomes, (1000, 2000)):
        if code == 0:
            expected |= set(range(first, first + 600))
    assert set(ids.tolist()) == expected  # every committed append is there in full
    assert any(code == 0 for code, _, _ in outcomes)
