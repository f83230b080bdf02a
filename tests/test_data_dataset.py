"""The dataset format: round trips, lazy reads, appends, crash safety, errors, describe."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from galexplore.data import append_to_dataset, create_dataset, describe, open_dataset
from galexplore.errors import DatasetError

CHANNELS = ["mom0", "mom1", "mom2", "env"]
UNITS = {"mom0": "Jy/beam km/s", "mom1": "km/s", "mom2": "km/s", "env": "counts"}


def smooth_maps(n: int, seed: int = 0) -> np.ndarray:
    """(n, 4, 64, 64) rotating-disc-like maps with blank outskirts and integer env counts."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:64, 0:64] - 31.5
    out = np.full((n, 4, 64, 64), np.nan, dtype=np.float32)
    for i in range(n):
        pa = rng.uniform(0, 2 * np.pi)
        r = np.hypot(x, y)
        disc = r < rng.uniform(10, 30)
        out[i, 0][disc] = (rng.uniform(1, 20) * np.exp(-r / 8))[disc]
        out[i, 1][disc] = (250 * np.tanh(r / 4) * (x * np.cos(pa) + y * np.sin(pa)) / (r + 1e-3))[disc]
        out[i, 2][disc] = (10 + 30 * np.exp(-r / 5))[disc]
        out[i, 3] = rng.poisson(2.0, (64, 64))
    return out


def rows(ids) -> pd.DataFrame:
    ids = np.asarray(ids, dtype=np.int64)
    return pd.DataFrame({"id": ids, "galaxy_id": ids // 2, "view": ids % 2,
                         "log_mass": 9.0 + 0.01 * ids, "kappa": np.where(ids % 3 == 0, np.nan, 0.5)})


