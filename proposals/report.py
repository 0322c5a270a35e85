"""Proposal caches against a dataset's ground truth: the report of `eval.proposal_report` for
each cache, read image by image.

    from proposals.report import evaluate_caches
    reports = evaluate_caches("instances_val2017.json", ["cache/ss_x2", "cache/ss_x2_mb"])
    for path, report in reports.items():
        print(report.format(path))

Every cache is opened and checked to hold every image of the dataset before any is read: an
image never computed is one error naming the cache and the propose command that fills it; an
image recorded as failed counts as having no proposals (its gts are missed), with one warning.
Torch-free, like the evaluate command that calls it (`pip install .` alone serves it).
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from eval.datasets import ImageRecord, load_dataset
from eval.errors import DetectionError
from eval.proposal_report import REPORT_COUNTS, ProposalRecallAccumulator, ProposalReport
from proposals.cache import ProposalCache

PathLike = str | os.PathLike
# How many image ids an error or warning lists.
_SHOWN = 5


def evaluate_caches(gt: PathLike, caches: Sequence[PathLike], images: PathLike | None = None,
                    split: str | None = None, classes: PathLike | None = None,
                    counts: Sequence[int | None] = REPORT_COUNTS, progress: bool = True
                    ) -> dict[str, ProposalReport]:
    """The `ProposalReport` of each proposal cache (keyed by its path as given) on the images
    of ``gt`` (``images``, ``split`` and ``classes`` as `eval.load_dataset` takes them)."""
    dataset = load_dataset(gt, images=images, classes=classes, split=split)
    opened = open_caches(caches, dataset.images, dataset_flags(gt, images, classes, split))
    return {name: evaluate_cache(cache, dataset.images, counts, progress)
            for name, cache in opened.items()}


def open_caches(caches: Sequence[PathLike], records: Sequence[ImageRecord], flags: str
                ) -> dict[str, ProposalCache]:
    """Each cache opened (path as given -> cache) and checked to hold or to have recorded as
    failed every image of ``records``; ``flags`` give the propose command the same dataset
    (`dataset_flags`), for the error. All checked before any box is read."""
    opened: dict[str, ProposalCache] = {}
    for path in caches:
        if str(path) in opened or any(Path(path).resolve() == c.root.resolve()
                                      for c in opened.values()):
            raise DetectionError(f"{path}: this proposal cache is given twice; give each once")
        cache = ProposalCache.open(path)
        _, missing = cache.partition([r.image_id for r in records])
        if missing:
            first = ", ".join(repr(i) for i in missing[:_SHOWN])
            raise DetectionError(
                f"{path}: no proposals for {len(missing)} of the {len(records)} images of the "
                f"dataset (first: {first}), none recorded as failed; compute them with "
                f"tools/propose.py {flags} --out {path}")
        opened[str(path)] = cache
    return opened


def evaluate_cache(cache: ProposalCache, records: Sequence[ImageRecord],
                   counts: Sequence[int | None] = REPORT_COUNTS, progress: bool = True
                   ) -> ProposalReport:
    """The report of one cache on ``records``, every image held or recorded as failed (see
    `open_caches`). Each image's boxes are read, scored and dropped before the next. Boxes
    reaching past the annotation's image size are counted in one warning, not refused: they
    mean a cache of other images, or an XML ``<size>`` that is wrong (no image is decoded here
    to tell which), and the propose command's summary scores such images too."""
    accumulator = ProposalRecallAccumulator(counts)
    failed, beyond = [], []
    for record in tqdm(records, desc=cache.root.name or str(cache.root), unit="img",
                       disable=not progress):
        if record.image_id in cache:
            boxes = cache.load(record.image_id)
            if not _fits(boxes, record):
                beyond.append(record.image_id)
            accumulator.add_record(record, boxes)
        else:
            failed.append(record.image_id)
            accumulator.add_record(record, None)
    if failed:
        first = ", ".join(repr(i) for i in failed[:_SHOWN])
        warnings.warn(f"{cache.root}: {len(failed)} of the {len(records)} images are recorded "
                      f"as failed (first: {first}; reasons in its failed/ folder) and count as "
                      "having no proposals: their objects are missed", stacklevel=2)
    if beyond:
        first = ", ".join(repr(i) for i in beyond[:_SHOWN])
        warnings.warn(f"{cache.root}: the boxes of {len(beyond)} images reach past the image "
                      f"size their annotation gives (first: {first}): a cache made for other "
                      "images under these ids, or annotations with a wrong size; scored as they "
                      "are", stacklevel=2)
    return accumulator.report()


def dataset_flags(gt: PathLike, images: PathLike | None, classes: PathLike | None,
                  split: str | None) -> str:
    """The propose command's flags that read the same dataset (``--gt X --split Y``)."""
    flags = [("--gt", gt), ("--images", images), ("--classes", classes), ("--split", split)]
    return " ".join(f"{flag} {value}" for flag, value in flags if value is not None)


def _fits(boxes: np.ndarray, record: ImageRecord, slack: float = 1.0) -> bool:
    """Whether ``boxes`` lie inside the record's annotated image (within ``slack`` pixels);
    True where the annotation gives no size."""
    if len(boxes) == 0 or record.width <= 0 or record.height <= 0:
        return True
    return bool(boxes[:, :2].min() >= -slack and boxes[:, 2].max() <= record.width + slack
                and boxes[:, 3].max() <= record.height + slack)
