"""Pickles from outside: read as data only, written so that old Pythons and NumPys read them.

A pickle is a program: `pickle.load` calls whatever its file names (``os.system``,
``builtins.eval``). The proposal files of detectron2, Detectron and mmdetection are pickles, so
`read_pickle` reads them with an unpickler that builds data and nothing else: lists, tuples,
dicts, str, bytes, numbers and None (built by the pickle's own opcodes) and NumPy arrays,
dtypes and scalars of numbers, booleans and strings, through the few NumPy names NumPy's own
pickles use (``numpy.core`` and ``numpy._core`` spellings, protocols 0 to 5). Any other name
(``os.system``, ``builtins.open``, ``subprocess.Popen``) is refused unread: one `DetectionError`
naming the file and the name, before anything is called.

NumPy's own functions are not handed to the file either: its array and dtype states are
checked here and the arrays built by `numpy.frombuffer` (NumPy 2.4 crashes on an object array
whose state holds too few items, a 60-byte pickle); object dtypes, fields and sub-arrays are
refused. Python 2 pickles (Detectron's) are read with ``encoding="latin1"``, as NumPy's arrays
in them need, and ``_codecs.encode`` (how Python 3 writes bytes at protocol 2) only with the
latin-1 codec. The bytes come in through `eval.inputs.read_bytes` (kind ``"pickle"``).

`portable_pickle` writes the other way: NumPy 2 pickles name ``numpy._core``, which NumPy
before 1.26 cannot import (1.26 reads ``numpy._core.multiarray`` but not protocol 5's
``numpy._core.numeric``: numpy/numpy#28340), and the toolkits reading proposal files mostly run
older NumPy 1.x (Detectron on Python 2), so arrays are written as NumPy 1.x writes them, opcode
by opcode (checked: NumPy 1.26.4 reads them, with the default encoding and with latin-1).
"""
from __future__ import annotations

import io
import math
import os
import pickle
import struct

import numpy as np

from eval.errors import DetectionError
from eval.inputs import read_bytes

# How deep data may nest (a proposal file: a dict of lists of arrays is 3).
MAX_DEPTH = 32
_LATIN1 = {"latin1", "latin-1", "iso-8859-1", "iso8859-1", "l1"}
_ARRAY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray",
                  "numpy.core._multiarray_umath", "numpy._core._multiarray_umath")


class _Refused(Exception):
    """What the file asks for that a data file never needs (the message says what)."""


class _NdarrayName:
    """``numpy.ndarray`` in a pickle: only `_reconstruct` takes it (calling it, which would
    allocate any shape the file names, is an error). No attributes, so BUILD cannot change it."""
    __slots__ = ()


_NDARRAY = _NdarrayName()


class _Dtype:
    """``numpy.dtype(code, align, copy)`` as a pickle calls it; the dtype is made when an array
    or scalar uses it (`as_dtype`), after BUILD has given its byte order."""
    __slots__ = ("code", "order")

    def __init__(self, code: object = None, align: object = False, copy: object = True):
        self.code, self.order = code, None

    def __setstate__(self, state: object) -> None:
        # (version, byte order, subarray, names, fields, ...): a plain dtype has no sub-array,
        # names or fields.
        if not isinstance(state, tuple) or len(state) < 5 or any(s is not None
                                                                 for s in state[2:5]):
            raise _Refused("a structured or sub-array NumPy dtype, which proposal data never uses")
        self.order = state[1]

    def as_dtype(self) -> np.dtype:
        code = self.code.decode("latin1") if isinstance(self.code, bytes) else self.code
        if not isinstance(code, str) or len(code) > 16:
            raise _Refused("a NumPy dtype that is not a type code")
        dtype = np.dtype(code)
        if dtype.hasobject or dtype.names is not None or dtype.subdtype is not None:
            raise _Refused(f"NumPy dtype {code[:16]!r} (Python objects, fields or a sub-array)")
        return dtype.newbyteorder(self.order) if self.order in ("<", ">") else dtype


