"""Compact storage codecs: exact round trips of the quantised codes, per-map reads, older lzma datasets."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from galexplore.data import append_to_dataset, create_dataset, open_dataset
from galexplore.errors import DatasetError

CHANNELS = ["mom0", "mom1", "env"]
UNITS = {"mom0": "Jy/beam km/s", "mom1": "km/s", "env": "counts"}
QUANT = {"mom0": {"mode": "relative", "step": 2.0**-8, "delta": True},
         "mom1": {"mode": "absolute", "step": 1.0, "delta": True},
         "env": {"mode": "absolute", "step": 1.0, "delta": False}}


def awkward_maps(n: int, seed: int = 0) -> np.ndarray:
    """(n, 3, 64, 64) maps with what a codec can trip on: discs, noise, blank rows and columns,
    all-blank channels and maps, single pixels, extreme values of the int16 codes."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:64, 0:64] - 31.5
    out = np.full((n, 3, 64, 64), np.nan, dtype=np.float32)
    for i in range(n):
        r = np.hypot(x * rng.uniform(0.5, 2), y)
        disc = r < rng.uniform(3, 40)
        out[i, 0][disc] = (rng.uniform(0.1, 50) * np.exp(-r / 6) * (1 + rng.normal(0, 0.05, r.shape)))[disc]
        out[i, 1][disc] = (300 * np.tanh(r / 3) * x / (r + 1e-3) + rng.normal(0, 4, r.shape))[disc]
        out[i, 2] = rng.poisson(rng.uniform(0, 3), (64, 64))
        kind = i % 6
        if kind == 1:
            out[i, :2, 10:20] = np.nan          # blank rows inside the emission
        elif kind == 2:
            out[i, :2, :, 40:] = np.nan         # blank columns
        elif kind == 3:
            out[i, 1] = np.nan                  # an all-blank channel
        elif kind == 4:
            out[i, :2] = np.nan                 # only the counts
            out[i, 1, 5, 7] = -32767.0          # a single pixel at the edge of the int16 range
        elif kind == 5:
            out[i, 1][disc] = 32767.0 * np.sign(x[disc] + 0.1)  # wrapping differences
    return out


def quantised(maps: np.ndarray) -> np.ndarray:
    """What compact storage must return: each value rounded to its channel's step (NaN kept)."""
    out = np.full_like(maps, np.nan)
    for k, c in enumerate(CHANNELS):
        x = maps[:, k].astype(np.float64)
        spec = QUANT[c]
        if spec["mode"] == "absolute":
            step = np.full(len(maps), spec["step"])
        else:
            peak = np.nanmax(np.abs(np.where(np.isfinite(x), x, np.nan)).reshape(len(maps), -1), axis=1,
                             initial=0.0)
            step = np.float32(spec["step"]) * np.where(peak > 0, peak, 1.0).astype(np.float32)
        out[:, k] = (np.rint(x / step[:, None, None]).astype(np.float32)
                     * step.astype(np.float32)[:, None, None])
    out[~np.isfinite(maps)] = np.nan
    return out


def write(path, maps, chunk_maps=8):
    with create_dataset(path, CHANNELS, UNITS, storage="compact", chunk_maps=chunk_maps,
                        quantisation=QUANT) as writer:
        writer.append(maps, pd.DataFrame({"id": np.arange(len(maps))}))


@pytest.mark.parametrize("codec", ["zstd", "lzma"])
def test_compact_codecs_return_exactly_the_quantised_maps(tmp_path, monkeypatch, codec):
    monkeypatch.setattr("galexplore.data.dataset.COMPACT_CODEC", codec)
    maps = awkward_maps(30)
    write(tmp_path / "ds", maps)
    ds = open_dataset(tmp_path / "ds")
    assert ds.manifest["storage"]["codec"] == codec
    assert {f.suffix for f in (tmp_path / "ds" / "maps").iterdir()} == {".zst" if codec == "zstd" else ".lzma"}
    np.testing.assert_array_equal(ds.maps[:], quantised(maps))  # NaN where blank, codes exact
    index = [29, 0, 13, 13, 7]
    np.testing.assert_array_equal(open_dataset(tmp_path / "ds").maps[index], quantised(maps)[index])


def test_new_compact_datasets_use_zstd_and_read_single_maps_without_the_rest_of_the_chunk(tmp_path):
    maps = awkward_maps(8)
    write(tmp_path / "ds", maps)
    (chunk,) = (tmp_path / "ds" / "maps").iterdir()
    assert chunk.suffix == ".zst"
    data = bytearray(chunk.read_bytes())
    offsets = np.frombuffer(bytes(data[16:16 + 8 * 9]), dtype="<u8")
    middle = (int(offsets[5]) + int(offsets[6])) // 2
    data[middle] ^= 0xFF  # damage map 5's frame only
    chunk.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="does not match the checksum"):  # the manifest's SHA-256
        open_dataset(tmp_path / "ds").maps[0]
    # without the manifest's checksum (a dataset written before them), each frame's own checksum
    # still catches the damaged map, and the others read
    manifest_path = tmp_path / "ds" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["chunks"][0]["sha256"]
    manifest_path.write_text(json.dumps(manifest))
    ds = open_dataset(tmp_path / "ds")
    np.testing.assert_array_equal(ds.maps[[0, 4, 6, 7]], quantised(maps)[[0, 4, 6, 7]])
    with pytest.raises(DatasetError, match="corrupt.*regenerate"):
        ds.maps[5]


def test_datasets_written_before_the_zstd_codec_still_read_and_append(tmp_path, monkeypatch):
    maps = awkward_maps(12)
    monkeypatch.setattr("galexplore.data.dataset.COMPACT_CODEC", "lzma")
    write(tmp_path / "ds", maps[:6], chunk_maps=4)
    manifest_path = tmp_path / "ds" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["storage"]["codec"]  # as older versions wrote it
    manifest_path.write_text(json.dumps(manifest))
    np.testing.assert_array_equal(open_dataset(tmp_path / "ds").maps[:], quantised(maps[:6]))
    monkeypatch.undo()
    with append_to_dataset(tmp_path / "ds") as writer:  # appends keep the dataset's codec
        writer.append(maps[6:], pd.DataFrame({"id": np.arange(6, 12)}))
    assert {f.suffix for f in (tmp_path / "ds" / "maps").iterdir()} == {".lzma"}
    np.testing.assert_array_equal(open_dataset(tmp_path / "ds").maps[:], quantised(maps))


def test_damaged_zstd_chunks_and_unknown_codecs_give_clear_errors(tmp_path):
    write(tmp_path / "ds", awkward_maps(8))
    (chunk,) = (tmp_path / "ds" / "maps").iterdir()
    good = chunk.read_bytes()
    for damaged in (good[:10], b"NOTZSTD!" + good[8:], good[:-5]):
        chunk.write_bytes(damaged)
        with pytest.raises(DatasetError, match="regenerate the dataset"):
            open_dataset(tmp_path / "ds").maps[3]
    manifest_path = tmp_path / "ds" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["storage"]["codec"] = "brotli"
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match="codec 'brotli'"):
        open_dataset(tmp_path / "ds")
