"""The convolutional autoencoder of Dawson et al. (2020, MNRAS 491, 2506), Table A1.

Encoder: conv 3x3 (8) - ReLU - conv 3x3 (8) - ReLU - max-pool 2 - conv 3x3 (16) - ReLU -
conv 3x3 (16) - ReLU - max-pool 2 - flatten (16 x 16 x 16) - linear to the latent.
Decoder (mirrored): linear - max-unpool 2 - ReLU - transposed conv (16 -> 16) - ReLU -
transposed conv (16 -> 8) - max-unpool 2 - ReLU - transposed conv (8 -> 8) - ReLU -
transposed conv (8 -> channels). All convolutions: 3x3, padding 1, stride 1.

Three details follow the published code and weights (SpaceMeerkat/CAE) where Table A1
is ambiguous: the max-pools have stride 2 (the table prints 1, but the published linear
layer takes 16 x 16 x 16 = 4096 inputs, which needs stride 2 twice from 64 x 64); the
table's "units" of the transposed convolutions are their input channels (16, 16, 8, 8;
outputs 16, 8, 8, 1); and the last transposed convolution has no ReLU, so outputs can be
negative like the [-1, 1] inputs. The module names (``conv1`` ... ``trans4``, ``lc1``,
``lc2``) are those of the published model, so its state_dict loads without renaming.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from galexplore.errors import ModelError, ParameterError
from galexplore.models.registry import register_architecture

INPUT_SIZE = 64
_BOTTLENECK = (16, INPUT_SIZE // 4, INPUT_SIZE // 4)  # channels, rows, cols after the 2nd pool


@register_architecture("dawson2020_cae")
class DawsonCAE(nn.Module):
    """Dawson et al. 2020 CAE; its decoder needs the encoder's max-pool indices.

    Parameters
    ----------
    in_channels : int
        Input (and reconstructed) channels, e.g. 1 for mom1, 2 for mom0 + mom1.
    latent_dim : int
        Size of the latent vector (3 in the paper).

    Notes
    -----
    Inputs are ``(n, in_channels, 64, 64)`` maps scaled by the model's recipe (e.g.
    ``dawson2020``: velocities in [-1, 1], blank = 0). Because max-unpooling places values
    at the positions the encoder's max-pools chose, this model can reconstruct an input
    (`reconstruct`) but cannot decode an arbitrary latent point; see `IndexFreeCAE`.
    """

    def __init__(self, in_channels: int = 1, latent_dim: int = 3) -> None:
        super().__init__()
        if in_channels < 1 or latent_dim < 1:
            raise ParameterError(f"in_channels ({in_channels}) and latent_dim ({latent_dim}) must be >= 1")
        self.in_channels = in_channels
        self.latent_dim = latent_dim
        flat = _BOTTLENECK[0] * _BOTTLENECK[1] * _BOTTLENECK[2]
        self.conv1 = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 16, 3, padding=1)
        self.conv4 = nn.Conv2d(16, 16, 3, padding=1)
        self.lc1 = nn.Linear(flat, latent_dim)
        self.lc2 = nn.Linear(latent_dim, flat)
        self.trans1 = nn.ConvTranspose2d(16, 16, 3, padding=1)
        self.trans2 = nn.ConvTranspose2d(16, 8, 3, padding=1)
        self.trans3 = nn.ConvTranspose2d(8, 8, 3, padding=1)
        self.trans4 = nn.ConvTranspose2d(8, in_channels, 3, padding=1)
        self.pool = nn.MaxPool2d(2, return_indices=True)
        self.unpool = nn.MaxUnpool2d(2)

    def _check_input(self, x: torch.Tensor) -> None:
        expected = (self.in_channels, INPUT_SIZE, INPUT_SIZE)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ModelError(
                f"{type(self).__name__} takes maps of shape (n, {expected[0]}, {expected[1]}, {expected[2]}), "
                f"got {tuple(x.shape)}: preprocess the maps with the model's recipe first"
            )

    def _encode_with_indices(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self._check_input(x)
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x, indices1 = self.pool(x)
        x = F.relu(self.conv3(x))
        x = F.relu(self.conv4(x))
        x, indices2 = self.pool(x)
        return self.lc1(x.flatten(1)), indices1, indices2

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent vectors ``(n, latent_dim)`` of preprocessed maps ``(n, C, 64, 64)``."""
        return self._encode_with_indices(x)[0]

    def _decode_with_indices(self, z: torch.Tensor, indices1: torch.Tensor, indices2: torch.Tensor) -> torch.Tensor:
        x = self.lc2(z).view(-1, *_BOTTLENECK)
        x = F.relu(self.unpool(x, indices2, output_size=(INPUT_SIZE // 2, INPUT_SIZE // 2)))
        x = F.relu(self.trans1(x))
        x = self.trans2(x)
        x = F.relu(self.unpool(x, indices1, output_size=(INPUT_SIZE, INPUT_SIZE)))
        x = F.relu(self.trans3(x))
        return self.trans4(x)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``(n, C, 64, 64)`` of maps, unpooling at the encoder's max positions."""
        z, indices1, indices2 = self._encode_with_indices(x)
        return self._decode_with_indices(z, indices1, indices2)

    def encode_and_reconstruct(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents and reconstructions of maps from one encoder pass: (``encode(x)``, ``reconstruct(x)``)."""
        z, indices1, indices2 = self._encode_with_indices(x)
        return z, self._decode_with_indices(z, indices1, indices2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same as `reconstruct` (the training objective is the reconstruction MSE)."""
        return self.reconstruct(x)

    def predict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Autoencoders predict no physical quantities: an empty dict."""
        return {}


@register_architecture("cae_free")
class IndexFreeCAE(DawsonCAE):
    """The Dawson et al. 2020 CAE with a decoder that needs no pooling indices.

    The encoder and all layer shapes equal `DawsonCAE`'s; each max-unpool of the decoder is
    replaced by a nearest-neighbour 2x upsampling, so `decode` maps any latent point to a
    map (latent traversals). Trained separately: the published weights assume unpooling.

    Parameters
    ----------
    in_channels : int
        Input (and decoded) channels.
    latent_dim : int
        Size of the latent vector.
    """

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Maps ``(n, C, 64, 64)`` decoded from latent points ``z`` of shape ``(n, latent_dim)``."""
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ModelError(f"decode takes latent points of shape (n, {self.latent_dim}), got {tuple(z.shape)}")
        x = self.lc2(z).view(-1, *_BOTTLENECK)
        x = F.relu(F.interpolate(x, scale_factor=2, mode="nearest"))
        x = F.relu(self.trans1(x))
        x = self.trans2(x)
        x = F.relu(F.interpolate(x, scale_factor=2, mode="nearest"))
        x = F.relu(self.trans3(x))
        return self.trans4(x)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """``decode(encode(x))``."""
        return self.decode(self.encode(x))

    def encode_and_reconstruct(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents and reconstructions of maps from one encoder pass: (``z``, ``decode(z)``)."""
        z = self.encode(x)
        return z, self.decode(z)
