"""Box maths on NumPy arrays, the one copy of each conversion and overlap.

Boxes are ``(x1, y1, x2, y2)`` in absolute pixels, continuous (width = x2 - x1), as in
``torchvision.ops``; formats of the outside world are converted here, at the edge: COCO's
``(x, y, w, h)`` by `xywh_to_xyxy` / `xyxy_to_xywh` (float64, the arithmetic pycocotools does).
The devkits' inclusive-pixel boxes live with their evaluators (`eval.voc.to_inclusive`).
"""
from __future__ import annotations

import numpy as np

from eval.errors import DetectionError


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """COCO ``(x, y, w, h)`` [N, 4] -> float64 ``(x, y, x + w, y + h)`` [N, 4]."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """``(x1, y1, x2, y2)`` [N, 4] -> float64 COCO ``(x1, y1, x2 - x1, y2 - y1)`` [N, 4]."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU float64 [N, M] of continuous xyxy boxes a [N, 4] and b [M, 4] (area = w * h).

    As torchvision.ops.box_iou, except that a pair with zero union (two empty boxes) gets 0,
    not NaN.
    """
    a, b = as_boxes(a, "a"), as_boxes(b, "b")
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def as_boxes(boxes: np.ndarray, what: str) -> np.ndarray:
    """``boxes`` as float64 [N, 4]; an empty array of any shape is [0, 4]."""
    array = np.asarray(boxes, dtype=np.float64)
    if array.size == 0:
        return array.reshape(0, 4)
    if array.ndim != 2 or array.shape[1] != 4:
        raise DetectionError(f"{what}: boxes must have shape [N, 4] (x1, y1, x2, y2), "
                             f"got {list(array.shape)}")
    return array
