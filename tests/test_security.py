"""Security of what a user hands galexplore: escaping, who may connect, what may be opened,
and confinement of files named by checkpoints and manifests."""

from __future__ import annotations

import html
import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from galexplore.analysis.embed import LoadedModel, cache_path, load_or_compute_embedding
from galexplore.data import create_dataset, open_dataset
from galexplore.errors import DatasetError, ModelError, ParameterError
from galexplore.explorer.access import allowed_directories, client_refusal, confine
from galexplore.models.checkpoint import ModelCard, load_checkpoint, save_checkpoint
from galexplore.models.registry import build_model

#: Strings that run script when a page renders them as HTML.
PAYLOADS = [
    '<img src=x onerror="window.__xss=1">',
    "<script>window.__xss=1</script>",
    '<svg onload="window.__xss=1"></svg>',
    "[link](javascript:window.__xss=1) **bold** `code` | a | b |",
    "&lt;img src=x onerror=alert(1)&gt;",
    "line one\n# heading\n<iframe srcdoc='<script>parent.__xss=1</script>'>",
]


def _rendered_html(markdown_source: str) -> str:
    """The HTML that Panel's Markdown pane sends to the browser for ``markdown_source``."""
    import panel as pn

    return html.unescape(pn.pane.Markdown(markdown_source)._transform_object(markdown_source)["object"])


@pytest.mark.parametrize("payload", PAYLOADS)
def test_literal_text_renders_as_its_characters_and_never_as_markup(payload):
    from galexplore.ui.text import literal

    rendered = _rendered_html(literal(payload))
    inner = re.fullmatch(r"<p>(.*)</p>\n?", rendered, flags=re.S)
    assert inner is not None, rendered  # one paragraph, no heading, table, link or raw HTML block
    assert "<" not in inner.group(1)  # no element at all inside it
    assert html.unescape(inner.group(1)) == payload.replace("\n", " ")


def test_the_message_pane_escapes_what_it_shows():
    from galexplore.ui.layout import refusal_page

    alert = refusal_page(PAYLOADS[0])
    rendered = _rendered_html(alert.object)
    assert "<img" not in rendered and "&lt;img" in html.escape(html.unescape(rendered), quote=False)


# ---------------------------------------------------------------------------- who may connect
@pytest.mark.parametrize(("ip", "origin", "refused"), [
    ("127.0.0.1", None, False),
    ("::1", "http://localhost:5006", False),
    ("127.0.0.1", "http://127.0.0.1:5006", False),
    ("192.0.2.7", None, True),
    ("10.0.0.3", "http://localhost:5006", True),
    ("127.0.0.1", "http://evil.example", True),
    ("127.0.0.1", "http://localhost.evil.example", True),
    (None, None, True),
    ("not an address", None, True),
])
def test_only_loopback_clients_from_local_pages_are_served(ip, origin, refused):
    reason = client_refusal(ip, origin, allow_remote=False)
    assert (reason is not None) is refused
    if refused:
        assert "/" not in reason.replace("http://localhost", "")  # names no path of the server
    assert client_refusal(ip, origin, allow_remote=True) is None


def test_the_working_directory_is_never_allowed_implicitly(monkeypatch, tmp_path):
    monkeypatch.chdir("/")
    monkeypatch.delenv("GALEXPLORE_ALLOWED_DIRS", raising=False)
    for model in ("", None, "dawson2020"):
        dirs = allowed_directories(None, model)
        assert Path("/") not in dirs and Path.cwd() not in dirs
    with pytest.raises(ParameterError):
        confine("/etc", allowed_directories(None, ""))


def test_a_refused_path_names_neither_the_resolved_path_nor_the_allowed_list(tmp_path):
    allowed = tmp_path / "allowed-root"
    allowed.mkdir()
    (tmp_path / "link").symlink_to("/etc")
    with pytest.raises(ParameterError) as info:
        confine(tmp_path / "link", [allowed])
    message = str(info.value)
    assert "allowed-root" not in message and "'/etc'" not in message and "--allow" in message
    with pytest.raises(ParameterError):
        confine(str(allowed) + "/../link", [allowed])
    with pytest.raises(ParameterError, match="empty"):
        confine("  ", [allowed])
    with pytest.raises(ParameterError):
        confine("a\x00b", [allowed])
    assert confine(allowed / "sub", [allowed]) == (allowed / "sub").resolve()


# ---------------------------------------------------------------------------- checkpoints
def _checkpoint(root: Path, name: str = "plain") -> Path:
    torch.manual_seed(0)
    model = build_model("cae_free", in_channels=1, latent_dim=3)
    card = ModelCard(name=name, architecture="cae_free", hyperparameters={"in_channels": 1, "latent_dim": 3},
                     channels=["mom1"], recipe="dawson2020", latent_names=["z0", "z1", "z2"])
    return save_checkpoint(model, card, root / "ckpt")


def _edit_card(directory: Path, **changes) -> None:
    card = json.loads((directory / "card.json").read_text())
    card.update(changes)
    (directory / "card.json").write_text(json.dumps(card))


@pytest.mark.parametrize("change", [
    {"name": "renamed"}, {"metrics": {"mean_recall": 0.99}}, {"training_data": {"path": "/elsewhere"}},
    {"created": "2000-01-01T00:00:00+00:00"}, {"extras": {"boundary": {"folded_r": 1.0}}},
])
def test_the_checksum_covers_every_field_of_the_card(tmp_path, change):
    directory = _checkpoint(tmp_path)
    load_checkpoint(directory)
    _edit_card(directory, **change)
    with pytest.raises(ModelError, match="modified after it was saved"):
        load_checkpoint(directory)


