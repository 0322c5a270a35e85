"""PASCAL VOC detection AP, as the devkit's VOCevaldet.m / VOCap.m compute it.

The devkit works on inclusive pixel coordinates: a box (x1, y1, x2, y2) covers the pixels x1..x2,
so its width is x2 - x1 + 1. Our boxes are continuous (width = x2 - x1); the continuous box
(x1, y1, x2, y2) is the inclusive box (x1, y1, x2 - 1, y2 - 1). `evaluate_voc` converts at the
edge with `to_inclusive`; the cores (`inclusive_iou`, `match_voc`) take inclusive boxes, and the
+1 lives only in them. `eval/ilsvrc.py` reuses the helpers of this module.

NumPy-only: the evaluation path never imports torch.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from detector.datasets import Dataset
from detector.errors import DetectionError
from eval.detections import Detections
from eval.results import EvalResult, mean_ap

# The recall points of VOC2007's 11-point AP, exactly as MATLAB's `0:0.1:1` builds them: its
# colon operator computes the first half as k * 0.1 and the second half as 1 - (10 - k) * 0.1,
# which gives the doubles nearest to k / 10 except 0.3 (3 * 0.1 = 0.30000000000000004). So a
# recall of exactly 0.3 does not reach t = 0.3 in the devkit. (py-faster-rcnn's
# np.arange(0, 1.1, 0.1) differs from the devkit at 0.6 and 0.7 instead.)
VOC07_RECALL_POINTS = np.array(
    [k * 0.1 for k in range(6)] + [1 - (10 - k) * 0.1 for k in range(6, 11)])


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


def inclusive_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU float64 [N, M] of inclusive-pixel xyxy boxes a [N, 4] and b [M, 4].

    Area = (x2 - x1 + 1) * (y2 - y1 + 1), intersection width = min(x2) - max(x1) + 1; pairs that
    do not overlap (the devkit's ``iw > 0 & ih > 0`` fails) get 0. Operation order follows the
    devkit so that IoUs sitting exactly on a threshold compare as they do there.
    """
    a = a[:, None, :]
    b = b[None, :, :]
    iw = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1
    ih = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1
    overlap = (iw > 0) & (ih > 0)
    inter = np.where(overlap, iw * ih, 0.0)
    union = ((a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
             + (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1) - inter)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(overlap, inter / union, 0.0)


def group_by_image(det_image: np.ndarray,
                   gt_image: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """For each image holding detections: (positions into ``det_image`` in their given order,
    indices into ``gt_image``). Sorting once keeps this linear in the number of boxes."""
    det_order = np.argsort(det_image, kind="stable")
    gt_order = np.argsort(gt_image, kind="stable")
    sorted_gt = gt_image[gt_order]
    images, starts = np.unique(det_image[det_order], return_index=True)
    ends = np.append(starts[1:], len(det_order))
    lo = np.searchsorted(sorted_gt, images, side="left")
    hi = np.searchsorted(sorted_gt, images, side="right")
    for k in range(len(images)):
        yield det_order[starts[k]:ends[k]], gt_order[lo[k]:hi[k]]


def match_voc(det_image: np.ndarray, det_boxes: np.ndarray, det_scores: np.ndarray,
              gt_image: np.ndarray, gt_boxes: np.ndarray, gt_difficult: np.ndarray,
              iou_threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """True and false positives of one class's detections, in descending score order.

    Detections: image ids int [D], inclusive boxes [D, 4], scores [D] in file order (a stable
    sort keeps file order for ties, as MATLAB's sort does). Ground truth of the same class:
    image ids int [G], inclusive boxes [G, 4], difficult bool [G]. Returns bool (tp, fp) [D].
    Each detection takes the gt of its image with the highest IoU (first max wins; every gt
    competes, difficult or already matched). At IoU >= threshold: a difficult gt makes it
    neither TP nor FP; an unmatched gt makes it TP; a matched one makes it a duplicate FP.
    """
    order = np.argsort(-np.asarray(det_scores, dtype=np.float64), kind="stable")
    det_image, det_boxes = det_image[order], det_boxes[order]
    best_iou = np.full(len(order), -np.inf)
    best_gt = np.zeros(len(order), dtype=np.int64)
    for pos, gts in group_by_image(det_image, gt_image):
        if len(gts):
            iou = inclusive_iou(det_boxes[pos], gt_boxes[gts])
            best_iou[pos] = iou.max(axis=1)
            best_gt[pos] = gts[iou.argmax(axis=1)]  # argmax: first max wins, as in the devkit
    hit = best_iou >= iou_threshold
    ignored = np.zeros(len(order), dtype=bool)
    ignored[hit] = gt_difficult[best_gt[hit]]
    claims = np.flatnonzero(hit & ~ignored)
    # The greedy rule never depends on the order of other gts: a claim on a gt is TP exactly
    # when no earlier (higher-ranked) detection claimed the same gt.
    _, first = np.unique(best_gt[claims], return_index=True)
    tp = np.zeros(len(order), dtype=bool)
    tp[claims[first]] = True
    return tp, ~tp & ~ignored


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
    if not 0 < iou_threshold <= 1:
        raise DetectionError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    check_detections(dataset, detections)
    gt_image, gt_boxes, gt_labels, gt_difficult = flat_ground_truth(dataset)
    gt_boxes, det_boxes = to_inclusive(gt_boxes), to_inclusive(detections.boxes)
    num_classes = len(dataset.classes)
    gt_of = class_members(gt_labels, num_classes)
    det_of = class_members(detections.labels, num_classes)
    per_class: dict[str, float | None] = {}
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, g, d in zip(dataset.classes, gt_of, det_of):
        npos = int(np.count_nonzero(~gt_difficult[g]))
        if npos == 0:
            per_class[name] = None
            continue
        tp, fp = match_voc(detections.image_index[d], det_boxes[d], detections.scores[d],
                           gt_image[g], gt_boxes[g], gt_difficult[g], iou_threshold)
        curves[name] = precision_recall(tp, fp, npos)
        per_class[name] = voc_ap(*curves[name], use_07_metric=use_07_metric)
    protocol = "voc07" if use_07_metric else "voc"
    return EvalResult(protocol=protocol, mAP=mean_ap(per_class), per_class=per_class, curves=curves)
