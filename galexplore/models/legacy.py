"""Opt-in import of legacy pickles (the published Dawson et al. 2020 CAE and PCA).

Unpickling can execute arbitrary code, so nothing here runs unless the caller passes
``trust_pickle=True``. Even then the unpickler is restricted: it resolves only the
names listed in `_ALLOWED_GLOBALS` (tensor and array reconstruction helpers,
``OrderedDict``) and maps the classes of the pickled objects (``Networks.Autoencoder``,
torch layers, the scikit-learn 0.20 ``PCA``) to inert stand-ins that only keep the
pickled attributes. Any other global in the file aborts the import.

This is the only module of galexplore that calls ``torch.load`` with
``weights_only=False`` (the PyTorch 1.1 file is in the legacy, non-zip format, which
``weights_only=True`` cannot read).
"""

from __future__ import annotations

import collections
import os
import pickle
import types
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch._utils
from torch.serialization import SourceChangeWarning

from galexplore.errors import ModelError

try:  # NumPy >= 2
    from numpy._core.multiarray import _reconstruct as _numpy_reconstruct
except ImportError:  # NumPy 1.x
    from numpy.core.multiarray import _reconstruct as _numpy_reconstruct

# First pickle of a legacy (PyTorch < 1.6) torch.save file.
_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class PickledObjectState:
    """Inert stand-in for a pickled object: keeps the pickled attributes, runs no code.

    Attributes
    ----------
    pickled_class : str
        ``module.name`` of the class the pickle referred to.
    state : dict
        The attributes the pickle restored (``__dict__`` of the original object).
    """

    pickled_class = "?"

    def __setstate__(self, state: Any) -> None:
        self.state = state if isinstance(state, dict) else {"state": state}

    def __repr__(self) -> str:
        return f"<pickled {self.pickled_class}: {sorted(getattr(self, 'state', {}))}>"


def _stand_in(module: str, name: str) -> type[PickledObjectState]:
    return type(name, (PickledObjectState,), {"pickled_class": f"{module}.{name}"})


def _no_backend(*args: Any) -> None:
    """Replaces ``torch.nn.backends.thnn._get_thnn_function_backend`` (removed from torch)."""
    return None


_STAND_IN_CLASSES = [
    ("Networks", "Autoencoder"),  # the original CAE class of SpaceMeerkat/CAE
    ("torch.nn.modules.conv", "Conv2d"),
    ("torch.nn.modules.conv", "ConvTranspose2d"),
    ("torch.nn.modules.linear", "Linear"),
    ("torch.nn.modules.pooling", "MaxPool2d"),
    ("torch.nn.modules.pooling", "MaxUnpool2d"),
    ("torch.nn.modules.activation", "ReLU"),
    ("sklearn.decomposition.pca", "PCA"),  # scikit-learn 0.20 module path
    ("sklearn.decomposition._pca", "PCA"),  # scikit-learn >= 0.22 module path
]

_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch.nn.backends.thnn", "_get_thnn_function_backend"): _no_backend,
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    **{key: _stand_in(*key) for key in _STAND_IN_CLASSES},
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only `_ALLOWED_GLOBALS`; anything else raises."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"the pickle refers to {module}.{name}, which the legacy import does not allow"
            ) from None


def _restricted_load(file: Any, **kwargs: Any) -> Any:
    return RestrictedUnpickler(file, **kwargs).load()


# What torch.load needs of a pickle module: `Unpickler` (subclassed by torch) and `load`.
_restricted_pickle_module = types.ModuleType("galexplore_restricted_pickle")
_restricted_pickle_module.Unpickler = RestrictedUnpickler
_restricted_pickle_module.load = _restricted_load


def untrusted_pickle_error(path: Path) -> ModelError:
    return ModelError(
        f"refusing to unpickle {path}: unpickling a file can execute arbitrary code on this machine. "
        "Pass trust_pickle=True (on the command line: --trust-pickle) only for files you trust, e.g. "
        "the published Dawson et al. 2020 files after checking their SHA-256 against the zoo entry."
    )


