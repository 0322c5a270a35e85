"""What the proposal formats share: `Proposals`, the checks every file's boxes pass, image ids
and their order, scores and ranks, and the pixel conventions of the files (converted here, at
the edge: inside, boxes are continuous ``(x1, y1, x2, y2)``, width = x2 - x1)."""
from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eval.errors import DetectionError
from eval.inputs import read_json, read_text, shown

FORMATS = ("cache", "detectron2", "detectron", "mmdet", "fast-rcnn")
# The formats whose readers take a file's images by position, in their dataset's order (they
# store no ids, or their reader ignores them: Fast R-CNN's).
POSITIONAL = ("mmdet", "fast-rcnn")
# Written scores are exact ranks in float32 up to 2**24 boxes an image.
_MAX_RANKED = 2**24
_DIGITS = re.compile(r"[0-9]+")


@dataclass
class Proposals:
    """The proposals of some images, as every format is read into and written from.

    ``ids``: the images in order (str or int), or None where the file names none (its
    images are those of a dataset, by position). ``boxes[i]``: float32 [N, 4] continuous
    ``(x1, y1, x2, y2)`` pixel boxes of image i, best first. ``source``: what they came from.
    """

    ids: list | None
    boxes: list[np.ndarray]
    source: str

    def box_count(self) -> int:
        return sum(len(b) for b in self.boxes)


def as_list(value: object, where: str, what: str) -> list:
    """A list, tuple or 1-D array of a file (``what`` names it) as a list; else one error."""
    if isinstance(value, np.ndarray) and value.ndim == 1:
        return value.tolist()  # ids as an array of numbers or strings
    if not isinstance(value, (list, tuple)):
        raise DetectionError(f"{where}: {what} is a {type(value).__name__}, not a list")
    return list(value)


def box_array(value: object, columns: tuple[int, ...], where: str) -> np.ndarray:
    """A file's boxes of one image as float64 [N, C] (C one of ``columns``), checked: a NumPy
    array of numbers, two dimensions, finite. An empty array of any shape is [0, C]."""
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "iuf":
        kind = value.dtype if isinstance(value, np.ndarray) else type(value).__name__
        raise DetectionError(f"{where}: boxes of {kind}, not a NumPy array of numbers")
    if value.size == 0:
        return np.zeros((0, columns[0]), np.float64)
    if value.ndim != 2 or value.shape[1] not in columns:
        wanted = " or ".join(f"[N, {c}]" for c in columns)
        raise DetectionError(f"{where}: boxes of shape {list(value.shape)}, not {wanted}")
    boxes = value.astype(np.float64)
    if not np.isfinite(boxes).all():
        raise DetectionError(f"{where}: boxes hold NaN or infinite values")
    return boxes


def score_array(value: object, count: int, where: str) -> np.ndarray:
    """A file's scores of one image's ``count`` boxes as float64 [count], checked."""
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "iuf":
        raise DetectionError(f"{where}: scores are not a NumPy array of numbers")
    scores = value.astype(np.float64).reshape(-1)
    if len(scores) != count or not np.isfinite(scores).all():
        raise DetectionError(f"{where}: {len(scores)} scores for {count} boxes, or scores that "
                             "are NaN or infinite")
    return scores


def ranked(boxes: np.ndarray, scores: np.ndarray | None, where: str) -> np.ndarray:
    """Continuous boxes [N, 4] as the cache holds them: float32, best score first (ties keep
    the file's order: a stable sort), each with x1 <= x2 and y1 <= y2."""
    if scores is not None:
        boxes = boxes[np.argsort(-scores, kind="stable")]
    bad = np.flatnonzero((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1]))
    if len(bad):
        raise DetectionError(f"{where}: box {bad[0]} is {boxes[bad[0]].tolist()} in (x1, y1, x2, "
                             f"y2) pixels, with x2 < x1 or y2 < y1 ({len(bad)} such boxes)")
    return boxes.astype(np.float32)


def rank_scores(count: int) -> np.ndarray:
    """float32 [count] scores for boxes ranked best first: 0, -1, -2, ... (minus the rank).
    The cache keeps ranks, not confidences; these are strictly decreasing, so a reader that
    sorts by score (detectron2 does, unstably) keeps the order exactly."""
    if count > _MAX_RANKED:
        raise DetectionError(f"{count} boxes for one image: over the {_MAX_RANKED} whose ranks "
                             "float32 scores hold exactly")
    return np.arange(0, -count, -1, dtype=np.float32)


