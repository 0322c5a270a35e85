"""Fast R-CNN's proposal files (``selective_search_data/voc_2007_trainval.mat``): MATLAB v5.

    boxes    1 x M cell of double [N, 4] (y1, x1, y2, x2), 1-based inclusive whole pixels
    images   1 x M cell of char: the image ids, in the same order

Fast R-CNN's ``pascal_voc.py`` (``_load_selective_search_roidb``) reads
``loadmat(f)['boxes'].ravel()`` and takes ``raw_data[i][:, (1, 0, 3, 2)] - 1`` as the boxes of
the i-th image of its image set: it goes by position (the dataset's order) and never reads
``images``, which this module writes and, where a file has it, reads the ids from. Boxes are
written to whole pixels (`common.to_matlab`); a file's boxes keep its order (it has no scores).

Read and written through ``scipy.io`` on bytes (`eval.inputs.read_bytes`, kind
``"proposals"``). A v7.3 file (HDF5) is one error saying how to save it as v7; compressed
variables are measured before SciPy inflates them, so that a few megabytes cannot stand for
more than the largest file read whole.
"""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np

from eval.errors import DetectionError
from eval.inputs import LIMITS
from proposals.formats.common import (Proposals, box_array, check_unique, from_matlab, ranked,
                                      to_matlab)

_RESAVE = ("re-save it as a v7 file, which SciPy reads: in MATLAB or Octave, load(FILE); "
           "save(NEW_FILE, 'boxes', 'images', '-v7')")
_COMPRESSED = 15  # miCOMPRESSED: a zlib stream holding one whole variable
_INFLATE_STEP = 1 << 20


def is_matlab(head: bytes) -> bool:
    """Whether a file's first bytes are a MATLAB v5 / v7.3 header ('MATLAB 5.0 MAT-file')."""
    return head.startswith(b"MATLAB")


def parse(data: bytes, where: str) -> Proposals:
    """The `Proposals` of a Fast R-CNN .mat file's bytes: ids from ``images`` where it is
    there (else None: the dataset's order), boxes continuous in the file's order."""
    from scipy.io import loadmat

    if data.startswith(b"MATLAB 7.3") or data[512:520] == b"\x89HDF\r\n\x1a\n":
        raise DetectionError(f"{where}: a MATLAB v7.3 (HDF5) file, which this command cannot "
                             f"read; {_RESAVE}")
    _check_inflated_size(data, where)
    try:
        mat = loadmat(io.BytesIO(data), variable_names=("boxes", "images"))
    except Exception as e:  # noqa: BLE001 - SciPy's many ways of saying a file is damaged
        why = " ".join(str(e).split())[:100]
        raise DetectionError(f"{where}: not a readable MATLAB file ({type(e).__name__}: {why})"
                             "; give Fast R-CNN's selective_search_data .mat") from None
    boxes = []
    for k, array in enumerate(_cell(mat, "boxes", where)):
        here = f"{where}: boxes{{{k + 1}}}"
        boxes.append(ranked(from_matlab(box_array(array, (4,), here)), None, here))
    if "images" not in mat:
        return Proposals(None, boxes, where)
    ids = [_text(name, f"{where}: images{{{k + 1}}}") for k, name in
           enumerate(_cell(mat, "images", where))]
    if len(ids) != len(boxes):
        raise DetectionError(f"{where}: {len(boxes)} boxes cells but {len(ids)} images; a "
                             "Fast R-CNN file has one of each per image")
    check_unique(ids, where)
    return Proposals(ids, boxes, where)


def _cell(mat: dict, name: str, where: str) -> list:
    """The entries of the cell array ``name``, in the order Fast R-CNN reads them (ravel)."""
    if name not in mat:
        raise DetectionError(f"{where}: no variable {name!r}; not a Fast R-CNN proposal file "
                             "(a boxes cell, one entry per image)")
    value = mat[name]
    if not isinstance(value, np.ndarray) or value.dtype != object:
        raise DetectionError(f"{where}: {name} is not a cell array (one entry per image)")
    return list(value.ravel())


def _text(value: object, where: str) -> str:
    """An image id of the ``images`` cell: a char array (or an integer)."""
    if isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind == "U":
        text = str(value.reshape(-1)[0])
        if text:
            return text
    if isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "iuf":
        number = float(value.reshape(-1)[0])
        if number.is_integer():
            return str(int(number))
    raise DetectionError(f"{where}: not an image id (a string)")


def _check_inflated_size(data: bytes, where: str) -> None:
    """Refuse a v5 file whose compressed variables inflate past `LIMITS`' 'proposals': each
    is inflated here in steps of `_INFLATE_STEP` and counted, nothing kept."""
    if len(data) < 128 or data[126:128] not in (b"IM", b"MI"):
        return  # not a v5 file: SciPy says what it is
    order, position, budget = "<" if data[126:128] == b"IM" else ">", 128, LIMITS["proposals"]
    view = memoryview(data)
    while position + 8 <= len(data):
        kind, size = struct.unpack(order + "II", view[position:position + 8])
        position += 8
        if kind == _COMPRESSED:
            budget -= _inflated(view[position:position + size], budget)
            if budget < 0:
                raise DetectionError(f"{where}: its compressed variables inflate to over "
                                     f"{LIMITS['proposals'] >> 20:,} MiB, more than any "
                                     "proposal file read whole; is it the right file?")
        position += size


def _inflated(stream: memoryview, budget: int) -> int:
    """How many bytes the zlib ``stream`` inflates to, counted up to ``budget`` + 1 (a damaged
    stream counts what inflated before the damage: SciPy reports the rest). Fed and inflated
    `_INFLATE_STEP` bytes at a time."""
    inflater, total = zlib.decompressobj(), 0
    try:
        for start in range(0, len(stream), _INFLATE_STEP):
            pending = stream[start:start + _INFLATE_STEP]
            while pending and total <= budget:
                total += len(inflater.decompress(pending, _INFLATE_STEP))
                pending = inflater.unconsumed_tail
            if total > budget or inflater.eof:
                break
    except zlib.error:
        pass
    return total


def build(proposals: Proposals, where: str) -> bytes:
    """The .mat bytes of ``proposals`` (with ids): uncompressed MATLAB v5, ``boxes`` and
    ``images`` 1 x M cells."""
    from scipy.io import savemat

    count = len(proposals.boxes)
    boxes, images = np.empty((1, count), dtype=object), np.empty((1, count), dtype=object)
    for k, (name, array) in enumerate(zip(proposals.ids, proposals.boxes)):
        boxes[0, k], images[0, k] = to_matlab(array), str(name)
    buffer = io.BytesIO()
    try:
        savemat(buffer, {"boxes": boxes, "images": images}, format="5", oned_as="row")
    except ValueError as e:  # a variable over v5's 32-bit sizes
        raise DetectionError(f"{where}: cannot be written as a MATLAB v5 file ({e}); write "
                             "another format (--to detectron for WSOD toolkits)") from None
    return buffer.getvalue()
