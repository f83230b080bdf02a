"""Background training through the API the Training tab uses: progress, cancel, queue, hot swap.

A spawned training process imports torch afresh (a few seconds each), so the jobs here are
tiny (a few dozen images per epoch on the 300-map fixture).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from galexplore.errors import ParameterError
from galexplore.training.heads import HEAD_KIND, MLPHead
from galexplore.training.jobs import CANCELLED, JOB_NICENESS, QUEUED, RUNNING, TMP_PREFIX, cpu_threads
from galexplore.training.loops import TrainConfig, train
from galexplore.ui.boundary_view import BoundaryModel
from galexplore.ui.bundle import latent_columns, load_bundle
from galexplore.ui.jobs_state import HEAD_APPLIED, HEAD_LABELS, SUBSETS, SWAPPED, TRAINABLE, TrainingSession
from galexplore.ui.state import ExplorerState

from ui_fixtures import build_ui_fixture

DEADLINE_S = 120


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    root = tmp_path_factory.mktemp("training")
    dataset, model = build_ui_fixture(root, n=300)
    return root, dataset, model


def _session(fixture, models_dir, boundary: bool = False) -> tuple[ExplorerState, TrainingSession]:
    root, dataset, model = fixture
    state = ExplorerState(load_bundle(dataset, model), selections_dir=root / "selections")
    return state, TrainingSession(state, models_dir=models_dir, boundary=BoundaryModel(state) if boundary else None)


def _thread_niceness(pid: int) -> list[int]:
    """Niceness of every thread of a process, from /proc/<pid>/task/<tid>/stat (field 19)."""
    values = []
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        with open(stat) as f:
            values.append(int(f.read().rsplit(")", 1)[1].split()[16]))
    return values


def _poll_until(session: TrainingSession, condition) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, session.status_text()
        session.poll()
        time.sleep(0.1)


def test_job_progress_hot_swap_and_back(fixture, tmp_path):
    state, session = _session(fixture, tmp_path / "models")
    old_model, old_latents = state.bundle.model.path, state.table[latent_columns(state.table)].to_numpy()
    session.what = next(k for k, v in TRAINABLE.items() if v == "finetune")
    session.epochs, session.images_per_epoch, session.device = 2, 48, "cpu"
    seen: list[int] = []
    session.param.watch(lambda event: seen.append(len(session.job.events)), "events_version")
    job = session.start()
    assert job.config.init_from == str(old_model) and job.config.kind == "cae-free"
    _poll_until(session, lambda: session.phase == SWAPPED)

    assert [e["epoch"] for e in job.events] == [1, 2]
    assert {e["device"] for e in job.events} == {"cpu"} and job.events[-1]["eta_s"] == 0.0
    assert max(seen) == 2 and session.progress_fraction() == 1.0
    assert not job.process.is_alive()
    # the session now explores the new checkpoint, written under the models directory
    assert state.bundle.model.path == job.result and job.result.parent == tmp_path / "models"
    new_latents = state.table[latent_columns(state.table)].to_numpy()
    assert new_latents.shape == old_latents.shape and not np.allclose(new_latents, old_latents)
    assert not list((tmp_path / "models").glob(f"{TMP_PREFIX}*"))
    # ... and "back" restores the previous model and its embedding
    state.back_to_previous_model()
    assert state.bundle.model.path == old_model
    np.testing.assert_array_equal(state.table[latent_columns(state.table)].to_numpy(), old_latents)
    with pytest.raises(ParameterError, match="no previous model"):
        state.back_to_previous_model()


def test_second_job_is_queued_and_cancel_leaves_nothing(fixture, tmp_path):
    models = tmp_path / "models"
    _, first = _session(fixture, models)
    state_b, second = _session(fixture, models)
    for session in (first, second):
        session.what = next(k for k, v in TRAINABLE.items() if v == "cae-free")
        session.epochs, session.images_per_epoch, session.device = 500, 32, "cpu"
    job_a = first.start()
    state_b.selection = np.arange(0, 120)
    second.subset = SUBSETS[1]
    job_b = second.start()
    assert job_b.config.rows == list(range(120))
    assert job_b.status == QUEUED and "queued (position 1)" in job_b.message
    assert job_a.destination != job_b.destination  # jobs never share an output

    _poll_until(first, lambda: len(job_a.events) >= 1)
    # the training process and all its threads yield the CPU to the server
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
    state, session = _session(fixture, tmp_path / "models")
    session.learning_rate = -1.0
    with pytest.raises(ParameterError, match="learning_rate"):
        session.start()
    session.learning_rate = 1e-3
    session.subset = SUBSETS[1]
    with pytest.raises(ParameterError, match="nothing is selected"):
        session.start()
    assert session.job is None


def test_cpu_jobs_leave_a_core_to_the_server():
    assert cpu_threads(TrainConfig(kind="cae")) == max(1, (__import__("os").cpu_count() or 2) - 1)
    assert cpu_threads(TrainConfig(kind="cae", num_threads=3)) == 3


def test_train_on_rows_and_from_initial_weights(fixture, tmp_path):
    _, dataset, model = fixture
    rows = list(range(0, 300, 5))  # 60 maps of 30 galaxies
    out = train(TrainConfig(kind="cae-free", epochs=1, images_per_epoch=8, batch_size=8, device="cpu",
                            learning_rate=1e-12, rows=rows, init_from=str(model)), dataset, tmp_path / "tuned")
    from galexplore.models.checkpoint import load_checkpoint

    tuned, card = load_checkpoint(out)
    initial, _ = load_checkpoint(model)
    split = card.training_data
    assert split["n_train"] + split["n_validation"] + split["n_test"] == len(rows)
    # a learning rate of 1e-12 leaves the convolution weights where fine-tuning started
    for name, weight in initial.state_dict().items():
        if name.endswith("weight") and weight.ndim == 4:
            torch.testing.assert_close(tuned.state_dict()[name], weight, atol=1e-9, rtol=0)
    with pytest.raises(ParameterError, match="cannot fine-tune"):
        train(TrainConfig(kind="cae", epochs=1, images_per_epoch=8, device="cpu", init_from=str(model)),
              dataset, tmp_path / "wrong")


def test_mlp_head_job_adds_its_predictions_to_the_table(fixture, tmp_path):
    state, session = _session(fixture, tmp_path / "models")
    model = state.bundle.model.path
    session.what = next(k for k, v in TRAINABLE.items() if v == HEAD_KIND)
    session.target, session.head_labels, session.epochs = "vflat_kms", HEAD_LABELS[0], 12
    job = session.start()
    _poll_until(session, lambda: session.phase == HEAD_APPLIED)

    assert [e["epoch"] for e in job.events] == list(range(1, 13)) and session.progress_fraction() == 1.0
    assert not job.process.is_alive() and job.result.parent == tmp_path / "models"
    assert not list((tmp_path / "models").glob(f"{TMP_PREFIX}*"))
    assert state.bundle.model.path == model  # a head adds columns; the model stays
    head = MLPHead.load(job.result)
    assert head.info["model_path"] == str(model) and head.info["n_test_galaxies"] == 30  # 20 % of 150
    latents = state.table[latent_columns(state.table)].to_numpy()
    np.testing.assert_allclose(state.table["pred_head_vflat_kms"].to_numpy(), head.predict(latents))
    assert "pred_head_vflat_kms" in state.param.color_by.objects
    assert state.units["pred_head_vflat_kms"] == "km/s"
    assert "R^2" in session.status_text()
    state.selection = np.arange(10)
    exported = pd.read_csv(state.export(tmp_path / "export.csv"))
    np.testing.assert_allclose(exported["pred_head_vflat_kms"], state.table["pred_head_vflat_kms"][:10], rtol=1e-6)


def test_head_labels_from_a_threshold_or_the_users_marks(fixture, tmp_path):
    state, session = _session(fixture, tmp_path / "models", boundary=True)
    session.what = next(k for k, v in TRAINABLE.items() if v == HEAD_KIND)
    session.target, session.head_labels, session.threshold = "kappa", HEAD_LABELS[1], 0.5
    config = session.config()
    kappa = state.table["kappa"].to_numpy()
    assert config.task == "classification" and config.target == "kappa"
    np.testing.assert_array_equal(config.values, (kappa > 0.5).astype(float))
    np.testing.assert_array_equal(config.galaxy_ids, np.arange(300) // 2)

    state.selection = np.arange(0, 40)
    session.boundary.mark("A")
    state.selection = np.arange(40, 80)
    session.boundary.mark("B")
    session.head_labels = HEAD_LABELS[2]
    config = session.config()
    assert config.target == "marks" and config.task == "classification"
    expected = np.full(300, np.nan)
    expected[:40], expected[40:80] = 1.0, 0.0
    np.testing.assert_array_equal(config.values, expected)
    session.subset = SUBSETS[1]  # only the selected (marked B) rows: one class
    with pytest.raises(ParameterError, match="each class"):
        session.config()
