"""Saliency maps: which input pixels a latent dimension or a prediction depends on.

- vanilla: the gradient dy/dx (de los Rios et al., eq. 4).
- smoothgrad: the gradient averaged over noisy copies of the input (Smilkov et al. 2017),
  as used by de los Rios et al. (their Fig. 7).
- integrated_gradients: (x - baseline) times the gradient averaged along the straight
  path from the baseline to x (Sundararajan et al. 2017); the attributions sum to
  y(x) - y(baseline).

The noisy copies and path points go through the network as batches. Gradients are taken
with ``torch.autograd.grad`` with respect to the input only, so model parameters'
``.grad`` stay untouched.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from galexplore.errors import ParameterError

METHODS = ("vanilla", "smoothgrad", "integrated_gradients")
ScalarFunction = Callable[[torch.Tensor], torch.Tensor]


def _input_gradient(fn: ScalarFunction, batch: torch.Tensor) -> torch.Tensor:
    """Gradient of each sample's scalar output with respect to that sample, (n, C, H, W)."""
    batch = batch.detach().requires_grad_(True)
    with torch.enable_grad():
        out = fn(batch)
        if out.shape != (batch.shape[0],):
            raise ParameterError(
                f"the saliency target must give one scalar per sample, shape ({batch.shape[0]},); "
                f"got {tuple(out.shape)}")
        (grad,) = torch.autograd.grad(out.sum(), batch)
    return grad


def _mean_gradient(fn: ScalarFunction, batch: torch.Tensor, batch_size: int) -> torch.Tensor:
    total = torch.zeros(batch.shape[1:], dtype=torch.float64)
    for start in range(0, batch.shape[0], batch_size):
        total += _input_gradient(fn, batch[start:start + batch_size]).double().sum(dim=0).cpu()
    return total / batch.shape[0]


def saliency(fn: ScalarFunction, x, method: str = "vanilla", n_samples: int = 25, noise_level: float = 0.15,
             steps: int = 32, baseline=None, seed: int = 0, batch_size: int = 64) -> np.ndarray:
    """Saliency map of one input.

    Parameters
    ----------
    fn : callable
        Maps a float32 batch (n, C, H, W) to one scalar per sample, shape (n,) (see
        `target_function`).
    x : array_like (C, H, W)
        The model input (after the model's recipe).
    method : {"vanilla", "smoothgrad", "integrated_gradients"}
    n_samples : int
        SmoothGrad: number of noisy copies.
    noise_level : float
        SmoothGrad: noise standard deviation as a fraction of each channel's value range
        (max - min), Smilkov et al.'s "noise level" applied per channel so that channels
        in different units get comparable noise.
    steps : int
        Integrated gradients: points of the midpoint rule along the path.
    baseline : array_like (C, H, W), optional
        Integrated gradients: the reference input; default zeros (blank pixels in the
        dawson2020 recipe).
    seed : int
        SmoothGrad noise seed.
    batch_size : int
        Largest batch sent through ``fn`` at once.

    Returns
    -------
    ndarray (C, H, W) float64: signed attributions (d output / d pixel for vanilla and
    SmoothGrad; output units for integrated gradients).
    """
    x_t = torch.as_tensor(np.asarray(x, dtype=np.float32))
    if x_t.ndim != 3:
        raise ParameterError(f"saliency needs one input of shape (C, H, W), got shape {tuple(x_t.shape)}")
    if batch_size < 1:
        raise ParameterError(f"batch_size must be at least 1, got {batch_size}")
    if method == "vanilla":
        grad = _mean_gradient(fn, x_t[None], batch_size)
    elif method == "smoothgrad":
        if n_samples < 1 or not noise_level >= 0:
            raise ParameterError(
                f"SmoothGrad needs n_samples >= 1 and noise_level >= 0, got {n_samples}, {noise_level}")
        generator = torch.Generator().manual_seed(seed)
        value_range = (x_t.amax(dim=(1, 2)) - x_t.amin(dim=(1, 2))).view(-1, 1, 1)
        noise = torch.randn((n_samples, *x_t.shape), generator=generator) * (noise_level * value_range)
        grad = _mean_gradient(fn, x_t[None] + noise, batch_size)
    elif method == "integrated_gradients":
        if steps < 1:
            raise ParameterError(f"integrated gradients need steps >= 1, got {steps}")
        base = torch.zeros_like(x_t) if baseline is None else torch.as_tensor(np.asarray(baseline, dtype=np.float32))
        if base.shape != x_t.shape:
            raise ParameterError(f"baseline shape {tuple(base.shape)} differs from the input's {tuple(x_t.shape)}")
        alphas = ((torch.arange(steps, dtype=torch.float32) + 0.5) / steps).view(-1, 1, 1, 1)
        path = base[None] + alphas * (x_t - base)[None]
        grad = _mean_gradient(fn, path, batch_size) * (x_t - base).double()
    else:
        raise ParameterError(f"unknown saliency method {method!r}; choose one of {', '.join(METHODS)}")
    return grad.numpy()


def target_function(model: torch.nn.Module, target: str) -> ScalarFunction:
    """A scalar function of a model for `saliency`.

    Parameters
    ----------
    model : a galexplore model (``encode``; ``predict`` for regressors). Put in eval mode.
    target : str
        ``"latent_<k>"`` for latent dimension k of ``encode``, or the name of one of
        ``predict``'s outputs (e.g. ``"log_mstar"``).

    Returns
    -------
    callable mapping a batch (n, C, H, W) on any device to a tensor (n,).
    """
    model.eval()
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")

    if target.startswith("latent_"):
        try:
            k = int(target.removeprefix("latent_"))
        except ValueError:
            raise ParameterError(f"latent target {target!r} must look like 'latent_0'") from None

        def latent(batch: torch.Tensor) -> torch.Tensor:
            z = model.encode(batch.to(device))
            if not 0 <= k < z.shape[1]:
                raise ParameterError(f"the model has {z.shape[1]} latent dimensions; {target!r} does not exist")
            return z[:, k]

        return latent

    if not hasattr(model, "predict"):
        raise ParameterError(f"the model has no outputs; use a target 'latent_<k>' instead of {target!r}")

    def output(batch: torch.Tensor) -> torch.Tensor:
        outputs = model.predict(batch.to(device))
        if target not in outputs:
            known = ["latent_<k>", *outputs]
            raise ParameterError(f"unknown saliency target {target!r}; choose one of {known}")
        return outputs[target].reshape(batch.shape[0])

    return output
