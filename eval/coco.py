"""COCO bounding-box evaluation, vectorized, with pycocotools' COCOeval semantics.

Every rule of ``COCOeval.evaluate / accumulate / summarize`` (iouType "bbox") is kept, down to
the tie-breaking, so the numbers agree with pycocotools to floating-point rounding:

- per (image, category) at most the 100 highest-scoring detections count, sorted by a stable
  sort (ties keep results-file order);
- IoU in double precision on ``(x, y, w, h)`` boxes; for crowd ground truth the union is the
  detection's area;
- greedy matching in score order: a detection takes the unmatched non-ignored ground truth of
  highest IoU >= t (ties go to the later one in annotation order) and only falls back to
  ignored ground truth (crowd, or area out of range) when none qualifies; crowd boxes can be
  matched again and again;
- ground truth is ignored by its annotation ``area``, detections by ``w * h``;
- precision at 101 recall points from the monotone envelope; -1 where a category has no
  ground truth; the 12 summary numbers are means over the entries > -1.

pycocotools loops over every (image, category, area range) in Python. Here the greedy matching
runs as one loop over detection *ranks* (at most 100 steps), each step processing the rank-r
detection of every (image, category) group, every IoU threshold and every area range at once.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eval.results import ClassMatch

# The constants of pycocotools' Params (iouType "bbox"), computed the same way so that the
# float values, and hence every threshold comparison, are identical.
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
MAX_DETS = (1, 10, 100)
AREA_RANGES = ((0**2, 1e5**2), (0**2, 32**2), (32**2, 96**2), (96**2, 1e5**2))

# pycocotools caps the matching threshold just below 1 so that IoU == 1 still matches at 1.0.
_MAX_MATCH_THRESHOLD = 1 - 1e-10


@dataclass(frozen=True, eq=False)
class CocoBoxes:
    """Ground truth or detections in the COCO protocol's own terms.

    ``image`` int64 [N]: index of the image in ascending image-id order; ``label`` int64 [N]:
    category index 0..K-1 in ascending category-id order; ``bbox`` float64 [N, 4] ``(x, y, w, h)``
    absolute pixels; ``area`` float64 [N]: the annotation's ``area`` for ground truth, ``w * h``
    for detections; ``iscrowd`` bool [N]; ``score`` float64 [N] (detections only). Rows in
    file order.
    """

    image: np.ndarray
    label: np.ndarray
    bbox: np.ndarray
    area: np.ndarray
    iscrowd: np.ndarray
    score: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class CocoEvalArrays:
    """COCOeval's ``eval`` arrays: precision [T, R, K, A, M], recall [T, K, A, M], -1 = n/a."""

    precision: np.ndarray
    recall: np.ndarray


@dataclass(frozen=True, eq=False)
class CocoMatches:
    """COCOeval.evaluate's outcome, before accumulate.

    ``order`` int64 [D]: the detections it keeps (the 100 best of each image and category),
    sorted by (image, category, score descending, file order); ``rank`` int64 [D] within that
    image and category. ``matched`` and ``ignore`` bool [D, T, A], in that order.
    ``matched_gt`` int64 [D]: the ground-truth row each took at IoU 0.5 over all areas (-1:
    none). ``num_positive`` int64 [K, A]: the ground truth that counts.
    """

    order: np.ndarray
    rank: np.ndarray
    matched: np.ndarray
    ignore: np.ndarray
    matched_gt: np.ndarray
    num_positive: np.ndarray


def evaluate_boxes(gt: CocoBoxes, dt: CocoBoxes, num_images: int, num_classes: int) -> CocoEvalArrays:
    """Run COCOeval's evaluate + accumulate on arrays; see the module docstring."""
    return accumulate(match_boxes(gt, dt, num_classes), dt)


def match_boxes(gt: CocoBoxes, dt: CocoBoxes, num_classes: int) -> CocoMatches:
    """COCOeval.evaluate on arrays: every detection kept, matched at every IoU threshold and
    area range."""
    dt_order, dt_rank = _top_detections(dt, num_classes, MAX_DETS[-1])
    gt_order = np.lexsort((np.arange(len(gt.label)), gt.label, gt.image))
    gt_ignore = _area_ignore(gt.area[gt_order], gt.iscrowd[gt_order])
    matched, matched_ignored, took = _match(gt, gt_order, gt_ignore, dt, dt_order, dt_rank,
                                            num_classes)
    dt_out_of_range = _area_ignore(dt.area[dt_order], np.zeros(len(dt_order), bool))
    dt_ignore = matched_ignored | (~matched & dt_out_of_range[:, None, :])
    num_positive = _count_positives(gt.label[gt_order], gt_ignore, num_classes)
    matched_gt = np.where(took >= 0, gt_order[np.maximum(took, 0)], -1) if len(gt_order) else took
    return CocoMatches(dt_order, dt_rank, matched, dt_ignore, matched_gt, num_positive)


