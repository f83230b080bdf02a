"""Checkpoints: safetensors + card.json round trips, tamper detection, and nothing runs on load."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from types import SimpleNamespace

import pytest
import safetensors.torch
import torch

from galexplore.errors import ModelError
from galexplore.models.cae import DawsonCAE, IndexFreeCAE
from galexplore.models.checkpoint import (
    ModelCard,
    check_compatible,
    compute_card_checksum,
    compute_model_hash,
    load_checkpoint,
    save_checkpoint,
)
from galexplore.models.device import resolve_device
from galexplore.models.legacy import load_legacy_pickle


def _card(architecture: str = "dawson2020_cae", **hyperparameters) -> ModelCard:
    return ModelCard(
        name="test model",
        architecture=architecture,
        hyperparameters=hyperparameters,
        channels=["mom0", "mom1"][-hyperparameters.get("in_channels", 1):],
        recipe="dawson2020",
        latent_names=[f"latent_{i}" for i in range(hyperparameters.get("latent_dim", 3))],
        extras={"pca": {"mean": [0.0, 1.0, 2.0], "components": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}},
    )


class _WritesAFileWhenUnpickled:
    """A pickle payload: unpickling it calls open(marker, "w"), i.e. runs code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_the_payload_really_runs_code_when_unpickled_unrestricted(tmp_path):
    marker = tmp_path / "code_ran"
    pickle.loads(pickle.dumps(_WritesAFileWhenUnpickled(marker))).close()
    assert marker.exists()


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = DawsonCAE().eval()
    directory = save_checkpoint(model, _card(in_channels=1, latent_dim=3), tmp_path / "ckpt")
    return model, directory


@pytest.mark.parametrize("cls, hyperparameters", [
    (DawsonCAE, {"in_channels": 1, "latent_dim": 3}),
    (IndexFreeCAE, {"in_channels": 2, "latent_dim": 5}),
])
def test_round_trip_gives_identical_outputs(tmp_path, cls, hyperparameters):
    torch.manual_seed(1)
    model = cls(**hyperparameters).eval()
    architecture = "dawson2020_cae" if cls is DawsonCAE else "cae_free"
    card = _card(architecture, **hyperparameters)
    directory = save_checkpoint(model, card, tmp_path / "ckpt")
    assert sorted(p.name for p in directory.iterdir()) == ["card.json", "model.safetensors"]

    loaded, loaded_card = load_checkpoint(directory)
    assert type(loaded) is cls and not loaded.training
    assert loaded_card == card
    x = torch.rand(4, hyperparameters["in_channels"], 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded.encode(x), model.encode(x))
        assert torch.equal(loaded.reconstruct(x), model.reconstruct(x))


def test_card_json_round_trip_and_required_fields():
    card = _card(in_channels=1, latent_dim=3)
    assert ModelCard.from_json(card.to_json()) == card
    data = json.loads(card.to_json())
    del data["recipe"]
    with pytest.raises(ModelError, match="recipe"):
        ModelCard.from_json(json.dumps(data))
    with pytest.raises(ModelError, match="not valid JSON"):
        ModelCard.from_json("{not json")


def test_hash_covers_weights_and_output_relevant_card_fields():
    model = DawsonCAE()
    card = _card(in_channels=1, latent_dim=3)
    state = model.state_dict()
    reference = compute_model_hash(state, card)
    assert len(reference) == 64
    renamed = _card(in_channels=1, latent_dim=3)
    renamed.name, renamed.metrics, renamed.created = "other name", {"mse": 0.1}, "2000-01-01T00:00:00+00:00"
    assert compute_model_hash(state, renamed) == reference
    other_recipe = _card(in_channels=1, latent_dim=3)
    other_recipe.recipe = "physical"
    assert compute_model_hash(state, other_recipe) != reference
    nudged = {key: value.clone() for key, value in state.items()}
    nudged["lc1.bias"][0] += 1e-6
    assert compute_model_hash(nudged, card) != reference
    assert card.model_hash(model) == reference


def _rechecksum(directory, card: dict) -> None:
    """Write ``card`` with a checksum that matches the weights on disk (a consistent but wrong card)."""
    state = safetensors.torch.load_file(directory / "model.safetensors")
    card["checksum"] = compute_card_checksum(state, ModelCard.from_json(json.dumps({**card, "checksum": ""})))
    (directory / "card.json").write_text(json.dumps(card))


def test_saved_checksum_covers_weights_and_card_and_the_model_hash_survives_loading(saved):
    model, directory = saved
    loaded, card = load_checkpoint(directory)
    state = safetensors.torch.load_file(directory / "model.safetensors")
    assert card.checksum == compute_card_checksum(state, card)
    assert card.model_hash(model) == card.model_hash(loaded) != card.checksum


def test_tampered_weights_are_refused(saved):
    _, directory = saved
    state = safetensors.torch.load_file(directory / "model.safetensors")
    state["conv1.weight"][0, 0, 0, 0] += 0.5
    safetensors.torch.save_file(state, directory / "model.safetensors")
    with pytest.raises(ModelError, match="modified after it was saved"):
        load_checkpoint(directory)


