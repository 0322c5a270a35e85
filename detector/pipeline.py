"""The PyTorch parts of the detection path that `detector.Detector` puts together: the
ensemble (`load_ensemble` from checkpoints, or `imagenet_ensemble`, R-CNN's "no fine-tuning"
baseline, from torchvision's 1,000-class GoogLeNet) and its verdict on warped regions
(`classify_regions`). What they pass around (`DetectionResult`, `Ensemble`, `load_input`,
`proposals_for`) is torch-free, in `detector.records`.

Boxes are ``(x1, y1, x2, y2)`` in absolute pixels of the original image; labels are 1..K.
Library code: it follows the input tensors' device and never picks one itself.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import Tensor

from proposals.checkpoint import check_ensemble, load_checkpoint, model_spec
from proposals.spec import ModelSpec
from detector.classifier import RegionClassifier, imagenet_classifier, load_weights
from detector.ensemble import InferencePath, member_outputs
from detector.records import Ensemble
from detector.regions import iter_warped_regions
from eval.errors import DetectionError
from proposals.defaults import REGION_BATCH
from proposals.combined import SELECTIVE_SEARCH, embedded_multibox


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
