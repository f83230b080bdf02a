"""CNN regressor from multi-channel maps to physical properties (de los Rios; Chu; Quigley).

Maps (e.g. mom0, mom1, mom2 through the `physical` recipe) are divided by a fixed scale per
channel, pass a conv stack and a dense layer whose activations are the latent space the app
shows, and a linear layer predicts standardised targets. The per-channel input scales and
the per-target means and standard deviations are buffers, so they travel in the weights
file and ``predict`` returns physical units.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from galexplore.errors import ParameterError
from galexplore.models.registry import register_architecture

MAP_SIZE = 64


class CNNRegressor(nn.Module):
    """Convolutional regressor with a dense latent layer and one linear output per target.

    Parameters
    ----------
    in_channels : int
        Number of input maps per galaxy.
    outputs : sequence of str
        Target names (catalogue columns, e.g. ``log_mstar``, ``log_mdm_00``..``log_mdm_19``,
        ``distance_mpc``).
    output_units : sequence of str or dict, optional
        Unit of each output (``dex`` for log masses, ``Mpc`` ...); default "".
    latent_dim : int
        Width of the penultimate dense layer, i.e. the latent space returned by ``encode``.
    base_channels : int
        Filters of the first of four conv blocks (doubling, capped at 8x), each followed by
        batch normalisation, ReLU and 2 x 2 max pooling.
    dropout : float
        Dropout fraction before the dense layers (de los Rios et al. used 0.25).
    """

    def __init__(
        self,
        in_channels: int = 3,
        outputs: Sequence[str] = ("log_mstar",),
        output_units: Sequence[str] | dict[str, str] | None = None,
        latent_dim: int = 32,
        base_channels: int = 16,
        dropout: float = 0.25,
    ):
        super().__init__()
        outputs = list(outputs)
        if not outputs:
            raise ParameterError("a CNNRegressor needs at least one output; name a target column")
        if len(set(outputs)) != len(outputs):
            raise ParameterError(f"output names must be unique, got {outputs}")
        if in_channels < 1 or latent_dim < 1 or base_channels < 1 or not 0.0 <= dropout < 1.0:
            raise ParameterError(
                f"need in_channels, latent_dim, base_channels >= 1 and 0 <= dropout < 1, got "
                f"{in_channels}, {latent_dim}, {base_channels}, {dropout}"
            )
        if output_units is None:
            units = {name: "" for name in outputs}
        elif isinstance(output_units, dict):
            units = {name: str(output_units.get(name, "")) for name in outputs}
        else:
            if len(output_units) != len(outputs):
                raise ParameterError(f"got {len(output_units)} output units for {len(outputs)} outputs")
            units = dict(zip(outputs, map(str, output_units)))
        self.in_channels = in_channels
        self.outputs = outputs
        self.output_units = units
        self.latent_dim = latent_dim

        widths = [base_channels * min(2**i, 8) for i in range(4)]  # 64 -> 32 -> 16 -> 8 -> 4 px
        layers: list[nn.Module] = []
        previous = in_channels
        for width in widths:
            layers += [
                nn.Conv2d(previous, width, 3, padding=1),
                nn.BatchNorm2d(width),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            previous = width
        self.features = nn.Sequential(*layers, nn.Flatten())
        n_features = widths[-1] * (MAP_SIZE // 16) ** 2
        self.to_latent = nn.Sequential(nn.Dropout(dropout), nn.Linear(n_features, latent_dim), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(latent_dim, len(outputs)))
        self.register_buffer("input_scale", torch.ones(in_channels))
        self.register_buffer("target_mean", torch.zeros(len(outputs)))
        self.register_buffer("target_std", torch.ones(len(outputs)))

    def set_input_scale(self, scale: Sequence[float] | torch.Tensor) -> None:
        """Set the divisor of each input channel (physical units per unit of network input)."""
        scale = torch.as_tensor(scale, dtype=torch.float32).reshape(-1)
        if scale.numel() != self.in_channels or not bool(torch.isfinite(scale).all() and (scale > 0).all()):
            raise ParameterError(f"need {self.in_channels} positive finite channel scales, got {scale.tolist()}")
        self.input_scale.copy_(scale)

    def set_target_scaling(self, mean: Sequence[float] | torch.Tensor, std: Sequence[float] | torch.Tensor) -> None:
        """Set the physical mean and standard deviation of each target (outputs are standardised)."""
        mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        std = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
        n = len(self.outputs)
        if mean.numel() != n or std.numel() != n:
            raise ParameterError(f"need {n} target means and standard deviations")
        if not bool(torch.isfinite(mean).all() and torch.isfinite(std).all() and (std > 0).all()):
            raise ParameterError("target means must be finite and standard deviations positive")
        self.target_mean.copy_(mean)
        self.target_std.copy_(std)

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1:] != (self.in_channels, MAP_SIZE, MAP_SIZE):
            raise ParameterError(
                f"CNNRegressor expects maps of shape (n, {self.in_channels}, {MAP_SIZE}, {MAP_SIZE}), "
                f"got {tuple(x.shape)}"
            )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Activations of the penultimate dense layer, (n, latent_dim); blank (NaN) pixels count as 0."""
        self._check(x)
        x = torch.nan_to_num(x / self.input_scale.view(1, -1, 1, 1), nan=0.0, posinf=0.0, neginf=0.0)
        return self.to_latent(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Standardised predictions, (n, n_outputs): (value - target_mean) / target_std."""
        return self.head(self.encode(x))

    def destandardise(self, standardised: torch.Tensor) -> torch.Tensor:
        """Physical values from standardised outputs, (n, n_outputs)."""
        return standardised * self.target_std + self.target_mean

    def standardise(self, values: torch.Tensor) -> torch.Tensor:
        """Standardised targets from physical values, (n, n_outputs)."""
        return (values - self.target_mean) / self.target_std

    def predict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Predictions in physical units, one (n,) tensor per output name."""
        return self.predict_from_latent(self.encode(x))

    def predict_from_latent(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """`predict` from latents already computed by `encode` (no second pass through the convolutions)."""
        values = self.destandardise(self.head(z))
        return {name: values[:, i] for i, name in enumerate(self.outputs)}


register_architecture("cnn_regressor")(CNNRegressor)
