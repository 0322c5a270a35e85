"""Detections as they leave the toolkit: COCO results JSON, mapped onto a dataset."""
from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from eval.boxes import xywh_to_xyxy, xyxy_to_xywh
from eval.errors import DetectionError
from eval.inputs import is_number, parse_json, read_text, shown


@dataclass(frozen=True, eq=False)
class Detections:
    """The detections of one results file, mapped onto a `Dataset`, in file order.

    ``image_index`` int64 [N] indexes ``dataset.images``; ``labels`` int64 [N] in 1..K;
    ``bbox`` float64 [N, 4] is ``(x, y, w, h)`` exactly as in the results file (COCO's own
    format, kept so that the COCO protocol reproduces pycocotools bit for bit); ``scores``
    float64 [N]. File order matters: every devkit breaks score ties by it.
    """

    image_index: np.ndarray
    labels: np.ndarray
    bbox: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def boxes(self) -> np.ndarray:
        """float64 [N, 4] ``(x1, y1, x2, y2)`` with x2 = x + w, as pycocotools computes it."""
        return xywh_to_xyxy(self.bbox)


def load_results(source: str | os.PathLike | list, image_ids: Sequence, category_ids: Sequence[int],
                 class_names: Sequence[str]) -> Detections:
    """Read a COCO results list (or its JSON file) and map it onto a dataset's images and classes.

    Each entry needs ``image_id``, ``category_id`` (the dataset's own id) or ``category_name``,
    ``bbox`` ``[x, y, w, h]`` and ``score``. ``image_ids`` lists the dataset's image ids in its
    image order; label ``i`` is ``category_ids[i - 1]`` / ``class_names[i - 1]``. Anything
    malformed or unknown raises `DetectionError` naming the file and the entry.
    """
    where = str(source) if isinstance(source, (str, os.PathLike)) else "<results list>"
    results, may_hold_bools = _read_json_list(source, where)
    image_index = _map_images(results, image_ids, where)
    labels = _map_categories(results, category_ids, class_names, where)
    bbox, scores = _numeric_fields(results, where, may_hold_bools)
    return Detections(image_index, labels, bbox, scores)


def _read_json_list(source, where: str) -> tuple[list, bool]:
    """The entries, and False when they certainly hold no JSON true/false (a file whose text
    has neither word: the common case, found at C speed)."""
    if isinstance(source, (str, os.PathLike)):
        text = read_text(source, "detections", _FIX)
        results = parse_json(text, where, _FIX)
        may_hold_bools = "true" in text or "false" in text
    else:
        results, may_hold_bools = source, True
    if not isinstance(results, list):
        raise DetectionError(f"{where}: expected a JSON list of detections "
                             f"(COCO results format), got {type(results).__name__}")
    for i, entry in enumerate(results):
        if not isinstance(entry, dict):
            raise DetectionError(f"{where}: entry {i} is {type(entry).__name__}, expected an object "
                                 "with image_id, category_id, bbox and score")
    return results, may_hold_bools


_FIX = "pass a COCO results file (a UTF-8 JSON list of detections)"


def _map_images(results: list, image_ids: Sequence, where: str) -> np.ndarray:
    index = {image_id: i for i, image_id in enumerate(image_ids)}
    # Datasets read from VOC/ILSVRC folders have string ids (file stems); accept 5 for "5".
    index.update({str(image_id): i for i, image_id in enumerate(image_ids)})
    out = np.empty(len(results), np.int64)
    for i, entry in enumerate(results):
        if "image_id" not in entry:
            raise DetectionError(f"{where}: entry {i} has no image_id")
        image_id = entry["image_id"]
        # True == 1 in Python: a boolean must not pass for image 1.
        found = index.get(image_id) if type(image_id) in (int, str) else None
        if found is None:
            raise DetectionError(f"{where}: entry {i} names image_id {shown(image_id, 80)}, which "
                                 "is not in the ground truth; evaluate against the matching "
                                 "dataset")
        out[i] = found
    return out


def _map_categories(results: list, category_ids: Sequence[int], class_names: Sequence[str],
                    where: str) -> np.ndarray:
    by_id = {int(c): label for label, c in enumerate(category_ids, start=1)}
    by_name = {name: label for label, name in enumerate(class_names, start=1)}
    out = np.empty(len(results), np.int64)
    for i, entry in enumerate(results):
        category = entry.get("category_id")
        if category is not None:
            # type(), not isinstance: True would pass for category 1 (and 1.0 is not an id).
            label = by_id.get(category) if type(category) is int else None
        elif "category_name" in entry:
            name = entry["category_name"]
            label = by_name.get(name) if type(name) is str else None
        else:
            raise DetectionError(f"{where}: entry {i} has neither category_id nor category_name")
        if label is None:
            key = "category_id" if category is not None else "category_name"
            raise DetectionError(f"{where}: entry {i} names {key} {shown(entry[key], 80)}, which is "
                                 f"not a class of the ground truth ({len(class_names)} classes); "
                                 "fix the class mapping")
        out[i] = label
    return out


