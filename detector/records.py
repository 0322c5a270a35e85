"""What the detection path passes around, with no deep-learning stack: an image's
`DetectionResult`, the `Ensemble` a detector runs (PyTorch members, or an ONNX Runtime session:
`detector.runtime`), and each image with its proposals (`load_input`, `proposals_for`: from a
cache, or computed as the checkpoint's were by `proposals.combined.proposer_for`).

Torch-free (a fresh-process test in tests/detector/test_export_cache.py holds it): a detector
over an ONNX export imports no torch, which saves seconds of every command's start
(BENCHMARKS.md, "The main command end to end").
Boxes are ``(x1, y1, x2, y2)`` in absolute pixels of the original image; labels are 1..K.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from eval.datasets import read_image
from eval.errors import DetectionError
from proposals.cache import ProposalCache
from proposals.combined import MultiBoxSource, Proposer
from proposals.spec import ModelSpec

if TYPE_CHECKING:
    from detector.classifier import RegionClassifier
    from detector.runtime import MemberInfo


@dataclass(frozen=True, eq=False)
class DetectionResult:
    """One image's detections, best first.

    ``boxes`` float32 ``[N, 4]`` ``(x1, y1, x2, y2)`` pixels of the stored image grid,
    ``scores`` float32 ``[N]`` (the ensemble's mean softmax), ``labels`` int64 ``[N]`` in 1..K.
    ``image_id`` / ``path`` say which image (None for an array given without them).
    ``num_proposals``: regions classified. ``error``: why the image could not be done
    (`Detector.detect_many` with ``keep_going=True``; the arrays are then empty).
    ``image``: the decoded RGB pixels (detect_many's results only, for drawing; not gathered
    across ranks).
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    image_id: int | str | None = None
    path: str | None = None
    num_proposals: int = 0
    error: str | None = None
    image: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def failed(cls, image_id: int | str, path: str, reason: str) -> "DetectionResult":
        """The result of an image that could not be read or proposed."""
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64),
                   image_id, path, 0, reason)


@dataclass(frozen=True, eq=False)
class Ensemble:
    """Region classifiers that vote together, and what they were trained with.

    ``members`` are PyTorch classifiers in eval mode on one device that agree on classes, input
    size and context padding (``spec``: the first member's; members may differ in
    ``box_regression``), or an exported ensemble in an ONNX Runtime session
    (`detector.runtime.OnnxMembers`, a sequence of its members' descriptions).
    ``classes[i - 1]`` names label ``i``. ``proposal_method`` / ``proposal_params`` describe the
    proposals the first member was trained on (a `ProposalCache` manifest's method and params);
    ``proposal_network`` the MultiBox network they need, carried by its checkpoint (None: none;
    pass it to `proposals.combined.proposer_for`).
    """

    members: list[RegionClassifier] | Sequence[MemberInfo]
    classes: tuple[str, ...]
    spec: ModelSpec
    proposal_method: str
    proposal_params: dict
    proposal_network: MultiBoxSource | None = None


def proposals_for(image: np.ndarray, image_id: int | str, path: str, *,
                  cache: ProposalCache | None = None,
                  proposer: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """Proposals of one image: read from ``cache`` when given, else computed by ``proposer``.

    ``image`` RGB uint8 ``[H, W, 3]``; ``image_id`` its key in the cache; ``path`` names it in
    messages; ``proposer`` defaults to GoogLeNet's selective search (`proposals.combined`).
    Returns float32 ``[N, 4]`` boxes in the image's pixels, N >= 1; an image without proposals
    is a DetectionError (nothing could ever be detected in it).
    """
    if cache is not None:
        boxes = cache.load(image_id, image_size=(image.shape[1], image.shape[0]))
    else:
        boxes = (proposer or Proposer())(image)
    if len(boxes) == 0:
        raise DetectionError(f"{path}: no proposals for this image (is it blank, or smaller than "
                             "the minimum box side?); remove it or lower min_box_side")
    return boxes


def load_input(item: tuple[int | str, str], *, cache: ProposalCache | None = None,
               proposer: Callable[[np.ndarray], np.ndarray] | None = None
               ) -> tuple[int | str, str, np.ndarray, np.ndarray]:
    """One ``(image_id, path)`` -> ``(image_id, path, image [H, W, 3] uint8, proposals [N, 4])``.

    Images are read in their stored pixel grid, never EXIF-rotated: annotations and proposal
    caches refer to it. `detector.prefetch.prefetch_inputs` runs it ahead in worker processes.
    """
    image_id, path = item
    image = read_image(path)
    return image_id, path, image, proposals_for(image, image_id, path, cache=cache,
                                                proposer=proposer)
