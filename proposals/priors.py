"""MultiBox prior boxes: k-means over training boxes with the distance 1 - IoU.

Boxes are ``(x1, y1, x2, y2)`` in normalised image coordinates. With the IoU distance a cluster
of small boxes is as tight as one of large boxes (a Euclidean k-means would spend its centres on
the large ones); this is the clustering MultiBox's priors and YOLOv2's anchors use. Centres are
the mean corners of their members. Deterministic for a given seed.
"""
from __future__ import annotations

import numpy as np

from eval.errors import DetectionError
from eval.boxes import box_iou

# Assignment is done in blocks of boxes so that the [block, K] IoU matrix stays small
# (4096 x 800 float64 is 26 MB).
_BLOCK = 4096


def cluster_priors(boxes: np.ndarray, k: int, *, seed: int = 0, iterations: int = 100
                   ) -> np.ndarray:
    """K prior boxes ``float32 [k, 4]`` clustering ``boxes [M, 4]`` (normalised xyxy).

    Greedy k-means++ seeding (the next centre drawn with probability proportional to its
    squared distance, best of a few draws) then Lloyd iterations until no assignment changes
    or ``iterations`` ran. A cluster that loses all its members takes the box farthest from
    its own centre.
    Needs at least ``k`` distinct boxes.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise DetectionError(f"training boxes have shape {boxes.shape}; expected [M, 4]")
    distinct = len(np.unique(boxes, axis=0))
    if k < 1 or distinct < k:
        raise DetectionError(f"cannot make {k} priors from {distinct} distinct training boxes; "
                             "lower the number of priors or sample more augmented boxes")
    rng = np.random.default_rng(seed)
    centres = _seed_centres(boxes, k, rng)
    assignment = np.full(len(boxes), -1)
    for _ in range(iterations):
        new, best = _assign(boxes, centres)
        if np.array_equal(new, assignment):
            break
        assignment = new
        centres = _update(boxes, assignment, best, centres)
    return centres.astype(np.float32)


def mean_best_iou(boxes: np.ndarray, priors: np.ndarray) -> float:
    """Mean over ``boxes`` of the IoU with their best prior: how well the priors cover them."""
    return float(_assign(np.asarray(boxes, np.float64), np.asarray(priors, np.float64))[1].mean())


def _seed_centres(boxes: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy k-means++: at each step draw a few candidates (probability ~ squared distance to
    the nearest centre so far) and keep the one that lowers the total squared distance most.
    Plain k-means++ takes one draw and, with few far groups, sometimes seeds one group twice."""
    trials = 2 + int(np.log(k))
    centres = [boxes[rng.integers(len(boxes))]]
    nearest = 1.0 - box_iou(boxes, centres[0][None])[:, 0]
    for _ in range(1, k):
        weights = nearest ** 2
        total = weights.sum()
        if total <= 0:  # every box coincides with a centre: take the next unused box
            candidates = np.array([int(np.argmax(nearest))])
        else:
            candidates = rng.choice(len(boxes), size=trials, p=weights / total)
        distances = np.minimum(nearest[:, None], 1.0 - box_iou(boxes, boxes[candidates]))
        best = int(np.argmin((distances ** 2).sum(axis=0)))
        centres.append(boxes[candidates[best]])
        nearest = distances[:, best]
    return np.stack(centres)


def _assign(boxes: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of each box's nearest centre (highest IoU; ties: lowest index) and that IoU."""
    index, best = np.empty(len(boxes), np.int64), np.empty(len(boxes))
    for start in range(0, len(boxes), _BLOCK):
        iou = box_iou(boxes[start:start + _BLOCK], centres)
        index[start:start + _BLOCK] = iou.argmax(1)
        best[start:start + _BLOCK] = iou.max(1)
    return index, best


def _update(boxes: np.ndarray, assignment: np.ndarray, best: np.ndarray,
            centres: np.ndarray) -> np.ndarray:
    k = len(centres)
    counts = np.bincount(assignment, minlength=k)
    sums = np.zeros((k, 4))
    np.add.at(sums, assignment, boxes)
    new = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centres)
    # Empty clusters take the worst-covered boxes, one each, worst first.
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        worst = np.argsort(best, kind="stable")[:len(empty)]
        new[empty] = boxes[worst]
    return new