def accumulate(matches: CocoMatches, dt: CocoBoxes) -> CocoEvalArrays:
    """COCOeval.accumulate of `match_boxes`' outcome for the detections ``dt``."""
    return _accumulate(dt.label[matches.order], dt.score[matches.order], matches.rank,
                       matches.matched, matches.ignore, matches.num_positive)


def class_matches(matches: CocoMatches, gt: CocoBoxes, dt: CocoBoxes) -> list[ClassMatch]:
    """Each category's detections at IoU 0.5 over all areas with 100 per image, in the order
    accumulate ranks them (score, ties by image then rank), labels 1..K: what its AP50 reads."""
    label, score = dt.label[matches.order], dt.score[matches.order]
    by_label = np.argsort(label, kind="stable")
    num_k = len(matches.num_positive)
    bounds = np.searchsorted(label[by_label], np.arange(num_k + 1))
    gt_of = np.argsort(gt.label, kind="stable")
    gt_bounds = np.searchsorted(gt.label[gt_of], np.arange(num_k + 1))
    out = []
    for k in range(num_k):
        kept = by_label[bounds[k]:bounds[k + 1]]
        kept = kept[np.argsort(-score[kept], kind="stable")]
        matched, ignore = matches.matched[kept, 0, 0], matches.ignore[kept, 0, 0]
        tp = matched & ~ignore
        out.append(ClassMatch(k + 1, matches.order[kept], tp, ~matched & ~ignore,
                              np.where(tp, matches.matched_gt[kept], -1),
                              gt_of[gt_bounds[k]:gt_bounds[k + 1]],
                              int(matches.num_positive[k, 0])))
    return out


def interpolated_ap(tp: np.ndarray, fp: np.ndarray, num_positive: int) -> float:
    """COCOeval's AP of one category at one IoU threshold (101 recall points) from its tp and
    fp flags bool [D] in accumulate's order (a detection that is neither is ignored)."""
    cum_tp = np.cumsum(tp, dtype=np.float64)[:, None]
    cum_fp = np.cumsum(fp, dtype=np.float64)[:, None]
    precision, _ = _precision_recall(cum_tp, cum_fp, num_positive)
    return float(np.mean(precision[0]))


def summarize(arrays: CocoEvalArrays) -> list[float]:
    """The 12 numbers of ``COCOeval.summarize`` (AP, AP50, AP75, APs/m/l, AR1/10/100, ARs/m/l)."""
    def mean_valid(values: np.ndarray) -> float:
        valid = values[values > -1]
        return float(np.mean(valid)) if valid.size else -1.0

    def ap(iou=None, area=0, max_det=2):
        p = arrays.precision
        if iou is not None:
            p = p[np.where(iou == IOU_THRESHOLDS)[0]]
        return mean_valid(p[:, :, :, area, max_det])

    def ar(area=0, max_det=2):
        return mean_valid(arrays.recall[:, :, area, max_det])

    return [ap(), ap(iou=0.5), ap(iou=0.75), ap(area=1), ap(area=2), ap(area=3),
            ar(max_det=0), ar(max_det=1), ar(), ar(area=1), ar(area=2), ar(area=3)]


def per_class_ap(arrays: CocoEvalArrays) -> np.ndarray:
    """AP over IoU 0.50:0.95 per category (area "all", 100 detections); NaN without ground truth."""
    p = arrays.precision[:, :, :, 0, -1]
    out = np.full(p.shape[2], np.nan)
    for k in range(p.shape[2]):
        valid = p[:, :, k][p[:, :, k] > -1]
        if valid.size:
            out[k] = np.mean(valid)
    return out


