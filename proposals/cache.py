"""The proposal cache: one file of boxes per image under a folder whose manifest names the method.

    CACHE/manifest.json        {"format": 1, "method": ..., "params": {...}, "version": ...}
    CACHE/boxes/<image>.npy    float32 [N, 4] (x1, y1, x2, y2) in the original image's pixels
    CACHE/failed/<image>.json  {"image_id": ..., "image": ..., "reason": ...} for an image that
                               could not be done
    CACHE/ids/<image>.txt      the original id, for an image whose key is shortened (below)

``<image>`` is the image id percent-encoded. An id whose encoding is longer than `MAX_KEY`
characters (a 245-character file name, a CJK one) gets a shortened key instead, so that every
file name fits the file system's 255-byte limit: its first characters, ``%%`` (which percent
encoding never writes, so no plain key looks like one) and a SHA-256 of the id; the id itself is
kept in ``ids/`` so that `image_ids` lists it. Short ids keep the keys older caches have.

Creating a cache is exclusive: the manifest is written whole under a temporary name and then
hard-linked into place, so of two processes creating one new cache with different parameters
exactly one succeeds and the other is refused.

Every file is written to a temporary name in its folder and renamed into place, so a reader (or
a run resumed after ``kill -9``) sees a whole file or none. Opening a cache made with other
parameters, or reading an image that was never computed, is an error, never silent reuse.
Several processes (``--workers``, ``torchrun`` ranks) may write one cache at once: each image
is written by one of them, and the manifest is only ever replaced by an identical one.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote, unquote

import numpy as np

from eval.errors import DetectionError
from eval.inputs import read_bytes, read_json
from eval.outputs import create_exclusive, write_atomic

FORMAT_VERSION = 1
# The longest key kept as plain percent-encoding; longer ones are shortened (see above).
MAX_KEY = 200
_PREFIX_CHARS = 120  # of a shortened key: the readable start
# What to do about a damaged file of the cache (every one is rewritten by recomputing).
_RECOMPUTE = "delete it and run tools/propose.py again to recompute it"
# How far (pixels) a cached box may reach past its image: proposals lie inside it, up to rounding.
_FIT_SLACK = 1.0


class ProposalCache:
    """Read and write the proposals of one method and parameter set under ``root``."""

    def __init__(self, root: str | os.PathLike, method: str, params: dict,
                 version: int | None = None):
        self.root = Path(root)
        self.method = method
        self.params = normalise_params(params)
        self.version = version  # of the algorithm: a changed algorithm must not reuse old boxes

    @classmethod
    def create(cls, root: str | os.PathLike, method: str, params: dict,
               version: int | None = None) -> "ProposalCache":
        """Open ``root`` for writing, making it if needed; an existing cache must match."""
        cache = cls(root, method, params, version)
        manifest = cache.root / "manifest.json"
        if not manifest.exists():
            for folder in ("boxes", "failed", "ids"):
                (cache.root / folder).mkdir(parents=True, exist_ok=True)
            # Exclusive: a second creator with other parameters is refused just below.
            create_exclusive(manifest, json.dumps(cache._manifest(), indent=1))
        cache._check_manifest(_read_manifest(manifest))
        return cache

    @classmethod
    def open(cls, root: str | os.PathLike, method: str | None = None,
             params: dict | None = None, version: int | None = None) -> "ProposalCache":
        """Open an existing cache for reading; where given, method, params and version must
        match."""
        manifest = Path(root) / "manifest.json"
        if not manifest.exists():
            raise DetectionError(f"{root}: not a proposal cache (no manifest.json); compute it "
                                 "with tools/propose.py --out " + str(root))
        stored = _read_manifest(manifest)
        cache = cls(root, method or stored.get("method"),
                    params if params is not None else stored.get("params", {}),
                    version if version is not None else stored.get("version"))
        cache._check_manifest(stored)
        return cache

    def _manifest(self) -> dict:
        return {"format": FORMAT_VERSION, "method": self.method, "params": self.params,
                "version": self.version}

    def _check_manifest(self, stored: dict) -> None:
        manifest = self.root / "manifest.json"
        stored = {"version": None, **stored}  # caches written before versions existed
        if stored != self._manifest():
            raise DetectionError(
                f"{manifest}: this cache holds {stored.get('method')} (version "
                f"{stored.get('version')}) proposals with parameters "
                f"{_cut(stored.get('params'))}, not {self.method} (version {self.version}) with "
                f"{_cut(self.params)}; choose another cache folder, or delete this one to "
                "recompute")

    def box_path(self, image_id: int | str) -> Path:
        return self.root / "boxes" / f"{_key(image_id)}.npy"

    def failure_path(self, image_id: int | str) -> Path:
        return self.root / "failed" / f"{_key(image_id)}.json"

    def __contains__(self, image_id: int | str) -> bool:
        return self.box_path(image_id).exists()

    def id_path(self, image_id: int | str) -> Path:
        """Where a shortened key's original id is kept."""
        return self.root / "ids" / f"{_key(image_id)}.txt"

    def _note_id(self, image_id: int | str) -> None:
        """Keep the original id of a shortened key (before its boxes or failure exist)."""
        key = _key(image_id)
        if _is_shortened(key) and not self.id_path(image_id).exists():
            self.id_path(image_id).parent.mkdir(exist_ok=True)  # caches made before ids/
            write_atomic(self.id_path(image_id), _utf8(str(image_id)))

    def save(self, image_id: int | str, boxes: np.ndarray) -> None:
        """Store float32 [N, 4] xyxy boxes for ``image_id`` (atomically); clears a failure."""
        boxes = np.ascontiguousarray(boxes, dtype=np.float32)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"proposals must be [N, 4], got {boxes.shape}")
        self._note_id(image_id)
        write_atomic(self.box_path(image_id), _npy_bytes(boxes))
        self.failure_path(image_id).unlink(missing_ok=True)

    def load(self, image_id: int | str, image_size: tuple[int, int] | None = None
             ) -> np.ndarray:
        """float32 [N, 4] xyxy boxes of ``image_id``, ranked best first.

        The file is read through `eval.inputs` and checked before use (`parse_boxes`): a
        damaged one is one error naming it; rows that are not boxes are dropped with a warning.
        With ``image_size`` (width, height) of the image they are for, boxes reaching past it
        (the cache was made for another photo under this id) are one error too.
        """
        path = self.box_path(image_id)
        if not os.path.lexists(path):
            failure = self.failure(image_id)
            why = f" (it failed: {failure})" if failure else ""
            raise DetectionError(f"{self.root}: no proposals for image {image_id!r}{why}; run "
                                 f"tools/propose.py --out {self.root} on its dataset")
        boxes = parse_boxes(read_bytes(path, "boxes", _RECOMPUTE), str(path))
        if image_size is not None:
            _check_fits(boxes, image_size, str(path))
        return boxes

    def record_failure(self, image_id: int | str, image_path: str, reason: str) -> None:
        """Note why ``image_id`` could not be done; a later successful save removes the note."""
        record = {"image_id": image_id, "image": image_path, "reason": reason}
        self._note_id(image_id)
        write_atomic(self.failure_path(image_id), json.dumps(record))

    def failure(self, image_id: int | str) -> str | None:
        """Why ``image_id`` failed (its recorded reason), or None if no failure is recorded."""
        path = self.failure_path(image_id)
        if not os.path.lexists(path):
            return None
        record = read_json(path, "manifest", _RECOMPUTE)
        reason = record.get("reason") if isinstance(record, dict) else None
        if not isinstance(reason, str):
            raise DetectionError(f"{path}: not a failure record of this cache (a JSON object "
                                 f"with a 'reason' string); {_RECOMPUTE}")
        return reason

    def image_ids(self) -> list[str]:
        """The ids of every image with stored boxes, as strings (``str(image_id)``), sorted."""
        return sorted(self._id_of(p.stem) for p in (self.root / "boxes").glob("*.npy"))

    def failed_ids(self) -> list[str]:
        """The ids of every image recorded in ``failed/``, as strings, sorted (their reasons:
        `failure`)."""
        return sorted(self._id_of(p.stem) for p in (self.root / "failed").glob("*.json"))

    def partition(self, image_ids: Sequence[int | str]) -> tuple[list, list]:
        """``(failed, missing)`` among ``image_ids``, each in the given order: the ids recorded
        as failed (no boxes, a reason in ``failed/``) and those with neither boxes nor a
        failure (never computed). Ids of any type match the stored ones by their string."""
        recorded = set(self.failed_ids())
        failed, missing = [], []
        for image_id in image_ids:
            if image_id in self:
                continue
            (failed if str(image_id) in recorded else missing).append(image_id)
        return failed, missing

    def _id_of(self, key: str) -> str:
        """The original id (as a string) of a file's key."""
        if not _is_shortened(key):
            return unquote(key, errors="surrogateescape")
        path = self.root / "ids" / f"{key}.txt"
        fix = (f"the id of a shortened cache key is kept there: delete the files named {key}.* "
               "in the cache and run tools/propose.py again")
        return read_bytes(path, "manifest", fix).decode("utf-8", "surrogateescape")


