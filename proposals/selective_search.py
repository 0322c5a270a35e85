"""Selective search region proposals (Uijlings et al., IJCV 2013), as R-CNN and GoogLeNet ran it.

Pipeline for one image: resize a working copy so that its longer side is at most ``max_side``;
for each colour space and each graph-segmentation scale k, over-segment the copy
(Felzenszwalb-Huttenlocher, OpenCV contrib's implementation) and group the regions
hierarchically under each similarity strategy (`proposals.grouping`); pool the regions of all
hierarchies, rank them as the paper does, drop duplicates, near-duplicates and small boxes, and
map the boxes back to the original pixels.

The ``coco`` mode pools 7 hierarchies instead (hsv k=50 under TSF; Lab k=25, 50 and 100 under
CTSF and TSF) and keeps its boxes by an objectness score (`proposals.objectness`) instead of the
paper's random ranking: the big-enough pooled boxes in score order, greedy non-maximum
suppression at IoU 0.7, stopping at 1290 boxes. Its finer Lab k=25 segmentation finds the small
objects of COCO photos; the score then picks a third of the ~4500 pooled boxes.

GoogLeNet's "superpixel size x2" is ``superpixel_scale=2``: k and the minimum region size both
doubled, which roughly halves the number of proposals.

Cost, one core of the project's 2-core machine (BENCHMARKS.md): fast mode ~0.6 s per photo of
500 px (of which ~0.55 s are the four graph segmentations), a few tens of MB; quality mode
~2.5 s. An 8000 x 6000 photo with the default ``max_side=500`` costs the same plus one
area-resize (~0.1 s) and ~40 MB above its own 144 MB (tested): only the 500 x 375 copy is
segmented. ``max_side=None`` grows at least with the pixel count: measured 4.6 s / 74 MB at
1000 x 750 and 25 s / 230 MB at 2000 x 1500 (a textured image), so 8000 x 6000 (16x more
pixels again) needs roughly 7+ minutes of CPU and ~4 GB; use a max_side.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from eval.errors import DetectionError
from eval.boxes import box_iou
from proposals.config import SelectiveSearchConfig
from proposals.grouping import Strategy, compact_labels, group, pixel_bins, region_features
from proposals.objectness import HIERARCHY_SLOTS, box_features, objectness

# The paper's similarity strategies: C = colour, T = texture, S = size, F = fill.
CTSF = Strategy(colour=True, texture=True, size=True, fill=True)
TSF = Strategy(colour=False, texture=True, size=True, fill=True)
F = Strategy(colour=False, texture=False, size=False, fill=True)
S = Strategy(colour=False, texture=False, size=True, fill=False)


@dataclass(frozen=True)
class _Diversification:
    """The hierarchies of one mode and how their boxes are chosen.

    ``segmentations``: (colour space, graph-segmentation k, similarity strategies) in order,
    one hierarchy per strategy. ``scored``: None for the paper's random ranking and near-duplicate
    filter; else the objectness score's non-maximum suppression IoU and the boxes it stops at.
    """

    segmentations: tuple[tuple[str, int, tuple[Strategy, ...]], ...]
    scored: tuple[float, int] | None = None


def _grid(colour_spaces: tuple[str, ...], ks: tuple[int, ...],
          strategies: tuple[Strategy, ...]) -> tuple[tuple[str, int, tuple[Strategy, ...]], ...]:
    """Every colour space x every k, each under every strategy (the paper's diversification)."""
    return tuple((name, k, strategies) for name in colour_spaces for k in ks)


# The coco mode's selection. On the odd half of coco128 (held out from the score's fit), NMS at
# 0.7 then 1290 boxes gave R@0.5 0.751 at 0.57x OpenCV fast's boxes (BENCHMARKS.md); the cap
# sits under 0.6x OpenCV's boxes there.
OBJECTNESS_NMS_IOU = 0.7
OBJECTNESS_MAX_BOXES = 1290

MODES: dict[str, _Diversification] = {  # keys: proposals.config.MODES
    # R-CNN's "fast" setting (IJCV 2013, table 5): 2 x 2 x 2 = 8 hierarchies.
    "fast": _Diversification(_grid(("hsv", "lab"), (50, 100), (CTSF, TSF))),
    # The paper's "quality" setting: 5 x 4 x 4 = 80 hierarchies.
    "quality": _Diversification(_grid(("hsv", "lab", "rgi", "h", "i"), (50, 100, 150, 300),
                                      (CTSF, TSF, F, S))),
    # Fast mode with hsv k=100 replaced by a finer Lab k=25 and hsv k=50's CTSF dropped, boxes
    # chosen by objectness; the score's in_hierarchy_* features follow this order.
    "coco": _Diversification((("hsv", 50, (TSF,)), ("lab", 25, (CTSF, TSF)),
                              ("lab", 50, (CTSF, TSF)), ("lab", 100, (CTSF, TSF))),
                             scored=(OBJECTNESS_NMS_IOU, OBJECTNESS_MAX_BOXES)),
}
# Bump when a change alters the boxes for the same config: proposal caches record it and refuse
# to mix versions.
ALGORITHM_VERSION = 1
GRAPH_SIGMA = 0.8  # Gaussian smoothing of the graph segmentation, the paper's value
# A box overlapping a better-ranked one by at least this IoU is dropped: such pairs differ by a
# few pixels per side, the same crop to a region classifier that warps each box with 16 px of
# context. On raccoon + voc100 (BENCHMARKS.md) this removes ~20% of the boxes at no cost in
# recall@0.5 (95.1% either way) and ~0.8 points of recall@0.7.
NEAR_DUPLICATE_IOU = 0.9
# Boxes compared at a time by the near-duplicate filter: memory stays at a few [block, N].
_NMS_BLOCK = 256
# A box's side must be at least this far below the limit to be dropped: float mapping back to
# the original pixels may land a hair under an exact integer side.
_SIDE_TOLERANCE = 1e-3


def selective_search(image: np.ndarray,
                     config: SelectiveSearchConfig = SelectiveSearchConfig()) -> np.ndarray:
    """Ranked selective search proposals of one image.

    ``image``: RGB uint8 [H, W, 3], or grayscale uint8 [H, W] or [H, W, 1]. Returns float32
    [N, 4] continuous boxes (x1, y1, x2, y2) in the image's own pixels, 0 <= x1 < x2 <= W and
    0 <= y1 < y2 <= H, best first (the coco mode: by objectness, at most 1290 boxes), no two
    equal. Deterministic for a given image and config; runs single-threaded (one process per
    image scales across cores).
    """
    scored = MODES[config.mode].scored
    if scored is not None:  # non-maximum suppression in score order, stopped at the cap
        pool, features = objectness_pool(image, config)
        order = np.argsort(-objectness(features), kind="stable")
        nms_iou, cap = scored
        return _drop_near_duplicates(pool[order], nms_iou, cap)[:config.max_boxes]
    height, width = _check_image(image)
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # no OpenCV worker threads: parallelism is the caller's, per process
    try:
        work = _working_copy(image, config.max_side)
        boxes, rank = _pooled_hierarchies(work, config)
    finally:
        cv2.setNumThreads(threads)
    boxes = _unique_ranked(boxes[np.argsort(rank, kind="stable")])
    out = _drop_near_duplicates(_to_original(boxes, work.shape[1], work.shape[0], width, height),
                                NEAR_DUPLICATE_IOU)
    # Filtering by size last keeps min_box_side a pure filter: it only removes boxes.
    out = out[_big_enough(out, config.min_box_side, width, height)]
    return out[:config.max_boxes]


def objectness_pool(image: np.ndarray,
                    config: SelectiveSearchConfig) -> tuple[np.ndarray, np.ndarray]:
    """The scored modes' candidates: every distinct box of the mode's hierarchies with both sides
    at least ``config.min_box_side``, as float32 [N, 4] xyxy original pixels (ordered as
    np.unique orders their working-image boxes), and their float64 [N, F] `box_features`.

    ``image`` as for `selective_search`; ``config.mode`` must be a scored mode (``coco``).
    The score's fit (benchmarks/fit_coco_objectness.py) reads the same pool.
    """
    height, width = _check_image(image)
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        work = _working_copy(image, config.max_side)
        hierarchies = list(_hierarchies(work, config))
        if len(hierarchies) != HIERARCHY_SLOTS:
            raise DetectionError(f"mode {config.mode!r} has {len(hierarchies)} hierarchies; "
                                 f"the objectness score was fitted on {HIERARCHY_SLOTS}")
        boxes, membership, position, initial = _pool_hierarchies(hierarchies)
        original = _to_original(boxes, work.shape[1], work.shape[0], width, height)
        big = _big_enough(original, config.min_box_side, width, height)
        features = box_features(work, boxes[big], original[big], membership[big], position[big],
                                initial[big])
    finally:
        cv2.setNumThreads(threads)
    return original[big], features


def _pool_hierarchies(hierarchies: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    """The distinct boxes int64 [N, 4] of int64 [m, 4] hierarchies (`group`'s output), with bool
    [N, H] which hierarchies hold each, float64 [N] its smallest position relative to its
    hierarchy's length (index 0 of m = 1, the last merge = 1/m) and bool [N] whether it is an
    initial region of any (the first (m + 1) / 2 of a hierarchy: m = 2n - 1)."""
    boxes = np.concatenate(hierarchies)
    slot = np.concatenate([np.full(len(h), i) for i, h in enumerate(hierarchies)])
    position = np.concatenate([np.arange(len(h), 0, -1) / len(h) for h in hierarchies])
    initial = np.concatenate([np.arange(len(h)) < (len(h) + 1) // 2 for h in hierarchies])
    unique, inverse = np.unique(boxes, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    membership = np.zeros((len(unique), len(hierarchies)), bool)
    membership[inverse, slot] = True
    best = np.full(len(unique), np.inf)
    np.minimum.at(best, inverse, position)
    first = np.zeros(len(unique), bool)
    np.logical_or.at(first, inverse, initial)
    return unique, membership, best, first


def _check_image(image: np.ndarray) -> tuple[int, int]:
    """(H, W) of a valid input image; a DetectionError naming the problem otherwise."""
    if not isinstance(image, np.ndarray):
        raise DetectionError(f"selective_search needs a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise DetectionError(f"selective_search needs a uint8 image, got {image.dtype}; "
                             "convert with (np.clip(x, 0, 1) * 255).astype(np.uint8) or similar")
    gray = image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1)
    if not (gray or (image.ndim == 3 and image.shape[2] == 3)):
        raise DetectionError(f"selective_search needs an RGB [H, W, 3] or grayscale [H, W] "
                             f"image, got shape {list(image.shape)}; drop any alpha channel")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise DetectionError(f"selective_search got an empty image of shape {list(image.shape)}")
    return image.shape[0], image.shape[1]


def _working_copy(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """RGB uint8 [h, w, 3]: the image, area-resized so that max(h, w) <= max_side.

    Resizing comes before replicating a grayscale image's channel, so a huge grayscale input
    never gets a full-size 3-channel copy.
    """
    plane = image.reshape(image.shape[:2]) if image.ndim == 3 and image.shape[2] == 1 else image
    height, width = plane.shape[:2]
    if max_side is not None and max(height, width) > max_side:
        factor = max_side / max(height, width)
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
        plane = cv2.resize(plane, size, interpolation=cv2.INTER_AREA)
        plane = plane.reshape(size[1], size[0], *plane.shape[2:])  # cv2 drops 1-px axes' shape
    if plane.ndim == 2:
        plane = np.repeat(plane[:, :, None], 3, axis=2)
    return np.ascontiguousarray(plane)


def colour_space(rgb: np.ndarray, name: str) -> np.ndarray:
    """uint8 [H, W, C] of an RGB uint8 [H, W, 3] image in one of the paper's colour spaces:
    "hsv" (hue over the full 0..255), "lab", "rgi" (normalised r, g and intensity), "h" (hue
    only), "i" (intensity only)."""
    if name in ("hsv", "h"):
        hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV_FULL)
        return hsv if name == "hsv" else hsv[:, :, :1].copy()
    if name == "lab":
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab)
    total = rgb.astype(np.float32).sum(axis=2, keepdims=True)
    if name == "i":
        return np.round(total / 3).astype(np.uint8)
    if name == "rgi":
        chroma = rgb[:, :, :2] * (255.0 / np.maximum(total, 1.0))  # black: r = g = 0
        return np.round(np.concatenate([chroma, total / 3], axis=2)).astype(np.uint8)
    raise DetectionError(f"unknown colour space {name!r}")


def _hierarchies(work: np.ndarray, config: SelectiveSearchConfig) -> Iterator[np.ndarray]:
    """int64 [m, 4] inclusive region boxes (working-image pixels) of each hierarchy, in
    creation order; segmentations are shared by the strategies."""
    converted_name = None
    for name, k, strategies in MODES[config.mode].segmentations:
        if name != converted_name:  # consecutive segmentations share a colour space's pixels
            converted, converted_name = colour_space(work, name), name
            bins = pixel_bins(converted)
        scaled = k * config.superpixel_scale
        # The paper ties the minimum region size to k (min_size = k).
        segmenter = cv2.ximgproc.segmentation.createGraphSegmentation(
            GRAPH_SIGMA, float(scaled), max(1, round(scaled)))
        labels = compact_labels(segmenter.processImage(converted))
        regions = region_features(bins, labels)
        for strategy in strategies:
            yield group(regions, strategy)


def _pooled_hierarchies(work: np.ndarray,
                        config: SelectiveSearchConfig) -> tuple[np.ndarray, np.ndarray]:
    """All hierarchies' boxes int64 [M, 4] and their rank values float64 [M] (lower = better).

    The paper's ranking: a region's value is its position in its hierarchy (1 = the region
    covering the image, i.e. the last one created) times a uniform random number, so every
    hierarchy contributes its large regions early but no hierarchy dominates the top.
    """
    rng = np.random.default_rng(config.seed)
    boxes, ranks = [], []
    for hierarchy in _hierarchies(work, config):
        position = np.arange(len(hierarchy), 0, -1, dtype=np.float64)
        boxes.append(hierarchy)
        ranks.append(position * rng.random(len(hierarchy)))
    return np.concatenate(boxes), np.concatenate(ranks)


def _unique_ranked(boxes: np.ndarray) -> np.ndarray:
    """The first occurrence of each distinct box of int64 [M, 4], order kept."""
    _, first = np.unique(boxes, axis=0, return_index=True)
    return boxes[np.sort(first)]


def _to_original(boxes: np.ndarray, work_w: int, work_h: int, width: int,
                 height: int) -> np.ndarray:
    """float32 [N, 4] continuous xyxy in original pixels from inclusive working-image bounds.

    x_orig = x_work * width / work_w in float64: exact at the image's border (work_w * width /
    work_w == width), then clipped to the image.
    """
    continuous = boxes.astype(np.float64)
    continuous[:, 2:] += 1.0  # inclusive last pixel -> continuous right/bottom edge
    continuous[:, 0::2] = np.clip(continuous[:, 0::2] * width / work_w, 0, width)
    continuous[:, 1::2] = np.clip(continuous[:, 1::2] * height / work_h, 0, height)
    return continuous.astype(np.float32)


def _drop_near_duplicates(boxes: np.ndarray, threshold: float,
                          limit: int | None = None) -> np.ndarray:
    """The ranked boxes float32 [N, 4] without any box whose IoU with a better-ranked kept box
    is >= threshold (greedy, as non-maximum suppression with rank as the score); with a
    ``limit``, only the first ``limit`` of those, and the search stops once it has them.

    Blocks of boxes are first checked against every box kept so far in one call, then among
    themselves; memory stays at [block, N].
    """
    kept = boxes[:0]
    for start in range(0, len(boxes), _NMS_BLOCK):
        if limit is not None and len(kept) >= limit:
            break
        block = boxes[start:start + _NMS_BLOCK]
        alive = box_iou(block, kept).max(axis=1, initial=0.0) < threshold
        within = box_iou(block, block) >= threshold
        for i in np.flatnonzero(alive):
            if alive[i]:
                alive[i + 1:] &= ~within[i, i + 1:]
        kept = np.concatenate([kept, block[alive]])
    return kept[:limit]


def _big_enough(boxes: np.ndarray, min_side: float, width: int, height: int) -> np.ndarray:
    """bool [N]: both sides at least min_side original pixels (capped at the image's side)."""
    min_w = min(min_side, width) - _SIDE_TOLERANCE
    min_h = min(min_side, height) - _SIDE_TOLERANCE
    return (boxes[:, 2] - boxes[:, 0] >= min_w) & (boxes[:, 3] - boxes[:, 1] >= min_h)