def box_iou_xywh(dt: np.ndarray, gt: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """Element-wise IoU of paired boxes, float64 [P], as pycocotools' ``bbIou``.

    ``dt`` and ``gt`` float64 [P, 4] ``(x, y, w, h)``; for a crowd ground truth the union is the
    detection's area. The arithmetic follows the C code operation by operation (same order,
    same rounding).
    """
    iw = np.minimum(dt[:, 2] + dt[:, 0], gt[:, 2] + gt[:, 0]) - np.maximum(dt[:, 0], gt[:, 0])
    ih = np.minimum(dt[:, 3] + dt[:, 1], gt[:, 3] + gt[:, 1]) - np.maximum(dt[:, 1], gt[:, 1])
    overlap = (iw > 0) & (ih > 0)
    inter = iw * ih
    dt_area = dt[:, 2] * dt[:, 3]
    union = np.where(crowd, dt_area, dt_area + gt[:, 2] * gt[:, 3] - inter)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(overlap, inter / np.where(overlap, union, 1.0), 0.0)


def _top_detections(dt: CocoBoxes, num_classes: int, max_det: int) -> tuple[np.ndarray, np.ndarray]:
    """Detections sorted by (image, category, score desc, file order), top ``max_det`` per group.

    Returns the row order int64 [D] and each kept row's rank in its group int64 [D].
    """
    n = len(dt.score)
    order = np.lexsort((np.arange(n), -dt.score, dt.label, dt.image))
    key = dt.image[order] * num_classes + dt.label[order]
    rank = _rank_in_group(key)
    keep = rank < max_det
    return order[keep], rank[keep]


def _rank_in_group(sorted_key: np.ndarray) -> np.ndarray:
    """Position of each element within its run of equal keys (keys already sorted)."""
    n = len(sorted_key)
    if n == 0:
        return np.zeros(0, np.int64)
    starts = np.r_[True, sorted_key[1:] != sorted_key[:-1]]
    first = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
    return np.arange(n) - first


def _area_ignore(area: np.ndarray, iscrowd: np.ndarray) -> np.ndarray:
    """bool [N, A]: ignored in each area range (crowd, or area outside [lo, hi])."""
    lo = np.array([r[0] for r in AREA_RANGES], float)
    hi = np.array([r[1] for r in AREA_RANGES], float)
    return iscrowd[:, None] | (area[:, None] < lo) | (area[:, None] > hi)


def _pairs(gt: CocoBoxes, gt_order: np.ndarray, dt: CocoBoxes, dt_order: np.ndarray,
           num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Every (detection, ground truth) pair of the same image and category.

    Returns positions into ``dt_order`` and ``gt_order``, int64 [P], grouped by detection and,
    within a detection, in ground-truth file order.
    """
    gt_key = gt.image[gt_order] * num_classes + gt.label[gt_order]
    dt_key = dt.image[dt_order] * num_classes + dt.label[dt_order]
    lo = np.searchsorted(gt_key, dt_key, side="left")
    counts = np.searchsorted(gt_key, dt_key, side="right") - lo
    pair_dt = np.repeat(np.arange(len(dt_order)), counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    pair_gt = np.repeat(lo, counts) + (np.arange(len(pair_dt)) - first)
    return pair_dt, pair_gt


def _match(gt: CocoBoxes, gt_order: np.ndarray, gt_ignore: np.ndarray, dt: CocoBoxes,
           dt_order: np.ndarray, dt_rank: np.ndarray, num_classes: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """COCOeval's greedy matching for all groups, IoU thresholds and area ranges at once.

    Returns ``matched`` bool [D, T, A], ``matched_ignored`` bool [D, T, A] (matched to a
    ground truth that is ignored in that area range), rows in ``dt_order``, and the position in
    ``gt_order`` of the ground truth each took at the first threshold and area range int64 [D]
    (-1: none).
    """
    num_t, num_a = len(IOU_THRESHOLDS), len(AREA_RANGES)
    matched = np.zeros((len(dt_order), num_t, num_a), bool)
    matched_ignored = np.zeros_like(matched)
    took = np.full(len(dt_order), -1, np.int64)
    pair_dt, pair_gt = _pairs(gt, gt_order, dt, dt_order, num_classes)
    if len(pair_dt) == 0:
        return matched, matched_ignored, took
    crowd = gt.iscrowd[gt_order]
    iou = box_iou_xywh(dt.bbox[dt_order][pair_dt], gt.bbox[gt_order][pair_gt], crowd[pair_gt])
    thresholds = np.minimum(IOU_THRESHOLDS, _MAX_MATCH_THRESHOLD)[None, :, None]
    gt_taken = np.zeros((len(gt_order), num_t, num_a), bool)
    # Pairs by detection rank: step r handles the rank-r detection of every group, after the
    # higher-scoring ones of the same group have taken their ground truth.
    by_rank = np.argsort(dt_rank[pair_dt], kind="stable")
    bounds = np.searchsorted(dt_rank[pair_dt][by_rank], np.arange(MAX_DETS[-1] + 1))
    for r in range(MAX_DETS[-1]):
        step = by_rank[bounds[r]:bounds[r + 1]]
        if len(step) == 0:
            break
        det, g = pair_dt[step], pair_gt[step]
        starts = np.flatnonzero(np.r_[True, det[1:] != det[:-1]])
        eligible = (~gt_taken[g] | crowd[g][:, None, None]) & (iou[step][:, None, None] >= thresholds)
        best = _pick_ground_truth(eligible, iou[step], gt_ignore[g], g, starts)
        s, t, a = np.nonzero(best >= 0)
        winner = best[s, t, a]
        gt_taken[winner, t, a] = True
        matched[det[starts][s], t, a] = True
        matched_ignored[det[starts][s], t, a] = gt_ignore[winner, a]
        took[det[starts]] = best[:, 0, 0]
    return matched, matched_ignored, took


def _pick_ground_truth(eligible: np.ndarray, iou: np.ndarray, ignore: np.ndarray,
                       gt_index: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """For each detection (a segment of ``starts``), the ground truth COCOeval would pick.

    ``eligible`` bool [E, T, A]; ``iou`` [E]; ``ignore`` bool [E, A]; ``gt_index`` [E] increasing
    within a segment in annotation order. pycocotools walks the ground truth with non-ignored
    boxes first and keeps the last box of highest IoU, stopping at the ignored ones once it has
    a non-ignored match. So: restrict to non-ignored boxes where any qualifies, else to ignored
    ones; take the highest IoU; break ties by the later box. Returns int64 [S, T, A], -1 = none.
    """
    segment = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(iou)]))
    ignore = ignore[:, None, :]
    has_kept = np.logical_or.reduceat(eligible & ~ignore, starts, axis=0)
    candidate = eligible & (ignore != has_kept[segment])
    scored = np.where(candidate, iou[:, None, None], -1.0)
    best_iou = np.maximum.reduceat(scored, starts, axis=0)
    winner = candidate & (scored == best_iou[segment])
    return np.maximum.reduceat(np.where(winner, gt_index[:, None, None], -1), starts, axis=0)


def _count_positives(label: np.ndarray, ignore: np.ndarray, num_classes: int) -> np.ndarray:
    """Non-ignored ground truth per category and area range, int64 [K, A]."""
    counts = np.zeros((num_classes, ignore.shape[1]), np.int64)
    np.add.at(counts, label, (~ignore).astype(np.int64))
    return counts


def _accumulate(label: np.ndarray, score: np.ndarray, rank: np.ndarray, matched: np.ndarray,
                ignore: np.ndarray, num_positive: np.ndarray) -> CocoEvalArrays:
    """COCOeval.accumulate: precision/recall per category, area range and detection cap."""
    num_t, num_r = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS)
    num_k, num_a, num_m = num_positive.shape[0], len(AREA_RANGES), len(MAX_DETS)
    precision = -np.ones((num_t, num_r, num_k, num_a, num_m))
    recall = -np.ones((num_t, num_k, num_a, num_m))
    by_label = np.argsort(label, kind="stable")  # keeps (image, rank) order inside a category
    bounds = np.searchsorted(label[by_label], np.arange(num_k + 1))
    for k in range(num_k):
        rows = by_label[bounds[k]:bounds[k + 1]]
        for m, max_det in enumerate(MAX_DETS):
            kept = rows[rank[rows] < max_det]
            # Images are concatenated in id order, then sorted by score (stable), as in
            # pycocotools: ties between images go to the lower image id.
            kept = kept[np.argsort(-score[kept], kind="stable")]
            tp = np.cumsum(matched[kept] & ~ignore[kept], axis=0, dtype=np.float64)
            fp = np.cumsum(~matched[kept] & ~ignore[kept], axis=0, dtype=np.float64)
            for a in np.flatnonzero(num_positive[k] > 0):
                p, r = _precision_recall(tp[:, :, a], fp[:, :, a], num_positive[k, a])
                precision[:, :, k, a, m] = p
                recall[:, k, a, m] = r
    return CocoEvalArrays(precision, recall)


def _precision_recall(tp: np.ndarray, fp: np.ndarray, num_positive: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Interpolated precision [T, R] and final recall [T] from cumulative TP/FP counts [D, T]."""
    n, num_t = tp.shape
    precision = np.zeros((num_t, len(RECALL_THRESHOLDS)))
    if n == 0:
        return precision, np.zeros(num_t)
    rc = tp / num_positive
    pr = tp / (fp + tp + np.spacing(1))
    envelope = np.maximum.accumulate(pr[::-1], axis=0)[::-1]
    for t in range(num_t):
        idx = np.searchsorted(rc[:, t], RECALL_THRESHOLDS, side="left")
        inside = idx < n
        precision[t, inside] = envelope[idx[inside], t]
    return precision, rc[-1]
