"""eval.pickles: pickles from outside build data only (a pickle that would run code is refused
unread), NumPy's own pickles of every protocol and Python 2's load, and what portable_pickle
writes reads back in NumPy and uses only what NumPy 1.x and Python 2 have."""
import builtins
import os
import pickle
import pickletools
import struct
import subprocess

import numpy as np
import pytest

from eval.errors import DetectionError
from eval.pickles import MAX_DEPTH, parse_pickle, portable_pickle, read_pickle


class _Calls:
    """Pickles as a call of ``function(*args)`` when loaded (what a hostile file does)."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


@pytest.mark.parametrize("make_call", [
    lambda target: _Calls(os.system, f"touch {target}"),
    lambda target: _Calls(builtins.open, str(target), "w"),
    lambda target: _Calls(builtins.eval, f"open({str(target)!r}, 'w')"),
    lambda target: _Calls(subprocess.Popen, ["touch", str(target)]),
    lambda target: {"boxes": [np.zeros((1, 4), np.float32)], "ids": [_Calls(os.system,
                                                                           f"touch {target}")]},
], ids=["os.system", "open", "eval", "subprocess", "inside-data"])
def test_a_pickle_that_would_run_code_is_refused_unread(tmp_path, make_call):
    target = tmp_path / "created_by_the_pickle"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(make_call(target), protocol=2))
    with pytest.raises(DetectionError) as info:
        read_pickle(path, "proposal file")
    message = str(info.value)
    assert str(path) in message and "refused unread" in message and "\n" not in message
    call = make_call(target)
    function = call.function if isinstance(call, _Calls) else os.system
    assert f"{function.__module__}.{function.__qualname__}".split(".")[-1] in message
    assert not target.exists()


def _py2_str(data: bytes) -> bytes:
    """A Python 2 str as Python 2's pickler writes it (SHORT_BINSTRING or BINSTRING)."""
    if len(data) < 256:
        return b"U" + bytes([len(data)]) + data
    return b"T" + struct.pack("<i", len(data)) + data


def _py2_float32_array(values: np.ndarray) -> bytes:
    """What NumPy 1.x on Python 2 writes for a little-endian float32 array, protocol 2."""
    shape = b"".join(b"K" + bytes([n]) for n in values.shape) + {1: b"\x85", 2: b"\x86"}[
        values.ndim]
    return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + _py2_str(b"b")
            + b"\x87R(K\x01" + shape + b"cnumpy\ndtype\n" + _py2_str(b"f4") + b"K\x00K\x01\x87R"
            + b"(K\x03" + _py2_str(b"<") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89"
            + _py2_str(values.astype("<f4").tobytes()) + b"tb")


def test_a_python2_pickle_of_numpy_arrays_loads(tmp_path):
    # Detectron's proposal files: Python 2 str keys, str array data holding bytes >= 0x80
    # (-1.0 is 00 00 80 bf), an int64 id as LONG1.
    boxes = np.array([[0.5, -1.0, 300.25, 4e9], [1, 2, 3, 4]], np.float32)
    data = (b"\x80\x02}(" + _py2_str(b"boxes") + b"]" + b"(" + _py2_float32_array(boxes)
            + _py2_float32_array(np.zeros((0, 4), np.float32)) + b"e" + _py2_str(b"indexes")
            + b"](K\x05\x8a\x05\x00\xe4\x0bT\x02e" + b"u.")
    path = tmp_path / "py2.pkl"
    path.write_bytes(data)
    reference = pickle.loads(data, encoding="latin1")  # NumPy's own reading of the same bytes
    loaded = read_pickle(path, "proposal file")
    for value in (reference, loaded):
        assert sorted(value) == ["boxes", "indexes"] and value["indexes"] == [5, 10000000000]
        assert np.array_equal(value["boxes"][0], boxes) and value["boxes"][0].dtype == np.float32
        assert value["boxes"][1].shape == (0, 4)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_numpy_s_own_pickles_load_at_every_protocol(protocol):
    value = {"boxes": [np.arange(8, dtype=np.float32).reshape(2, 4)], "ids": ["a", 1],
             "logits": [np.float32(0.25)], "fortran": np.asfortranarray(np.eye(2, 3)),
             "names": np.array(["ab", "c"]), "flags": np.array([True, False]), "raw": b"\x00\xff",
             "mode": 0, "pair": (1.5, None)}
    loaded = parse_pickle(pickle.dumps(value, protocol=protocol), "f.pkl", "fix")
    assert loaded["ids"] == ["a", 1] and loaded["raw"] == b"\x00\xff" and loaded["mode"] == 0
    assert loaded["pair"] == (1.5, None) and loaded["logits"][0] == np.float32(0.25)
    for key in ("fortran", "names", "flags"):
        assert np.array_equal(loaded[key], value[key]) and loaded[key].dtype == value[key].dtype
    assert np.array_equal(loaded["boxes"][0], value["boxes"][0])


