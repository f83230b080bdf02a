"""The opt-in legacy unpickler against hostile pickles (issue 11): a file the user agreed to
import must still not change anything process-wide, write files or crash the process.

The payloads are written opcode by opcode (`pickle` constants), as an attacker would.
"""

from __future__ import annotations

import pickle
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from galexplore.errors import ModelError
from galexplore.models.legacy import load_legacy_pickle

REPO = Path(__file__).resolve().parents[1]


def _str(text: str) -> bytes:
    data = text.encode()
    return pickle.BINUNICODE + struct.pack("<I", len(data)) + data


def _bytes(data: bytes) -> bytes:
    return pickle.BINBYTES + struct.pack("<I", len(data)) + data


def _global(module: str, name: str) -> bytes:
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def _dict(items: dict) -> bytes:
    out = pickle.EMPTY_DICT + pickle.MARK
    for key, value in items.items():
        out += _str(key) + value
    return out + pickle.SETITEMS


def _pickle(body: bytes) -> bytes:
    return pickle.PROTO + b"\x02" + body + pickle.STOP


def _legacy_torch_file(main_pickle: bytes) -> bytes:
    """A torch.save file in the legacy (PyTorch < 1.6) format around ``main_pickle``."""
    return (pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + pickle.dumps(1001, protocol=2)
            + pickle.dumps({"protocol_version": 1001, "little_endian": True,
                            "type_sizes": {"short": 2, "int": 4, "long": 4}}, protocol=2)
            + main_pickle + pickle.dumps([], protocol=2))


def patch_file_payload(target: Path) -> bytes:
    """BUILD on an allowed function: give it torch's ``dump_patches`` and an attacker-chosen
    ``__name__``, then name it as a pickled module's class. torch finds the function's real
    source, sees that it differs from the pickled "source" and writes ``<__name__>.patch``."""
    slots = _dict({"dump_patches": pickle.NEWTRUE, "__name__": _str(str(target))})
    func = _global("torch.nn.backends.thnn", "_get_thnn_function_backend") + pickle.NONE + slots \
        + pickle.TUPLE2 + pickle.BUILD
    module_id = pickle.MARK + _str("module") + func + _str("evil.py") + _str("attacker's text\n") + pickle.TUPLE
    return _legacy_torch_file(_pickle(module_id + pickle.BINPERSID))


def defaults_payload() -> bytes:
    """BUILD on an allowed function: replace ``_rebuild_tensor_v2.__defaults__`` process-wide."""
    slots = _dict({"__defaults__": _str("evil") + pickle.TUPLE1})
    return _pickle(_global("torch._utils", "_rebuild_tensor_v2") + pickle.NONE + slots + pickle.TUPLE2
                   + pickle.BUILD)


def object_array_payload() -> bytes:
    """An array whose forged state gives it dtype object over raw bytes: its "pointers" are
    0x4141414141414141, so touching it segfaults the process."""
    empty = (_global("numpy.core.multiarray", "_reconstruct") + _global("numpy", "ndarray")
             + pickle.BININT1 + b"\x00" + pickle.TUPLE1 + _bytes(b"b") + pickle.TUPLE3 + pickle.REDUCE)
    dtype = _global("numpy", "dtype") + _str("O8") + pickle.NEWFALSE + pickle.NEWTRUE + pickle.TUPLE3 + pickle.REDUCE
    state = (pickle.MARK + pickle.BININT1 + b"\x01" + pickle.BININT1 + b"\x04" + pickle.TUPLE1 + dtype
             + pickle.NEWFALSE + _bytes(b"A" * 32) + pickle.TUPLE)
    return _pickle(empty + state + pickle.BUILD)


def array_on_buffer_payload() -> bytes:
    """``numpy.ndarray((4,), "O", buffer)`` called directly by REDUCE: the same crash."""
    return _pickle(_global("numpy", "ndarray") + pickle.MARK + pickle.BININT1 + b"\x04" + pickle.TUPLE1
                   + _str("O") + _bytes(b"A" * 32) + pickle.TUPLE + pickle.REDUCE)


