"""Small in-memory datasets and detections for the evaluator tests."""
from __future__ import annotations

import numpy as np

from eval.datasets import Dataset, ImageRecord
from eval.detections import Detections


def make_dataset(images: list[list[tuple]], classes=("a", "b", "c"), blacklist=frozenset()) -> Dataset:
    """images[i]: list of (x1, y1, x2, y2, label[, difficult]) continuous boxes."""
    records = []
    for i, objects in enumerate(images):
        rows = [tuple(o) + (False,) * (6 - len(o)) for o in objects]
        boxes = np.array([r[:4] for r in rows], np.float32).reshape(-1, 4)
        records.append(ImageRecord(
            image_id=i, file_name=f"{i}.jpg", width=500, height=500, boxes=boxes,
            labels=np.array([r[4] for r in rows], np.int64),
            difficult=np.array([r[5] for r in rows], bool),
            iscrowd=np.zeros(len(rows), bool), areas=np.zeros(len(rows))))
    return Dataset(classes=tuple(classes), images=tuple(records),
                   category_ids=tuple(range(1, len(classes) + 1)), blacklist=frozenset(blacklist))


def make_detections(rows: list[tuple]) -> Detections:
    """rows: (image index, label, score, x1, y1, x2, y2) continuous boxes, in file order."""
    a = np.array(rows, np.float64).reshape(-1, 7)
    bbox = np.stack([a[:, 3], a[:, 4], a[:, 5] - a[:, 3], a[:, 6] - a[:, 4]], axis=1)
    return Detections(image_index=a[:, 0].astype(np.int64), labels=a[:, 1].astype(np.int64),
                      bbox=bbox, scores=a[:, 2])
