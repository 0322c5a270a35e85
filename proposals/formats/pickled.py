"""The pickled proposal files: detectron2's, Detectron's (and wetectron's) and mmdetection's.

    detectron2   {"ids": [str], "boxes": [float32 [N, 4]], "objectness_logits": [float32 [N]],
                  "bbox_mode": 0}                 continuous XYXY_ABS; ids matched by str(id)
    detectron    {"boxes": [float32 [N, 4]], "scores": [float32 [N]], "indexes": [int | str]}
                 0-based inclusive pixels (width = x2 - x1 + 1); Python 2 readable
    mmdet        [float32 [N, 5] (x1, y1, x2, y2, score)], one per image in dataset order,
                 continuous (mmdetection 2.x)

Read (`parse`): the file's data (from `eval.pickles.read_pickle`, data only) is checked entry by
entry, and each image's boxes come out continuous and ranked by score (ties keep the file's
order). Written (`build`): ranked boxes get the scores `rank_scores` gives, and the pickle is
`eval.pickles.portable_pickle` (NumPy 1.x readable; Python 2 readable for Detectron).
"""
from __future__ import annotations

import numpy as np

from eval.errors import DetectionError
from eval.inputs import shown
from eval.pickles import portable_pickle
from proposals.formats.common import (Proposals, as_list, box_array, check_unique, from_inclusive,
                                      image_id, numeric_id, rank_scores, ranked, score_array,
                                      to_inclusive)

PICKLED = ("detectron2", "detectron", "mmdet")
# detectron2's BoxMode values that a proposal file may hold: XYXY_ABS and XYWH_ABS.
_XYXY_ABS, _XYWH_ABS = 0, 1


def pickled_format(value: object, where: str) -> str:
    """Which toolkit's proposal file ``value`` (a loaded pickle) is, by its shape."""
    if isinstance(value, (list, tuple)):
        return "mmdet"
    keys = set(value) if isinstance(value, dict) else set()
    detectron2 = keys & {"objectness_logits", "bbox_mode"}
    detectron = keys & {"indexes", "scores"}
    if "boxes" in keys and detectron2 and not detectron:
        return "detectron2"
    if "boxes" in keys and detectron and not detectron2:
        return "detectron"
    if {"boxes", "ids"} <= keys:
        raise DetectionError(f"{where}: boxes and ids without scores: a detectron2 file "
                             "(continuous boxes) or a Detectron one (inclusive pixels, a pixel "
                             "narrower)? Say which with --from detectron2 or --from detectron")
    found = f"a dict of {shown(sorted(map(str, keys)), 120)}" if isinstance(value, dict) else \
        f"a {type(value).__name__}"
    raise DetectionError(f"{where}: {found}, not a proposal file of detectron2 (ids, boxes, "
                         "objectness_logits), Detectron (boxes, scores, indexes) or mmdetection "
                         "(a list of [N, 5] arrays)")


def parse(value: object, fmt: str, where: str) -> Proposals:
    """The `Proposals` of a loaded pickle of format ``fmt`` (one of `PICKLED`)."""
    if fmt == "mmdet":
        return _parse_mmdet(value, where)
    if not isinstance(value, dict):
        raise DetectionError(f"{where}: a {type(value).__name__}, not the dict of a {fmt} "
                             "proposal file")
    if fmt == "detectron2":
        id_key, score_key = "ids", "objectness_logits"
        convert = _detectron2_boxes(value.get("bbox_mode", _XYXY_ABS), where)
    else:  # Detectron's reader takes 'ids' where there are no 'indexes' (its compat fix)
        id_key, score_key = ("indexes" if "indexes" in value else "ids"), "scores"
        convert = from_inclusive
    missing = [key for key in (id_key, "boxes") if key not in value]
    if missing:
        raise DetectionError(f"{where}: no {missing[0]!r} in this {fmt} proposal file")
    ids = [image_id(i, where) for i in as_list(value[id_key], where, id_key)]
    boxes = as_list(value["boxes"], where, "boxes")
    scores = as_list(value[score_key], where, score_key) if score_key in value else None
    _check_lengths(where, **{id_key: ids, "boxes": boxes, score_key: scores})
    check_unique(ids, where)
    _check_unshared(boxes, where)
    out = []
    for k, (name, array) in enumerate(zip(ids, boxes)):
        here = f"{where}: image {shown(name)} (entry {k + 1})"
        xyxy = convert(box_array(array, (4,), here))
        out.append(ranked(xyxy, None if scores is None else
                          score_array(scores[k], len(xyxy), here), here))
    return Proposals(ids, out, where)


def _parse_mmdet(value: object, where: str) -> Proposals:
    """A list of [N, 4] or [N, 5] (the fifth column a score) arrays, one per image."""
    entries = as_list(value, where, "the file")
    _check_unshared(entries, where)
    out = []
    for k, array in enumerate(entries):
        here = f"{where}: entry {k + 1}"
        boxes = box_array(array, (5, 4), here)
        out.append(ranked(boxes[:, :4], boxes[:, 4] if boxes.shape[1] == 5 else None, here))
    return Proposals(None, out, where)


def _detectron2_boxes(mode: object, where: str):
    """The conversion to continuous xyxy of detectron2's ``bbox_mode``."""
    number = int(mode) if isinstance(mode, (int, np.integer)) and not isinstance(mode, bool) \
        else None
    if number == _XYXY_ABS:
        return lambda boxes: boxes
    if number == _XYWH_ABS:
        return lambda boxes: np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)
    raise DetectionError(f"{where}: bbox_mode {shown(mode)}; only 0 (XYXY_ABS) and 1 (XYWH_ABS) "
                         "are absolute pixel boxes, which this command reads")


def _check_lengths(where: str, **fields: list | None) -> None:
    """Every given field lists one entry per image."""
    given = {name: len(entries) for name, entries in fields.items() if entries is not None}
    if len(set(given.values())) > 1:
        counts = ", ".join(f"{count} {name}" for name, count in given.items())
        raise DetectionError(f"{where}: {counts}; a proposal file has one of each per image")


def _check_unshared(arrays: list, where: str) -> None:
    """Refuse one array given for two images: a pickle may refer to one object many times, so
    a few bytes could otherwise stand for any number of copies of a large array."""
    seen: dict[int, int] = {}
    for k, array in enumerate(arrays):
        if isinstance(array, np.ndarray) and array.size:
            first = seen.setdefault(id(array), k)
            if first != k:
                raise DetectionError(f"{where}: entries {first + 1} and {k + 1} are one and the "
                                     "same array (a damaged or crafted file)")


def build(proposals: Proposals, fmt: str, where: str) -> bytes:
    """The pickle of format ``fmt`` holding ``proposals`` (ids needed but for mmdet);
    ``where`` names the file to be in messages."""
    ranks = [rank_scores(len(b)) for b in proposals.boxes]
    if fmt == "detectron2":
        value = {"ids": [str(i) for i in proposals.ids], "boxes": proposals.boxes,
                 "objectness_logits": ranks, "bbox_mode": _XYXY_ABS}
    elif fmt == "detectron":
        value = {"boxes": [to_inclusive(b).astype(np.float32) for b in proposals.boxes],
                 "scores": ranks, "indexes": [numeric_id(i) for i in proposals.ids]}
        check_unique(value["indexes"], f"{where} (indexes)")  # '5' and '005' would both be 5
    else:
        value = [np.concatenate([b, r[:, None]], axis=1) for b, r in zip(proposals.boxes, ranks)]
    return portable_pickle(value, python2=fmt == "detectron")