class _Array:
    """``numpy.core.multiarray._reconstruct(ndarray, (0,), 'b')``: an array filled by BUILD
    (`__setstate__`), from data whose length must be its shape's."""
    __slots__ = ("array",)

    def __init__(self):
        self.array = None

    def __setstate__(self, state: object) -> None:
        if isinstance(state, tuple) and len(state) == 5:
            state = state[1:]  # (version, shape, dtype, Fortran order, data)
        if not isinstance(state, tuple) or len(state) != 4:
            raise _Refused("an array state NumPy does not write")
        shape, dtype, fortran, data = state
        self.array = _from_buffer(data, dtype, shape, "F" if fortran else "C")


def _reconstruct(subtype: object, shape: object, code: object) -> _Array:
    if subtype is not _NDARRAY or shape != (0,):
        raise _Refused("an array of a type or shape NumPy's pickles do not start from")
    return _Array()


def _from_buffer(data: object, dtype: object, shape: object, order: object) -> np.ndarray:
    """An array of ``dtype`` and ``shape`` over ``data``, which must hold exactly its bytes
    (NumPy's ``_frombuffer``, protocol 5, and the state of `_Array`)."""
    if not isinstance(dtype, _Dtype):
        raise _Refused("an array without a NumPy dtype")
    dtype = dtype.as_dtype()  # first: an object dtype's data is a list, refused by name here
    if isinstance(data, str):
        data = data.encode("latin1")  # a Python 2 pickle's str
    if not isinstance(data, (bytes, bytearray)):
        raise _Refused("an array whose data is not bytes")
    if (not isinstance(shape, tuple) or len(shape) > MAX_DEPTH or order not in ("C", "F")
            or not all(type(n) is int and n >= 0 for n in shape)):
        raise _Refused("an array of an impossible shape")
    if len(data) != math.prod(shape) * dtype.itemsize or dtype.itemsize == 0:
        raise _Refused(f"an array of shape {shape[:4]} whose data has another size "
                       f"({len(data)} bytes)")
    return np.frombuffer(data, dtype).reshape(shape, order=order)


def _scalar(dtype: object, data: object = None) -> np.generic:
    return _from_buffer(data, dtype, (), "C")[()]


def _latin1_encode(text: object, encoding: object = "utf-8", errors: object = "strict") -> bytes:
    """``_codecs.encode(text, 'latin1')``: how Python 3 writes bytes at protocol 2."""
    if not isinstance(text, str) or encoding not in _LATIN1:
        raise _Refused("_codecs.encode with another codec than latin-1")
    return text.encode("latin1")


_ALLOWED = {("numpy", "ndarray"): _NDARRAY, ("numpy", "dtype"): _Dtype,
            ("_codecs", "encode"): _latin1_encode,
            ("numpy.core.numeric", "_frombuffer"): _from_buffer,
            ("numpy._core.numeric", "_frombuffer"): _from_buffer,
            **{(module, "_reconstruct"): _reconstruct for module in _ARRAY_MODULES},
            **{(module, "scalar"): _scalar for module in _ARRAY_MODULES}}