def normalise_params(params: dict) -> dict:
    """Parameters as they read back from JSON (tuples become lists, keys strings)."""
    return json.loads(json.dumps(params, sort_keys=True))


def _read_manifest(manifest: Path) -> dict:
    """A cache's manifest, read through `eval.inputs` (a FIFO, a 200,000-deep nesting or a
    5,000-digit number is one error) and checked to be one of this toolkit's."""
    fix = "delete the cache and compute it again"
    stored = read_json(manifest, "manifest", fix)
    if not isinstance(stored, dict):
        raise DetectionError(f"{manifest}: not a cache manifest (a JSON object); {fix}")
    version = stored.get("version")
    if (not isinstance(stored.get("method"), str) or not isinstance(stored.get("params", {}), dict)
            or not (version is None or type(version) is int)):
        raise DetectionError(f"{manifest}: not a cache manifest of this toolkit (method a string, "
                             f"params an object, version an integer); {fix}")
    return stored


def parse_boxes(data: bytes, where: str) -> np.ndarray:
    """The float32 [N, 4] xyxy boxes of a cached ``.npy`` file's bytes.

    The header is checked against the byte count before anything is allocated (a header
    claiming (1e11, 4) is refused, not allocated); a file that is not float32 [N, 4] is one
    error naming ``where``. Rows with a NaN or infinite value, or with x2 < x1 or y2 < y1, are
    dropped with one warning.
    """
    shape, fortran, dtype, offset = _npy_header(data, where)
    if dtype != np.float32 or len(shape) != 2 or shape[1] != 4:
        raise DetectionError(f"{where}: expected float32 [N, 4] boxes, found {dtype} "
                             f"{shape}; {_RECOMPUTE}")
    if len(data) - offset != math.prod(shape) * dtype.itemsize:
        raise DetectionError(f"{where}: the header says {shape[0]} boxes but the file holds "
                             f"{len(data) - offset} bytes of data (damaged or cut short); "
                             f"{_RECOMPUTE}")
    boxes = np.frombuffer(data, np.float32, offset=offset).reshape(
        shape, order="F" if fortran else "C").copy()
    good = np.isfinite(boxes).all(axis=1) & (boxes[:, 2] >= boxes[:, 0]) & (
        boxes[:, 3] >= boxes[:, 1])
    if not good.all():
        warnings.warn(f"{where}: {int((~good).sum())} of {len(boxes)} cached boxes are not "
                      "boxes (NaN, infinite, or x2 < x1 or y2 < y1) and were dropped; "
                      f"{_RECOMPUTE}", stacklevel=3)
        boxes = boxes[good]
    return boxes


