"""PASCAL VOC detection AP, as the devkit's VOCevaldet.m / VOCap.m compute it.

The devkit works on inclusive pixel coordinates: a box (x1, y1, x2, y2) covers the pixels x1..x2,
so its width is x2 - x1 + 1. Our boxes are continuous (width = x2 - x1); the continuous box
(x1, y1, x2, y2) is the inclusive box (x1, y1, x2 - 1, y2 - 1). `evaluate_voc` converts at the
edge with `to_inclusive`; the cores (`paired_inclusive_iou`, `match_voc`) take inclusive boxes, and the
+1 lives only in them. `eval/ilsvrc.py` reuses the helpers of this module.

NumPy-only: the evaluation path never imports torch.
"""
from __future__ import annotations

import numpy as np

from eval.datasets import Dataset
from eval.errors import DetectionError
from eval.detections import Detections
from eval.results import ClassMatch, EvalResult, mean_ap

# The recall points of VOC2007's 11-point AP as py-faster-rcnn's voc_eval.py (and every Python
# port since) builds them: np.arange(0, 1.1, 0.1), so t = 0.30000000000000004, 0.6000000000000001,
# 0.7000000000000001 and a recall of exactly 0.6 (say 9/15) does not reach t = 0.6. The project's
# reference vector (shared/data EXPECTED.json "voc_ap_case", IoU 0.1) depends on this. MATLAB's
# `0:0.1:1` in VOCevaldet.m differs at two points: its colon operator computes them from the end
# (1 - 0.4, 1 - 0.3), which gives 0.6 and 0.7 exactly; it would score that vector 0.3689.
VOC07_RECALL_POINTS = np.arange(0.0, 1.1, 0.1)


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool = False) -> float:
    """Average precision of one class from its cumulative PR curve (VOCap.m / VOCevaldet.m).

    ``recall``, ``precision``: float [D], one point per detection in score order. 2007 metric:
    mean over t in 0, 0.1, ..., 1 of the max precision at recall >= t (0 where none). 2010+:
    area under the monotone (from the right) precision envelope, summed where recall changes.
    """
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    if use_07_metric:
        points = [precision[recall >= t] for t in VOC07_RECALL_POINTS]
        return float(sum(p.max() if p.size else 0.0 for p in points) / 11)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    changed = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[changed] - mrec[changed - 1]) * mpre[changed]))


def to_inclusive(boxes: np.ndarray) -> np.ndarray:
    """Continuous xyxy [N, 4] (width = x2 - x1) -> the devkits' inclusive pixels, float64."""
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4) - np.array([0.0, 0.0, 1.0, 1.0])


