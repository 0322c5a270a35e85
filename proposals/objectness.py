"""An objectness score for selective search boxes: the ``coco`` mode's way of choosing which of
its pooled boxes to keep (`proposals.selective_search`).

Each box gets cheap, deterministic features of the working image (the resized copy that
selective search segments), all read from integral images, so a box costs O(1) whatever its size:

- edges: the mean Sobel magnitude (normalised by the image's mean) inside the box, in its core
  (the middle half of each side), in the ring between the two, on its 1 px border and in a ring
  around it a fifth of the box's side wide (clipped to the image); the density of Canny edges
  inside and on the border;
- colour: the distance between the box's mean Lab colour and that of the outer ring, and the
  Lab spread (standard deviation) inside;
- geometry, in original pixels: log of the side sqrt(w * h), |log aspect|, and their squares;
- hierarchy: how many hierarchies produced the box, its best position in them (creation index
  relative to the hierarchy's length, small = a late, large merge), whether it is an initial
  region, and which hierarchies produced it.

Each edge and colour feature enters as log1p(x) and as log1p(x) * log side. The score is a
logistic regression's logit over the standardised features; only its order matters.
"""
from __future__ import annotations

import cv2
import numpy as np

# The per-box measures of the working image, in `image_measures`' column order.
MEASURES = ("edge_in", "edge_core", "edge_ring_in", "edge_border", "canny_border", "canny_in",
            "edge_ring_out", "contrast", "inner_std")
HIERARCHY_SLOTS = 7  # the coco mode's hierarchies, in `proposals.selective_search.MODES` order
FEATURES = (("log_side", "log_side^2", "abs_log_aspect", "abs_log_aspect^2", "n_hierarchies",
             "log_min_rel_position", "is_initial_region")
            + tuple(f"in_hierarchy_{h}" for h in range(HIERARCHY_SLOTS))
            + tuple(name for m in MEASURES for name in (f"log1p_{m}", f"log1p_{m}*log_side")))
CANNY_THRESHOLDS = (50, 150)  # OpenCV's Canny hysteresis thresholds on the RGB working copy
RING = 5  # the outer ring is 1 / RING of the box's side wide on each side (a box 40% wider)