def _check_fits(boxes: np.ndarray, image_size: tuple[int, int], where: str) -> None:
    """Refuse boxes that reach past the image they are used with. Every proposal method
    keeps its boxes inside the image (their pixels), so more than `_FIT_SLACK` beyond means
    another image's boxes: a photo replaced under a cached id, or another data set's cache."""
    width, height = image_size
    if len(boxes) == 0:
        return
    low, high = boxes[:, :2].min(axis=0), boxes[:, 2:].max(axis=0)
    if (low < -_FIT_SLACK).any() or high[0] > width + _FIT_SLACK or high[1] > height + _FIT_SLACK:
        raise DetectionError(f"{where}: its boxes span ({low[0]:g}, {low[1]:g}) to ({high[0]:g}, "
                             f"{high[1]:g}), past the {width} x {height} image they are used "
                             "with: the cache was made for another image under this id; "
                             f"{_RECOMPUTE}")


def _npy_header(data: bytes, where: str) -> tuple[tuple, bool, np.dtype, int]:
    """(shape, Fortran order, dtype, data offset) of ``.npy`` bytes; read from the header
    alone (NumPy's own header parser, which evaluates literals only)."""
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f".npy format version {version} is not one NumPy writes for boxes")
    except (ValueError, TypeError, SyntaxError, OverflowError) as e:
        reason = " ".join(str(e).split())[:120] or "empty"
        raise DetectionError(f"{where}: not a readable .npy file ({reason}); "
                             f"{_RECOMPUTE}") from None
    if any(d < 0 for d in shape):
        raise DetectionError(f"{where}: the header gives a negative shape {shape}; {_RECOMPUTE}")
    return shape, fortran, dtype, stream.tell()


def _key(image_id: int | str) -> str:
    """A file name stem for any image id: ids may hold '/' (ILSVRC train ids), odd characters,
    or be too long for a file name (then shortened: readable start + ``%%`` + SHA-256)."""
    text = _utf8(str(image_id))
    key = quote(text, safe="")
    if key.startswith("."):
        key = "%2E" + key[1:]  # no hidden files
    if len(key) <= MAX_KEY:
        return key
    start = key[:_PREFIX_CHARS]
    start = start[:start.rfind("%")] if "%" in start[-2:] else start  # no cut escape
    return start + "%%" + hashlib.sha256(text).hexdigest()


def _cut(value: object, limit: int = 300) -> str:
    """``value`` as text, cut to ``limit`` characters for an error line."""
    text = str(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _utf8(text: str) -> bytes:
    """``text`` as UTF-8; a file name's undecodable bytes (surrogate escapes, as `os.fsdecode`
    gives them) become those bytes again."""
    return text.encode("utf-8", "surrogateescape")


def _is_shortened(key: str) -> bool:
    """Whether ``key`` is a shortened one (plain percent-encoding never writes ``%%``)."""
    return "%%" in key


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()