def make(path, n=12, storage="float32", chunk_maps=5, seed=0):
    maps = smooth_maps(n, seed)
    with create_dataset(path, CHANNELS, UNITS, storage=storage, chunk_maps=chunk_maps,
                        provenance={"generator": "test", "seed": seed}) as writer:
        writer.append(maps[: n // 2], rows(range(n // 2)), column_units={"log_mass": "log10(Msun)"})
        writer.append(maps[n // 2:], rows(range(n // 2, n)))
    return maps


@pytest.mark.parametrize("storage", ["float32", "float16", "compact"])
def test_round_trip_within_the_documented_error(tmp_path, storage):
    maps = make(tmp_path / "ds", storage=storage)
    ds = open_dataset(tmp_path / "ds")
    back = ds.maps[:]
    assert back.dtype == np.float32 and back.shape == (12, 4, 64, 64)
    assert np.array_equal(np.isnan(back), np.isnan(maps))
    finite = np.isfinite(maps)
    err = np.abs(np.where(finite, back - maps, 0))
    if storage == "float32":
        assert np.array_equal(back[finite], maps[finite])
    elif storage == "float16":  # IEEE half: round to nearest, 11 significant bits
        assert np.all(err <= 2.0**-11 * np.abs(np.where(finite, maps, 0)) + 1e-7)
    else:
        peak = np.nanmax(np.abs(maps[:, 0]), axis=(1, 2))[:, None, None]
        assert np.all(err[:, 0] <= 0.5 * 2.0**-12 * peak * (1 + 1e-5))  # relative step 2**-12
        assert np.all(err[:, 1:3] <= 0.25 + 1e-4)  # 0.5 km/s step -> error <= 0.25 km/s
        assert np.array_equal(back[:, 3], maps[:, 3])  # integer counts are exact
        assert err[:, 1:3].max() > 0.1  # really quantised, not stored raw


def test_indexing_forms(tmp_path):
    maps = make(tmp_path / "ds")
    m = open_dataset(tmp_path / "ds").maps
    np.testing.assert_array_equal(m[3], maps[3])
    np.testing.assert_array_equal(m[-1], maps[-1])
    np.testing.assert_array_equal(m[2:9:3], maps[2:9:3])
    np.testing.assert_array_equal(m[np.array([11, 0, 6, 6])], maps[[11, 0, 6, 6]])
    mask = np.arange(12) % 4 == 1
    np.testing.assert_array_equal(m[mask], maps[mask])
    np.testing.assert_array_equal(m[[1, 7], 1], maps[[1, 7], 1])
    np.testing.assert_array_equal(m[4, 2, 30], maps[4, 2, 30])
    assert m.shape == (12, 4, 64, 64) and len(m) == 12
    with pytest.raises(IndexError):
        m[12]
    with pytest.raises(IndexError):
        m[np.ones(5, dtype=bool)]


def test_open_is_lazy_and_reads_only_the_needed_chunks(tmp_path):
    maps = make(tmp_path / "ds", n=30, chunk_maps=5)
    # reading maps 0..4 and 20..24 needs chunk files 0 and 4 only: remove every other one
    for f in (tmp_path / "ds" / "maps").iterdir():
        if f.name not in ("chunk-0000000000.f32", "chunk-0000000020.f32"):
            f.unlink()
    for f in (tmp_path / "ds" / "catalog").iterdir():
        f.unlink()
    ds = open_dataset(tmp_path / "ds")  # neither catalogue nor maps are touched
    assert len(ds) == 30 and ds.channels == CHANNELS and ds.map_shape == (4, 64, 64)
    np.testing.assert_array_equal(ds.maps[[22, 3, 24, 0]], maps[[22, 3, 24, 0]])
    assert ds.maps.chunks_read == 2
    with pytest.raises(DatasetError, match=r"chunk-0000000010\.f32.*missing.*regenerate"):
        ds.maps[12]
    with pytest.raises(DatasetError, match="catalogue part .* missing"):
        ds.catalog


def test_lzma_compact_reads_decode_only_touched_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr("galexplore.data.dataset.COMPACT_CODEC", "lzma")  # the codec of older datasets
    maps = make(tmp_path / "ds", n=20, storage="compact", chunk_maps=4)
    ds = open_dataset(tmp_path / "ds")
    ds.maps[[1, 2, 17]]
    assert ds.maps.chunks_read == 2
    ds.maps[[0, 3, 16]]  # both chunks are in the decoded-chunk cache
    assert ds.maps.chunks_read == 2
    assert np.array_equal(np.isnan(ds.maps[19]), np.isnan(maps[19]))


def test_catalog_units_provenance_and_channel_index(tmp_path):
    make(tmp_path / "ds")
    ds = open_dataset(tmp_path / "ds")
    cat = ds.catalog
    np.testing.assert_array_equal(cat["id"], np.arange(12))
    assert cat["id"].dtype == np.int64
    assert cat["kappa"].isna().sum() == 4  # ids 0, 3, 6, 9
    assert ds.column_units["log_mass"] == "log10(Msun)" and ds.column_units["id"] == ""
    # the unit is in the Parquet field metadata of every part, readable without galexplore
    for part in ds.manifest["catalog_parts"]:
        field = pq.read_schema(tmp_path / "ds" / part["file"]).field("log_mass")
        assert field.metadata[b"unit"] == b"log10(Msun)"
    assert ds.units == UNITS
    assert ds.provenance == {"generator": "test", "seed": 0}
    assert ds.channel_index("mom2") == 2
    with pytest.raises(DatasetError, match="channel 'vel'.*mom0, mom1, mom2, env"):
        ds.channel_index("vel")


def test_append_adds_maps_rows_and_changes_fingerprint(tmp_path):
    maps = make(tmp_path / "ds", n=12, chunk_maps=5)
    before = open_dataset(tmp_path / "ds").fingerprint
    assert open_dataset(tmp_path / "ds").fingerprint == before  # stable across opens
    more = smooth_maps(7, seed=1)
    with append_to_dataset(tmp_path / "ds") as writer:
        writer.append(more, rows(range(100, 107)))
    ds = open_dataset(tmp_path / "ds")
    assert len(ds) == 19 and ds.fingerprint != before
    np.testing.assert_array_equal(ds.maps[:], np.concatenate([maps, more]))
    np.testing.assert_array_equal(ds.catalog["id"], np.r_[np.arange(12), np.arange(100, 107)])
    assert ds.column_units["log_mass"] == "log10(Msun)"  # inherited by the new part
    assert len(ds.manifest["catalog_parts"]) == 2


def test_exception_inside_create_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with create_dataset(tmp_path / "ds", CHANNELS, UNITS, chunk_maps=2) as writer:
            writer.append(smooth_maps(6), rows(range(6)))
            raise RuntimeError("simulated crash")
    assert [p.name for p in tmp_path.iterdir()] == [".ds.lock"]  # the writers' lock file stays


def test_exception_inside_append_keeps_the_old_dataset(tmp_path):
    maps = make(tmp_path / "ds", n=12, chunk_maps=5)
    files = sorted(p.relative_to(tmp_path) for p in (tmp_path / "ds").rglob("*"))
    with pytest.raises(RuntimeError):
        with append_to_dataset(tmp_path / "ds") as writer:
            writer.append(smooth_maps(11, seed=1), rows(range(100, 111)))  # writes 2 chunk files
            raise RuntimeError("simulated crash")
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "ds").rglob("*")) == files
    ds = open_dataset(tmp_path / "ds")
    assert len(ds) == 12 and len(ds.catalog) == 12
    np.testing.assert_array_equal(ds.maps[:], maps)


def test_killed_append_leaves_old_dataset_and_next_append_cleans_up(tmp_path):
    maps = make(tmp_path / "ds", n=12, chunk_maps=5)
    script = textwrap.dedent(f"""
        import sys, time
        import numpy as np, pandas as pd
        from galexplore.data import append_to_dataset
        writer = append_to_dataset({str(tmp_path / "ds")!r})
        ids = np.arange(200, 211)
        writer.append(np.ones((11, 4, 64, 64), np.float32),
                      pd.DataFrame({{"id": ids, "galaxy_id": ids, "view": 0 * ids,
                                    "log_mass": 1.0 * ids, "kappa": 1.0 * ids}}))
        print("chunks written", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "chunks written"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    orphans = {"chunk-0000000012.f32", "chunk-0000000017.f32"}
    assert orphans <= {f.name for f in (tmp_path / "ds" / "maps").iterdir()}
    ds = open_dataset(tmp_path / "ds")
    assert len(ds) == 12
    np.testing.assert_array_equal(ds.maps[:], maps)
    with append_to_dataset(tmp_path / "ds") as writer:
        writer.append(smooth_maps(1, seed=2), rows([300]))
    ds = open_dataset(tmp_path / "ds")
    assert len(ds) == 13 and ds.catalog["id"].iloc[-1] == 300
    on_disk = {f"maps/{f.name}" for f in (tmp_path / "ds" / "maps").iterdir()}
    assert on_disk == {c["file"] for c in ds.manifest["chunks"]}


def test_overwrite(tmp_path):
    make(tmp_path / "ds", n=4)
    with pytest.raises(DatasetError, match="already exists.*overwrite=True"):
        create_dataset(tmp_path / "ds", CHANNELS, UNITS)
    make(tmp_path / "other", n=6)
    with create_dataset(tmp_path / "ds", ["mom1"], {"mom1": "km/s"}, overwrite=True) as writer:
        writer.append(np.zeros((3, 1, 64, 64)), rows([7, 8, 9]))
    ds = open_dataset(tmp_path / "ds")
    assert len(ds) == 3 and ds.channels == ["mom1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ds.lock", ".other.lock", "ds", "other"]


@pytest.mark.parametrize(("maps", "catalog", "message"), [
    (np.zeros((2, 3, 64, 64)), rows([0, 1]), r"shape \(2, 3, 64, 64\).*\(n, 4, 64, 64\)"),
    (np.zeros((2, 4, 32, 32)), rows([0, 1]), r"shape \(2, 4, 32, 32\)"),
    (np.zeros((3, 4, 64, 64)), rows([0, 1]), "3 maps but a catalogue of 2 rows"),
    (np.zeros((2, 4, 64, 64)), rows([0, 1]).drop(columns="id"), "no 'id' column"),
    (np.zeros((2, 4, 64, 64)), rows([5, 5]), r"duplicate catalogue ids, e.g. \[5\]"),
    (np.zeros((2, 4, 64, 64)), rows([0, 1]).assign(id=[0.5, 1.5]), "ids must be integers"),
])
def test_append_rejects_bad_input(tmp_path, maps, catalog, message):
    with create_dataset(tmp_path / "ds", CHANNELS, UNITS) as writer:
        with pytest.raises(DatasetError, match=message):
            writer.append(maps, catalog)


def test_append_rejects_ids_and_columns_already_in_the_dataset(tmp_path):
    make(tmp_path / "ds", n=4)
    with append_to_dataset(tmp_path / "ds") as writer:
        with pytest.raises(DatasetError, match=r"duplicate catalogue ids, e.g. \[3\]"):
            writer.append(smooth_maps(2), rows([3, 4]))
        with pytest.raises(DatasetError, match=r"missing \['kappa'\], extra \['z'\]"):
            writer.append(smooth_maps(1), rows([9]).drop(columns="kappa").assign(z=1.0))
        with pytest.raises(DatasetError, match="already has unit 'log10\\(Msun\\)'"):
            writer.append(smooth_maps(1), rows([9]), column_units={"log_mass": "Msun"})


def test_compact_refuses_values_it_cannot_store(tmp_path):
    maps = smooth_maps(2)
    maps[0, 3, 0, 0] = 2.5
    with create_dataset(tmp_path / "a", CHANNELS, UNITS, storage="compact", chunk_maps=1) as writer:
        with pytest.raises(DatasetError, match="'env' holds non-integer counts.*float32"):
            writer.append(maps, rows([0, 1]))
    maps = smooth_maps(2)
    maps[1, 1, 32, 32] = 20000.0  # beyond 32767 * 0.5 km/s
    with create_dataset(tmp_path / "b", CHANNELS, UNITS, storage="compact", chunk_maps=1) as writer:
        with pytest.raises(DatasetError, match="'mom1' has values beyond"):
            writer.append(maps, rows([0, 1]))


def _edit_manifest(path, **changes):
    manifest = json.loads((path / "manifest.json").read_text())
    manifest.update(changes)
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_open_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        open_dataset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no manifest.json.*regenerate"):
        open_dataset(tmp_path / "empty")
    make(tmp_path / "ds", n=4)
    _edit_manifest(tmp_path / "ds", format_version=99)
    with pytest.raises(DatasetError, match="format version 99.*reads only version 1"):
        open_dataset(tmp_path / "ds")
    _edit_manifest(tmp_path / "ds", format_version=1, n_maps=5)
    with pytest.raises(DatasetError, match="5 maps declared, but the n_maps of its files add up to 4"):
        open_dataset(tmp_path / "ds")
    (tmp_path / "ds" / "manifest.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        open_dataset(tmp_path / "ds")


def test_describe_lists_counts_channels_columns_and_provenance(tmp_path):
    make(tmp_path / "ds", n=12)
    text = describe(open_dataset(tmp_path / "ds"))
    assert "maps: 12 x 4 x 64 x 64, galaxies: 6" in text  # galaxy_id = id // 2
    assert "mom0 [Jy/beam km/s], mom1 [km/s], mom2 [km/s], env [counts]" in text
    assert "storage: float32" in text
    log_mass = next(line for line in text.splitlines() if line.strip().startswith("log_mass"))
    assert log_mass.split()[1:] == ["log10(Msun)", "float64", "9", "9.11", "0"]  # 9 + 0.01 * 11
    kappa = next(line for line in text.splitlines() if line.strip().startswith("kappa"))
    assert kappa.split()[-1] == "4"
    assert "generator: test" in text and "seed: 0" in text


def test_cli_info(tmp_path, capsys):
    from galexplore.cli import main

    make(tmp_path / "ds", n=4)
    assert main(["info", str(tmp_path / "ds")]) == 0
    assert "maps: 4 x 4 x 64 x 64" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
