"""Run a classifier ensemble over a dataset and evaluate it: validation in training, tools/test.py."""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from detector.checkpoint import ModelSpec
from detector.datasets import Dataset, ImageRecord
from detector.ensemble import InferencePath, default_path, prepare_members
from detector.pipeline import detect
from detector.prefetch import prefetch_inputs
from eval.detections import to_results
from eval.evaluate import evaluate_results
from eval.results import EvalResult
from proposals.cache import ProposalCache


def detect_array(members: Sequence[torch.nn.Module], spec: ModelSpec, image: np.ndarray,
                 proposals: np.ndarray, device: torch.device, batch_size: int = 256,
                 max_per_image: int = 100, path: InferencePath | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`detect` on an RGB uint8 [H, W, 3] image and float32 [N, 4] proposals, on ``device``,
    the members run as ``path`` (default `default_path(device)`: bf16 autocast on CUDA) and
    prepared for it (`prepare_members`); boxes [M, 4], scores [M], labels [M] as CPU arrays."""
    pixels = torch.from_numpy(image).permute(2, 0, 1).to(device)  # uint8: 4x less to copy
    boxes, scores, labels = detect(
        pixels, torch.from_numpy(proposals), members, input_size=spec.input_size,
        context_pad=spec.context_pad, batch_size=batch_size, max_per_image=max_per_image,
        path=path or default_path(device))
    return boxes.cpu().numpy(), scores.cpu().numpy(), labels.cpu().numpy()


def detect_records(members: Sequence[torch.nn.Module], spec: ModelSpec,
                   records: Sequence[ImageRecord], cache: ProposalCache | None,
                   device: torch.device, category_ids: Sequence[int], *,
                   proposer: Callable[[np.ndarray], np.ndarray] | None = None,
                   batch_size: int = 256, max_per_image: int = 100,
                   progress: str | None = "detect", workers: int = 0,
                   path: InferencePath | None = None) -> list[dict]:
    """COCO results (``category_id`` from ``category_ids[label - 1]``) for every record.

    Proposals come from ``cache``, or are computed by ``proposer`` where there is none. Images
    are read in their stored pixels (no EXIF rotation): ground truth and caches refer to them.
    ``workers``: processes that read and propose the next images while this one is classified
    (`detector.prefetch.prefetch_inputs`; 0 = all in this process). ``path``: how the members
    run (default `default_path(device)`); they are prepared for it here, once.
    """
    path = path or default_path(device)
    members = prepare_members(members, path)
    items = [(r.image_id, r.file_name) for r in records]
    results: list[dict] = []
    # closing: an error in detect_array stops the workers now, not when the traceback is freed.
    with contextlib.closing(prefetch_inputs(items, cache=cache, proposer=proposer,
                                            workers=workers)) as inputs:
        for image_id, _, image, proposals in tqdm(inputs, total=len(items), desc=progress,
                                                  unit="img", disable=progress is None):
            boxes, scores, labels = detect_array(members, spec, image, proposals, device,
                                                 batch_size, max_per_image, path)
            results += to_results(image_id, category_ids, boxes, scores, labels)
    return results


def evaluate_model(members: Sequence[torch.nn.Module], dataset: Dataset, cache: ProposalCache,
                   spec: ModelSpec, device: torch.device, protocol: str = "voc") -> EvalResult:
    """Detect on every image of ``dataset`` with cached proposals and evaluate with ``protocol``.

    The members are put in eval mode (training calls ``train()`` again at its next epoch).
    """
    for member in members:
        member.eval()
    results = detect_records(members, spec, dataset.images, cache, device, dataset.category_ids,
                             progress="validate")
    return evaluate_results(dataset, results, protocol)