@pytest.mark.parametrize("value, why", [
    (np.array([1, "a"], dtype=object), "Python objects"),
    (np.zeros(2, dtype=[("x", "f4"), ("y", "f4")]), "structured"),
])
def test_arrays_of_objects_or_fields_are_refused(value, why):
    data = pickle.dumps(value, protocol=2)
    with pytest.raises(DetectionError, match=f"f.pkl: not a data pickle: .*{why}"):
        parse_pickle(data, "f.pkl", "fix")


def test_an_object_array_state_with_too_few_items_is_refused_not_a_crash():
    # NumPy 2.4's own unpickler segfaults on these 120 bytes (3 objects, an empty list).
    data = (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85C\x01b"
            b"\x87R(K\x01K\x03\x85cnumpy\ndtype\nX\x01\x00\x00\x00OK\x00K\x01\x87R(K\x03X\x01"
            b"\x00\x00\x00|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK?tb\x89]tb.")
    with pytest.raises(DetectionError, match="'O'"):
        parse_pickle(data, "crash.pkl", "fix")


def test_data_that_does_not_fit_its_shape_and_broken_streams_are_one_error():
    good = pickle.dumps(np.zeros((2, 4), np.float32), protocol=2)
    short = good.replace(b"K\x02K\x04", b"K\x09K\x04")  # the shape claims 9 rows
    for data, why in ((short, "whose data has another size"), (good[:-5], "not a readable"),
                      (b"", "not a readable"), (b"\x80\x02N\x00.", "not a readable")):
        with pytest.raises(DetectionError, match=why):
            parse_pickle(data, "f.pkl", "fix")


def test_nesting_is_bounded_and_shared_values_are_resolved_once():
    deep = []
    for _ in range(MAX_DEPTH + 1):
        deep = [deep]
    with pytest.raises(DetectionError, match="nested more than"):
        parse_pickle(pickle.dumps(deep), "f.pkl", "fix")
    # One list referred to 1,000 times at each of three levels (memo references: a few KB that
    # a walk without memory would visit 10^9 times) comes back shared, not copied.
    leaf = [np.zeros(1)]
    middle = [leaf] * 1000
    loaded = parse_pickle(pickle.dumps([middle] * 1000), "f.pkl", "fix")
    assert loaded[0] is loaded[999] and loaded[0][0] is loaded[0][1]


def test_read_pickle_opens_through_eval_inputs(tmp_path):
    with pytest.raises(DetectionError, match="is a folder"):
        read_pickle(tmp_path, "proposal file")
    with pytest.raises(DetectionError, match="not found"):
        read_pickle(tmp_path / "missing.pkl", "proposal file")


@pytest.mark.parametrize("python2", [False, True])
def test_portable_pickles_read_back_and_name_only_what_numpy_1_has(python2):
    value = {"boxes": [np.array([[0, 1.5, 2, 3]], np.float32), np.zeros((0, 4), np.float32)],
             "ids": ["000005", 42, "caf\u00e9"], "logits": [np.float32([0, -1])[:1],
                                                         np.zeros(0, np.float32)],
             "bbox_mode": 0, "big": -2**40, "t": (True, None, 0.5)}
    data = portable_pickle(value, python2=python2)
    for loaded in (pickle.loads(data), parse_pickle(data, "f.pkl", "fix")):
        assert loaded["ids"] == value["ids"] and loaded["big"] == -2**40
        assert loaded["t"] == (True, None, 0.5) and loaded["bbox_mode"] == 0
        for got, want in zip(loaded["boxes"] + loaded["logits"], value["boxes"] + value["logits"]):
            assert got.dtype == want.dtype and np.array_equal(got, want)
    ops = list(pickletools.genops(data))
    names = {arg for op, arg, _ in ops if op.name == "GLOBAL"}
    assert names <= {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype",
                     "_codecs encode"}
    assert max(op.proto for op, _, _ in ops) == (2 if python2 else 3)