def test_a_card_without_checksum_is_refused(tmp_path):
    directory = _checkpoint(tmp_path)
    _edit_card(directory, checksum="")
    with pytest.raises(ModelError, match="no checksum"):
        load_checkpoint(directory)


@pytest.mark.parametrize(("change", "match"), [
    ({"name": 5}, "'name' must be a JSON str"),
    ({"channels": "mom1"}, "'channels' must be a JSON list"),
    ({"channels": [1]}, "list of strings"),
    ({"input_size": 10**40}, "input_size"),
    ({"input_size": True}, "JSON int"),
    ({"hyperparameters": []}, "JSON dict"),
    ({"name": "a\x00b"}, "printable"),
    ({"name": "x" * 500}, "printable"),
])
def test_card_fields_of_the_wrong_type_are_refused_with_a_message(tmp_path, change, match):
    directory = _checkpoint(tmp_path)
    _edit_card(directory, **change)
    with pytest.raises(ModelError, match=match):
        load_checkpoint(directory)


def test_a_card_that_is_not_utf8_is_refused(tmp_path):
    directory = _checkpoint(tmp_path)
    (directory / "card.json").write_bytes(b'{"name": "\xff\xfe"}')
    with pytest.raises(ModelError, match="not UTF-8"):
        load_checkpoint(directory)


def _small_dataset(path: Path, n: int = 12) -> Path:
    rng = np.random.default_rng(0)
    maps = rng.normal(0.0, 50.0, (n, 1, 64, 64)).astype(np.float32)
    with create_dataset(path, ["mom1"], {"mom1": "km/s"}) as writer:
        writer.append(maps, pd.DataFrame({"id": np.arange(n, dtype=np.int64)}))
    return path


@pytest.mark.parametrize("name", ["../../../elsewhere/x", "/tmp/absolute", "..", ".hidden", "a/../../b"])
def test_a_model_name_cannot_move_the_embedding_cache(tmp_path, name):
    dataset = _small_dataset(tmp_path / "data" / "ds")
    directory = _checkpoint(tmp_path, name=name)
    model = LoadedModel(directory, device="cpu")
    load_or_compute_embedding(model, dataset, umap=False)
    written = cache_path(model, open_dataset(dataset))
    assert written is not None and written.parent == (dataset / "embeddings")
    assert not written.name.startswith(".")
    outside = [p for p in tmp_path.rglob("*.parquet") if dataset not in p.parents]
    assert outside == []


# ---------------------------------------------------------------------------- manifests
@pytest.mark.parametrize("bad_file", [
    "/etc/passwd", "../outside.f32", "maps/../../outside.f32", "maps/chunk-0000000000.lzma",
    "maps/chunk-0000000000.f32/../x", "maps\\chunk-0000000000.f32", "",
])
def test_manifest_chunk_paths_must_name_files_inside_the_dataset(tmp_path, bad_file):
    dataset = _small_dataset(tmp_path / "ds")
    manifest = json.loads((dataset / "manifest.json").read_text())
    manifest["chunks"][0]["file"] = bad_file
    (dataset / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match="inside the dataset directory"):
        open_dataset(dataset)


def test_a_catalogue_part_path_outside_the_dataset_is_refused(tmp_path):
    dataset = _small_dataset(tmp_path / "ds")
    manifest = json.loads((dataset / "manifest.json").read_text())
    manifest["catalog_parts"][0]["file"] = "../other/catalog/part-0000000000.parquet"
    (dataset / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match="inside the dataset directory"):
        open_dataset(dataset)


def test_a_chunk_linked_to_a_file_outside_the_dataset_is_not_read(tmp_path):
    dataset = _small_dataset(tmp_path / "ds")
    chunk = next((dataset / "maps").iterdir())
    outside = tmp_path / "outside.f32"
    os.replace(chunk, outside)
    chunk.symlink_to(outside)
    with pytest.raises(DatasetError, match="outside the dataset"):
        open_dataset(dataset).maps[0]
    part = next((dataset / "catalog").iterdir())
    os.replace(part, tmp_path / "part.parquet")
    part.symlink_to(tmp_path / "part.parquet")
    with pytest.raises(DatasetError, match="outside the dataset"):
        _ = open_dataset(dataset).catalog


@pytest.mark.parametrize("change", [
    {"n_maps": -1}, {"n_maps": "12"}, {"map_shape": [1, 64]}, {"map_shape": [1, 100000, 100000]},
    {"channels": []}, {"storage": {"kind": "zip", "chunk_maps": 1}}, {"chunks": "all"},
])
def test_a_damaged_manifest_is_refused_with_a_message(tmp_path, change):
    dataset = _small_dataset(tmp_path / "ds")
    manifest = json.loads((dataset / "manifest.json").read_text())
    manifest.update(change)
    (dataset / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match="regenerate the dataset"):
        open_dataset(dataset)


def test_a_missing_manifest_field_is_refused_with_a_message(tmp_path):
    dataset = _small_dataset(tmp_path / "ds")
    original = json.loads((dataset / "manifest.json").read_text())
    for key in ("n_maps", "map_shape", "channels", "storage", "chunks", "catalog_parts"):
        manifest = {k: v for k, v in original.items() if k != key}
        (dataset / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(DatasetError, match=key):
            open_dataset(dataset)