def paired_inclusive_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of inclusive-pixel boxes a [..., 4] and b [..., 4], broadcast pair by pair.

    Area = (x2 - x1 + 1) * (y2 - y1 + 1), intersection width = min(x2) - max(x1) + 1; pairs that
    do not overlap (the devkit's ``iw > 0 & ih > 0`` fails) get 0. Operation order follows the
    devkit so that IoUs sitting exactly on a threshold compare as they do there.
    """
    iw = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1
    ih = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1
    overlap = (iw > 0) & (ih > 0)
    inter = np.where(overlap, iw * ih, 0.0)
    union = ((a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
             + (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1) - inter)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(overlap, inter / union, 0.0)


def same_image_pairs(det_image: np.ndarray, gt_image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (detection, gt) pair on the same image, as index arrays int64 [P].

    Pairs come grouped by detection, in detection order, and within a detection in gt order,
    the order in which the devkits scan an image's gts. One join for a whole class instead of a
    loop over images: a class has few gts per image, so P stays small.
    """
    gt_order = np.argsort(gt_image, kind="stable")
    sorted_gt = gt_image[gt_order]
    lo = np.searchsorted(sorted_gt, det_image, side="left")
    per_det = np.searchsorted(sorted_gt, det_image, side="right") - lo
    det_idx = np.repeat(np.arange(len(det_image)), per_det)
    rank = np.arange(len(det_idx)) - np.repeat(np.cumsum(per_det) - per_det, per_det)
    return det_idx, gt_order[np.repeat(lo, per_det) + rank]


def first_max_by_group(group: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Position of the first maximum of ``values`` [P] in each run of equal ``group`` [P]
    (runs contiguous, P > 0): the devkits' ``if ov > ovmax`` scan, where the first max wins."""
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    maxima = np.maximum.reduceat(values, starts)
    at_max = np.flatnonzero(values == np.repeat(maxima, np.diff(np.r_[starts, len(values)])))
    return at_max[np.r_[True, group[at_max][1:] != group[at_max][:-1]]]


def match_voc(det_image: np.ndarray, det_boxes: np.ndarray, det_scores: np.ndarray,
              gt_image: np.ndarray, gt_boxes: np.ndarray, gt_difficult: np.ndarray,
              iou_threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """True and false positives of one class's detections, in descending score order
    (`match_voc_ranked` without the order and the matched ground truth)."""
    _, tp, fp, _ = match_voc_ranked(det_image, det_boxes, det_scores, gt_image, gt_boxes,
                                    gt_difficult, iou_threshold)
    return tp, fp


def match_voc_ranked(det_image: np.ndarray, det_boxes: np.ndarray, det_scores: np.ndarray,
                     gt_image: np.ndarray, gt_boxes: np.ndarray, gt_difficult: np.ndarray,
                     iou_threshold: float = 0.5
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """True and false positives of one class's detections, in descending score order.

    Detections: image ids int [D], inclusive boxes [D, 4], scores [D] in file order (a stable
    sort keeps file order for ties, as MATLAB's sort does). Ground truth of the same class:
    image ids int [G], inclusive boxes [G, 4], difficult bool [G]. Returns (order, tp, fp,
    matched): the detections' positions in score order int64 [D], bool tp and fp [D] in that
    order, and the gt position int64 [D] each TP took (-1 for the others).
    Each detection takes the gt of its image with the highest IoU (first max wins; every gt
    competes, difficult or already matched). At IoU >= threshold: a difficult gt makes it
    neither TP nor FP; an unmatched gt makes it TP; a matched one makes it a duplicate FP.
    """
    order = np.argsort(-np.asarray(det_scores, dtype=np.float64), kind="stable")
    det_idx, gt_idx = same_image_pairs(np.asarray(det_image)[order], np.asarray(gt_image))
    iou = paired_inclusive_iou(det_boxes[order][det_idx], gt_boxes[gt_idx])
    best_iou = np.full(len(order), -np.inf)
    best_gt = np.zeros(len(order), dtype=np.int64)
    if len(iou):
        best = first_max_by_group(det_idx, iou)
        best_iou[det_idx[best]], best_gt[det_idx[best]] = iou[best], gt_idx[best]
    hit = best_iou >= iou_threshold
    ignored = np.zeros(len(order), dtype=bool)
    ignored[hit] = gt_difficult[best_gt[hit]]
    claims = np.flatnonzero(hit & ~ignored)
    # A detection's choice never depends on which gts are taken, so the greedy rule reduces to:
    # a claim on a gt is TP exactly when no higher-ranked detection claimed the same gt.
    _, first = np.unique(best_gt[claims], return_index=True)
    tp = np.zeros(len(order), dtype=bool)
    tp[claims[first]] = True
    return order, tp, ~tp & ~ignored, np.where(tp, best_gt, -1)


def precision_recall(tp: np.ndarray, fp: np.ndarray, npos: int) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative (recall, precision) float64 [D] of ranked tp/fp flags; ``npos`` > 0.

    Detections that are neither (VOC's difficult) count in neither sum; where no detection has
    counted yet precision is 0 (the devkit's 0/0 NaN, which VOCap's max envelope drops anyway).
    """
    ctp = np.cumsum(tp, dtype=np.float64)
    cfp = np.cumsum(fp, dtype=np.float64)
    counted = ctp + cfp
    precision = np.divide(ctp, counted, out=np.zeros_like(ctp), where=counted > 0)
    return ctp / npos, precision


def flat_ground_truth(dataset: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All gt of a dataset as (image index int64 [G], continuous boxes float64 [G, 4],
    labels int64 [G], difficult bool [G])."""
    images = dataset.images
    counts = [len(im.labels) for im in images]
    image = np.repeat(np.arange(len(images), dtype=np.int64), counts)
    if not images or sum(counts) == 0:
        return image, np.zeros((0, 4)), np.zeros(0, np.int64), np.zeros(0, bool)
    boxes = np.concatenate([np.asarray(im.boxes, np.float64).reshape(-1, 4) for im in images])
    labels = np.concatenate([np.asarray(im.labels, np.int64) for im in images])
    difficult = np.concatenate([np.asarray(im.difficult, bool).reshape(-1) for im in images])
    return image, boxes, labels, difficult


def class_members(labels: np.ndarray, num_classes: int) -> list[np.ndarray]:
    """Indices of each label 1..K in ``labels``, each in the original (file) order."""
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(1, num_classes + 2))
    return [order[bounds[c]:bounds[c + 1]] for c in range(num_classes)]


def check_detections(dataset: Dataset, detections: Detections) -> None:
    """Raise DetectionError unless the detections index this dataset's images and classes."""
    n = len(detections)
    fields = {"image_index": detections.image_index, "labels": detections.labels,
              "scores": detections.scores}
    for name, value in fields.items():
        if np.shape(value) != (n,):
            raise DetectionError(f"detections: {name} has shape {np.shape(value)}, expected ({n},)")
    if np.shape(detections.bbox) != (n, 4):
        raise DetectionError(
            f"detections: bbox has shape {np.shape(detections.bbox)}, expected ({n}, 4)")
    images, labels = detections.image_index, detections.labels
    if n and not (0 <= images.min() and images.max() < len(dataset.images)):
        raise DetectionError(f"detections: image_index outside 0..{len(dataset.images) - 1}; "
                             "map the results file onto this dataset")
    if n and not (1 <= labels.min() and labels.max() <= len(dataset.classes)):
        raise DetectionError(f"detections: labels outside 1..{len(dataset.classes)}; "
                             "map category ids onto this dataset's classes")


def evaluate_voc(dataset: Dataset, detections: Detections, iou_threshold: float = 0.5,
                 use_07_metric: bool = False) -> EvalResult:
    """PASCAL VOC mAP (protocol "voc07" with the 11-point metric, "voc" with all points).

    Boxes of both sides are continuous xyxy and converted to inclusive pixels here. Classes
    without a non-difficult gt get AP None and are left out of the mean.
    """
    per_class: dict[str, float | None] = {}
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, match in zip(dataset.classes, voc_class_matches(dataset, detections, iou_threshold)):
        if match.npos == 0:
            per_class[name] = None
            continue
        curves[name] = precision_recall(match.tp, match.fp, match.npos)
        per_class[name] = voc_ap(*curves[name], use_07_metric=use_07_metric)
    protocol = "voc07" if use_07_metric else "voc"
    return EvalResult(protocol=protocol, mAP=mean_ap(per_class), per_class=per_class, curves=curves)


def voc_class_matches(dataset: Dataset, detections: Detections, iou_threshold: float = 0.5
                      ) -> list[ClassMatch]:
    """Each class's detections as `evaluate_voc` counts them (`match_voc_ranked`), labels 1..K
    in order; what both its AP and the error analysis (`eval.analysis`) read."""
    if not 0 < iou_threshold <= 1:
        raise DetectionError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    check_detections(dataset, detections)
    gt_image, gt_boxes, gt_labels, gt_difficult = flat_ground_truth(dataset)
    gt_boxes, det_boxes = to_inclusive(gt_boxes), to_inclusive(detections.boxes)
    num_classes = len(dataset.classes)
    det_of = class_members(detections.labels, num_classes)
    matches = []
    for label, (g, d) in enumerate(zip(class_members(gt_labels, num_classes), det_of), 1):
        order, tp, fp, took = match_voc_ranked(
            detections.image_index[d], det_boxes[d], detections.scores[d], gt_image[g],
            gt_boxes[g], gt_difficult[g], iou_threshold)
        matched = np.where(took >= 0, g[np.maximum(took, 0)], -1) if len(g) else took
        matches.append(ClassMatch(label, d[order], tp, fp, matched, g,
                                  int(np.count_nonzero(~gt_difficult[g]))))
    return matches
