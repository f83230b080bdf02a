"""The MLP head on latents: known answers, the split by galaxy, a hand-built network, safe storage."""

from __future__ import annotations

import numpy as np
import pytest

from galexplore.errors import ModelError, ParameterError
from galexplore.training.heads import CARD_FILE, WEIGHTS_FILE, HeadConfig, MLPHead, fit_head, train_head

N_GALAXIES = 300


@pytest.fixture(scope="module")
def latents():
    """Two views per galaxy with nearly the same latent vector, as a CAE gives."""
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(N_GALAXIES, 3))
    z = np.repeat(centres, 2, axis=0) + rng.normal(scale=0.01, size=(2 * N_GALAXIES, 3))
    return z, np.repeat(np.arange(N_GALAXIES) + 1000, 2)


def test_a_smooth_function_of_the_latents_is_learnt(latents):
    z, galaxies = latents
    target = 2.0 * np.sin(z[:, 0]) + z[:, 1] ** 2 + 10.0  # a "column" in its own units, offset from zero
    head = fit_head(HeadConfig("mass", z, target, galaxies, epochs=150, seed=1))
    assert head.metrics["r2"] > 0.95
    assert head.metrics["rmse"] < 0.25 * np.std(target)
    # held out by galaxy: 20 % of the galaxies, every view of each
    assert head.info["n_test_galaxies"] == round(0.2 * N_GALAXIES)
    assert head.info["n_train_galaxies"] + head.info["n_test_galaxies"] == N_GALAXIES
    assert head.metrics["n"] == 2 * head.info["n_test_galaxies"]


def test_a_target_unrelated_to_the_latents_scores_no_better_than_its_mean(latents):
    z, galaxies = latents
    noise = np.random.default_rng(3).normal(size=N_GALAXIES).repeat(2)  # one value per galaxy
    head = fit_head(HeadConfig("noise", z, noise, galaxies, epochs=60, seed=1))
    assert head.metrics["r2"] < 0.1
    assert head.metrics["rmse"] > 0.8  # the noise has unit standard deviation


def test_a_class_that_no_line_separates_is_learnt(latents):
    z, galaxies = latents
    labels = (z[:, 0] * z[:, 1] > 0).astype(float)  # XOR of two signs: a linear model scores 0.5
    labels[::7] = np.nan  # unlabelled rows are left out
    head = fit_head(HeadConfig("quadrant", z, labels, galaxies, task="classification", epochs=150, seed=2))
    assert head.metrics["balanced_accuracy"] > 0.9
    assert head.metrics["n"] == pytest.approx(0.2 * 0.857 * len(z), rel=0.25)
    columns = head.table_columns(np.vstack([z[:3], [[np.nan, 0.0, 0.0]]]))
    assert set(columns) == {"pred_head_quadrant", "proba_head_quadrant"}
    np.testing.assert_array_equal(columns["pred_head_quadrant"][:3], (columns["proba_head_quadrant"][:3] >= 0.5))
    assert columns["pred_head_quadrant"][3] == -1 and np.isnan(columns["proba_head_quadrant"][3])


def test_same_seed_same_head_and_storage_round_trip_without_pickle(latents, tmp_path):
    z, galaxies = latents
    target = z[:, 0] - 2.0 * z[:, 2]
    config = HeadConfig("t", z, target, galaxies, epochs=5, seed=4, target_unit="km/s")
    first, second = fit_head(config), fit_head(config)
    for a, b in zip(first.weights, second.weights):
        np.testing.assert_array_equal(a, b)
    path = train_head(config, tmp_path / "head")
    assert sorted(p.name for p in path.iterdir()) == sorted([CARD_FILE, WEIGHTS_FILE])
    loaded = MLPHead.load(path)
    np.testing.assert_array_equal(loaded.predict(z), first.predict(z))
    assert loaded.target_unit == "km/s" and loaded.metrics["r2"] == first.metrics["r2"]
    with pytest.raises(ParameterError, match="already holds a head"):
        train_head(config, path)
    with pytest.raises(ModelError, match="no MLP head"):
        MLPHead.load(tmp_path)


def test_forward_pass_of_a_hand_built_network():
    # one hidden layer computing relu(u) and relu(-u) of the standardised input u; the output
    # relu(u) - relu(-u) = u, de-standardised: y = 3 u + 5 with u = (x - 1) / 2
    head = MLPHead(target="y", task="regression", input_mean=np.array([1.0]), input_scale=np.array([2.0]),
                   weights=[np.array([[1.0, -1.0]]), np.array([[1.0], [-1.0]])],
                   biases=[np.zeros(2), np.zeros(1)], target_mean=5.0, target_scale=3.0)
    x = np.array([[-3.0], [1.0], [2.0], [np.nan]])
    np.testing.assert_allclose(head.predict(x)[:3], [-1.0, 5.0, 6.5])
    assert np.isnan(head.predict(x)[3])
    logistic = MLPHead(target="c", task="classification", input_mean=np.zeros(1), input_scale=np.ones(1),
                       weights=[np.ones((1, 1)), np.ones((1, 1))], biases=[np.zeros(1), np.zeros(1)])
    np.testing.assert_allclose(logistic.predict(np.array([[0.0], [np.log(3.0)]])), [0.5, 0.75])
    with pytest.raises(ParameterError, match="takes 1 latent"):
        head.predict(np.zeros((2, 3)))


def test_unusable_labels_are_refused(latents):
    z, galaxies = latents
    with pytest.raises(ParameterError, match="each class"):
        fit_head(HeadConfig("c", z, np.ones(len(z)), galaxies, task="classification"))
    with pytest.raises(ParameterError, match="fewer than 4 galaxies"):
        fit_head(HeadConfig("t", z, np.where(galaxies < 1002, 1.0, np.nan), galaxies))
    with pytest.raises(ParameterError, match="unknown head task"):
        fit_head(HeadConfig("t", z, z[:, 0], galaxies, task="ranking"))
