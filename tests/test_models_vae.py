"""The environment VAE: shapes, the Poisson + KL loss by hand, and the latent ranking."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import special, stats

from galexplore.errors import ParameterError
from galexplore.models.registry import build_model
from galexplore.models.vae import EnvironmentVAE


def _constant_vae(latent_dim: int, rate: float, mu: float, var: float) -> EnvironmentVAE:
    """A VAE whose posterior is N(mu, var) in every dimension and whose decoder predicts
    ``rate`` counts in every pixel, whatever the input: all weights zero, biases set."""
    model = EnvironmentVAE(latent_dim=latent_dim)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        model.to_posterior.bias[:latent_dim] = mu
        model.to_posterior.bias[latent_dim:] = math.log(var)
        model.decoder[-1].bias.fill_(math.log(rate))
    return model


def test_shapes_and_registry():
    model = build_model("environment_vae", latent_dim=5)
    counts = torch.poisson(torch.full((3, 1, 64, 64), 0.7, dtype=torch.float32))
    assert model.encode(counts).shape == (3, 5)
    decoded = model.decode(torch.randn(4, 5))
    assert decoded.shape == (4, 1, 64, 64) and bool((decoded > 0).all())
    assert model.reconstruct(counts).shape == (3, 1, 64, 64)
    with pytest.raises(ParameterError, match="64"):
        model.encode(torch.zeros(2, 1, 32, 32))


@pytest.mark.parametrize("training", [True, False])
def test_loss_equals_a_hand_computation(training):
    rate, mu, var, latent_dim = 2.0, 0.5, 0.25, 3
    model = _constant_vae(latent_dim, rate, mu, var).train(training)
    counts = torch.zeros(2, 1, 64, 64)
    counts[0, 0, 10, 10:20] = 3.0           # 10 pixels with 3 galaxies
    counts[1, 0, :4, :4] = 1.0              # 16 pixels with 1 galaxy
    total, poisson, kl = model.loss(counts)
    # Poisson NLL without log(k!): sum over pixels of (rate - k ln rate), averaged over maps
    n_pix = 64 * 64
    expected_poisson = np.mean([n_pix * rate - 30 * math.log(rate), n_pix * rate - 16 * math.log(rate)])
    # KL(N(mu, var) || N(0, 1)) = (mu^2 + var - 1 - ln var) / 2 per dimension
    expected_kl = latent_dim * 0.5 * (mu**2 + var - 1 - math.log(var))
    assert poisson.item() == pytest.approx(expected_poisson, rel=1e-6)
    assert kl.item() == pytest.approx(expected_kl, rel=1e-6)
    assert total.item() == pytest.approx(expected_poisson + expected_kl, rel=1e-6)
    # and it differs from the full Poisson log-likelihood only by the log(k!) constant
    full = -stats.poisson.logpmf(counts.numpy(), rate).sum(axis=(1, 2, 3)).mean()
    log_factorial = special.gammaln(counts.numpy() + 1).sum(axis=(1, 2, 3)).mean()
    assert poisson.item() == pytest.approx(full - log_factorial, rel=1e-6)


def test_latent_ranking_puts_the_informative_dimension_first():
    latent_dim = 6
    model = EnvironmentVAE(latent_dim=latent_dim).eval()
    counts = torch.poisson(torch.rand(40, 1, 64, 64) * 3)
    with torch.no_grad():
        model.to_posterior.weight.zero_()
        model.to_posterior.bias.zero_()             # every dimension at the prior: KL = 0
        # dimension 4 follows the input: mu_4 = 0.05 * (sum of the encoder features)
        model.to_posterior.weight[4] = 0.05
        model.to_posterior.bias[latent_dim + 1] = math.log(0.5)   # dimension 1: narrower posterior
    features = model.encoder(torch.log1p(counts)).detach()
    mu4 = 0.05 * features.sum(dim=1)
    expected = np.zeros(latent_dim)
    expected[4] = float(0.5 * (mu4**2).mean())
    expected[1] = 0.5 * (0.5 - 1 - math.log(0.5))
    assert expected[4] > expected[1]  # the constructed example is what we meant it to be
    info = model.latent_informativeness(counts, batch_size=16)
    np.testing.assert_allclose(info.numpy(), expected, rtol=1e-4, atol=1e-7)
    ranking = model.latent_ranking(counts)
    assert ranking[:2] == [4, 1] and sorted(ranking) == list(range(latent_dim))
    # a DataLoader of (maps,) tuples gives the same answer as the tensor
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(counts), batch_size=7)
    np.testing.assert_allclose(model.latent_informativeness(loader).numpy(), info.numpy(), rtol=1e-5)