def _numeric_fields(results: list, where: str, may_hold_bools: bool
                    ) -> tuple[np.ndarray, np.ndarray]:
    """bbox float64 [N, 4] and score float64 [N], checked: plain finite numbers, w, h >= 0."""
    box_values = [entry.get("bbox") for entry in results]
    score_values = [entry.get("score") for entry in results]
    bbox = _as_numbers(box_values, (len(box_values), 4))
    scores = _as_numbers(score_values, (len(score_values),))
    if (bbox is None or scores is None
            or may_hold_bools and _has_bool(box_values, score_values)):
        bbox, scores = _checked_numbers(results, where)
    bad = ~np.isfinite(bbox).all(axis=1) | ~np.isfinite(scores)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DetectionError(f"{where}: entry {i} has a NaN or infinite bbox or score "
                             f"({int(bad.sum())} such entries); fix the detector output")
    negative = (bbox[:, 2] < 0) | (bbox[:, 3] < 0)
    if negative.any():
        i = int(np.flatnonzero(negative)[0])
        raise DetectionError(f"{where}: entry {i} has negative width or height in bbox "
                             f"{results[i]['bbox']} ({int(negative.sum())} such entries); bbox is "
                             "[x, y, w, h], not [x1, y1, x2, y2]")
    return bbox, scores


def _as_numbers(values: list, shape: tuple[int, ...]) -> np.ndarray | None:
    """float64 array of ``shape`` when every value is a plain number, else None (fast path)."""
    if not values:
        return np.zeros(shape)
    try:
        array = np.array(values)
    except ValueError:  # ragged lists
        return None
    if array.shape != shape or array.dtype.kind not in "iuf":
        return None
    return array.astype(np.float64)


def _has_bool(boxes: list, scores: list) -> bool:
    """True when a bbox value or a score is a JSON true/false. NumPy reads True as 1, so the
    fast path cannot see them; the types are collected at C speed (linear, no Python loop)."""
    return bool in set(map(type, itertools.chain.from_iterable(boxes))) or bool in set(
        map(type, scores))


def _checked_numbers(results: list, where: str) -> tuple[np.ndarray, np.ndarray]:
    """The slow path: check every entry (the first bad one raises), then bbox float64 [N, 4]
    and score float64 [N] (e.g. when a large integer made NumPy fall back to objects)."""
    for i, entry in enumerate(results):
        box, score = entry.get("bbox"), entry.get("score")
        if not (type(box) is list and len(box) == 4 and all(map(is_number, box))):
            raise DetectionError(f"{where}: entry {i} has bbox {shown(box, 80)}; expected "
                                 "[x, y, w, h] finite numbers")
        if not is_number(score):
            raise DetectionError(f"{where}: entry {i} has score {shown(score, 80)}; expected a "
                                 "finite number")
    return (np.array([e["bbox"] for e in results], np.float64).reshape(-1, 4),
            np.array([e["score"] for e in results], np.float64))


def to_results(image_id: int | str, category_ids: Sequence[int], boxes, scores, labels) -> list[dict]:
    """One image's detections as COCO results entries (the toolkit's exchange format).

    ``boxes`` [M, 4] ``(x1, y1, x2, y2)`` in absolute pixels, ``scores`` [M], ``labels`` [M] in
    1..K (arrays or CPU tensors); label ``i`` becomes ``category_ids[i - 1]``, the dataset's own
    id. Entries are ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` with plain
    Python floats, in the order given.
    """
    xywh = xyxy_to_xywh(boxes)
    ids = np.asarray(category_ids, dtype=np.int64)[np.asarray(labels, dtype=np.int64) - 1]
    return [{"image_id": image_id, "category_id": int(c), "bbox": [float(v) for v in box],
             "score": float(s)}
            for c, box, s in zip(ids, xywh, np.asarray(scores, dtype=np.float64))]


def restrict_detections(dets: Detections, image_keep: np.ndarray, category_keep: np.ndarray
                        ) -> Detections:
    """The detections on the images ``image_keep`` bool [I] and of the labels whose
    ``category_keep`` bool [K] is set, renumbered onto that subset (as pycocotools'
    ``params.imgIds`` / ``params.catIds`` drop the others). File order kept."""
    keep = image_keep[dets.image_index] & category_keep[dets.labels - 1]
    image_pos = np.cumsum(image_keep) - 1
    label = np.cumsum(category_keep)
    return Detections(image_pos[dets.image_index[keep]], label[dets.labels[keep] - 1],
                      dets.bbox[keep], dets.scores[keep])