def image_id(value: object, where: str) -> int | str:
    """An id of a file (a str, or an integer: COCO's and Detectron's are) as int or str."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, str) and value:
        return value
    raise DetectionError(f"{where}: image id {shown(value)} is not a string or an integer")


def check_unique(ids: Sequence, where: str) -> None:
    """Refuse an id listed twice (by its string: 5 and '5' are one image), naming it."""
    seen: dict[str, int] = {}
    for position, value in enumerate(ids):
        first = seen.setdefault(str(value), position)
        if first != position:
            raise DetectionError(f"{where}: image {shown(value)} is listed twice (entries "
                                 f"{first + 1} and {position + 1}); each image once")


def numeric_id(value: int | str) -> int | str:
    """An id as Detectron and wetectron store it: an integer for an int or a string of digits
    (wetectron looks VOC's '000005' up as 5), else the string."""
    return int(value) if isinstance(value, int) or _DIGITS.fullmatch(value) else value


def select(found: Proposals, wanted: Sequence, where: str) -> Proposals:
    """``found``'s proposals of the images ``wanted``, in that order, under those ids.

    A file that names no images must hold exactly ``len(wanted)`` (its dataset's order). Else
    each wanted id is looked up by its string, or, a string of digits, as the integer a
    Detectron file stores ('000005' is 5); a wanted image the file lacks is one error.
    """
    if found.ids is None:
        if len(found.boxes) != len(wanted):
            raise DetectionError(f"{where}: holds {len(found.boxes)} images by position, but "
                                 f"{len(wanted)} are listed; list the images of the dataset it "
                                 "was made for, in its order (--gt with its --split, or --ids)")
        return Proposals(list(wanted), found.boxes, found.source)
    by_text = {str(i): k for k, i in enumerate(found.ids)}
    by_number = {i: k for k, i in enumerate(found.ids) if isinstance(i, int)}
    picks, missing = [], []
    for value in wanted:
        k = by_text.get(str(value))
        if k is None and isinstance(value, str) and _DIGITS.fullmatch(value):
            k = by_number.get(int(value))
        (missing if k is None else picks).append(value if k is None else k)
    if missing:
        raise DetectionError(f"{where}: no proposals for image {shown(missing[0])} ({len(missing)} "
                             f"of the {len(wanted)} images listed); is it the file of this "
                             "dataset and split?")
    if len(set(picks)) != len(picks):
        raise DetectionError(f"{where}: two listed images (such as '5' and '005') are one "
                             "entry of the file; list each image once")
    return Proposals(list(wanted), [found.boxes[k] for k in picks], found.source)


def read_id_list(path: str | os.PathLike) -> list[str]:
    """Image ids, one a line (blank lines skipped; surrounding spaces dropped), each once."""
    fix = "give a text file of image ids, one a line"
    ids = [line.strip() for line in read_text(path, "list", fix).splitlines() if line.strip()]
    if not ids:
        raise DetectionError(f"{path}: lists no image ids; {fix}")
    check_unique(ids, str(path))
    return ids


def dataset_ids(dataset, by_position: bool) -> list:
    """The ids of an `eval.datasets.Dataset` in the order a toolkit lists that dataset.

    Ours (sorted by id; VOC's own split files are sorted too), except where the file is read
    by position (``by_position``) and the dataset is a COCO JSON: mmdetection and Fast R-CNN
    list COCO images as pycocotools' ``getImgIds()`` does, in the JSON's order.
    """
    ids = [record.image_id for record in dataset.images]
    source = Path(dataset.source)
    if not by_position or source.suffix.lower() != ".json":
        return ids
    images = read_json(source, "ground truth").get("images", [])
    position = {entry["id"]: k for k, entry in enumerate(images)}
    return sorted(ids, key=position.__getitem__)


# The files' pixel conventions. Continuous [x1, x2) holds the pixels x1 .. x2 - 1 (0-based).

def from_inclusive(boxes: np.ndarray) -> np.ndarray:
    """Detectron's 0-based inclusive pixel boxes (width = x2 - x1 + 1) -> continuous."""
    return boxes + np.array([0.0, 0.0, 1.0, 1.0])


def to_inclusive(boxes: np.ndarray) -> np.ndarray:
    """Continuous boxes -> Detectron's 0-based inclusive pixels."""
    return boxes.astype(np.float64) - np.array([0.0, 0.0, 1.0, 1.0])


def from_matlab(boxes: np.ndarray) -> np.ndarray:
    """Fast R-CNN's MATLAB boxes (y1, x1, y2, x2), 1-based inclusive pixels -> continuous:
    pixel columns x1 .. x2 (1-based) are [x1 - 1, x2)."""
    return boxes[:, [1, 0, 3, 2]] - np.array([1.0, 1.0, 0.0, 0.0])


def to_matlab(boxes: np.ndarray) -> np.ndarray:
    """Continuous boxes -> Fast R-CNN's (y1, x1, y2, x2) 1-based inclusive whole pixels:
    each edge rounded to the nearest pixel edge (ties to even), so integer boxes round-trip
    exactly and others to the pixel."""
    edges = np.rint(boxes.astype(np.float64))
    return edges[:, [1, 0, 3, 2]] + np.array([1.0, 1.0, 0.0, 0.0])