class _DataUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` whose globals are `_ALLOWED`'s stand-ins only."""

    def find_class(self, module: str, name: str) -> object:
        target = _ALLOWED.get((module, name))
        if target is None:
            raise _Refused(f"it calls {module[:60]}.{name[:60]}, which a data file never needs "
                           "(loading it would run code); refused unread")
        if target is _NDARRAY:
            return _NDARRAY
        # A new callable per load: a pickle that sets attributes on what it got (BUILD) changes
        # nothing outside this load.
        return lambda *args: target(*args)


def read_pickle(path: str | os.PathLike, what: str, fix: str = "check the path") -> object:
    """The data in the pickle file ``path`` (a ``what``, for messages), as plain lists, tuples,
    dicts, str, bytes, numbers, None and NumPy arrays (read-only) and scalars.

    A name the file calls other than NumPy's array builders is refused unread, as are arrays of
    Python objects, data nested over `MAX_DEPTH` deep, and a file that is not a whole pickle:
    each one `DetectionError` naming ``path`` and ``fix``.
    """
    return parse_pickle(read_bytes(path, "pickle", fix), f"{path} ({what})", fix)


def parse_pickle(data: bytes, where: str, fix: str) -> object:
    """`read_pickle` of bytes; ``where`` names them in messages."""
    try:
        value = _DataUnpickler(io.BytesIO(data), encoding="latin1").load()
        return _resolve(value, 0, {})
    except _Refused as e:
        raise DetectionError(f"{where}: not a data pickle: {e}; {fix}") from None
    except RecursionError:
        raise DetectionError(f"{where}: nested too deeply to be proposal data; {fix}") from None
    except Exception as e:  # noqa: BLE001 - any malformed stream (EOFError, UnpicklingError...)
        why = " ".join(str(e).split())[:100]
        raise DetectionError(f"{where}: not a readable pickle ({type(e).__name__}: {why}); "
                             f"{fix}") from None


def _resolve(value: object, depth: int, done: dict[int, object]) -> object:
    """``value`` with the stand-ins made real (an `_Array` its array, a `_Dtype` its dtype),
    each container once (``done``, by id: a pickle may refer to one object many times)."""
    if isinstance(value, (str, bytes, bytearray, int, float, complex, np.ndarray, np.generic)) \
            or value is None:
        return value
    if id(value) in done:
        return done[id(value)]
    if depth >= MAX_DEPTH:
        raise _Refused(f"data nested more than {MAX_DEPTH} deep")
    if isinstance(value, _Array):
        if value.array is None:
            raise _Refused("an array without its data")
        result = value.array
    elif isinstance(value, _Dtype):
        result = value.as_dtype()
    elif isinstance(value, (list, tuple, set, frozenset)):
        result = type(value)(_resolve(v, depth + 1, done) for v in value)
    elif isinstance(value, dict):
        if not all(isinstance(k, (str, int, bytes)) for k in value):
            raise _Refused("a dict key that is not a string or a number")
        result = {k: _resolve(v, depth + 1, done) for k, v in value.items()}
    else:
        raise _Refused(f"a {type(value).__name__}, which is not data")
    done[id(value)] = result
    return result


def portable_pickle(value: object, python2: bool = False) -> bytes:
    """``value`` pickled so that NumPy 1.x and 2.x both read it: dicts (str keys), lists,
    tuples, str, bytes, int, float, bool, None and NumPy arrays of numbers (as NumPy 1.x
    pickles them: ``numpy.core.multiarray._reconstruct``). ``python2``: protocol 2 opcodes only
    (bytes through ``_codecs.encode``), so that Python 2 reads it too (Detectron); otherwise
    protocol 4, bytes written as they are."""
    out = [b"\x80\x02" if python2 else b"\x80\x04"]
    _save(value, out, python2)
    out.append(pickle.STOP)
    return b"".join(out)


def _save(value: object, out: list[bytes], python2: bool) -> None:
    """Append the opcodes that build ``value``."""
    if value is None or isinstance(value, bool):
        out.append({None: pickle.NONE, True: pickle.NEWTRUE, False: pickle.NEWFALSE}[value])
    elif isinstance(value, int):
        out.append(_int(value))
    elif isinstance(value, float):
        out.append(pickle.BINFLOAT + struct.pack(">d", value))
    elif isinstance(value, str):
        _save_str(value, out, python2)
    elif isinstance(value, bytes):
        _save_bytes(value, out, python2)
    elif isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        _save_array(value, out, python2)
    elif isinstance(value, (list, tuple, dict)):
        _save_container(value, out, python2)
    else:
        raise TypeError(f"portable_pickle: cannot write a {type(value).__name__}")


def _save_container(value: list | tuple | dict, out: list[bytes], python2: bool) -> None:
    """A list (EMPTY_LIST, then its items with APPENDS), a tuple (its items, TUPLE) or a dict
    (EMPTY_DICT, then its keys and values with SETITEMS)."""
    if isinstance(value, list):
        out.append(pickle.EMPTY_LIST)
    elif isinstance(value, dict):
        out.append(pickle.EMPTY_DICT)
    out.append(pickle.MARK)
    for item in value.items() if isinstance(value, dict) else value:
        for part in item if isinstance(value, dict) else (item,):
            _save(part, out, python2)
    out.append({list: pickle.APPENDS, tuple: pickle.TUPLE, dict: pickle.SETITEMS}[type(value)])


def _int(value: int) -> bytes:
    if 0 <= value < 256:
        return pickle.BININT1 + bytes([value])
    if -2**31 <= value < 2**31:
        return pickle.BININT + struct.pack("<i", value)
    data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return pickle.LONG1 + bytes([len(data)]) + data


def _save_str(text: str, out: list[bytes], python2: bool) -> None:
    """A unicode string; for Python 2, a short ASCII one as a Python 2 str (NumPy 1.x on
    Python 2 takes a dtype's byte order only so), which Python 3 reads back as str."""
    if python2 and text.isascii() and len(text) < 256:
        out.append(pickle.SHORT_BINSTRING + bytes([len(text)]) + text.encode("ascii"))
        return
    data = text.encode("utf-8", "surrogatepass")
    out.append(pickle.BINUNICODE + struct.pack("<I", len(data)) + data)


def _save_bytes(data: bytes, out: list[bytes], python2: bool) -> None:
    if python2:  # _codecs.encode(u'...', 'latin1'): a str in Python 2, bytes in Python 3
        out.append(pickle.GLOBAL + b"_codecs\nencode\n")
        data = data.decode("latin1").encode("utf-8")
        out.append(pickle.BINUNICODE + struct.pack("<I", len(data)) + data)
        _save_str("latin1", out, python2)
        out += [pickle.TUPLE2, pickle.REDUCE]
    elif len(data) < 2**32:
        out += [pickle.BINBYTES + struct.pack("<I", len(data)), data]
    else:
        out += [pickle.BINBYTES8 + struct.pack("<Q", len(data)), data]


def _save_array(array: np.ndarray, out: list[bytes], python2: bool) -> None:
    """What NumPy 1.x writes: ``_reconstruct(ndarray, (0,), b'b')``, then BUILD with
    ``(1, shape, dtype, False, data)``, the dtype ``dtype(code, False, True)`` with BUILD
    ``(3, byte order, None, None, None, -1, -1, 0)``."""
    order, code = array.dtype.str[0], array.dtype.str[1:]
    out.append(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n"
               + pickle.GLOBAL + b"numpy\nndarray\n" + _int(0) + pickle.TUPLE1)
    _save_bytes(b"b", out, python2)
    out += [pickle.TUPLE3, pickle.REDUCE, pickle.MARK, _int(1)]
    _save(tuple(int(n) for n in array.shape), out, python2)
    out.append(pickle.GLOBAL + b"numpy\ndtype\n")
    _save(code, out, python2)
    out += [pickle.NEWFALSE, pickle.NEWTRUE, pickle.TUPLE3, pickle.REDUCE, pickle.MARK, _int(3)]
    _save(order, out, python2)
    out += [pickle.NONE] * 3 + [_int(-1), _int(-1), _int(0), pickle.TUPLE, pickle.BUILD]
    out.append(pickle.NEWFALSE)
    _save_bytes(np.ascontiguousarray(array).tobytes(), out, python2)
    out += [pickle.TUPLE, pickle.BUILD]
