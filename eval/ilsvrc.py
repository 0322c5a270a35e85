"""ILSVRC DET mean AP, as the ILSVRC2014 devkit's eval_detection.m computes it.

Differences from PASCAL VOC: small objects get a lower IoU threshold,
min(0.5, w*h / ((w + 10) * (h + 10))); each detection takes the best ground truth that is still
unmatched (VOC takes the best overall, matched or not); there is no `difficult`; and blacklisted
(image, class) pairs are skipped altogether. Boxes are inclusive pixels inside this module, as in
the devkit; `evaluate_ilsvrc` converts our continuous boxes at the edge.

NumPy-only: the evaluation path never imports torch.
"""
from __future__ import annotations

import numpy as np

from eval.datasets import Dataset
from eval.detections import Detections
from eval.results import EvalResult, mean_ap
from eval.voc import (check_detections, class_members, first_max_by_group, flat_ground_truth,
                      paired_inclusive_iou, precision_recall, same_image_pairs, to_inclusive,
                      voc_ap)

# eval_detection.m: `pixelTolerance = 10; defaultIOUthr = 0.5;`. A box of w x h pixels that is
# predicted 5 pixels too large on each side still matches, however small the box.
PIXEL_TOLERANCE = 10
DEFAULT_IOU_THRESHOLD = 0.5


def ilsvrc_thresholds(gt_boxes: np.ndarray) -> np.ndarray:
    """IoU threshold float64 [G] of each inclusive-pixel gt box [G, 4] (w = x2 - x1 + 1)."""
    w = gt_boxes[:, 2] - gt_boxes[:, 0] + 1
    h = gt_boxes[:, 3] - gt_boxes[:, 1] + 1
    relative = (w * h) / ((w + PIXEL_TOLERANCE) * (h + PIXEL_TOLERANCE))
    return np.minimum(DEFAULT_IOU_THRESHOLD, relative)


