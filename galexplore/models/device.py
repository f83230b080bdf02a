"""Choice of the torch device: ``"auto"`` picks CUDA when present, else the CPU."""

from __future__ import annotations

import torch

from galexplore.errors import ModelError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn a device request into a ``torch.device``.

    Parameters
    ----------
    device : str or torch.device
        ``"auto"`` (CUDA if available, else CPU), or any torch device string
        (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``).

    Returns
    -------
    torch.device

    Raises
    ------
    ModelError
        If the string is not a device name, or CUDA is requested but not available.
    """
    if isinstance(device, torch.device):
        resolved = device
    elif device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            resolved = torch.device(device)
        except RuntimeError as err:
            raise ModelError(
                f"unknown device {device!r}: use 'auto', 'cpu' or 'cuda' (optionally 'cuda:N')"
            ) from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} requested but CUDA is not available here: use 'auto' or 'cpu'")
    return resolved
