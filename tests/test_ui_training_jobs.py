"""Background training through the API the Training tab uses: progress, cancel, queue, hot swap.

A spawned training process imports torch afresh (a few seconds each), so the jobs here are
tiny (a few dozen images per epoch on the 300-map fixture).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from galexplore.errors import ParameterError
from galexplore.training.jobs import CANCELLED, QUEUED, RUNNING, TMP_PREFIX, cpu_threads
from galexplore.training.loops import TrainConfig, train
from galexplore.ui.bundle import latent_columns, load_bundle
from galexplore.ui.jobs_state import SUBSETS, SWAPPED, TRAINABLE, TrainingSession
from galexplore.ui.state import ExplorerState

from ui_fixtures import build_ui_fixture

DEADLINE_S = 120


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    root = tmp_path_factory.mktemp("training")
    dataset, model = build_ui_fixture(root, n=300)
    return root, dataset, model


def _session(fixture, models_dir) -> tuple[ExplorerState, TrainingSession]:
    root, dataset, model = fixture
    state = ExplorerState(load_bundle(dataset, model), selections_dir=root / "selections")
    return state, TrainingSession(state, models_dir=models_dir)


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
    assert card.training_data["n_train"] + card.training_data["n_test"] == len(rows)
    # a learning rate of 1e-12 leaves the convolution weights where fine-tuning started
    for name, weight in initial.state_dict().items():
        if name.endswith("weight") and weight.ndim == 4:
            torch.testing.assert_close(tuned.state_dict()[name], weight, atol=1e-9, rtol=0)
    with pytest.raises(ParameterError, match="cannot fine-tune"):
        train(TrainConfig(kind="cae", epochs=1, images_per_epoch=8, device="cpu", init_from=str(model)),
              dataset, tmp_path / "wrong")
