"""Run a detector over a dataset and evaluate it: training's validation and the test command.

Both go through `detector.Detector`, the one detection path.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from tqdm import tqdm

from detector.api import DetectionResult, Detector
from proposals.spec import ModelSpec
from eval.datasets import Dataset, ImageRecord
from eval.detections import to_results
from eval.evaluate import evaluate_results
from eval.results import EvalResult
from proposals.cache import ProposalCache

if TYPE_CHECKING:
    import torch

__all__ = ["detect_records", "evaluate_model", "results_of", "failed_records"]


def results_of(results: Sequence[DetectionResult], category_ids: Sequence[int]) -> list[dict]:
    """COCO results (``category_id = category_ids[label - 1]``) of per-image detections."""
    rows: list[dict] = []
    for r in results:
        rows += to_results(r.image_id, category_ids, r.boxes, r.scores, r.labels)
    return rows


def failed_records(records: Sequence[ImageRecord], cache: ProposalCache | None
                   ) -> list[ImageRecord]:
    """The records whose images ``cache`` records as failed (`tools/propose.py` could not read
    or propose them): the test command and validation skip them, their ground truth missed."""
    if cache is None:
        return []
    failed = set(cache.partition([r.image_id for r in records])[0])
    return [r for r in records if r.image_id in failed]


def detect_records(detector: Detector, records: Sequence[ImageRecord],
                   category_ids: Sequence[int], *, workers: int = 0,
                   progress: str | None = "detect") -> list[dict]:
    """COCO results (``category_id`` from ``category_ids[label - 1]``) of ``detector`` on every
    record's image, with a progress bar labelled ``progress`` (None: none).

    Images are read in their stored pixels (no EXIF rotation): ground truth and caches refer
    to them.
    """
    items = [(r.image_id, r.file_name) for r in records]
    results = tqdm(detector.detect_many(items, workers=workers), total=len(items),
                   desc=progress, unit="img", disable=progress is None)
    return results_of(list(results), category_ids)


def evaluate_model(members: Sequence[torch.nn.Module], dataset: Dataset, cache: ProposalCache,
                   spec: ModelSpec, device: torch.device, protocol: str = "voc") -> EvalResult:
    """Detect on every image of ``dataset`` with cached proposals and evaluate with ``protocol``,
    with the test command's defaults. Images the cache records as failed are skipped and
    their ground truth counts as missed.

    The members are put in eval mode (training calls ``train()`` again at its next epoch).
    """
    for member in members:
        member.eval()
    skipped = {r.image_id for r in failed_records(dataset.images, cache)}
    records = [r for r in dataset.images if r.image_id not in skipped]
    detector = Detector(members, spec, dataset.classes, device, cache=cache)
    results = detect_records(detector, records, dataset.category_ids, progress="validate")
    return evaluate_results(dataset, results, protocol)
