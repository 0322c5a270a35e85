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
from eval.results import ClassMatch, EvalResult, mean_ap
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
    """True and false positives of one class's detections, in the devkit's AP order
    (`match_ilsvrc_ranked` without the order and the matched ground truth)."""
    _, tp, _ = match_ilsvrc_ranked(det_image, det_boxes, det_scores, gt_image, gt_boxes)
    return tp, ~tp


def match_ilsvrc_ranked(det_image: np.ndarray, det_boxes: np.ndarray, det_scores: np.ndarray,
                        gt_image: np.ndarray, gt_boxes: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True positives of one class's detections, in the devkit's AP order.

    Detections: image ids int [D], inclusive boxes [D, 4], scores [D] in file order. Ground
    truth of the same class: image ids int [G], inclusive boxes [G, 4]. Returns (order, tp,
    matched): the detections' positions int64 [D] by score descending, ties by image then file
    order (the devkit concatenates the images' score-sorted lists, then sorts stably); bool tp
    [D] in that order (every other detection is an FP); the gt position int64 [D] each TP took
    (-1 for the others). Within an image, in that order, each detection takes the
    still-unmatched gt with the highest IoU >= its threshold (first max wins); none left -> FP,
    so duplicates are FPs.
    """
    det_image = np.asarray(det_image, dtype=np.int64)
    order = np.lexsort((np.arange(len(det_image)), det_image, -np.asarray(det_scores, np.float64)))
    det_image = det_image[order]
    det_idx, gt_idx = same_image_pairs(det_image, np.asarray(gt_image))
    iou = paired_inclusive_iou(det_boxes[order][det_idx], gt_boxes[gt_idx])
    # The devkit only scores overlapping pairs (iw > 0 & ih > 0): iou > 0 says the same.
    allowed = (iou >= ilsvrc_thresholds(gt_boxes)[gt_idx]) & (iou > 0)
    took = _greedy_by_image(det_image, det_idx[allowed], gt_idx[allowed], iou[allowed])
    return order, took >= 0, took


def _greedy_by_image(det_image: np.ndarray, det_idx: np.ndarray, gt_idx: np.ndarray,
                     iou: np.ndarray) -> np.ndarray:
    """The gt int64 [D] that each detection (image ids [D], in score order) takes, -1 for
    none, from their allowed (detection, gt, iou) pairs [P], grouped by detection and in gt
    order within it."""
    took = np.full(len(det_image), -1, dtype=np.int64)
    if len(iou) == 0:
        return took
    # Each detection's first choice stands unless an earlier one took it; that can only happen
    # where two detections choose the same gt, so only those images need the sequential scan.
    first = first_max_by_group(det_idx, iou)
    chosen = gt_idx[first]
    took[det_idx[first]] = chosen
    clashes = np.unique(det_image[det_idx[first][np.bincount(chosen)[chosen] > 1]])
    in_clash = np.flatnonzero(np.isin(det_image[det_idx], clashes))
    by_image = in_clash[np.argsort(det_image[det_idx[in_clash]], kind="stable")]
    for pairs in np.split(by_image, np.flatnonzero(np.diff(det_image[det_idx[by_image]])) + 1):
        if len(pairs):
            rows, gts = _rescan(det_idx[pairs], gt_idx[pairs], iou[pairs])
            took[rows] = gts
    return took


def _rescan(det_idx: np.ndarray, gt_idx: np.ndarray,
            iou: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The devkit's sequential scan over one image's allowed (detection, gt, iou) pairs [P].
    Returns the detections (ascending: score order) and the gt each takes (-1: none, an FP)."""
    rows, r = np.unique(det_idx, return_inverse=True)
    columns, c = np.unique(gt_idx, return_inverse=True)  # columns in gt order
    candidates = np.full((len(rows), c.max() + 1), -np.inf)
    candidates[r, c] = iou
    column = _greedy_unmatched(candidates)
    return rows, np.where(column >= 0, columns[np.maximum(column, 0)], -1)


def _greedy_unmatched(iou: np.ndarray) -> np.ndarray:
    """Sequential matching on iou [D, G] (rows in score order, -inf where not allowed): row i
    takes the first column of highest IoU among those no earlier row took. Returns the column
    int64 [D] each row takes, -1 for none (an FP)."""
    took = np.full(len(iou), -1, dtype=np.int64)
    taken = np.zeros(iou.shape[1], dtype=bool)
    for row in range(len(iou)):
        candidates = np.where(taken, -np.inf, iou[row])
        k = int(np.argmax(candidates))
        if candidates[k] > -np.inf:
            took[row], taken[k] = k, True
    return took


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
    per_class: dict[str, float | None] = {}
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, match in zip(dataset.classes, ilsvrc_class_matches(dataset, detections)):
        if match.npos == 0:
            per_class[name] = None
            continue
        curves[name] = precision_recall(match.tp, match.fp, match.npos)
        per_class[name] = voc_ap(*curves[name])
    return EvalResult(protocol="ilsvrc", mAP=mean_ap(per_class), per_class=per_class, curves=curves)


def ilsvrc_class_matches(dataset: Dataset, detections: Detections) -> list[ClassMatch]:
    """Each class's detections as `evaluate_ilsvrc` counts them (`match_ilsvrc_ranked`; the
    blacklisted ones left out), labels 1..K in order; what both its AP and the error analysis
    (`eval.analysis`) read."""
    check_detections(dataset, detections)
    gt_image, gt_boxes, gt_labels, _ = flat_ground_truth(dataset)
    keep_gt = _not_blacklisted(dataset, gt_image, gt_labels)
    keep_det = _not_blacklisted(dataset, detections.image_index, detections.labels)
    gt_boxes, det_boxes = to_inclusive(gt_boxes), to_inclusive(detections.boxes)
    num_classes = len(dataset.classes)
    gt_of = class_members(np.where(keep_gt, gt_labels, 0), num_classes)  # label 0: dropped
    det_of = class_members(np.where(keep_det, detections.labels, 0), num_classes)
    matches = []
    for label, (g, d) in enumerate(zip(gt_of, det_of), 1):
        order, tp, took = match_ilsvrc_ranked(detections.image_index[d], det_boxes[d],
                                              detections.scores[d], gt_image[g], gt_boxes[g])
        matched = np.where(took >= 0, g[np.maximum(took, 0)], -1) if len(g) else took
        matches.append(ClassMatch(label, d[order], tp, ~tp, matched, g, len(g)))
    return matches
