"""Opt-in import of legacy pickles (the published Dawson et al. 2020 CAE and PCA).

Unpickling can execute arbitrary code, so nothing here runs unless the caller passes
``trust_pickle=True``. Even then the unpickler is restricted, opcode by opcode (it is the
pure-Python `pickle._Unpickler` with its object-building opcodes replaced):

* GLOBAL resolves only the names of `_ALLOWED_GLOBALS`: tensor and array reconstruction
  helpers, ``OrderedDict``, and the classes of the pickled objects (``Networks.Autoencoder``,
  torch layers, the scikit-learn 0.20 ``PCA``) mapped to inert stand-ins that only keep the
  pickled attributes. Any other global aborts the import.
* REDUCE calls an allowed callable only with arguments of the types and ranges the
  published files use (`_checked_call`): no object dtype, no array built on a raw buffer,
  tensor views inside their storage, no backward hooks.
* BUILD (``__setstate__``) applies only to stand-in instances, to numeric arrays and dtypes
  with a consistent state, and to plain attributes of an ``OrderedDict``: never to a
  function or a class, so nothing process-wide (``__defaults__``, a class's name, torch's
  ``dump_patches``) can be changed by the file.
* NEWOBJ creates only stand-ins and ``OrderedDict``; OBJ and INST are refused.
* Persistent ids (torch's storages and modules) are checked before torch sees them: a
  storage has a bounded size, and a pickled module's source is never compared with ours
  (torch would write a ``.patch`` file named by the pickle when it differs).

This is the only module of galexplore that calls ``torch.load`` with
``weights_only=False`` (the PyTorch 1.1 file is in the legacy, non-zip format, which
``weights_only=True`` cannot read).
"""

from __future__ import annotations

import collections
import os
import pickle
import re
import struct
import types
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch._utils

from galexplore.errors import ModelError

try:  # NumPy >= 2
    from numpy._core.multiarray import _reconstruct as _numpy_reconstruct
except ImportError:  # NumPy 1.x
    from numpy.core.multiarray import _reconstruct as _numpy_reconstruct

# First pickle of a legacy (PyTorch < 1.6) torch.save file.
_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
#: Largest tensor storage a legacy file may declare (elements).
MAX_STORAGE_ELEMENTS = 2**28
#: Largest array a pickled array may hold (bytes) and its most dimensions.
MAX_ARRAY_BYTES = 2**30
MAX_ARRAY_DIMS = 32
#: dtypes a pickled array may have: booleans, integers, floats, complex numbers.
_NUMERIC_TYPESTR = re.compile(r"[<>|=]?(b1|[iu][1248]|f[248]|c(8|16))")
#: What a malformed or hostile pickle raises while being read.
_PICKLE_ERRORS = (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, KeyError,
                  IndexError, OverflowError, struct.error, UnicodeDecodeError, RuntimeError,
                  RecursionError, MemoryError)


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


def _refuse(what: str) -> pickle.UnpicklingError:
    return pickle.UnpicklingError(f"{what}, which the legacy import does not allow")


def _is_index(value: Any, maximum: int = MAX_STORAGE_ELEMENTS) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= maximum


def _is_shape(value: Any) -> bool:
    return isinstance(value, tuple) and len(value) <= MAX_ARRAY_DIMS and all(_is_index(n) for n in value)


def _no_hooks(hooks: Any) -> bool:
    return isinstance(hooks, collections.OrderedDict) and not hooks


def _check_dtype(dtype: Any) -> np.dtype:
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biufc" or dtype.hasobject \
            or dtype.fields is not None or dtype.subdtype is not None:
        raise _refuse(f"the pickle builds an array of dtype {dtype!r} (only numeric dtypes are allowed)")
    return dtype


def _tensor_fits(storage: Any, offset: Any, size: Any, stride: Any) -> bool:
    """Whether a tensor view of ``size`` and ``stride`` from ``offset`` lies inside ``storage``."""
    if not (isinstance(storage, torch.storage.TypedStorage) and _is_index(offset) and _is_shape(size)
            and _is_shape(stride) and len(size) == len(stride)):
        return False
    elements = storage._untyped_storage.nbytes() // torch._utils._element_size(storage.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    return 0 in size or last < elements


def _checked_call(func: Any, args: Any) -> Any:
    """REDUCE: call an allowed callable with arguments it is safe to give it."""
    if not isinstance(args, tuple):
        raise _refuse(f"the pickle calls {func!r} with arguments {type(args).__name__}")
    if func is collections.OrderedDict:
        if args == () or (len(args) == 1 and isinstance(args[0], list)
                          and all(isinstance(item, tuple) and len(item) == 2 for item in args[0])):
            return collections.OrderedDict(*args)
    elif func is torch._utils._rebuild_tensor_v2:
        if len(args) in (6, 7) and _tensor_fits(*args[:4]) and isinstance(args[4], bool) \
                and _no_hooks(args[5]) and args[6:] in ((), (None,)):
            return func(*args[:6])
    elif func is torch._utils._rebuild_parameter:
        if len(args) == 3 and isinstance(args[0], torch.Tensor) and isinstance(args[1], bool) and _no_hooks(args[2]):
            return func(*args)
    elif func is _no_backend:
        if args == ():
            return None
    elif func is _numpy_reconstruct:
        if len(args) == 3 and args[0] is np.ndarray and _is_shape(args[1]) and args[2] in (b"b", "b"):
            return func(*args)
    elif func is np.dtype:
        if len(args) == 3 and isinstance(args[0], str) and _NUMERIC_TYPESTR.fullmatch(args[0]) \
                and all(a in (0, 1) for a in args[1:]):
            return np.dtype(args[0], bool(args[1]), bool(args[2]))
    raise _refuse(f"the pickle calls {getattr(func, '__qualname__', func)!r} with arguments "
                  f"{_describe(args)}")


