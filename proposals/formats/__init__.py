"""Proposals for other toolkits: our cache to and from the files detectron2, Detectron (and
wetectron), mmdetection and Fast R-CNN read.

    format      file                                         boxes in the file
    cache       folder: manifest.json, boxes/<id>.npy        continuous (x1, y1, x2, y2)
    detectron2  .pkl {ids, boxes, objectness_logits,         continuous XYXY_ABS
                bbox_mode: 0}
    detectron   .pkl {boxes, scores, indexes}                0-based inclusive pixels
    mmdet       .pkl [N, 5] arrays (x1, y1, x2, y2, score)   continuous (mmdetection 2.x)
    fast-rcnn   .mat {boxes, images} cells                   (y1, x1, y2, x2) 1-based inclusive

    from eval.datasets import load_dataset
    from proposals import convert_proposals
    voc = load_dataset("VOCdevkit/VOC2007", split="trainval")
    convert_proposals("cache/voc07_trainval", "voc_2007_trainval.mat", dataset=voc)
    convert_proposals("voc_2007_trainval.mat", "cache/voc07_ff", dataset=voc)

Coordinates change at the edge only (`common`): inside, boxes are continuous and ranked best
first; integer-pixel formats round-trip to the pixel. Scores: the cache keeps ranks only, so a
written file scores its boxes 0, -1, -2, ... (strictly decreasing with the rank); a file read
is ranked by its scores, highest first, ties in the file's order. Images: a format read by
position (mmdet; fast-rcnn, whose reader ignores its ``images``) needs the dataset's order,
``ids=`` or ``dataset=`` (`common.dataset_ids`); for the others these choose and order the
images converted. An imported cache's manifest names the format and the file's SHA-256
(`caches`). Pickles are read as data only (`eval.pickles`); the command is
``tools/convert_proposals.py``.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from eval.errors import DetectionError
from eval.inputs import open_input, read_bytes
from eval.outputs import check_output_dir, check_output_file, write_atomic
from eval.pickles import parse_pickle
from proposals.cache import ProposalCache
from proposals.formats import caches, matlab, pickled
from proposals.formats.common import (FORMATS, POSITIONAL, Proposals, check_unique, dataset_ids,
                                      read_id_list, select)

__all__ = ["FORMATS", "Conversion", "Proposals", "convert_proposals", "read_id_list",
           "read_proposals", "target_format", "write_proposals"]
_FIX = ("give a proposal file: a pickle of detectron2, Detectron or mmdetection, a Fast R-CNN "
        ".mat, or a cache folder")


@dataclass(frozen=True)
class Conversion:
    """What `convert_proposals` did: formats, images and boxes written, images of the input
    left out (not listed), images an output cache already held (a resumed import)."""
    source_format: str
    target_format: str
    images: int
    boxes: int
    left_out: int
    already_there: int


def target_format(dst: str | os.PathLike) -> str:
    """The format an output path asks for: a folder or a name without a suffix is a cache, a
    ``.mat`` Fast R-CNN's; a ``.pkl`` could be three toolkits' (one error: say which)."""
    path = Path(dst)
    if path.is_dir() or not path.suffix:
        return "cache"
    if path.suffix.lower() == ".mat":
        return "fast-rcnn"
    raise DetectionError(f"{dst}: which format is it to be? Give --to (to=) one of "
                         f"{', '.join(FORMATS[1:])}")


def read_proposals(src: str | os.PathLike, fmt: str | None = None, ids: Sequence | None = None,
                   progress: bool = False) -> Proposals:
    """The proposals in ``src`` (format ``fmt``, default: found from its content), of the
    images ``ids`` in that order (default: all the file holds; a file that names no images
    needs them)."""
    fmt, found, _ = _open_source(src, fmt)
    if found is None:
        return caches.read_cache(src, ids, progress)
    if ids is None and found.ids is None:
        raise _needs_order(src, fmt)
    return found if ids is None else select(found, list(ids), str(src))


def write_proposals(proposals: Proposals, dst: str | os.PathLike, fmt: str,
                    manifest: tuple[str, dict, int | None] | None = None,
                    progress: bool = False) -> int:
    """Write ``proposals`` (with ids) to ``dst`` in format ``fmt``: a file written whole and
    atomically, or a cache whose ``manifest`` is (method, params, version) (default: an
    import of ``proposals.source``). Returns how many images a cache already held."""
    if fmt == "cache":
        method, params, version = manifest or (caches.IMPORTED, {"source": proposals.source},
                                               caches.IMPORT_VERSION)
        return caches.write_cache(proposals, dst, method, params, version, progress)
    if fmt == "fast-rcnn":
        data = matlab.build(proposals, str(dst))
    elif fmt in pickled.PICKLED:
        data = pickled.build(proposals, fmt, str(dst))
    else:
        raise DetectionError(f"format {fmt!r}: not one of {', '.join(FORMATS)}")
    write_atomic(dst, data)
    return 0


def convert_proposals(src: str | os.PathLike, dst: str | os.PathLike, to: str | None = None, *,
                      source_format: str | None = None, ids: Sequence | None = None,
                      dataset=None, progress: bool = False) -> Conversion:
    """Convert the proposals in ``src`` to format ``to`` (default: `target_format` of ``dst``)
    at ``dst``: the images ``ids``, or those of ``dataset`` (an `eval.datasets.Dataset`) in its
    order (`common.dataset_ids`), or, where neither is given and neither end goes by position,
    every image ``src`` holds. ``source_format``: default, found from the content. ``dst``
    must not be ``src``; an existing cache there must hold this same import (it is resumed)."""
    to = to or target_format(dst)
    for name in (to, source_format):
        if name is not None and name not in FORMATS:
            raise DetectionError(f"format {name!r}: not one of {', '.join(FORMATS)}")
    if ids is not None and dataset is not None:
        raise DetectionError("give the images as ids or as a dataset, not both")
    check_output(dst, to, "output", [src])
    fmt, found, manifest = _open_source(src, source_format)
    by_position = to in POSITIONAL or (found is not None and found.ids is None)
    wanted = list(ids) if ids is not None else (
        dataset_ids(dataset, by_position) if dataset is not None else None)
    if wanted is None and by_position:
        raise _needs_order(dst, to) if to in POSITIONAL else _needs_order(src, fmt)
    if wanted is not None:
        check_unique(wanted, "the images listed")
    if found is None:
        found, left_out = caches.read_cache(src, wanted, progress), 0
    else:
        left_out = 0 if found.ids is None or wanted is None else len(found.ids) - len(wanted)
        if found.ids is None:  # the images' ids came from the order given: part of the import
            manifest[1]["order_sha256"] = _sha256("\n".join(map(str, wanted)).encode())
        found = found if wanted is None else select(found, wanted, str(src))
    already = write_proposals(found, dst, to, manifest, progress)
    return Conversion(fmt, to, len(found.boxes), found.box_count(), left_out, already)


def check_output(dst: str | os.PathLike, fmt: str, flag: str, inputs: Sequence) -> None:
    """``dst`` can be written as ``fmt`` (a folder for a cache, a file otherwise) and is none
    of ``inputs``: checked before any work (`eval.outputs`)."""
    if fmt == "cache":
        check_output_dir(dst, flag, inputs)
    else:
        check_output_file(dst, flag, inputs)


def _open_source(src: str | os.PathLike, fmt: str | None
                 ) -> tuple[str, Proposals | None, tuple[str, dict, int | None]]:
    """(format, the file's proposals or None for a cache, the manifest a cache made from it
    gets: the cache's own, or an import naming the format and the file's SHA-256)."""
    path = Path(src)
    if fmt == "cache" or (fmt is None and path.is_dir()):
        cache = ProposalCache.open(path)
        return "cache", None, (cache.method, cache.params, cache.version)
    with open_input(path, "pickle", _FIX) as f:
        head = f.read(128)
    is_mat = fmt == "fast-rcnn" or (fmt is None and matlab.is_matlab(head))
    data = read_bytes(path, "proposals" if is_mat else "pickle", _FIX)
    if is_mat:
        fmt, found = "fast-rcnn", matlab.parse(data, str(path))
    else:
        value = parse_pickle(data, str(path), _FIX)
        fmt = fmt or pickled.pickled_format(value, str(path))
        found = pickled.parse(value, fmt, str(path))
    return fmt, found, (caches.IMPORTED, {"format": fmt, "sha256": _sha256(data)},
                        caches.IMPORT_VERSION)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _needs_order(path: str | os.PathLike, fmt: str) -> DetectionError:
    return DetectionError(f"{path}: a {fmt} file is read by position, in its dataset's order: "
                          "give the dataset (--gt, with the --split the other toolkit uses) or "
                          "the image ids in order (--ids FILE)")
