"""`galexplore serve` and `panel serve galexplore/app.py`: defaults, allowed directories."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

import galexplore.explorer.sources as sources
import galexplore.ui.layout as layout
from galexplore.cli import build_parser, main
from galexplore.errors import ModelError
from galexplore.explorer.access import allowed_directories
from galexplore.paths import SAMPLE_DATASET, sample_model_dirs
from ui_fixtures import build_ui_fixture

APP = Path(layout.__file__).resolve().parents[1] / "app.py"


@pytest.fixture(scope="module")
def fixture_paths(tmp_path_factory):
    return build_ui_fixture(tmp_path_factory.mktemp("ui-serve"), n=80)


def test_allow_is_repeatable_and_reaches_serve(monkeypatch, tmp_path):
    args = build_parser().parse_args(["serve", "--allow", "/a", "--allow", "/b"])
    assert args.allow == [Path("/a"), Path("/b")]
    seen = {}
    monkeypatch.setattr(layout, "serve", lambda **kwargs: seen.update(kwargs))
    assert main(["serve", "--allow", str(tmp_path), "--no-browser", "--port", "5099"]) == 0
    assert seen["allowed_dirs"] == [tmp_path] and seen["port"] == 5099 and seen["show"] is False
    assert seen["dataset"] is None and seen["model"] is None  # the shipped sample by default


def test_allowed_directories_hold_the_extra_ones(tmp_path):
    dirs = allowed_directories(SAMPLE_DATASET, "dawson2020", extra=[tmp_path])
    assert tmp_path.resolve() in dirs and SAMPLE_DATASET.parent.resolve() in dirs


def _fake_samples(monkeypatch, root: Path, names: list[str]) -> list[Path]:
    dirs = [root / name for name in sorted(names)]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    monkeypatch.setattr(sources, "sample_model_dirs", lambda: dirs)
    return dirs


def test_default_model_prefers_the_folded_space_autoencoders(monkeypatch, tmp_path):
    _fake_samples(monkeypatch, tmp_path, ["cae_free_mom1", "cae_mom1", "env_vae", "mass_regressor"])
    assert Path(sources.default_model()).name == "cae_free_mom1"
    _fake_samples(monkeypatch, tmp_path / "b", ["cae_mom1", "env_vae", "mass_regressor"])
    assert Path(sources.default_model()).name == "cae_mom1"
    _fake_samples(monkeypatch, tmp_path / "c", [])
    with pytest.raises(ModelError, match="--model"):
        sources.default_model()


def test_the_model_picker_names_each_checkpoint_once(monkeypatch, fixture_paths, tmp_path):
    """Labels are model names and where they come from, never paths, and a checkpoint reached
    two ways (the current one is also a sample) is listed once."""
    import shutil

    _, model = fixture_paths
    monkeypatch.setenv("GALEXPLORE_DATA_DIR", str(tmp_path / "data"))  # no user or zoo models of other tests
    samples = tmp_path / "samples"
    for name in ("a", "b"):
        shutil.copytree(model, samples / name)
    dirs = sorted(samples.iterdir())
    monkeypatch.setattr(sources, "sample_model_dirs", lambda: dirs)
    monkeypatch.setattr(sources, "SAMPLE_MODELS", samples)
    choices = sources.model_choices(str(samples / "a" / ".." / "a"))
    assert list(choices) == ["test-cae (sample)", "test-cae (sample) "]
    assert sorted(Path(p).resolve() for p in choices.values()) == dirs
    assert all("/" not in label for label in choices)


def test_app_py_opens_the_configured_dataset_and_model(monkeypatch, fixture_paths):
    dataset, model = fixture_paths
    monkeypatch.setenv("GALEXPLORE_DATASET", str(dataset))
    monkeypatch.setenv("GALEXPLORE_MODEL", str(model))
    built = []
    original = layout.build_app
    monkeypatch.setattr(layout, "build_app", lambda *a, **k: built.append(original(*a, real_overlay=False, **k))
                        or built[-1])
    runpy.run_path(str(APP))
    session = built[0].session
    assert session.bundle.dataset.path.resolve() == dataset.resolve()
    assert session.bundle.model.path.resolve() == model.resolve()
    assert session.map.projection == "folded (r, h)" and session.map.color_by == "kappa"


@pytest.mark.skipif(not sample_model_dirs(), reason="the pretrained sample models are not in assets/models")
def test_the_app_opens_the_shipped_sample_with_its_default_model():
    session = layout.build_app(real_overlay=False).session
    assert session.bundle.dataset.path.resolve() == SAMPLE_DATASET.resolve()
    assert Path(session.bundle.model.path).resolve() == Path(sources.default_model()).resolve()
    assert session.bundle.n_maps == len(session.bundle.dataset)