def _describe(value: Any) -> str:
    text = repr(value) if not isinstance(value, tuple) else f"({', '.join(type(v).__name__ for v in value)})"
    return text[:200]


def _checked_build(inst: Any, state: Any) -> None:
    """BUILD: set the state of a stand-in, a numeric array or dtype, or an OrderedDict."""
    if isinstance(inst, PickledObjectState):
        inst.__setstate__(state)
    elif type(inst) is np.ndarray:
        if not (isinstance(state, tuple) and len(state) == 5 and state[0] == 1):
            raise _refuse(f"the pickle gives an array the state {_describe(state)}")
        _, shape, dtype, fortran, raw = state
        dtype = _check_dtype(dtype)
        if not (_is_shape(shape) and isinstance(fortran, bool) and isinstance(raw, bytes)
                and len(raw) == int(np.prod(shape, dtype=object)) * dtype.itemsize <= MAX_ARRAY_BYTES):
            raise _refuse(f"the pickle gives an array of shape {shape!r} a buffer that does not fit it")
        inst.__setstate__(state)
    elif isinstance(inst, np.dtype):
        if not (isinstance(state, tuple) and len(state) == 8 and state[0] == 3 and state[1] in "<>|="
                and state[2:5] == (None, None, None) and state[5:7] == (-1, -1) and state[7] == 0):
            raise _refuse(f"the pickle gives a dtype the state {_describe(state)}")
        inst.__setstate__(state)
        _check_dtype(inst)
    elif type(inst) is collections.OrderedDict and isinstance(state, dict) \
            and all(isinstance(k, str) and not k.startswith("__") for k in state):
        inst.__dict__.update(state)
    else:
        raise _refuse(f"the pickle sets the state of {getattr(inst, '__qualname__', type(inst).__name__)!r}")


class RestrictedUnpickler(pickle._Unpickler):
    """The pure-Python unpickler with the checks of the module docstring on every opcode that
    looks up, calls or changes an object."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except (KeyError, TypeError):
            raise _refuse(f"the pickle refers to {module}.{name}") from None

    def _reduce(self) -> None:
        args = self.stack.pop()
        self.stack[-1] = _checked_call(self.stack[-1], args)

    def _build(self) -> None:
        state = self.stack.pop()
        _checked_build(self.stack[-1], state)

    def _new_object(self, cls: Any, args: Any, kwargs: Any) -> Any:
        allowed = cls is collections.OrderedDict or (isinstance(cls, type) and issubclass(cls, PickledObjectState))
        if not allowed or args != () or kwargs:
            raise _refuse(f"the pickle creates {getattr(cls, '__qualname__', cls)!r} with {_describe(args)}")
        return cls.__new__(cls)

    def _newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._new_object(cls, args, {}))

    def _newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._new_object(cls, args, kwargs))

    def _refused_opcode(self) -> None:
        raise _refuse("the pickle uses the OBJ or INST opcode")

    def _binpersid(self) -> None:
        self.append(self._persistent(self.stack.pop()))

    def _persid(self) -> None:
        raise _refuse("the pickle uses a text persistent id")

    def _persistent(self, pid: Any) -> Any:
        """Check a torch persistent id before torch's ``persistent_load`` sees it."""
        kind = pid[0].decode("ascii", "replace") if isinstance(pid, tuple) and pid and isinstance(pid[0], bytes) \
            else (pid[0] if isinstance(pid, tuple) and pid else None)
        if kind == "module" and len(pid) == 4 and isinstance(pid[1], type) \
                and issubclass(pid[1], PickledObjectState):
            return pid[1]  # torch would compare the pickled source with ours and may write a .patch file
        if kind == "storage" and len(pid) in (5, 6) and isinstance(pid[3], (str, bytes)) and _is_index(pid[4]):
            view = pid[5] if len(pid) == 6 else None
            if view is None or (isinstance(view, tuple) and len(view) == 3 and _is_index(view[1])
                                and _is_index(view[2]) and view[1] + view[2] <= pid[4]):
                return self.persistent_load(pid)
        raise _refuse(f"the pickle holds the persistent id {_describe(pid)}")

    dispatch[pickle.REDUCE[0]] = _reduce
    dispatch[pickle.BUILD[0]] = _build
    dispatch[pickle.NEWOBJ[0]] = _newobj
    dispatch[pickle.NEWOBJ_EX[0]] = _newobj_ex
    dispatch[pickle.OBJ[0]] = _refused_opcode
    dispatch[pickle.INST[0]] = _refused_opcode
    dispatch[pickle.BINPERSID[0]] = _binpersid
    dispatch[pickle.PERSID[0]] = _persid


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
        except _PICKLE_ERRORS:
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
            return torch.load(path, map_location="cpu", weights_only=False,
                              pickle_module=_restricted_pickle_module)
        with open(path, "rb") as handle:
            return _restricted_load(handle)
    except _PICKLE_ERRORS as err:
        raise ModelError(f"cannot import {path}: {type(err).__name__}: {str(err)[:300]}. Only the published "
                         "Dawson et al. 2020 files (and pickles of the same classes) can be "
                         "imported.") from err


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
