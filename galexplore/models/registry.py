"""Named model architectures: a checkpoint's card names one, and `build_model` rebuilds it.

An architecture is registered with a builder, a callable ``builder(**hyperparameters)``
returning a fresh, untrained ``torch.nn.Module``::

    @register_architecture("dawson2020_cae")
    class DawsonCAE(nn.Module): ...

    model = build_model("dawson2020_cae", in_channels=1, latent_dim=3)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from torch import nn

from galexplore.errors import ModelError

Builder = Callable[..., nn.Module]

_ARCHITECTURES: dict[str, Builder] = {}

# Modules of galexplore that register architectures when imported. They are imported on
# the first look-up, so that `build_model` works without the caller importing them first.
_BUILTIN_MODULES = (
    "galexplore.models.cae",
    "galexplore.models.vae",
    "galexplore.models.regressor",
)


def register_architecture(name: str) -> Callable[[Builder], Builder]:
    """Decorator registering a model class or builder function under ``name``.

    Parameters
    ----------
    name : str
        The architecture name stored in model cards, e.g. ``"dawson2020_cae"``.

    Returns
    -------
    callable
        A decorator that registers its argument and returns it unchanged.

    Raises
    ------
    ValueError
        If another builder is already registered under ``name`` (a programming error).
    """

    def decorator(builder: Builder) -> Builder:
        known = _ARCHITECTURES.get(name)
        if known is not None and _qualified_name(known) != _qualified_name(builder):
            raise ValueError(
                f"architecture {name!r} is already registered by {_qualified_name(known)}; "
                f"pick another name for {_qualified_name(builder)}"
            )
        _ARCHITECTURES[name] = builder
        return builder

    return decorator


def list_architectures() -> list[str]:
    """Names of all registered architectures, sorted."""
    _import_builtin_modules()
    return sorted(_ARCHITECTURES)


def build_model(architecture: str, **hyperparameters: Any) -> nn.Module:
    """Build an untrained model of a registered architecture.

    Parameters
    ----------
    architecture : str
        A registered name (see `list_architectures`).
    **hyperparameters
        Keyword arguments of the architecture's builder (e.g. ``in_channels``, ``latent_dim``).

    Returns
    -------
    torch.nn.Module
        A freshly initialised model.

    Raises
    ------
    ModelError
        If the name is unknown, or the hyperparameters do not fit the builder.
    """
    _import_builtin_modules()
    try:
        builder = _ARCHITECTURES[architecture]
    except KeyError:
        known = ", ".join(sorted(_ARCHITECTURES)) or "none"
        raise ModelError(
            f"unknown model architecture {architecture!r}; known architectures: {known}. "
            "Check the 'architecture' field of the model card, or upgrade galexplore if the "
            "checkpoint was written by a newer version."
        ) from None
    try:
        return builder(**hyperparameters)
    except TypeError as err:
        raise ModelError(
            f"architecture {architecture!r} cannot be built with hyperparameters "
            f"{hyperparameters!r}: {err}. Check the 'hyperparameters' field of the model card."
        ) from err


def _qualified_name(obj: object) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def _import_builtin_modules() -> None:
    for module_name in _BUILTIN_MODULES:
        importlib.import_module(module_name)
