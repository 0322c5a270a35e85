"""The detection path: image -> proposals -> warped regions -> ensemble softmax -> NMS -> top-k.

`detect` is the whole pipeline for one image in one function; `load_ensemble` builds its
classifiers from checkpoints (or `imagenet_ensemble`, R-CNN's "no fine-tuning" baseline, from
torchvision's 1,000-class GoogLeNet); `proposals_for` and `iter_inputs` supply each image and
its proposals, from a cache or computed on the fly as the checkpoint's were
(`proposals.combined.proposer_for`: selective search, plus MultiBox where it was trained so).

Boxes are ``(x1, y1, x2, y2)`` in absolute pixels of the original image; labels are 1..K.
Library code: it follows the input tensors' device and never picks one itself.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from proposals.checkpoint import ModelSpec, check_ensemble, load_checkpoint
from detector.classifier import RegionClassifier, imagenet_classifier, load_weights
from eval.datasets import read_image
from detector.ensemble import InferencePath, default_path, member_outputs
from eval.errors import DetectionError
from detector.postprocess import MAX_PER_IMAGE, NMS_IOU, SCORE_THRESHOLD, postprocess
from detector.regions import DEFAULT_BATCH_SIZE, iter_warped_regions
from proposals.networks import normalize_image
from proposals.cache import ProposalCache
from proposals.combined import (SELECTIVE_SEARCH, MultiBoxSource, ProposalConfig, Proposer,
                                embedded_multibox)


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
    return Ensemble(members, tuple(payloads[0]["classes"]), _spec(paths[0], payloads[0]),
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


def _spec(path: str, payload: dict) -> ModelSpec:
    try:
        spec = ModelSpec(**payload["model"])
    except TypeError as e:
        raise DetectionError(f"{path}: malformed model description {payload['model']!r} ({e}); "
                             "use a checkpoint written by tools/train.py") from None
    if spec.num_classes != len(payload["classes"]):
        raise DetectionError(f"{path}: the model has {spec.num_classes} classes but the class list "
                             f"{len(payload['classes'])}; the checkpoint is corrupt")
    return spec


def _member(path: str, payload: dict) -> RegionClassifier:
    """The classifier a checkpoint describes, with its weights (a misfit names ``path``)."""
    spec = _spec(path, payload)
    model = RegionClassifier(spec.num_classes, spec.input_size, spec.box_regression)
    load_weights(model, payload["state_dict"], path)
    return model


@torch.inference_mode()
def detect(image: Tensor | np.ndarray, proposals: Tensor | np.ndarray,
           members: Sequence[RegionClassifier], *, input_size: int, context_pad: int,
           batch_size: int = DEFAULT_BATCH_SIZE, score_threshold: float = SCORE_THRESHOLD,
           nms_iou: float = NMS_IOU, max_per_image: int | None = MAX_PER_IMAGE,
           path: InferencePath = InferencePath()) -> tuple[Tensor, Tensor, Tensor]:
    """Detect objects in one image with an ensemble of region classifiers.

    Args:
        image: RGB uint8 ``Tensor[3, H, W]`` (work happens on its device, where the members must
            be) or ``ndarray[H, W, 3]`` (CPU).
        proposals: ``[N, 4]`` boxes ``(x1, y1, x2, y2)`` in the image's pixels, any N >= 0.
        members: classifiers in eval mode, all with or all without a background column, as
            `detector.ensemble.prepare_members` made them for ``path``.
        input_size, context_pad: the warp the members were trained with (their ModelSpec).
        batch_size: regions warped and classified at once; bounds memory for any N.
        score_threshold, nms_iou, max_per_image: see `detector.postprocess.postprocess`.
        path: how the networks run (`detector.ensemble.InferencePath`; default float32; the
            tools use ``default_path(device)``, bf16 autocast on CUDA). Softmax, averaging and
            box arithmetic stay float32 whatever it is.
    Returns:
        ``boxes [M, 4]`` float32 in image pixels, ``scores [M]`` float32 (the ensemble's mean
        softmax probability), ``labels [M]`` int64 in 1..K; best first, M <= max_per_image.
    """
    pixels = normalize_image(image)  # float32 [3, H, W]; ImageNet mean = 0 = the warp's fill
    boxes = torch.as_tensor(proposals, dtype=torch.float32).to(pixels.device)
    probs, deltas = classify_regions(pixels, boxes, members, input_size=input_size,
                                     context_pad=context_pad, batch_size=batch_size, path=path)
    return postprocess(boxes, probs, deltas, tuple(pixels.shape[1:]), score_threshold, nms_iou,
                       max_per_image, background=members[0].background)


@torch.inference_mode()
def classify_regions(pixels: Tensor, boxes: Tensor, members: Sequence[RegionClassifier], *,
                     input_size: int, context_pad: int, batch_size: int = DEFAULT_BATCH_SIZE,
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


def detect_array(members: Sequence[torch.nn.Module], spec: ModelSpec, image: np.ndarray,
                 proposals: np.ndarray, device: torch.device, batch_size: int = DEFAULT_BATCH_SIZE,
                 max_per_image: int = MAX_PER_IMAGE, path: InferencePath | None = None, *,
                 score_threshold: float = SCORE_THRESHOLD, nms_iou: float = NMS_IOU
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`detect` on an RGB uint8 [H, W, 3] image and float32 [N, 4] proposals, on ``device``,
    the members run as ``path`` (default `default_path(device)`: bf16 autocast on CUDA;
    members prepared for it by `prepare_members`); boxes [M, 4], scores [M], labels [M] as
    CPU arrays. `detector.Detector` calls this for every image."""
    # uint8 (4x less to copy); a read-only array (np.asarray of a PIL image) is copied.
    image = np.ascontiguousarray(image) if image.flags.writeable else np.array(image)
    pixels = torch.from_numpy(image).permute(2, 0, 1).to(device)
    boxes, scores, labels = detect(
        pixels, torch.from_numpy(np.asarray(proposals, np.float32)), members,
        input_size=spec.input_size, context_pad=spec.context_pad, batch_size=batch_size,
        score_threshold=score_threshold, nms_iou=nms_iou, max_per_image=max_per_image,
        path=path or default_path(device))
    return boxes.cpu().numpy(), scores.cpu().numpy(), labels.cpu().numpy()


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
        boxes = cache.load(image_id)
    else:
        boxes = (proposer or Proposer(ProposalConfig()))(image)
    if len(boxes) == 0:
        raise DetectionError(f"{path}: no proposals for this image (is it blank, or smaller than "
                             "the minimum box side?); remove it or lower min_box_side")
    return boxes


