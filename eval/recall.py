"""Proposal quality: recall of the ground truth versus the number of proposals per image.

Continuous coordinates (area = w * h, no +1), like torchvision.ops.box_iou: proposals are ours,
not a devkit's. A gt box counts as recalled at IoU t by the top N proposals of its image when
one of them overlaps it with IoU >= t; average recall (AR) is the mean recall over IoU
0.5:0.05:0.95, as detectron2 and Hosang et al. report it.

NumPy-only: the evaluation path never imports torch.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from eval.boxes import as_boxes, box_iou
from eval.datasets import ImageRecord
from eval.errors import DetectionError

# Rounded so that the columns are the doubles nearest 0.5, 0.55, ..., 0.95 and
# `recall_at(0.7)` reads the same column as the table.
AR_IOU_THRESHOLDS = np.round(np.linspace(0.5, 0.95, 10), 2)
DEFAULT_COUNTS: tuple[int | None, ...] = (1, 10, 100, 300, 1000, 2000, None)  # None: all
# Proposals are scored against the gts this many at a time: 4096 x G float64 at most in memory.
_CHUNK = 4096


@dataclass(frozen=True, eq=False)
class RecallResult:
    """Recall of ``num_gt`` gt boxes by the top-N proposals of their images.

    ``counts`` [C]: the N of each row (None: every proposal). ``iou_thresholds`` [T].
    ``recall`` [C, T]. ``average_recall`` [C]: mean recall over IoU 0.5:0.05:0.95, whatever
    ``iou_thresholds`` is. ``mean_proposals`` [C]: proposals per image actually used (an image
    with fewer than N gives all it has). ``best_iou`` [C, num_gt]: each gt's best IoU among the
    top-N. With no gt at all, recall and AR are NaN.
    """

    counts: tuple[int | None, ...]
    iou_thresholds: np.ndarray
    recall: np.ndarray
    average_recall: np.ndarray
    mean_proposals: np.ndarray
    num_gt: int
    best_iou: np.ndarray

    def recall_at(self, iou: float, count: int | None = None) -> float:
        """Recall at IoU >= ``iou`` with the top ``count`` proposals (None: all of them);
        ``count`` must be one of ``counts``."""
        if count not in self.counts:
            raise DetectionError(f"no recall computed for {count} proposals; "
                                 f"counts are {list(self.counts)}")
        return _recall(self.best_iou[self.counts.index(count)], np.array([iou]))[0]

    def format_table(self) -> str:
        """A text table: one row per count, one column per IoU threshold, then AR."""
        head = ["proposals", "per image"] + [f"R@{t:.2f}" for t in self.iou_thresholds] + ["AR"]
        rows = [head]
        for c, count in enumerate(self.counts):
            values = [*self.recall[c], self.average_recall[c]]
            rows.append(["all" if count is None else str(count), f"{self.mean_proposals[c]:.1f}"]
                        + [f"{v:.4f}" for v in values])
        widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
        lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in rows]
        return "\n".join([f"proposal recall over {self.num_gt} gt boxes", *lines])


def proposal_recall(gt_boxes: Sequence[np.ndarray], proposals: Sequence[np.ndarray],
                    counts: Sequence[int | None] = DEFAULT_COUNTS,
                    iou_thresholds: np.ndarray = AR_IOU_THRESHOLDS) -> RecallResult:
    """Recall versus number of proposals over a set of images.

    ``gt_boxes[i]`` [G_i, 4] and ``proposals[i]`` [P_i, 4] are continuous xyxy boxes of image
    i; proposals are ranked, best first. Each row of the result uses the top N of every image.
    """
    if len(gt_boxes) != len(proposals):
        raise DetectionError(f"{len(proposals)} proposal lists for {len(gt_boxes)} images; "
                             "give one (possibly empty) list per image")
    counts = check_counts(counts)
    thresholds = np.asarray(iou_thresholds, dtype=np.float64).reshape(-1)
    per_image = [prefix_best_iou(as_boxes(g, f"gt of image {i}"),
                                 as_boxes(p, f"proposals of image {i}"), counts)
                 for i, (g, p) in enumerate(zip(gt_boxes, proposals))]
    best = np.concatenate([np.zeros((len(counts), 0)), *per_image], axis=1)
    used = [[_limit(n, len(as_boxes(p, "proposals"))) for n in counts] for p in proposals]
    mean_used = np.mean(used, axis=0) if used else np.zeros(len(counts))
    return recall_result(best, counts, mean_used, thresholds)


def recall_result(best_iou: np.ndarray, counts: tuple[int | None, ...], mean_proposals: np.ndarray,
                  iou_thresholds: np.ndarray = AR_IOU_THRESHOLDS) -> RecallResult:
    """The `RecallResult` of each gt's best IoU among the top-N proposals, ``best_iou``
    float64 [C, G] (rows: ``counts``, checked by `check_counts`); ``mean_proposals`` [C]:
    proposals per image used. Any subset of gts (columns) gives its own result."""
    best_iou = np.asarray(best_iou, np.float64)
    if best_iou.ndim != 2 or len(best_iou) != len(counts):
        raise ValueError(f"best_iou must be [{len(counts)}, G], got {best_iou.shape}")
    thresholds = np.asarray(iou_thresholds, dtype=np.float64).reshape(-1)
    return RecallResult(
        counts=counts, iou_thresholds=thresholds,
        recall=np.stack([_recall(row, thresholds) for row in best_iou]),
        average_recall=np.array([_recall(row, AR_IOU_THRESHOLDS).mean() for row in best_iou]),
        mean_proposals=np.asarray(mean_proposals, np.float64), num_gt=best_iou.shape[1],
        best_iou=best_iou)


def evaluate_proposals(records: Sequence[ImageRecord], proposals: Sequence[np.ndarray],
                       counts: Sequence[int | None] = DEFAULT_COUNTS,
                       iou_thresholds: np.ndarray = AR_IOU_THRESHOLDS) -> RecallResult:
    """`proposal_recall` against the records' ground truth (a dataset's ``images``); crowd
    boxes (COCO) are left out, as they stand for many objects at once. ``proposals[i]``
    belongs to ``records[i]``. The propose command's summary and MultiBox training's
    validation both measure recall this way."""
    gts = [np.asarray(im.boxes).reshape(-1, 4)[~np.asarray(im.iscrowd, bool).reshape(-1)]
           for im in records]
    return proposal_recall(gts, proposals, counts, iou_thresholds)


def prefix_best_iou(gt: np.ndarray, proposals: np.ndarray,
                    counts: tuple[int | None, ...]) -> np.ndarray:
    """float64 [C, G]: each gt's best IoU among the top-N proposals, for each N in counts
    (0 when there are none). A running max over the ranked proposals, in chunks."""
    limits = [_limit(n, len(proposals)) for n in counts]
    out = np.zeros((len(counts), len(gt)))
    if len(gt) == 0:
        return out
    best, done = np.zeros(len(gt)), 0
    for c in np.argsort(limits, kind="stable"):
        for start in range(done, limits[c], _CHUNK):
            stop = min(start + _CHUNK, limits[c])
            best = np.maximum(best, box_iou(proposals[start:stop], gt).max(axis=0))
        done = max(done, limits[c])
        out[c] = best
    return out


def _limit(count: int | None, available: int) -> int:
    return available if count is None else min(count, available)


def _recall(best_iou: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Fraction of gts [G] with best IoU >= each threshold [T]; NaN [T] when G == 0."""
    if best_iou.size == 0:
        return np.full(len(thresholds), np.nan)
    return (best_iou[None, :] >= thresholds[:, None]).mean(axis=1)


def check_counts(counts: Sequence[int | None]) -> tuple[int | None, ...]:
    """``counts`` as a tuple of distinct positive ints and None (all), else one error."""
    counts = tuple(counts)
    for n in counts:
        integer = isinstance(n, (int, np.integer)) and not isinstance(n, bool)
        if n is not None and not (integer and n >= 1):
            raise DetectionError(f"proposal counts must be positive integers or None (all), "
                                 f"got {n!r}")
    if not counts or len(set(counts)) != len(counts):
        raise DetectionError(f"proposal counts must be distinct and not empty, got {list(counts)}")
    return tuple(None if n is None else int(n) for n in counts)
