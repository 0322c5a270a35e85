"""The parts of the detection path that `detector.Detector` puts together: the ensemble
(`load_ensemble` from checkpoints, or `imagenet_ensemble`, R-CNN's "no fine-tuning" baseline,
from torchvision's 1,000-class GoogLeNet), its verdict on warped regions (`classify_regions`),
what it returns (`DetectionResult`), and each image with its proposals (`load_input`,
`proposals_for`: from a cache or computed on
the fly as the checkpoint's were, by `proposals.combined.proposer_for`: selective search, plus
MultiBox where it was trained so).

Boxes are ``(x1, y1, x2, y2)`` in absolute pixels of the original image; labels are 1..K.
Library code: it follows the input tensors' device and never picks one itself.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from proposals.checkpoint import ModelSpec, check_ensemble, load_checkpoint, model_spec
from detector.classifier import RegionClassifier, imagenet_classifier, load_weights
from eval.datasets import read_image
from detector.ensemble import InferencePath, member_outputs
from eval.errors import DetectionError
from detector.regions import iter_warped_regions
from proposals.defaults import REGION_BATCH
from proposals.cache import ProposalCache
from proposals.combined import (SELECTIVE_SEARCH, MultiBoxSource, Proposer,
                                embedded_multibox)


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

    ``members`` are in eval mode on one device and agree on classes, input size and context
    padding (``spec``: the first member's; members may differ in ``box_regression``).
    ``classes[i - 1]`` names label ``i``. ``proposal_method`` / ``proposal_params`` describe the
    proposals the first member was trained on (a `ProposalCache` manifest's method and params);
    ``proposal_network`` the MultiBox network they need, carried by its checkpoint (None: none;
    pass it to `proposals.combined.proposer_for`).
    """

    members: list[RegionClassifier]
    classes: tuple[str, ...]
    spec: ModelSpec
    proposal_method: str
    proposal_params: dict
    proposal_network: MultiBoxSource | None = None


def load_ensemble(paths: list[str | os.PathLike], device: torch.device | str) -> Ensemble:
    """Read checkpoints (one per member) and build their classifiers on ``device``.

    Raises DetectionError naming the file for a missing, unreadable or foreign checkpoint, for
    members that disagree (`proposals.checkpoint.check_ensemble`), and for weights that do not
    fit the model the checkpoint describes.
    """
    if not paths:
        raise DetectionError("no checkpoint given; pass at least one --checkpoint")
    paths = [str(p) for p in paths]
    payloads = [load_checkpoint(p) for p in paths]
    check_ensemble(paths, payloads)
    members = [_member(path, payload).to(device).eval() for path, payload in zip(paths, payloads)]
    proposals = payloads[0].get("proposals") or {"method": SELECTIVE_SEARCH, "params": {}}
    return Ensemble(members, tuple(payloads[0]["classes"]), model_spec(payloads[0], paths[0]),
                    proposals.get("method", SELECTIVE_SEARCH), dict(proposals.get("params", {})),
                    embedded_multibox(paths[0], proposals))


def imagenet_ensemble(device: torch.device | str, weights: str | os.PathLike = "imagenet"
                      ) -> Ensemble:
    """torchvision's ImageNet GoogLeNet as a 1,000-class region classifier (no background).

    ``weights``: ``"imagenet"`` (torchvision's weights API; where they cannot be downloaded
    this raises DetectionError) or a local torchvision GoogLeNet state-dict file. Proposals:
    the default (GoogLeNet, superpixel x2) selective search.
    """
    model, names = imagenet_classifier(weights)
    return Ensemble([model.to(device).eval()], tuple(names), ModelSpec(len(names)),
                    SELECTIVE_SEARCH, {})


def _member(path: str, payload: dict) -> RegionClassifier:
    """The classifier a checkpoint describes, with its weights (a misfit names ``path``)."""
    spec = model_spec(payload, path)
    model = RegionClassifier(spec.num_classes, spec.input_size, spec.box_regression)
    load_weights(model, payload["state_dict"], path)
    return model


@torch.inference_mode()
def classify_regions(pixels: Tensor, boxes: Tensor, members: Sequence[RegionClassifier], *,
                     input_size: int, context_pad: int, batch_size: int = REGION_BATCH,
                     path: InferencePath = InferencePath()) -> tuple[Tensor, Tensor | None]:
    """The ensemble's verdict on every box: ``pixels`` float32 [3, H, W] (`normalize_image`),
    ``boxes`` float32 [N, 4] on its device -> mean softmax ``[N, C]`` float32 (C = K + 1, or K
    without a background column) and the mean box deltas ``[N, K, 4]`` of the members that
    have a regression head (None if none has)."""
    probs, deltas = [], []
    for regions in iter_warped_regions(pixels, boxes, input_size, context_pad, batch_size):
        outputs = member_outputs(members, regions, path)
        # The paper's ensemble: each member's class probabilities, averaged.
        probs.append(torch.stack([logits.float().softmax(dim=1) for logits, _ in outputs]).mean(0))
        regressed = [d.float() for _, d in outputs if d is not None]
        deltas.append(torch.stack(regressed).mean(0) if regressed else None)
    if not probs:  # no proposals: nothing to classify
        width = members[0].num_classes + int(members[0].background)
        return pixels.new_zeros((0, width)), None
    return torch.cat(probs), torch.cat(deltas) if deltas[0] is not None else None


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
