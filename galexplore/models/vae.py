"""Variational autoencoder for galaxy environment maps (after Gim, Moon & Yoon).

Input: 64 x 64 maps of neighbour counts (raw counts, not logged). The encoder sees
log(1 + counts); the decoder gives a Poisson rate for every pixel, and training minimises
the Poisson negative log-likelihood of the counts plus the KL divergence of the latent
posterior from a unit normal. Latent dimensions are ranked by how much information they
carry: their mean KL divergence over a set of maps.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from galexplore.errors import ParameterError
from galexplore.models.registry import register_architecture

MAP_SIZE = 64


class EnvironmentVAE(nn.Module):
    """Convolutional VAE of neighbour-count maps with a Poisson likelihood.

    Parameters
    ----------
    latent_dim : int
        Size of the latent space (8 suits a few thousand maps; the paper used 128 for 67,000).
    in_channels : int
        Number of count channels (1 for a single neighbour-count map).
    base_channels : int
        Filters of the first convolution; each of the four stride-2 stages doubles them
        (capped at 8x).

    Notes
    -----
    In training mode ``loss`` samples z with the reparameterisation trick; in evaluation
    mode it uses the posterior mean, so validation losses are deterministic.
    """

    def __init__(self, latent_dim: int = 8, in_channels: int = 1, base_channels: int = 16):
        super().__init__()
        if latent_dim < 1 or in_channels < 1 or base_channels < 1:
            raise ParameterError(
                f"latent_dim, in_channels and base_channels must be positive, got "
                f"{latent_dim}, {in_channels}, {base_channels}"
            )
        self.latent_dim = latent_dim
        self.in_channels = in_channels
        widths = [base_channels * min(2**i, 8) for i in range(4)]  # 64 -> 32 -> 16 -> 8 -> 4 px
        encoder: list[nn.Module] = []
        previous = in_channels
        for width in widths:
            encoder += [nn.Conv2d(previous, width, 4, stride=2, padding=1), nn.LeakyReLU(0.1)]
            previous = width
        self.encoder = nn.Sequential(*encoder, nn.Flatten())
        self._bottleneck = (widths[-1], MAP_SIZE // 16, MAP_SIZE // 16)
        n_features = widths[-1] * (MAP_SIZE // 16) ** 2
        self.to_posterior = nn.Linear(n_features, 2 * latent_dim)
        self.from_latent = nn.Linear(latent_dim, n_features)
        decoder: list[nn.Module] = []
        for width_in, width_out in zip(widths[::-1], widths[-2::-1]):
            decoder += [nn.LeakyReLU(0.1), nn.ConvTranspose2d(width_in, width_out, 4, stride=2, padding=1)]
        decoder += [nn.LeakyReLU(0.1), nn.ConvTranspose2d(widths[0], in_channels, 4, stride=2, padding=1)]
        self.decoder = nn.Sequential(*decoder)

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1:] != (self.in_channels, MAP_SIZE, MAP_SIZE):
            raise ParameterError(
                f"EnvironmentVAE expects count maps of shape (n, {self.in_channels}, {MAP_SIZE}, "
                f"{MAP_SIZE}), got {tuple(x.shape)}"
            )

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of q(z | x), each (n, latent_dim); ``x`` holds raw counts."""
        self._check(x)
        h = self.encoder(torch.log1p(torch.nan_to_num(x, nan=0.0).clamp_min(0.0)))
        mu, logvar = self.to_posterior(h).chunk(2, dim=1)
        return mu, logvar

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior mean of the latent vector, (n, latent_dim)."""
        return self.posterior(x)[0]

    def decode_log_rate(self, z: torch.Tensor) -> torch.Tensor:
        """Natural log of the Poisson rate (counts per pixel), (n, in_channels, 64, 64)."""
        h = self.from_latent(z).view(-1, *self._bottleneck)
        return self.decoder(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Expected counts per pixel (Poisson rates), (n, in_channels, 64, 64)."""
        return torch.exp(self.decode_log_rate(z))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Expected counts of the maps decoded from their posterior means."""
        return self.decode(self.encode(x))

    def encode_and_reconstruct(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior means and the expected counts decoded from them, from one encoder pass."""
        z = self.encode(x)
        return z, self.decode(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reconstruct(x)

    def loss(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Negative ELBO per map: Poisson NLL summed over pixels plus KL summed over latents.

        Parameters
        ----------
        x : torch.Tensor, shape (n, in_channels, 64, 64)
            Raw neighbour counts.

        Returns
        -------
        total, poisson_nll, kl : torch.Tensor
            Scalars, each the mean over the batch of a per-map sum (nats). The Poisson term
            is rate - counts * log(rate), without the log(counts!) constant.
        """
        mu, logvar = self.posterior(x)
        if self.training:
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        else:
            z = mu
        log_rate = self.decode_log_rate(z)
        counts = torch.nan_to_num(x, nan=0.0).clamp_min(0.0)
        n = x.shape[0]
        poisson_nll = F.poisson_nll_loss(log_rate, counts, log_input=True, full=False, reduction="sum") / n
        kl = kl_per_dimension(mu, logvar).sum() / n
        return poisson_nll + kl, poisson_nll, kl

    @torch.no_grad()
    def latent_informativeness(
        self, maps: torch.Tensor | Iterable[torch.Tensor], batch_size: int = 256
    ) -> torch.Tensor:
        """Mean KL divergence of each latent dimension from the prior over a set of maps (nats).

        Dimensions the encoder ignores sit at the prior (KL = 0); the larger the mean KL,
        the more information the dimension carries.

        Parameters
        ----------
        maps : torch.Tensor (n, in_channels, 64, 64) or an iterable of such batches
            Raw neighbour counts (a DataLoader yielding tensors or (tensor, ...) tuples works).
        batch_size : int
            Batch size used when ``maps`` is a single tensor.

        Returns
        -------
        torch.Tensor, shape (latent_dim,)
        """
        batches = maps.split(batch_size) if isinstance(maps, torch.Tensor) else maps
        device = next(self.parameters()).device
        total = torch.zeros(self.latent_dim, dtype=torch.float64)
        n = 0
        for batch in batches:
            if isinstance(batch, (tuple, list)):
                batch = batch[0]
            mu, logvar = self.posterior(batch.to(device=device, dtype=torch.float32))
            total += kl_per_dimension(mu, logvar).sum(dim=0).double().cpu()
            n += batch.shape[0]
        if n == 0:
            raise ParameterError("latent_informativeness needs at least one map")
        return (total / n).float()

    def latent_ranking(self, maps: torch.Tensor | Iterable[torch.Tensor], batch_size: int = 256) -> list[int]:
        """Latent dimensions ordered from most to least informative (see ``latent_informativeness``)."""
        info = self.latent_informativeness(maps, batch_size=batch_size)
        return torch.argsort(info, descending=True, stable=True).tolist()


def kl_per_dimension(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) for each map and latent dimension (nats), shape of ``mu``."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


register_architecture("environment_vae")(EnvironmentVAE)