def test_build_on_an_allowed_function_cannot_make_torch_write_a_patch_file(tmp_path, monkeypatch):
    from galexplore.models import legacy

    monkeypatch.chdir(tmp_path)
    target = tmp_path / "written-by-the-pickle"
    path = tmp_path / "model.pt"
    path.write_bytes(patch_file_payload(target))
    function = legacy._ALLOWED_GLOBALS[("torch.nn.backends.thnn", "_get_thnn_function_backend")]
    name = function.__name__
    try:
        with pytest.raises(ModelError, match="sets the state of '_no_backend'"):
            load_legacy_pickle(path, trust_pickle=True)
        assert list(tmp_path.iterdir()) == [path]  # no .patch file
        assert function.__name__ == name and not hasattr(function, "dump_patches")
    finally:
        function.__name__ = name
        function.__dict__.pop("dump_patches", None)


def test_build_on_an_allowed_function_cannot_change_it(tmp_path):
    path = tmp_path / "defaults.pkl"
    path.write_bytes(defaults_payload())
    before = torch._utils._rebuild_tensor_v2.__defaults__
    try:
        with pytest.raises(ModelError, match="sets the state of '_rebuild_tensor_v2'"):
            load_legacy_pickle(path, trust_pickle=True)
        assert torch._utils._rebuild_tensor_v2.__defaults__ == before
    finally:
        torch._utils._rebuild_tensor_v2.__defaults__ = before


@pytest.mark.parametrize("payload", [object_array_payload, array_on_buffer_payload])
def test_forged_array_state_is_refused_without_crashing(tmp_path, payload):
    """Run in a child process: if the payload got through, the crash must not take pytest down."""
    path = tmp_path / "array.pkl"
    path.write_bytes(payload())
    script = textwrap.dedent(f"""
        from galexplore.errors import ModelError
        from galexplore.models.legacy import load_legacy_pickle
        try:
            value = load_legacy_pickle({str(path)!r}, trust_pickle=True)
        except ModelError as err:
            print("refused:", err)
        else:
            print("loaded", repr(value), value.sum())
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, f"the child died with status {done.returncode}: {done.stderr[-500:]}"
    assert done.stdout.startswith("refused:") and "does not allow" in done.stdout


@pytest.mark.parametrize(("body", "match"), [
    (_global("os", "system"), "refers to os.system"),
    (_global("builtins", "eval"), "refers to builtins.eval"),
    (_global("collections", "OrderedDict") + pickle.MARK + _str("x") + pickle.TUPLE + pickle.REDUCE,
     "calls 'OrderedDict'"),
    (_global("torch.nn.modules.linear", "Linear") + pickle.EMPTY_TUPLE + pickle.REDUCE, "calls"),
    (_global("numpy", "ndarray") + pickle.EMPTY_TUPLE + pickle.NEWOBJ, "creates 'ndarray'"),
    (pickle.MARK + _global("collections", "OrderedDict") + pickle.OBJ, "OBJ or INST"),
    (_global("numpy", "dtype") + _str("V8") + pickle.NEWFALSE + pickle.NEWTRUE + pickle.TUPLE3 + pickle.REDUCE,
     "calls 'dtype'"),
    (pickle.EMPTY_DICT + pickle.NONE + pickle.BUILD, "sets the state of 'dict'"),
])
def test_other_hostile_opcodes_are_refused(tmp_path, body, match):
    path = tmp_path / "p.pkl"
    path.write_bytes(_pickle(body))
    with pytest.raises(ModelError, match=match):
        load_legacy_pickle(path, trust_pickle=True)


def test_a_storage_larger_than_the_limit_is_refused_before_torch_allocates_it(tmp_path):
    storage_id = (pickle.MARK + _str("storage") + _global("torch", "FloatStorage") + _str("0") + _str("cpu")
                  + pickle.LONG1 + b"\x08" + struct.pack("<q", 2**40) + pickle.NONE + pickle.TUPLE)
    path = tmp_path / "big.pt"
    path.write_bytes(_legacy_torch_file(_pickle(storage_id + pickle.BINPERSID)))
    with pytest.raises(ModelError, match="persistent id"):
        load_legacy_pickle(path, trust_pickle=True)


@pytest.mark.parametrize("content", [b"", b"\x80\x02", b"garbage" * 100, pickle.dumps(list(range(10)))[:-5]])
def test_truncated_or_garbage_pickles_give_a_model_error(tmp_path, content):
    path = tmp_path / "x.pkl"
    path.write_bytes(content)
    with pytest.raises(ModelError, match="cannot import"):
        load_legacy_pickle(path, trust_pickle=True)
