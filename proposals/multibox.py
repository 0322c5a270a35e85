"""MultiBox: class-agnostic object boxes from one network pass (Erhan et al. 2014; Szegedy et al. 2014).

A GoogLeNet trunk sees the whole image resized to ``S x S`` and predicts, for each of K output
slots, a box relative to the slot's prior box and a confidence logit. The priors are k-means
clusters of the training boxes (`proposals.priors`); the network learns residuals::

    box = prior + residual * (prior_w, prior_h, prior_w, prior_h)        (corner-wise)

Inside the model boxes are ``(x1, y1, x2, y2)`` in normalised image coordinates (the image is
``[0, 1] x [0, 1]``); `predict` converts them to pixels of the original image at the edge.
The loss and the matching of ground truth to slots are in `detector.training.multibox_loss`.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import nms

from proposals import devices
from proposals.checkpoint import load_checkpoint, write_payload
from eval.errors import DetectionError
from proposals.defaults import INPUT_SIZE, MIN_INPUT_SIZE, MULTIBOX_NMS, MULTIBOX_TOP
from proposals.networks import FEATURES, build_trunk, standardize, unit_pixels

CHECKPOINT_KIND = "multibox"
# Proposals kept per image, and the NMS that comes first (GoogLeNet's detection entry added the
# top 200 MultiBox boxes to selective search). At IoU 0.7 the kept boxes still include near
# variants of one object, which helps recall at IoU 0.7; see BENCHMARKS.md for 0.5 vs 0.7.
# Smallest box side kept, in pixels of the original image: below it a box is degenerate.
MIN_SIDE = 1.0


@dataclass(frozen=True)
class MultiBoxSpec:
    """What a MultiBox network was built with: K slots, input side S."""

    num_priors: int = 800       # the paper's K
    input_size: int = INPUT_SIZE


class MultiBox(nn.Module):
    """GoogLeNet trunk + one linear layer giving K x (4 residuals + 1 confidence logit).

    Args:
        priors: ``[K, 4]`` prior boxes, normalised ``(x1, y1, x2, y2)`` with positive sides.
        input_size: side S of the square network input (``MIN_INPUT_SIZE`` or more).
    """

    def __init__(self, priors: Tensor, input_size: int = INPUT_SIZE) -> None:
        super().__init__()
        check_priors(priors)
        if input_size < MIN_INPUT_SIZE:
            raise DetectionError(f"input_size is {input_size}; GoogLeNet needs at least "
                                 f"{MIN_INPUT_SIZE} px (224 as the paper, 128-160 on a CPU)")
        self.input_size = input_size
        self.register_buffer("priors", priors.detach().float().clone())
        self.trunk = build_trunk()
        self.head = nn.Linear(FEATURES, 5 * len(priors))
        # Residuals start near 0 (every slot predicts its prior) and confidences near 1/K, about
        # the share of slots that are matched: the first steps are not spent unlearning a 0.5
        # confidence on hundreds of unmatched slots (the focal-loss paper's prior init).
        nn.init.normal_(self.head.weight, std=0.001)
        with torch.no_grad():
            bias = self.head.bias.view(-1, 5)
            bias[:, :4] = 0.0
            bias[:, 4] = -float(np.log(len(priors) - 1)) if len(priors) > 1 else 0.0

    @property
    def spec(self) -> MultiBoxSpec:
        return MultiBoxSpec(len(self.priors), self.input_size)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``images [B, 3, S, S]`` (`prepare_image`) -> ``(residuals [B, K, 4], logits [B, K])``."""
        out = self.head(self.trunk(images)).view(len(images), -1, 5)
        return out[..., :4], out[..., 4]


def check_priors(priors: Tensor) -> None:
    if priors.ndim != 2 or priors.shape[1] != 4 or len(priors) == 0:
        raise DetectionError(f"priors have shape {tuple(priors.shape)}; expected [K, 4] with K >= 1")
    if not bool(((priors[:, 2:] - priors[:, :2]) > 0).all()):
        raise DetectionError("every prior box needs x2 > x1 and y2 > y1")


def encode(boxes: Tensor, priors: Tensor) -> Tensor:
    """Residuals ``[..., 4]`` that turn ``priors`` into ``boxes`` (both normalised xyxy)."""
    size = (priors[..., 2:] - priors[..., :2]).repeat_interleave(2, dim=-1)[..., [0, 2, 1, 3]]
    return (boxes - priors) / size


def decode(residuals: Tensor, priors: Tensor) -> Tensor:
    """Boxes ``[..., 4]`` (normalised xyxy) from residuals relative to ``priors``; `encode`'s inverse."""
    size = (priors[..., 2:] - priors[..., :2]).repeat_interleave(2, dim=-1)[..., [0, 2, 1, 3]]
    return priors + residuals * size