def match_ilsvrc(det_image: np.ndarray, det_boxes: np.ndarray, det_scores: np.ndarray,
                 gt_image: np.ndarray, gt_boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True and false positives of one class's detections, in the devkit's AP order.

    Detections: image ids int [D], inclusive boxes [D, 4], scores [D] in file order. Ground
    truth of the same class: image ids int [G], inclusive boxes [G, 4]. Returns bool (tp, fp)
    [D] ordered by score descending, ties by image then file order (the devkit concatenates the
    images' score-sorted lists, then sorts stably). Within an image, in that order, each
    detection takes the still-unmatched gt with the highest IoU >= its threshold (first max
    wins); none left -> FP, so duplicates are FPs.
    """
    det_image = np.asarray(det_image, dtype=np.int64)
    order = np.lexsort((np.arange(len(det_image)), det_image, -np.asarray(det_scores, np.float64)))
    det_image = det_image[order]
    det_idx, gt_idx = same_image_pairs(det_image, np.asarray(gt_image))
    iou = paired_inclusive_iou(det_boxes[order][det_idx], gt_boxes[gt_idx])
    # The devkit only scores overlapping pairs (iw > 0 & ih > 0): iou > 0 says the same.
    allowed = (iou >= ilsvrc_thresholds(gt_boxes)[gt_idx]) & (iou > 0)
    tp = _greedy_by_image(det_image, det_idx[allowed], gt_idx[allowed], iou[allowed])
    return tp, ~tp


def _greedy_by_image(det_image: np.ndarray, det_idx: np.ndarray, gt_idx: np.ndarray,
                     iou: np.ndarray) -> np.ndarray:
    """TP flags [D] of detections (image ids [D], in score order) from their allowed
    (detection, gt, iou) pairs [P], grouped by detection and in gt order within it."""
    tp = np.zeros(len(det_image), dtype=bool)
    if len(iou) == 0:
        return tp
    # Each detection's first choice stands unless an earlier one took it; that can only happen
    # where two detections choose the same gt, so only those images need the sequential scan.
    first = first_max_by_group(det_idx, iou)
    tp[det_idx[first]] = True
    chosen = gt_idx[first]
    clashes = np.unique(det_image[det_idx[first][np.bincount(chosen)[chosen] > 1]])
    in_clash = np.flatnonzero(np.isin(det_image[det_idx], clashes))
    by_image = in_clash[np.argsort(det_image[det_idx[in_clash]], kind="stable")]
    for pairs in np.split(by_image, np.flatnonzero(np.diff(det_image[det_idx[by_image]])) + 1):
        if len(pairs):
            rows, is_tp = _rescan(det_idx[pairs], gt_idx[pairs], iou[pairs])
            tp[rows] = is_tp
    return tp


def _rescan(det_idx: np.ndarray, gt_idx: np.ndarray,
            iou: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The devkit's sequential scan over one image's allowed (detection, gt, iou) pairs [P].
    Returns the detections (ascending: score order) and whether each is a TP."""
    rows, r = np.unique(det_idx, return_inverse=True)
    _, c = np.unique(gt_idx, return_inverse=True)  # columns in gt order
    candidates = np.full((len(rows), c.max() + 1), -np.inf)
    candidates[r, c] = iou
    return rows, _greedy_unmatched(candidates)


def _greedy_unmatched(iou: np.ndarray) -> np.ndarray:
    """Sequential matching on iou [D, G] (rows in score order, -inf where not allowed): row i
    takes the first column of highest IoU among those no earlier row took. Returns tp [D]."""
    tp = np.zeros(len(iou), dtype=bool)
    taken = np.zeros(iou.shape[1], dtype=bool)
    for row in range(len(iou)):
        candidates = np.where(taken, -np.inf, iou[row])
        k = int(np.argmax(candidates))
        if candidates[k] > -np.inf:
            tp[row] = taken[k] = True
    return tp


def _not_blacklisted(dataset: Dataset, image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """bool mask of the (image index, label) pairs not in ``dataset.blacklist``."""
    if not dataset.blacklist:
        return np.ones(len(image), dtype=bool)
    stride = len(dataset.classes) + 1  # labels are 1..K, so image * stride + label is unique
    banned = np.array([i * stride + c for i, c in dataset.blacklist], dtype=np.int64)
    return ~np.isin(np.asarray(image, np.int64) * stride + labels, banned)


def evaluate_ilsvrc(dataset: Dataset, detections: Detections) -> EvalResult:
    """ILSVRC DET mean AP (protocol "ilsvrc"); AP is VOC's all-point area.

    Boxes of both sides are continuous xyxy, converted to inclusive pixels here. Blacklisted
    (image index, label) pairs lose both their detections and their gts; ``difficult`` is
    ignored (ILSVRC has none). Classes without gt get AP None and are left out of the mean.
    """
    check_detections(dataset, detections)
    gt_image, gt_boxes, gt_labels, _ = flat_ground_truth(dataset)
    keep_gt = _not_blacklisted(dataset, gt_image, gt_labels)
    keep_det = _not_blacklisted(dataset, detections.image_index, detections.labels)
    gt_boxes, det_boxes = to_inclusive(gt_boxes), to_inclusive(detections.boxes)
    num_classes = len(dataset.classes)
    gt_of = class_members(np.where(keep_gt, gt_labels, 0), num_classes)  # label 0: dropped
    det_of = class_members(np.where(keep_det, detections.labels, 0), num_classes)
    per_class: dict[str, float | None] = {}
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, g, d in zip(dataset.classes, gt_of, det_of):
        if len(g) == 0:
            per_class[name] = None
            continue
        tp, fp = match_ilsvrc(detections.image_index[d], det_boxes[d], detections.scores[d],
                              gt_image[g], gt_boxes[g])
        curves[name] = precision_recall(tp, fp, len(g))
        per_class[name] = voc_ap(*curves[name])
    return EvalResult(protocol="ilsvrc", mAP=mean_ap(per_class), per_class=per_class, curves=curves)