# Fitted by benchmarks/fit_coco_objectness.py (it prints these lines) on the even-numbered images
# of ../shared/data/coco128 only (the odd half is held out): every big-enough pooled box of the
# coco preset, positive when its IoU with a non-crowd ground truth box is >= 0.5; each positive
# weighted 1 / (the number of pooled boxes hitting that ground truth box) so that small objects,
# covered by few boxes, count as much as large ones; positives and negatives 0.5 of the total
# weight each; L2 1e-4 on the standardised weights; scipy's L-BFGS-B from zero.
# BEGIN FITTED WEIGHTS
MEAN = (
    3.600324556443114,  # log_side
    13.629063979273834,  # log_side^2
    0.7053945706291491,  # abs_log_aspect
    0.8942163424299568,  # abs_log_aspect^2
    1.4102832087608912,  # n_hierarchies
    -1.0038727365240023,  # log_min_rel_position
    0.4664534155370691,  # is_initial_region
    0.23221499655138436,  # in_hierarchy_0
    0.3561821713610067,  # in_hierarchy_1
    0.36907929000746026,  # in_hierarchy_2
    0.1569331250087975,  # in_hierarchy_3
    0.1625740748560731,  # in_hierarchy_4
    0.06508734146925102,  # in_hierarchy_5
    0.06821220950691835,  # in_hierarchy_6
    0.8254407519784613,  # log1p_edge_in
    2.9350800701305553,  # log1p_edge_in*log_side
    0.7805619123770408,  # log1p_edge_core
    2.785360141635366,  # log1p_edge_core*log_side
    0.8385147920136032,  # log1p_edge_ring_in
    2.9767410023971825,  # log1p_edge_ring_in*log_side
    0.8652608418191329,  # log1p_edge_border
    3.0723482394630324,  # log1p_edge_border*log_side
    0.2204438302896487,  # log1p_canny_border
    0.7716969792379011,  # log1p_canny_border*log_side
    0.21002111410474872,  # log1p_canny_in
    0.7382211033624394,  # log1p_canny_in*log_side
    0.8300769721018092,  # log1p_edge_ring_out
    2.9434014880159056,  # log1p_edge_ring_out*log_side
    2.6332147240644788,  # log1p_contrast
    9.605180124767093,  # log1p_contrast*log_side
    3.455725351606935,  # log1p_inner_std
    12.619929696704169,  # log1p_inner_std*log_side
)
STD = (
    0.8165335689239622,  # log_side
    6.236591024720491,  # log_side^2
    0.6297895231078975,  # abs_log_aspect
    1.6255356416233453,  # abs_log_aspect^2
    0.5743426529853579,  # n_hierarchies
    0.8773561101609247,  # log_min_rel_position
    0.49887335834713503,  # is_initial_region
    0.4222454177053175,  # in_hierarchy_0
    0.4788699542905999,  # in_hierarchy_1
    0.48255545656370785,  # in_hierarchy_2
    0.36373770771191005,  # in_hierarchy_3
    0.3689766195552821,  # in_hierarchy_4
    0.24667991394345412,  # in_hierarchy_5
    0.2521097072409754,  # in_hierarchy_6
    0.30858552528613953,  # log1p_edge_in
    1.1586275087930584,  # log1p_edge_in*log_side
    0.34540308019974836,  # log1p_edge_core
    1.3168123404878127,  # log1p_edge_core*log_side
    0.3094755882601605,  # log1p_edge_ring_in
    1.1453490279357712,  # log1p_edge_ring_in*log_side
    0.32516285125271716,  # log1p_edge_border
    1.213654793151902,  # log1p_edge_border*log_side
    0.1093805395110047,  # log1p_canny_border
    0.3782291420898735,  # log1p_canny_border*log_side
    0.09710520414751872,  # log1p_canny_in
    0.3485700928847849,  # log1p_canny_in*log_side
    0.2872071817393909,  # log1p_edge_ring_out
    1.047831266359471,  # log1p_edge_ring_out*log_side
    0.8923628396446761,  # log1p_contrast
    4.252292117346665,  # log1p_contrast*log_side
    0.62480620409793,  # log1p_inner_std
    4.183322049633508,  # log1p_inner_std*log_side
)
WEIGHTS = (
    1.881967638779239,  # log_side
    -0.8922844651949894,  # log_side^2
    -0.12405800967232099,  # abs_log_aspect
    -0.4251825024111596,  # abs_log_aspect^2
    -0.16115683279133672,  # n_hierarchies
    -0.3535332111664913,  # log_min_rel_position
    0.22237473940306032,  # is_initial_region
    -0.0862299381108296,  # in_hierarchy_0
    -0.02436765231900279,  # in_hierarchy_1
    -0.17374127311052975,  # in_hierarchy_2
    0.08421976496700787,  # in_hierarchy_3
    -0.06327337557211547,  # in_hierarchy_4
    0.07603073522224274,  # in_hierarchy_5
    0.052821948681049495,  # in_hierarchy_6
    1.3002936352192538,  # log1p_edge_in
    0.2942307103688434,  # log1p_edge_in*log_side
    0.15183131778854023,  # log1p_edge_core
    -0.5907246826497937,  # log1p_edge_core*log_side
    0.4278030491500587,  # log1p_edge_ring_in
    -0.626406646640416,  # log1p_edge_ring_in*log_side
    0.5119413948274366,  # log1p_edge_border
    -0.5868071267381291,  # log1p_edge_border*log_side
    -0.956115050489396,  # log1p_canny_border
    0.7353822737529601,  # log1p_canny_border*log_side
    0.5840180078677796,  # log1p_canny_in
    -0.9208150191967261,  # log1p_canny_in*log_side
    -0.6216744247655355,  # log1p_edge_ring_out
    0.10137742863741946,  # log1p_edge_ring_out*log_side
    1.4267241009237777,  # log1p_contrast
    -1.169829899365689,  # log1p_contrast*log_side
    -0.2484143807899753,  # log1p_inner_std
    1.300363023143103,  # log1p_inner_std*log_side
)
BIAS = -1.1092884750487129
# END FITTED WEIGHTS


