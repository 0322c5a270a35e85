"""Detections as they leave the toolkit: COCO results JSON, mapped onto a dataset."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class Detections:
    """The detections of one results file, mapped onto a `Dataset`, in file order.

    ``image_index`` int64 [N] indexes ``dataset.images``; ``labels`` int64 [N] in 1..K;
    ``bbox`` float64 [N, 4] is ``(x, y, w, h)`` exactly as in the results file (COCO's own
    format, kept so that the COCO protocol reproduces pycocotools bit for bit); ``scores``
    float64 [N]. File order matters: every devkit breaks score ties by it.
    """

    image_index: np.ndarray
    labels: np.ndarray
    bbox: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def boxes(self) -> np.ndarray:
        """float64 [N, 4] ``(x1, y1, x2, y2)`` with x2 = x + w, as pycocotools computes it."""
        x, y, w, h = self.bbox.T
        return np.stack([x, y, x + w, y + h], axis=1)