def test_tampered_card_is_refused(saved):
    _, directory = saved
    card = json.loads((directory / "card.json").read_text())
    card["recipe"] = "physical"
    (directory / "card.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="modified after it was saved"):
        load_checkpoint(directory)


def test_weights_of_another_architecture_are_reported_by_name(saved):
    _, directory = saved
    card = json.loads((directory / "card.json").read_text())
    card["hyperparameters"] = {"in_channels": 1, "latent_dim": 4}
    _rechecksum(directory, card)  # a card written for other weights: the shape check must catch it
    with pytest.raises(ModelError, match=r"wrong shapes.*lc1\.weight: file \(3, 4096\), model \(4, 4096\)"):
        load_checkpoint(directory)


def test_missing_and_unexpected_tensors_are_listed(saved):
    _, directory = saved
    state = safetensors.torch.load_file(directory / "model.safetensors")
    state["extra.weight"] = state.pop("trans4.bias")
    safetensors.torch.save_file(state, directory / "model.safetensors")
    _rechecksum(directory, json.loads((directory / "card.json").read_text()))
    with pytest.raises(ModelError, match=r"missing tensors \['trans4.bias'\].*unexpected tensors \['extra.weight'\]"):
        load_checkpoint(directory)


def test_corrupt_or_incomplete_checkpoints(saved, tmp_path):
    _, directory = saved
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ModelError, match="corrupt"):
        load_checkpoint(directory)
    (directory / "card.json").unlink()
    with pytest.raises(ModelError, match="card.json is missing"):
        load_checkpoint(directory)
    with pytest.raises(ModelError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere")


def test_directory_with_only_a_pickle_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "code_ran"
    directory = tmp_path / "old"
    directory.mkdir()
    torch.save(_WritesAFileWhenUnpickled(marker), directory / "model.pt")
    with pytest.raises(ModelError, match="--trust-pickle") as info:
        load_checkpoint(directory)
    assert "model.pt" in str(info.value)
    with pytest.raises(ModelError, match="only pickle"):
        load_checkpoint(directory / "model.pt")
    assert not marker.exists()


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_legacy_import_never_runs_code_from_a_malicious_pickle(tmp_path, writer):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pt"
    payload = {"weights": _WritesAFileWhenUnpickled(marker)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    with pytest.raises(ModelError, match="arbitrary code"):
        load_legacy_pickle(path, trust_pickle=False)
    assert not marker.exists()
    # Even when trusted, the restricted unpickler refuses any global it does not know.
    with pytest.raises(ModelError, match=r"builtins\.open|io\.open"):
        load_legacy_pickle(path, trust_pickle=True)
    assert not marker.exists()


def test_pickle_bytes_inside_safetensors_stay_data(saved, tmp_path):
    _, directory = saved
    marker = tmp_path / "code_ran"
    evil = pickle.dumps(_WritesAFileWhenUnpickled(marker))
    state = safetensors.torch.load_file(directory / "model.safetensors")
    state["payload"] = torch.frombuffer(bytearray(evil), dtype=torch.uint8)
    safetensors.torch.save_file(state, directory / "model.safetensors")
    with pytest.raises(ModelError):
        load_checkpoint(directory)
    assert not marker.exists()


def test_check_compatible_channels_and_map_size():
    card = _card(in_channels=2, latent_dim=3)  # needs mom0 + mom1
    check_compatible(card, SimpleNamespace(channels=["mom0", "mom1", "mom2"], map_shape=(3, 64, 64)))
    lacking = SimpleNamespace(channels=["mom1", "mom2"], map_shape=(2, 64, 64))
    with pytest.raises(ModelError, match=r"\['mom0', 'mom1'\].*\['mom1', 'mom2'\].*missing \['mom0'\]"):
        check_compatible(card, lacking)
    check_compatible(card, SimpleNamespace(channels=["mom0", "mom1"], map_shape=(2, 128, 128)))  # resized
    with pytest.raises(ModelError, match="700x700"):
        check_compatible(card, SimpleNamespace(channels=["mom0", "mom1"], map_shape=(2, 700, 700)))
    with pytest.raises(ModelError, match="64x48"):
        check_compatible(card, SimpleNamespace(channels=["mom0", "mom1"], map_shape=(2, 64, 48)))
    card.input_size = 128
    with pytest.raises(ModelError, match="128x128 inputs"):
        check_compatible(card, SimpleNamespace(channels=["mom0", "mom1"], map_shape=(2, 64, 64)))
    card.input_size, card.recipe = 64, "no_such_recipe"
    with pytest.raises(ModelError, match="unknown preprocessing recipe"):
        check_compatible(card, SimpleNamespace(channels=["mom0", "mom1"], map_shape=(2, 64, 64)))


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in {"cpu", "cuda"}
    if torch.cuda.is_available():
        assert resolve_device("auto").type == "cuda"
    else:
        assert resolve_device("auto").type == "cpu"
        with pytest.raises(ModelError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(ModelError, match="unknown device"):
        resolve_device("quantum")
