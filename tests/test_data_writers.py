"""Writers of a dataset: concurrent appends, the writer lock, leftovers of dead writers,
chunk checksums, the fingerprint and `galexplore info [--verify]`."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from galexplore.data import append_to_dataset, create_dataset, open_dataset
from galexplore.errors import DatasetError
from reliability import APPENDER, hold_writer, python


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


def test_two_concurrent_appends_lose_no_rows_and_mismatch_no_maps(tmp_path):
    """Issue 11: two appends started together lost 1,200 rows and mismatched 512, both exiting 0."""
    path = base_dataset(tmp_path / "ds")
    go = tmp_path / "go"
    procs = [python(APPENDER, path, first, go) for first in (1000, 2000)]
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready"
    go.touch()
    outcomes = [(proc.wait(timeout=300), proc.stdout.read(), proc.stderr.read()) for proc in procs]
    for code, out, err in outcomes:  # done, or refused with a clear DatasetError
        assert code == 0 or err.strip().splitlines()[-1].startswith("galexplore.errors.DatasetError"), err
    ids = assert_maps_match_ids(path)
    expected = set(range(12))
    for (code, _, _), first in zip(outcomes, (1000, 2000)):
        if code == 0:
            expected |= set(range(first, first + 600))
    assert set(ids.tolist()) == expected  # every committed append is there in full
    assert any(code == 0 for code, _, _ in outcomes)


def _partials(parent: Path, name: str = "ds") -> list[Path]:
    return sorted(parent.glob(f".{name}.partial-*"))


def test_a_second_writer_fails_clearly_and_touches_nothing_of_the_first(tmp_path):
    path = tmp_path / "ds"
    holder = hold_writer("create", path)
    try:
        live = _partials(tmp_path)
        assert len(live) == 1 and len(list((live[0] / "maps").iterdir())) == 2  # 2 chunks of 4 written
        with pytest.raises(DatasetError, match="another process is writing dataset .*ds.*try again"):
            create_dataset(path, ["mom1"], {"mom1": "km/s"}, overwrite=True, lock_timeout=0.5)
        assert _partials(tmp_path) == live and len(list((live[0] / "maps").iterdir())) == 2
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "committed"
    finally:
        holder.kill()
        holder.wait()
    assert _partials(tmp_path) == []
    assert assert_maps_match_ids(path).tolist() == list(range(500, 510))


def test_an_append_waits_for_the_running_writer_and_then_sees_its_maps(tmp_path):
    path = base_dataset(tmp_path / "ds")
    holder = hold_writer("append", path)
    with pytest.raises(DatasetError, match="another process is writing"):
        append_to_dataset(path, lock_timeout=0.2)
    holder.stdin.write("\n")
    holder.stdin.flush()
    with append_to_dataset(path, lock_timeout=120) as writer:  # waits for the holder's commit
        assert writer.n_maps == 22
        writer.append(id_maps([900]), pd.DataFrame({"id": [900]}))
    holder.wait(timeout=120)
    assert assert_maps_match_ids(path).tolist() == list(range(12)) + list(range(500, 510)) + [900]


def test_leftovers_of_killed_writers_are_swept_by_the_next_writer(tmp_path):
    path = base_dataset(tmp_path / "ds", chunk_maps=4)
    for mode, target in (("append", path), ("create", tmp_path / "other")):
        holder = hold_writer(mode, target)
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert len(_partials(tmp_path, "other")) == 1
    orphans = {f.name for f in (path / "maps").iterdir()} - {Path(c["file"]).name
                                                             for c in open_dataset(path).manifest["chunks"]}
    assert orphans  # the killed append's chunk is there, unlisted
    assert_maps_match_ids(path)  # and the dataset is what it was
    with append_to_dataset(path) as writer:
        writer.append(id_maps([77]), pd.DataFrame({"id": [77]}))
    listed = {Path(c["file"]).name for c in open_dataset(path).manifest["chunks"]}
    assert {f.name for f in (path / "maps").iterdir()} == listed  # the orphans are gone
    assert assert_maps_match_ids(path).tolist() == list(range(12)) + [77]
    with create_dataset(tmp_path / "other", ["mom1"], {"mom1": "km/s"}) as writer:
        writer.append(id_maps([1]), pd.DataFrame({"id": [1]}))
    assert _partials(tmp_path, "other") == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ds.lock", ".other.lock", "ds", "other"]


def test_a_writer_killed_while_replacing_a_dataset_leaves_the_old_one_restorable(tmp_path):
    path = base_dataset(tmp_path / "ds")
    # what a kill between the two renames of an overwrite leaves: the old dataset moved aside,
    # the new one complete but not yet moved in
    os.replace(path, tmp_path / f".ds.replaced-{'a' * 32}")
    (tmp_path / f".ds.partial-{'b' * 32}").mkdir()
    with pytest.raises(DatasetError, match="already exists"):
        create_dataset(path, ["mom1"], {"mom1": "km/s"})
    assert assert_maps_match_ids(path).tolist() == list(range(12))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ds.lock", "ds"]


def test_chunks_and_parts_carry_checksums_and_a_changed_map_changes_the_fingerprint(tmp_path):
    import hashlib

    path = base_dataset(tmp_path / "ds", chunk_maps=5)
    manifest = open_dataset(path).manifest
    for entry in manifest["chunks"] + manifest["catalog_parts"]:
        assert entry["sha256"] == hashlib.sha256((path / entry["file"]).read_bytes()).hexdigest()
    before = open_dataset(path).fingerprint
    maps = id_maps(np.arange(12))
    maps[7, 0, 3, 3] += 1.0  # one pixel of one map, same catalogue, same shapes
    with create_dataset(path, ["mom1"], {"mom1": "km/s"}, chunk_maps=5, overwrite=True) as writer:
        writer.append(maps, pd.DataFrame({"id": np.arange(12, dtype=np.int64)}))
    assert open_dataset(path).fingerprint != before


@pytest.mark.parametrize("storage", ["compact", "float32"])
def test_a_chunk_edited_in_place_is_caught(tmp_path, storage, capsys):
    from galexplore.cli import main

    path = base_dataset(tmp_path / "ds", storage=storage, chunk_maps=5)
    chunk = path / open_dataset(path).manifest["chunks"][1]["file"]
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    ds = open_dataset(path)
    if storage == "compact":  # read whole: its SHA-256 is checked on first read
        with pytest.raises(DatasetError, match="does not match the checksum|is corrupt"):
            ds.maps[6]
        np.testing.assert_array_equal(ds.maps[:5, 0, 0, 0], np.arange(5))  # other chunks still read
    assert main(["info", str(path)]) == (1 if storage == "compact" else 0)  # raw: sizes only
    assert main(["info", str(path), "--verify"]) == 1
    err = capsys.readouterr().err
    assert "1 problem(s)" in err and "chunk-0000000005" in err and "does not match the checksum" in err


def test_manifests_without_checksums_stay_readable_and_verify_says_so(tmp_path, capsys):
    from galexplore.cli import main

    path = base_dataset(tmp_path / "ds", storage="compact", chunk_maps=5)
    manifest = json.loads((path / "manifest.json").read_text())
    for entry in manifest["chunks"] + manifest["catalog_parts"]:
        del entry["sha256"]
    (path / "manifest.json").write_text(json.dumps(manifest))
    assert_maps_match_ids(path)
    assert main(["info", str(path), "--verify"]) == 0
    out = capsys.readouterr().out
    assert "checksums: none (written before galexplore recorded checksums)" in out
    assert "verify: OK; every file read and decoded; no checksums recorded" in out
    chunk = path / manifest["chunks"][0]["file"]
    chunk.write_bytes(chunk.read_bytes()[:-40])  # truncated: found by decoding
    assert main(["info", str(path), "--verify"]) == 1
    assert "cannot be decoded" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["missing chunk", "truncated raw chunk", "missing part", "corrupt part"])
def test_info_exits_non_zero_when_the_maps_or_catalogue_cannot_be_read(tmp_path, capsys, damage):
    from galexplore.cli import main

    path = base_dataset(tmp_path / "ds", chunk_maps=5)
    manifest = open_dataset(path).manifest
    chunk, part = path / manifest["chunks"][2]["file"], path / manifest["catalog_parts"][0]["file"]
    if damage == "missing chunk":
        chunk.unlink()
    elif damage == "truncated raw chunk":
        chunk.write_bytes(chunk.read_bytes()[:1000])
    elif damage == "missing part":
        part.unlink()
    else:
        part.write_bytes(b"PAR1" + bytes(100) + b"PAR1")
    assert main(["info", str(path)]) == 1
    err = capsys.readouterr().err
    assert "problem(s)" in err and ("regenerate" in err or "restore" in err)
