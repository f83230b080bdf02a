"""Saliency maps on functions whose gradients are known analytically."""

import numpy as np
import pytest
import torch

from galexplore.analysis.saliency import saliency, target_function
from galexplore.errors import ParameterError

RNG = np.random.default_rng(0)
W = RNG.normal(size=(2, 8, 8)).astype(np.float32)
X = RNG.normal(size=(2, 8, 8)).astype(np.float32)


def linear(batch):
    return (batch * torch.from_numpy(W)).sum(dim=(1, 2, 3))


@pytest.mark.parametrize("method", ["vanilla", "smoothgrad"])
def test_gradient_of_linear_function_is_its_weights(method):
    np.testing.assert_allclose(saliency(linear, X, method=method), W, rtol=1e-6, atol=0)


def test_integrated_gradients_of_linear_function_and_completeness():
    baseline = RNG.normal(size=X.shape).astype(np.float32)
    attribution = saliency(linear, X, method="integrated_gradients", baseline=baseline, steps=8)
    np.testing.assert_allclose(attribution, W * (X - baseline), rtol=1e-5, atol=1e-6)
    expected = float((W * X).sum() - (W * baseline).sum())
    assert attribution.sum() == pytest.approx(expected, rel=1e-5)


def test_integrated_gradients_completeness_on_a_nonlinear_function():
    def fn(batch):
        return torch.tanh((batch * torch.from_numpy(W)).sum(dim=(1, 2, 3)) / 10) + (batch**2).sum(dim=(1, 2, 3)) / 50

    attribution = saliency(fn, X, method="integrated_gradients", steps=64)
    x = torch.from_numpy(X)[None]
    expected = float(fn(x) - fn(torch.zeros_like(x)))
    assert attribution.sum() == pytest.approx(expected, rel=1e-3)


def test_smoothgrad_of_quadratic_averages_to_the_input():
    def half_square(batch):
        return (batch**2).sum(dim=(1, 2, 3)) / 2  # gradient = x

    np.testing.assert_allclose(saliency(half_square, X, "smoothgrad", noise_level=0.0), X, rtol=1e-6)
    n, level = 400, 0.1
    smooth = saliency(half_square, X, "smoothgrad", n_samples=n, noise_level=level, seed=1)
    sigma = level * (X.max(axis=(1, 2)) - X.min(axis=(1, 2)))[:, None, None]
    assert (np.abs(smooth - X) < 5 * sigma / np.sqrt(n)).all()


class TinyModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.Linear(2 * 8 * 8, 3)
        self.head = torch.nn.Linear(3, 1)

    def encode(self, x):
        return self.encoder(x.flatten(1))

    def predict(self, x):
        return {"log_mstar": self.head(self.encode(x))[:, 0] + 10.0}


def test_target_function_latent_and_output():
    torch.manual_seed(0)
    model = TinyModel()
    latent_1 = saliency(target_function(model, "latent_1"), X)
    np.testing.assert_allclose(latent_1, model.encoder.weight[1].detach().numpy().reshape(2, 8, 8), rtol=1e-6)
    mass = saliency(target_function(model, "log_mstar"), X)
    chain = (model.head.weight @ model.encoder.weight).detach().numpy().reshape(2, 8, 8)
    np.testing.assert_allclose(mass, chain, rtol=1e-5, atol=1e-7)
    assert all(p.grad is None for p in model.parameters())  # the model's own gradients are untouched
    with pytest.raises(ParameterError, match="unknown saliency target"):
        saliency(target_function(model, "log_mgas"), X)
    with pytest.raises(ParameterError, match="latent dimensions"):
        saliency(target_function(model, "latent_7"), X)


def test_saliency_errors():
    with pytest.raises(ParameterError, match="unknown saliency method"):
        saliency(linear, X, method="occlusion")
    with pytest.raises(ParameterError, match="one scalar per sample"):
        saliency(lambda batch: batch.sum(dim=(2, 3)), X)
    with pytest.raises(ParameterError, match=r"\(C, H, W\)"):
        saliency(linear, X[0])
