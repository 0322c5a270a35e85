"""Dataset readers: COCO instances JSON, PASCAL VOC folders, ILSVRC DET folders.

Every format becomes one in-memory form, `Dataset`: an ordered class list and, per image, its
id, file, size and ground truth as float32 ``(x1, y1, x2, y2)`` boxes in absolute pixels with
labels ``1..K`` (0 is background). Dataset ids and names are mapped here, at the I/O edge only.

NumPy-only (Pillow is imported lazily by `read_image`): the evaluation path uses this module and
must not need torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, eq=False)
class ImageRecord:
    """One image and its ground truth.

    ``boxes`` float32 [N, 4] xyxy in the image's pixels (continuous: width = x2 - x1,
    0 <= x1 < x2 <= width); ``labels`` int64 [N] in 1..K; ``difficult`` bool [N] (PASCAL VOC:
    neither true nor false positive); ``iscrowd`` bool [N] (COCO: ignored); ``areas`` float64
    [N], COCO's annotation ``area`` (the segment's area) or the box area for other formats.
    """

    image_id: int | str
    file_name: str
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray
    iscrowd: np.ndarray
    areas: np.ndarray


@dataclass(frozen=True, eq=False)
class Dataset:
    """An ordered class list and its images.

    ``classes[i - 1]`` is the name of label ``i``; ``category_ids[i - 1]`` is the dataset's own
    id for it (COCO category ids; ``1..K`` for VOC and ILSVRC folders). ``blacklist`` holds
    ``(image index, label)`` pairs that the ILSVRC protocol skips. ``source`` is the path read.
    """

    classes: tuple[str, ...]
    images: tuple[ImageRecord, ...]
    category_ids: tuple[int, ...]
    source: str = ""
    blacklist: frozenset[tuple[int, int]] = field(default_factory=frozenset)