def image_measures(rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """float64 [N, len(MEASURES)] of inclusive int boxes [N, 4] (x1, y1, x2, y2 inside the RGB
    uint8 image [h, w, 3]); rings are clipped to the image."""
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab).astype(np.float32)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
    magnitude = np.sqrt(gx * gx + gy * gy)  # not cv2.magnitude: its last bit varies with address
    edges = _integral(magnitude)
    # Contrast-free: 1 = the image's average edge, read from the summed-area table (one fixed
    # summation order, whatever SIMD path a reduction would take).
    edges /= edges[-1, -1] / magnitude.size + 1e-6
    canny = (cv2.Canny(rgb, *CANNY_THRESHOLDS) > 0).astype(np.float32)
    cannies = _integral(canny)
    colours = [_integral(lab[:, :, c]) for c in range(3)]
    squares = [_integral(lab[:, :, c] ** 2) for c in range(3)]

    x1, y1, x2, y2 = (boxes[:, k].astype(np.int64) for k in range(4))
    inside = (x1, y1, x2, y2)
    dx, dy = (x2 - x1 + 1) // 4, (y2 - y1 + 1) // 4
    core = (x1 + dx, y1 + dy, x2 - dx, y2 - dy)
    ex = np.maximum((x2 - x1 + 1) // RING, 1)  # the ring: a fifth of the side, at least 1 px
    ey = np.maximum((y2 - y1 + 1) // RING, 1)
    outer = (x1 - ex, y1 - ey, x2 + ex, y2 + ey)
    sides = ((x1, y1, x2, y1), (x1, y2, x2, y2), (x1, y1, x1, y2), (x2, y1, x2, y2))

    edge_in, area = _box_sum(edges, *inside)
    edge_core, core_area = _box_sum(edges, *core)
    edge_out, out_area = _box_sum(edges, *outer)
    ring_area = np.maximum(out_area - area, 1)
    border_area = sum(_box_sum(edges, *side)[1] for side in sides)
    contrast = spread = 0.0
    for colour, square in zip(colours, squares):
        total, _ = _box_sum(colour, *inside)
        mean_in = total / area
        mean_ring = (_box_sum(colour, *outer)[0] - total) / ring_area
        contrast = contrast + (mean_in - mean_ring) ** 2
        spread = spread + np.maximum(_box_sum(square, *inside)[0] / area - mean_in ** 2, 0)
    columns = {
        "edge_in": edge_in / area,
        "edge_core": edge_core / np.maximum(core_area, 1),
        "edge_ring_in": (edge_in - edge_core) / np.maximum(area - core_area, 1),
        "edge_border": sum(_box_sum(edges, *side)[0] for side in sides) / border_area,
        "canny_border": sum(_box_sum(cannies, *side)[0] for side in sides) / border_area,
        "canny_in": _box_sum(cannies, *inside)[0] / area,
        "edge_ring_out": (edge_out - edge_in) / ring_area,
        "contrast": np.sqrt(contrast) * (out_area > area),  # no ring (the whole image): 0
        "inner_std": np.sqrt(spread),
    }
    return np.stack([columns[name] for name in MEASURES], axis=1)


def _integral(plane: np.ndarray) -> np.ndarray:
    """float64 [h + 1, w + 1] summed-area table of a 2-D plane."""
    return cv2.integral(plane.astype(np.float64))


def _box_sum(table: np.ndarray, x1: np.ndarray, y1: np.ndarray, x2: np.ndarray,
             y2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sum, pixel count) over inclusive int boxes, each first clipped to the image."""
    height, width = table.shape[0] - 1, table.shape[1] - 1
    x1, y1 = np.clip(x1, 0, width), np.clip(y1, 0, height)
    x2, y2 = np.clip(x2 + 1, x1, width), np.clip(y2 + 1, y1, height)
    total = table[y2, x2] - table[y1, x2] - table[y2, x1] + table[y1, x1]
    return total, (x2 - x1) * (y2 - y1)


def box_features(rgb: np.ndarray, boxes: np.ndarray, original: np.ndarray,
                 membership: np.ndarray, position: np.ndarray,
                 initial: np.ndarray) -> np.ndarray:
    """float64 [N, len(FEATURES)] of N pooled boxes.

    ``rgb``: the working image, uint8 [h, w, 3]; ``boxes``: int [N, 4] inclusive boxes in it;
    ``original``: the same boxes as continuous xyxy in the original pixels (for the geometry);
    ``membership``: bool [N, HIERARCHY_SLOTS], which hierarchies produced each box;
    ``position``: float [N] in (0, 1], the smallest creation position relative to its
    hierarchy's length (1 = an initial region, 1/m = the last merge of m); ``initial``: bool [N],
    an initial region of some hierarchy.
    """
    width = (original[:, 2] - original[:, 0]).astype(np.float64)
    height = (original[:, 3] - original[:, 1]).astype(np.float64)
    log_side = np.log(np.sqrt(np.maximum(width * height, 1)))
    aspect = np.abs(np.log(np.maximum(width, 1) / np.maximum(height, 1)))
    columns = [log_side, log_side ** 2, aspect, aspect ** 2,
               membership.sum(axis=1).astype(np.float64), np.log(position),
               initial.astype(np.float64)]
    columns += [membership[:, h].astype(np.float64) for h in range(HIERARCHY_SLOTS)]
    for measure in np.log1p(image_measures(rgb, boxes)).T:
        columns += [measure, measure * log_side]
    return np.stack(columns, axis=1)


def objectness(features: np.ndarray) -> np.ndarray:
    """float64 [N]: the fitted logit of each row of `box_features` (higher = more object-like)."""
    standard = (features - np.asarray(MEAN)) / np.asarray(STD)
    return standard @ np.asarray(WEIGHTS) + BIAS
