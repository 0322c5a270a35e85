"""From per-region class probabilities to detections: R-CNN's test-time post-processing.

Per class: keep regions scoring above a threshold, (move each box by its class's regression
deltas), clip to the image, drop empty boxes, greedy NMS at IoU 0.3; then the top-k over all
classes. Boxes are ``(x1, y1, x2, y2)`` in pixels of the original image; labels are 1..C.

NMS threshold semantics (torchvision's): a box is suppressed by a higher-scoring box of its class
when their IoU is *strictly greater* than ``nms_iou``. The IoU is computed in float32 and compared
with ``nms_iou`` as a double, so a pair built at IoU 0.3 exactly (e.g. 30 / 100) computes as
0.30000001 > 0.3 and is suppressed, while at a threshold that float32 represents exactly (0.25,
0.5) an IoU equal to the threshold is kept.

Numpy only (no torch): it runs after the networks, whichever backend ran them, so that the ONNX
Runtime path never imports torch. The results are those of ``torchvision.ops``
(``clip_boxes_to_image``, ``remove_small_boxes``, ``batched_nms`` on CPU), bit for bit:
tests/detector/test_postprocess.py holds them equal to the torch version this replaced. With box
deltas, one difference: `detector.box_coder.decode` takes the correctly rounded float32 exp,
where torch's is an ulp off on ~1% of inputs (a box may move by an ulp).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from detector.box_coder import decode
from eval.errors import DetectionError
from proposals.defaults import MAX_PER_IMAGE, NMS_IOU, SCORE_THRESHOLD

# A box clipped to the image can collapse to zero width or height (it lay outside): such boxes
# are dropped. 0.01 px as torchvision's RoIHeads.
MIN_SIDE = 1e-2
# torchvision's batched_nms on CPU, whose results these keep: above 1,000 boxes it runs NMS one
# class at a time; up to that, once over all boxes with each class's boxes moved out of the
# others' way (its "coordinate trick"), which rounds their coordinates differently.
_PER_CLASS_ABOVE = 1000
# Labels with up to _MATRIX_MAX boxes get NMS from their full IoU matrix, batched
# _MATRIX_ELEMENTS pairs at a time; larger ones (`nms`) compare _BLOCK boxes at a time with all
# the others left. Measured fastest of 32-256 and 4-64 on 1-1,000 classes (the exact results
# do not depend on them).
_MATRIX_MAX = 64
_MATRIX_ELEMENTS = 1 << 20
_BLOCK = 32


@dataclass(frozen=True)
class PostProcess:
    """R-CNN's test-time post-processing with its settings, checked when made (as DETR's
    ``PostProcess``): ``PostProcess(score_threshold=0.05)(boxes, probs, deltas, (h, w))``.

    score_threshold: keep (region, class) pairs with probability strictly above this
        (`SCORE_THRESHOLD`: low, so that mAP sees the whole precision-recall curve).
    nms_iou: suppress boxes whose IoU with a higher-scoring box of the same class is strictly
        above this (R-CNN's 0.3; see the module docstring).
    max_per_image: keep the highest-scoring detections over all classes (COCO's maxDets);
        None keeps all.
    """

    score_threshold: float = SCORE_THRESHOLD
    nms_iou: float = NMS_IOU
    max_per_image: int | None = MAX_PER_IMAGE

    def __post_init__(self) -> None:
        if not (_is_real(self.score_threshold) and 0 <= self.score_threshold <= 1):
            raise DetectionError(_named("score_threshold", self.score_threshold,
                                        "must be in [0, 1] (a softmax probability)"))
        if not (_is_real(self.nms_iou) and 0 < self.nms_iou <= 1):
            raise DetectionError(_named("nms_iou", self.nms_iou, "must be in (0, 1]"))
        count = self.max_per_image
        if count is not None and (not isinstance(count, int) or isinstance(count, bool)
                                  or count < 1):
            raise DetectionError(_named("max_per_image", count, "must be a whole number of at "
                                        "least 1 (or None for all)"))

    def __call__(self, boxes: np.ndarray, scores: np.ndarray, box_deltas: np.ndarray | None,
                 image_size: tuple[int, int], background: bool = True,
                 box_stds: Sequence[float] | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`postprocess` with these settings."""
        return postprocess(boxes, scores, box_deltas, image_size, self.score_threshold,
                           self.nms_iou, self.max_per_image, background, box_stds)


def _named(keyword: str, value: object, rule: str) -> str:
    """An error naming the command's flag and the keyword, e.g. ``--nms-iou 2.0 (nms_iou=2.0):
    must be in (0, 1]``: the same check serves `detector.Detector.load` and the commands."""
    return f"--{keyword.replace('_', '-')} {value} ({keyword}={value!r}): {rule}"


def _is_real(value: object) -> bool:
    """A finite int or float (not a boolean)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def postprocess(boxes: np.ndarray, scores: np.ndarray, box_deltas: np.ndarray | None,
                image_size: tuple[int, int], score_threshold: float, nms_iou: float,
                max_per_image: int | None, background: bool = True,
                box_stds: Sequence[float] | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Detections of one image from its regions' class probabilities (the settings as
    `PostProcess` checks them; call that instead where the values come from a user).

    Args:
        boxes: ``ndarray[N, 4]`` proposals, pixels of the original image.
        scores: ``ndarray[N, C + 1]`` class probabilities with column 0 = background (softmax,
            averaged over an ensemble); with ``background=False``, ``ndarray[N, C]`` (the
            1,000-class ImageNet classifier).
        box_deltas: ``ndarray[N, C, 4]`` class-specific regression deltas in
            ``detector.box_coder`` units (encoded with ``box_stds``), or None to keep proposals.
        image_size: ``(height, width)`` of the original image, to clip boxes to.
        score_threshold: keep (region, class) pairs with probability strictly above this.
        nms_iou: suppress boxes whose IoU with a higher-scoring box of the same class is
            strictly above this (see the module docstring).
        max_per_image: keep the highest-scoring detections over all classes; None keeps all.
    Returns:
        ``boxes [M, 4]`` float32 (float64 where deltas are given and they or the boxes are
        float64), ``scores [M]`` float32, ``labels [M]`` int64 in 1..C, sorted by score
        descending, then label, then proposal order.
    """
    boxes, scores = np.asarray(boxes), np.asarray(scores)
    box_deltas = None if box_deltas is None else np.asarray(box_deltas)
    class_scores = _class_scores(boxes, scores, box_deltas, background)
    # Candidates in (class, proposal) order, so that the stable sort by score below breaks ties
    # by label, then proposal. The threshold is compared in the scores' dtype, as torch does.
    labels, index = np.nonzero(class_scores.T > class_scores.dtype.type(score_threshold))
    cand_scores = class_scores[index, labels].astype(np.float32)
    if box_deltas is None:
        cand_boxes = boxes[index].astype(np.float32)
    else:
        cand_boxes = decode(box_deltas[index, labels], boxes[index], box_stds)
    cand_boxes = clip_boxes_to_image(cand_boxes, image_size)

    keep = np.flatnonzero(_large_enough(cand_boxes, MIN_SIDE))
    keep = keep[np.argsort(-cand_scores[keep], kind="stable")]
    cand_boxes, cand_scores, labels = cand_boxes[keep], cand_scores[keep], labels[keep]
    keep = batched_nms(cand_boxes, labels, nms_iou)[:max_per_image]
    return cand_boxes[keep], cand_scores[keep], labels[keep].astype(np.int64) + 1


def clip_boxes_to_image(boxes: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """``[N, 4]`` boxes with x clamped to ``[0, width]`` and y to ``[0, height]`` (in the boxes'
    dtype; NaN stays NaN), as ``torchvision.ops.clip_boxes_to_image``."""
    height, width = image_size
    upper = np.array([width, height, width, height], dtype=boxes.dtype)
    return np.clip(boxes, boxes.dtype.type(0), upper)


def _large_enough(boxes: np.ndarray, min_size: float) -> np.ndarray:
    """bool ``[N]``: width and height both at least ``min_size`` (compared in the boxes'
    dtype), as ``torchvision.ops.remove_small_boxes``; a NaN box is not."""
    min_size = boxes.dtype.type(min_size)
    return (boxes[:, 2] - boxes[:, 0] >= min_size) & (boxes[:, 3] - boxes[:, 1] >= min_size)


def batched_nms(boxes: np.ndarray, labels: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Positions (ascending) that greedy NMS keeps within each label, for boxes ``[N, 4]`` already
    sorted by score descending; the same set as ``torchvision.ops.batched_nms`` on CPU."""
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(labels, kind="stable")  # each label's positions stay in score order
    starts = np.flatnonzero(np.diff(labels[order])) + 1
    groups = np.split(order, starts)
    if len(boxes) <= _PER_CLASS_ABOVE:
        # Move each label's boxes beyond the others' (labels * (max + 1), in the boxes' dtype as
        # torchvision computes it), then NMS one label at a time as long as no label's x range
        # overlaps the next one's: true unless coordinates pass 2 ** 24, where float32 rounding
        # can make labels meet, and torchvision's single NMS over all lets them suppress each
        # other (then so do these).
        boxes = boxes + labels.astype(boxes.dtype)[:, None] * (boxes.max() + boxes.dtype.type(1))
        first = np.r_[0, starts]
        right = np.maximum.reduceat(boxes[order, 2], first)
        left = np.minimum.reduceat(boxes[order, 0], first)
        if not np.all(right[:-1] <= left[1:]):
            groups = [np.arange(len(boxes))]
    return np.sort(np.concatenate(_nms_groups(boxes, groups, iou_threshold)))


def _nms_groups(boxes: np.ndarray, groups: list[np.ndarray], iou_threshold: float
                ) -> list[np.ndarray]:
    """`nms` within each group of positions (each in score order): the kept positions of each.
    Small groups of about the same size go together through `_nms_padded`, so that a thousand
    classes of a few boxes each cost tens of numpy calls, not a thousand."""
    kept = [group[nms(boxes[group], iou_threshold)] for group in groups
            if len(group) > _MATRIX_MAX]
    small = [group for group in groups if len(group) <= _MATRIX_MAX]
    bucket = np.array([int(len(group) - 1).bit_length() for group in small])  # ceil(log2 size)
    for b in np.unique(bucket):
        same = [small[i] for i in np.flatnonzero(bucket == b)]
        size = 1 << int(b)
        step = max(1, _MATRIX_ELEMENTS // size ** 2)
        for chunk in range(0, len(same), step):
            padded = np.full((len(same[chunk:chunk + step]), size), -1)
            for row, group in enumerate(same[chunk:chunk + step]):
                padded[row, :len(group)] = group
            kept.append(padded[_nms_padded(boxes, padded, iou_threshold)])
    return kept


def _nms_padded(boxes: np.ndarray, groups: np.ndarray, iou_threshold: float) -> np.ndarray:
    """`nms` on each row of ``groups`` ``[G, m]`` (positions in score order, -1 after the last):
    bool ``[G, m]`` kept. Every pair's IoU at once, then the greedy pass down the rows."""
    valid = groups >= 0
    group_boxes = boxes[np.where(valid, groups, 0)]
    over = _overlapping(group_boxes, group_boxes, iou_threshold)
    keep = valid.copy()
    for i in range(groups.shape[1] - 1):
        keep[:, i + 1:] &= ~(over[:, i, i + 1:] & keep[:, i, None])
    return keep


def nms(boxes: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Positions (ascending) of the boxes ``[N, 4]``, sorted by score descending, that greedy NMS
    keeps. The next _BLOCK boxes still in play are compared with all the others at once, then
    kept or suppressed in turn."""
    alive, kept = np.arange(len(boxes)), []
    while alive.size:
        block = alive[:_BLOCK]
        over = _overlapping(boxes[block], boxes[alive], iou_threshold)
        suppressed = np.zeros(alive.size, dtype=bool)
        for row, position in enumerate(block):
            if not suppressed[row]:
                kept.append(position)
                suppressed |= over[row]
        alive = alive[block.size:][~suppressed[block.size:]]
    return np.array(kept, dtype=np.int64)


def _overlapping(first: np.ndarray, then: np.ndarray, iou_threshold: float) -> np.ndarray:
    """bool ``[..., A, B]``: which of the boxes ``then [..., B, 4]`` a box of ``first
    [..., A, 4]`` suppresses, computed as torchvision's CPU NMS kernel: areas, intersection and
    IoU in the boxes' dtype, the IoU compared with the threshold as a double, suppressed when
    strictly above. Two boxes whose areas rounded to 0 (the coordinate trick) have IoU 0 / 0 =
    NaN: not suppressed."""
    ax1, ay1, ax2, ay2 = (first[..., k][..., :, None] for k in range(4))
    bx1, by1, bx2, by2 = (then[..., k][..., None, :] for k in range(4))
    w = np.maximum(np.minimum(ax2, bx2) - np.maximum(ax1, bx1), 0)
    h = np.maximum(np.minimum(ay2, by2) - np.maximum(ay1, by1), 0)
    inter = w * h
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = inter / ((ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter)
    return iou.astype(np.float64) > iou_threshold


def _class_scores(boxes: np.ndarray, scores: np.ndarray, box_deltas: np.ndarray | None,
                  background: bool) -> np.ndarray:
    """Check the shapes agree and return the object classes' columns ``[N, C]``."""
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise DetectionError(f"boxes have shape {tuple(boxes.shape)}; expected [N, 4]")
    if scores.ndim != 2 or scores.shape[0] != boxes.shape[0]:
        raise DetectionError(f"scores have shape {tuple(scores.shape)} for {boxes.shape[0]} boxes; "
                             "expected [N, C + 1] (or [N, C] with background=False)")
    class_scores = scores[:, 1:] if background else scores
    if not np.issubdtype(class_scores.dtype, np.floating):  # as torch compares ints to a float
        class_scores = class_scores.astype(np.float32)
    num_classes = class_scores.shape[1]
    if box_deltas is not None and box_deltas.shape != (boxes.shape[0], num_classes, 4):
        raise DetectionError(f"box_deltas have shape {tuple(box_deltas.shape)}; expected "
                             f"[{boxes.shape[0]}, {num_classes}, 4] for {num_classes} classes")
    return class_scores