def iter_inputs(items: Iterable[tuple[int | str, str]], *, cache: ProposalCache | None = None,
                proposer: Callable[[np.ndarray], np.ndarray] | None = None
                ) -> Iterator[tuple[int | str, str, np.ndarray, np.ndarray]]:
    """``(image_id, path)`` pairs -> ``(image_id, path, image [H, W, 3] uint8, proposals [N, 4])``.

    One image at a time, in order. A separate stage on purpose: its prefetching version,
    `detector.prefetch.prefetch_inputs` (reading and proposing the next images in worker
    processes while the GPU classifies this one), replaces it as is. Images are read in their
    stored pixel grid, never EXIF-rotated: annotations and proposal caches refer to it.
    """
    for item in items:
        yield load_input(item, cache=cache, proposer=proposer)


def load_input(item: tuple[int | str, str], *, cache: ProposalCache | None = None,
               proposer: Callable[[np.ndarray], np.ndarray] | None = None
               ) -> tuple[int | str, str, np.ndarray, np.ndarray]:
    """One ``(image_id, path)`` -> ``(image_id, path, image, proposals)``: `iter_inputs`' step."""
    image_id, path = item
    image = read_image(path)
    return image_id, path, image, proposals_for(image, image_id, path, cache=cache,
                                                proposer=proposer)