def prepare_image(pixels: Tensor, input_size: int) -> Tensor:
    """Float ``[3, H, W]`` in [0, 1] -> the network input ``[3, S, S]`` (ImageNet-normalised).

    The whole image is resized to S x S (aspect ratio not kept, as MultiBox did), with
    antialiasing so that large photos do not alias. Training and `predict` both go through here.
    """
    resized = F.interpolate(pixels[None], size=(input_size, input_size), mode="bilinear",
                            antialias=True, align_corners=False)[0]
    return standardize(resized.clamp(0, 1))


@torch.inference_mode()
def predict(model: MultiBox, image: Tensor | np.ndarray, top_n: int | None = MULTIBOX_TOP,
            nms_iou: float | None = MULTIBOX_NMS, autocast: torch.dtype | None = None
            ) -> tuple[Tensor, Tensor]:
    """MultiBox proposals of one image: the ``top_n`` most confident boxes after NMS.

    Args:
        model: in eval mode; the work happens on its device.
        image: RGB uint8 ``Tensor[3, H, W]`` or ``ndarray[H, W, 3]``.
        top_n: boxes kept (None: all K); nms_iou: None skips NMS.
        autocast: e.g. ``torch.bfloat16`` for the network on a GPU; boxes stay float32.
    Returns:
        ``boxes [N, 4]`` float32 ``(x1, y1, x2, y2)`` in the image's pixels, clipped to it, and
        ``scores [N]`` (sigmoid confidences), best first; N <= top_n.
    """
    device = model.priors.device
    pixels = unit_pixels(image).to(device)
    height, width = pixels.shape[1:]
    with devices.autocast(device, autocast):
        residuals, logits = model(prepare_image(pixels, model.input_size)[None])
    boxes = decode(residuals[0].float(), model.priors).clamp(0, 1)
    boxes = boxes * torch.tensor([width, height, width, height], device=device, dtype=torch.float32)
    scores = logits[0].float().sigmoid()
    keep = ((boxes[:, 2:] - boxes[:, :2]) >= MIN_SIDE).all(dim=1)
    boxes, scores = boxes[keep], scores[keep]
    order = nms(boxes, scores, nms_iou) if nms_iou is not None else scores.argsort(descending=True)
    order = order[:top_n] if top_n is not None else order
    return boxes[order], scores[order]


def save_multibox(path: str | os.PathLike, model: MultiBox, **extra) -> None:
    """Write a MultiBox checkpoint atomically: spec, priors, weights, plus training state."""
    write_payload(path, {"kind": CHECKPOINT_KIND, **network_of_model(model), **extra})


def network_of_model(model: MultiBox) -> dict:
    """What rebuilds ``model`` (on the CPU): ``{"model": spec dict, "priors": [K, 4],
    "state_dict": ...}``: a MultiBox checkpoint's network, and what a classifier checkpoint
    trained on MultiBox proposals carries (`proposals.combined.proposal_record`)."""
    return {"model": asdict(model.spec), "priors": model.priors.detach().cpu(),
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}


def network_of(payload: dict) -> dict:
    """The network part (spec, priors, weights) of a MultiBox checkpoint's payload."""
    return {key: payload[key] for key in ("model", "priors", "state_dict")}


def multibox_from_payload(payload: dict, where: str) -> MultiBox:
    """The network a payload (a MultiBox checkpoint's, or `network_of`'s) describes, with its
    weights; anything that does not fit is one DetectionError naming ``where``."""
    try:
        spec = MultiBoxSpec(**payload["model"])
        priors = payload["priors"]
        if not isinstance(priors, torch.Tensor) or not isinstance(payload["state_dict"], dict):
            raise TypeError("priors must be a tensor and state_dict a mapping")
        model = MultiBox(priors, spec.input_size)
        model.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, RuntimeError, DetectionError) as e:
        reason = " ".join(str(e).split())[:200]
        raise DetectionError(f"{where}: malformed MultiBox network ({reason}); use a checkpoint "
                             "written by tools/train.py with task: multibox") from None
    if spec.num_priors != len(model.priors):
        raise DetectionError(f"{where}: {spec.num_priors} slots declared, {len(model.priors)} "
                             "priors; the checkpoint is corrupt")
    return model


def network_digest(network: dict) -> str:
    """SHA-256 of a network's content (spec, priors, weights; `network_of`): which MultiBox
    model made a proposal cache, whatever file it was read from or where that file lies."""
    digest = hashlib.sha256(json.dumps(network["model"], sort_keys=True).encode())
    tensors = [("priors", network["priors"])] + sorted(network["state_dict"].items())
    for name, tensor in tensors:
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.flatten().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