def _is_torch_file(path: Path) -> bool:
    if zipfile.is_zipfile(path):
        return True
    with open(path, "rb") as handle:
        try:
            first = _restricted_load(handle)
        except (pickle.UnpicklingError, EOFError, ValueError):
            return False
    return first == _TORCH_LEGACY_MAGIC


def load_legacy_pickle(path: str | os.PathLike, trust_pickle: bool) -> Any:
    """Unpickle a PyTorch (legacy or zip format) or plain pickle file with a restricted unpickler.

    Parameters
    ----------
    path : path-like
        A ``torch.save`` file (e.g. ``CAE_Epoch_300.pt``) or a plain pickle
        (e.g. ``PCA_routine.pkl``).
    trust_pickle : bool
        Must be True: the caller vouches for the file.

    Returns
    -------
    object
        The unpickled object, with pickled classes replaced by `PickledObjectState`
        stand-ins; tensors are on the CPU.

    Raises
    ------
    ModelError
        Without ``trust_pickle``, if the file is missing, or if it refers to anything
        outside the allowed names.
    """
    path = Path(path)
    if not trust_pickle:
        raise untrusted_pickle_error(path)
    if not path.is_file():
        raise ModelError(f"{path} does not exist; give the path of the pickle file to import")
    try:
        if _is_torch_file(path):
            with warnings.catch_warnings():
                # torch compares the pickled class source with the stand-in's and warns.
                warnings.simplefilter("ignore", SourceChangeWarning)
                warnings.filterwarnings("ignore", message="Couldn't retrieve source code", category=UserWarning)
                return torch.load(path, map_location="cpu", weights_only=False,
                                  pickle_module=_restricted_pickle_module)
        with open(path, "rb") as handle:
            return _restricted_load(handle)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, TypeError) as err:
        raise ModelError(f"cannot import {path}: {err}. Only the published Dawson et al. 2020 files "
                         "(and pickles of the same classes) can be imported.") from err


def state_dict_from_pickled_module(module: PickledObjectState) -> dict[str, torch.Tensor]:
    """The ``state_dict`` (parameters and buffers, dotted names) of a pickled ``nn.Module``.

    Parameters
    ----------
    module : PickledObjectState
        What `load_legacy_pickle` returned for a whole pickled module.

    Returns
    -------
    dict of str to Tensor
        Detached CPU tensors, e.g. ``{"conv1.weight": ..., "conv1.bias": ...}``.
    """
    if not isinstance(module, PickledObjectState) or "_modules" not in module.state:
        raise ModelError(f"expected a pickled torch module, got {module!r}")
    state: dict[str, torch.Tensor] = {}

    def collect(node: PickledObjectState, prefix: str) -> None:
        for group in ("_parameters", "_buffers"):
            for name, tensor in node.state.get(group, {}).items():
                if tensor is not None:
                    state[prefix + name] = tensor.detach().clone()
        for name, child in node.state.get("_modules", {}).items():
            if child is not None:
                collect(child, f"{prefix}{name}.")

    collect(module, "")
    return state


def pca_from_pickle(pca: PickledObjectState) -> dict[str, np.ndarray]:
    """``mean_`` and ``components_`` of a pickled scikit-learn PCA.

    Returns
    -------
    dict
        ``{"mean": (n_features,), "components": (n_components, n_features)}`` float64 arrays.
    """
    if not isinstance(pca, PickledObjectState) or not {"mean_", "components_"} <= set(pca.state):
        raise ModelError(f"expected a fitted scikit-learn PCA, got {pca!r}")
    return {
        "mean": np.ascontiguousarray(pca.state["mean_"], dtype=np.float64),
        "components": np.ascontiguousarray(pca.state["components_"], dtype=np.float64),
    }
