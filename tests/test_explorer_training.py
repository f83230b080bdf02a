"""Background training through the application layer: settings refused outside their limits,
progress, the new model's embedding computed by the job itself, hot swap, queue, cancel, heads.

A spawned training process imports torch afresh (a few seconds each), so the jobs here are
tiny (a few dozen images per epoch on the 300-map fixture).
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from galexplore.analysis import embed as embed_module
from galexplore.errors import ParameterError
from galexplore.explorer import training
from galexplore.explorer.boundaries import Marks
from galexplore.explorer.bundles import BundleCache, latent_columns
from galexplore.training.heads import HEAD_KIND, MLPHead
from galexplore.training.jobs import (CANCELLED, FINISHED, JOB_NICENESS, QUEUED, RUNNING, TMP_PREFIX, JobManager,
                                      cpu_threads, sweep_orphans)
from galexplore.training.loops import TrainConfig, train
from ui_fixtures import build_ui_fixture

DEADLINE_S = 180


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    root = tmp_path_factory.mktemp("training")
    dataset, model = build_ui_fixture(root, n=300)
    return root, dataset, model, BundleCache().get(dataset, model)


def _settings(what: str, **changes) -> training.TrainingSettings:
    label = next(k for k, v in training.TRAINABLE.items() if v == what)
    return dataclasses.replace(training.TrainingSettings(), what=label, device="cpu", **changes)


def _thread_niceness(pid: int) -> list[int]:
    """Niceness of every thread of a process, from /proc/<pid>/task/<tid>/stat (field 19)."""
    values = []
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        with open(stat) as f:
            values.append(int(f.read().rsplit(")", 1)[1].split()[16]))
    return values


def _poll_until(run: training.TrainingRun, condition) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, run.status_text()
        run.poll()
        time.sleep(0.1)


@pytest.mark.parametrize("name, value", [("epochs", 0), ("epochs", 10_001), ("epochs", 2.5), ("batch_size", -3),
                                         ("images_per_epoch", 1), ("learning_rate", 0.0), ("learning_rate", 5.0),
                                         ("learning_rate", float("nan")), ("seed", -1), ("epochs", "ten")])
def test_numeric_settings_outside_their_limits_are_refused(name, value):
    with pytest.raises(ParameterError, match=name.replace("_", " ")) as refused:
        training.check_setting(name, value)
    low, high = training.LIMITS[name]
    assert f"{low:,}" in str(refused.value) and f"{high:,}" in str(refused.value)
    assert training.check_setting(name, low) == low and training.check_setting(name, high) == high


def test_finetune_progress_embedding_in_the_job_and_hot_swap(fixture, tmp_path, monkeypatch):
    root, dataset, model, bundle = fixture
    run = training.TrainingRun(tmp_path / "models")
    config = training.make_config(_settings("finetune", epochs=2, images_per_epoch=48), bundle, np.array([]))
    assert config.init_from == str(bundle.model.path) and config.kind == "cae-free"
    job = run.start(config, bundle)
    _poll_until(run, lambda: run.phase == training.SWAP_READY)
    assert [e["epoch"] for e in job.events] == [1, 2] and {e["device"] for e in job.events} == {"cpu"}
    assert job.stage is not None and run.progress_fraction() == 1.0 and "switching" in run.status_text()
    assert not job.process.is_alive() and job.result.parent == tmp_path / "models"
    assert not list((tmp_path / "models").glob(f"{TMP_PREFIX}*"))
    # the job cached the new model's embedding of its dataset: switching costs no inference here
    monkeypatch.setattr(embed_module, "run_model", lambda *a, **k: pytest.fail("inference in the server"))
    new = BundleCache().get(job.dataset_path, job.result)
    old_latents = bundle.frame(latent_columns(bundle.columns)).to_numpy()
    new_latents = new.frame(latent_columns(new.columns)).to_numpy()
    assert new_latents.shape == old_latents.shape and not np.allclose(new_latents, old_latents)


def test_second_job_is_queued_and_cancel_leaves_nothing(fixture, tmp_path):
    root, dataset, model, bundle = fixture
    models = tmp_path / "models"
    first, second = training.TrainingRun(models), training.TrainingRun(models)
    settings = _settings("cae-free", epochs=500, images_per_epoch=32)
    job_a = first.start(training.make_config(settings, bundle, np.array([])), bundle)
    subset = dataclasses.replace(settings, subset=training.SUBSETS[1])
    job_b = second.start(training.make_config(subset, bundle, np.arange(120)), bundle)
    assert job_b.config.rows == list(range(120))
    assert job_b.status == QUEUED and "queued (position 1)" in job_b.message
    assert job_a.destination != job_b.destination
    _poll_until(first, lambda: len(job_a.events) >= 1)
    assert os.getpriority(os.PRIO_PROCESS, job_a.process.pid) >= JOB_NICENESS
    if Path("/proc").is_dir():
        niceness = _thread_niceness(job_a.process.pid)
        assert niceness and min(niceness) >= JOB_NICENESS
    first.cancel()
    first.poll()
    assert job_a.status == CANCELLED and not job_a.process.is_alive()
    _poll_until(second, lambda: job_b.status == RUNNING)  # the queued job starts by itself
    second.close()
    assert job_b.status == CANCELLED and not job_b.process.is_alive()
    assert not list(models.glob(f"{TMP_PREFIX}*"))


def test_bad_settings_are_reported_before_a_process_starts(fixture, tmp_path):
    root, dataset, model, bundle = fixture
    with pytest.raises(ParameterError, match="learning rate"):
        training.make_config(_settings("cae", learning_rate=-1.0), bundle, np.array([]))
    with pytest.raises(ParameterError, match="nothing is selected"):
        training.make_config(_settings("cae", subset=training.SUBSETS[1]), bundle, np.array([]))


def test_cpu_jobs_leave_a_core_to_the_server():
    assert cpu_threads(TrainConfig(kind="cae")) == max(1, (os.cpu_count() or 2) - 1)
    assert cpu_threads(TrainConfig(kind="cae", num_threads=3)) == 3


def test_train_on_rows_and_from_initial_weights(fixture, tmp_path):
    _, dataset, model, _ = fixture
    rows = list(range(0, 300, 5))  # 60 maps of 30 galaxies
    out = train(TrainConfig(kind="cae-free", epochs=1, images_per_epoch=8, batch_size=8, device="cpu",
                            learning_rate=1e-12, rows=rows, init_from=str(model)), dataset, tmp_path / "tuned")
    from galexplore.models.checkpoint import load_checkpoint

    tuned, card = load_checkpoint(out)
    initial, _ = load_checkpoint(model)
    split = card.training_data
    assert split["n_train"] + split["n_validation"] + split["n_test"] == len(rows)
    for name, weight in initial.state_dict().items():
        if name.endswith("weight") and weight.ndim == 4:
            torch.testing.assert_close(tuned.state_dict()[name], weight, atol=1e-9, rtol=0)


def test_mlp_head_job_gives_columns_for_its_own_model_only(fixture, tmp_path):
    root, dataset, model, bundle = fixture
    run = training.TrainingRun(tmp_path / "models")
    settings = _settings(HEAD_KIND, target="vflat_kms", head_labels=training.HEAD_LABELS[0], epochs=12)
    job = run.start(training.make_config(settings, bundle, np.array([])), bundle)
    _poll_until(run, lambda: run.phase == training.SWAP_READY)
    assert [e["epoch"] for e in job.events] == list(range(1, 13))
    assert job.stage is None  # a head has no embedding to compute
    columns, units = run.head_columns(bundle)
    head = MLPHead.load(job.result)
    assert head.info["model_path"] == str(model) and head.info["n_test_galaxies"] == 30  # 20 % of 150
    latents = bundle.frame(latent_columns(bundle.columns)).to_numpy()
    np.testing.assert_allclose(columns["pred_head_vflat_kms"], head.predict(latents))
    assert units == {"pred_head_vflat_kms": "km/s"} and run.phase == training.HEAD_APPLIED
    assert "R^2" in run.status_text()
    other = bundle.with_columns({})
    object.__setattr__(other, "model", type("M", (), {"path": Path("/elsewhere")})())
    with pytest.raises(ParameterError, match="another model"):
        run.head_columns(other)
    assert run.phase == training.HEAD_STALE


def test_head_labels_from_a_threshold_or_the_users_marks(fixture):
    _, _, _, bundle = fixture
    settings = _settings(HEAD_KIND, target="kappa", head_labels=training.HEAD_LABELS[1], threshold=0.5)
    config = training.make_config(settings, bundle, np.array([]))
    kappa = bundle.column("kappa")
    assert config.task == "classification" and config.target == "kappa"
    np.testing.assert_array_equal(config.values, (kappa > 0.5).astype(float))
    np.testing.assert_array_equal(config.galaxy_ids, np.arange(300) // 2)
    marks = Marks()
    ids = bundle.column("id")
    marks.mark(ids[:40], "A")
    marks.mark(ids[40:80], "B")
    config = training.make_config(dataclasses.replace(settings, head_labels=training.HEAD_LABELS[2]), bundle,
                                  np.arange(40, 80), marks)
    expected = np.full(300, np.nan)
    expected[:40], expected[40:80] = 1.0, 0.0
    assert config.target == "marks"
    np.testing.assert_array_equal(config.values, expected)
    with pytest.raises(ParameterError, match="each class"):  # only the selected (marked B) rows: one class
        training.make_config(dataclasses.replace(settings, head_labels=training.HEAD_LABELS[2],
                                                 subset=training.SUBSETS[1]), bundle, np.arange(40, 80), marks)


def test_orphaned_temporary_folders_of_dead_jobs_are_swept(tmp_path):
    import json
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    orphan = tmp_path / f"{TMP_PREFIX}orphan"
    orphan.mkdir()
    (orphan / "owner.json").write_text(json.dumps({"server_pid": pid, "job_pid": pid}))
    alive = tmp_path / f"{TMP_PREFIX}alive"
    alive.mkdir()
    (alive / "owner.json").write_text(json.dumps({"server_pid": os.getpid(), "job_pid": os.getpid()}))
    unknown = tmp_path / f"{TMP_PREFIX}unknown"
    unknown.mkdir()
    JobManager(tmp_path)  # a new manager sweeps
    assert not orphan.exists() and alive.exists() and unknown.exists()
    assert sweep_orphans(tmp_path) == []


def test_finished_jobs_are_forgotten_beyond_a_limit(fixture, tmp_path, monkeypatch):
    from galexplore.training import jobs

    monkeypatch.setattr(jobs, "KEEP_FINISHED", 2)
    manager = JobManager(tmp_path / "models")
    _, dataset, _, bundle = fixture
    settings = _settings(HEAD_KIND, target="kappa", epochs=1)
    config = training.make_config(settings, bundle, np.array([]))
    for k in range(4):
        job = manager.submit(config, dataset)
        assert job.wait(timeout=DEADLINE_S) == FINISHED
    manager.poll()
    assert len(manager.jobs) == 2
