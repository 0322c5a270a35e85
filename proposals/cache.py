"""The proposal cache: one file of boxes per image under a folder whose manifest names the method.

    CACHE/manifest.json        {"format": 1, "method": ..., "params": {...}, "version": ...}
    CACHE/boxes/<image>.npy    float32 [N, 4] (x1, y1, x2, y2) in the original image's pixels
    CACHE/failed/<image>.json  {"image": ..., "reason": ...} for an image that could not be done

Every file is written to a temporary name in its folder and renamed into place, so a reader (or
a run resumed after ``kill -9``) sees a whole file or none. Opening a cache made with other
parameters, or reading an image that was never computed, is an error, never silent reuse.
Several processes (``--workers``, ``torchrun`` ranks) may write one cache at once: each image
is written by one of them, and the manifest is only ever replaced by an identical one.
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path
from urllib.parse import quote, unquote

import numpy as np

from detector.errors import DetectionError
from detector.fileio import write_atomic

FORMAT_VERSION = 1


class ProposalCache:
    """Read and write the proposals of one method and parameter set under ``root``."""

    def __init__(self, root: str | os.PathLike, method: str, params: dict, version: int | None = None):
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
            (cache.root / "boxes").mkdir(parents=True, exist_ok=True)
            (cache.root / "failed").mkdir(exist_ok=True)
            write_atomic(manifest, json.dumps(cache._manifest(), indent=1))
        cache._check_manifest()
        return cache

    @classmethod
    def open(cls, root: str | os.PathLike, method: str | None = None,
             params: dict | None = None, version: int | None = None) -> "ProposalCache":
        """Open an existing cache for reading; where given, method, params and version must match."""
        manifest = Path(root) / "manifest.json"
        try:
            stored = json.loads(manifest.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DetectionError(f"{root}: not a proposal cache (no manifest.json); compute it "
                                 "with tools/propose.py --out " + str(root)) from None
        except (OSError, json.JSONDecodeError) as e:
            raise DetectionError(f"{manifest}: unreadable cache manifest ({e}); delete the cache "
                                 "and compute it again") from None
        cache = cls(root, method or stored.get("method"),
                    params if params is not None else stored.get("params", {}),
                    version if version is not None else stored.get("version"))
        cache._check_manifest(stored)
        return cache

    def _manifest(self) -> dict:
        return {"format": FORMAT_VERSION, "method": self.method, "params": self.params,
                "version": self.version}

    def _check_manifest(self, stored: dict | None = None) -> None:
        manifest = self.root / "manifest.json"
        if stored is None:
            stored = json.loads(manifest.read_text(encoding="utf-8"))
        stored = {"version": None, **stored}  # caches written before versions existed
        if stored != self._manifest():
            raise DetectionError(
                f"{manifest}: this cache holds {stored.get('method')} (version "
                f"{stored.get('version')}) proposals with parameters {stored.get('params')}, not "
                f"{self.method} (version {self.version}) with {self.params}; choose another "
                "cache folder, or delete this one to recompute")

    def box_path(self, image_id: int | str) -> Path:
        return self.root / "boxes" / f"{_key(image_id)}.npy"

    def failure_path(self, image_id: int | str) -> Path:
        return self.root / "failed" / f"{_key(image_id)}.json"

    def __contains__(self, image_id: int | str) -> bool:
        return self.box_path(image_id).exists()

    def save(self, image_id: int | str, boxes: np.ndarray) -> None:
        """Store float32 [N, 4] xyxy boxes for ``image_id`` (atomically); clears a failure."""
        boxes = np.ascontiguousarray(boxes, dtype=np.float32)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"proposals must be [N, 4], got {boxes.shape}")
        write_atomic(self.box_path(image_id), _npy_bytes(boxes))
        self.failure_path(image_id).unlink(missing_ok=True)

    def load(self, image_id: int | str) -> np.ndarray:
        """float32 [N, 4] xyxy boxes of ``image_id``, ranked best first."""
        path = self.box_path(image_id)
        try:
            boxes = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            failure = self.failure(image_id)
            why = f" (it failed: {failure})" if failure else ""
            raise DetectionError(f"{self.root}: no proposals for image {image_id!r}{why}; run "
                                 f"tools/propose.py --out {self.root} on its dataset") from None
        except (OSError, ValueError) as e:
            raise DetectionError(f"{path}: unreadable proposal file ({e}); delete it and run "
                                 "tools/propose.py again to recompute it") from None
        if boxes.dtype != np.float32 or boxes.ndim != 2 or boxes.shape[1] != 4:
            raise DetectionError(f"{path}: expected float32 [N, 4] boxes, found {boxes.dtype} "
                                 f"{boxes.shape}; delete it and recompute")
        return boxes

    def record_failure(self, image_id: int | str, image_path: str, reason: str) -> None:
        """Note why ``image_id`` could not be done; a later successful save removes the note."""
        record = {"image_id": image_id, "image": image_path, "reason": reason}
        write_atomic(self.failure_path(image_id), json.dumps(record))

    def failure(self, image_id: int | str) -> str | None:
        try:
            return json.loads(self.failure_path(image_id).read_text(encoding="utf-8"))["reason"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            return None

    def image_ids(self) -> list[str]:
        """Keys of every image with stored boxes (as strings), sorted."""
        return sorted(unquote(p.stem) for p in (self.root / "boxes").glob("*.npy"))


def normalise_params(params: dict) -> dict:
    """Parameters as they read back from JSON (tuples become lists, keys strings)."""
    return json.loads(json.dumps(params, sort_keys=True))


def _key(image_id: int | str) -> str:
    """A file name for any image id: ids may hold '/' (ILSVRC train ids) or other odd characters."""
    key = quote(str(image_id), safe="")
    return key if not key.startswith(".") else "%2E" + key[1:]  # no hidden files


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()
