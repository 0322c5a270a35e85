"""The region classifier: torchvision's GoogLeNet trunk with R-CNN's heads.

``RegionClassifier`` maps warped regions ``[B, 3, S, S]`` (normalised by
``detector.regions.normalize_image``) to class logits ``[B, K + 1]`` (column 0 = background) and,
optionally, class-specific box deltas ``[B, K, 4]`` (``detector.box_coder`` targets).

The trunk always runs with torchvision's ``transform_input=True``: it turns ImageNet-normalised
input into the ``(x - 0.5) / 0.5`` scaling that the ImageNet GoogLeNet weights were trained on.
Keeping it on for every initialisation (ImageNet, file, random) means a checkpoint behaves the
same whichever way its trunk started; for a random trunk it is just a fixed per-channel affine map.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.models import GoogLeNet, GoogLeNet_Weights, googlenet

from proposals.defaults import INPUT_SIZE, MIN_INPUT_SIZE
from proposals.networks import (AUX_PREFIXES, FEATURES, build_trunk,
                                check_input_size, weights_state_dict)
from eval.errors import DetectionError

class RegionClassifier(nn.Module):
    """GoogLeNet (torchvision) trunk, a classification head and an optional box-regression head.

    Args:
        num_classes: K, the number of object classes.
        input_size: side of the square regions it is meant for (at least ``MIN_INPUT_SIZE``);
            stored for the warping step, and checked in ``forward``.
        box_regression: add R-CNN's class-specific box-regression head ``Linear(1024, 4K)``.
        background: whether the logits have a background column 0 (``K + 1`` outputs). Only the
            ImageNet classifier of :func:`imagenet_classifier` has none (``K`` outputs).
    """

    def __init__(self, num_classes: int, input_size: int = INPUT_SIZE, box_regression: bool = False,
                 background: bool = True) -> None:
        super().__init__()
        if num_classes < 1:
            raise DetectionError(f"num_classes is {num_classes}; "
                                 "a classifier needs at least 1 class")
        check_input_size(input_size)
        self.num_classes = num_classes
        self.input_size = input_size
        self.background = background
        self.trunk = build_trunk()
        self.cls_score = nn.Linear(FEATURES, num_classes + int(background))
        self.bbox_pred = nn.Linear(FEATURES, 4 * num_classes) if box_regression else None
        # Fast R-CNN's head initialisation: small Gaussians so training starts from ~uniform
        # class scores and ~zero box deltas.
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.zeros_(self.cls_score.bias)
        if self.bbox_pred is not None:
            nn.init.normal_(self.bbox_pred.weight, std=0.001)
            nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, regions: Tensor) -> tuple[Tensor, Tensor | None]:
        """``regions [B, 3, S, S]`` -> ``(logits [B, K + 1], box_deltas [B, K, 4] or None)``.

        Logits are unnormalised (softmax them for probabilities); with ``background=False`` they
        are ``[B, K]``. Box deltas are in ``detector.box_coder`` units, per class 1..K.
        """
        if regions.ndim != 4 or min(regions.shape[-2:]) < MIN_INPUT_SIZE:
            raise DetectionError(f"regions have shape {tuple(regions.shape)}; GoogLeNet needs "
                                 f"[B, 3, S, S] with S >= {MIN_INPUT_SIZE}")
        features = self.trunk(regions)
        logits = self.cls_score(features)
        if self.bbox_pred is None:
            return logits, None
        return logits, self.bbox_pred(features).view(-1, self.num_classes, 4)


def build_classifier(num_classes: int, weights: str | os.PathLike | None = "imagenet",
                     box_regression: bool = False, input_size: int = INPUT_SIZE) -> RegionClassifier:
    """A region classifier for K = ``num_classes`` classes plus background.

    Args:
        weights: ``"imagenet"``: the trunk from torchvision's ``GoogLeNet_Weights.IMAGENET1K_V1``
            (downloaded once into torch's hub cache; heads random). A path: a local file holding
            either a whole ``RegionClassifier`` state dict (optionally inside a checkpoint dict
            under ``"state_dict"`` or ``"model"``) or a torchvision GoogLeNet state dict (trunk
            only; its ``fc`` and auxiliary heads are ignored). ``None``: random initialisation.
        box_regression: add the class-specific box-regression head.
        input_size: region side S (``MIN_INPUT_SIZE`` or more; 224 as GoogLeNet).
    """
    model = RegionClassifier(num_classes, input_size, box_regression)
    if weights is not None:
        state, source = weights_state_dict(weights)
        load_weights(model, state, source)
    return model


def imagenet_classifier(weights: str | os.PathLike = "imagenet", input_size: int = INPUT_SIZE
                        ) -> tuple[RegionClassifier, list[str]]:
    """torchvision's 1,000-class ImageNet GoogLeNet as a region classifier, and its class names.

    R-CNN's "no fine-tuning" baseline: every region is classified into the 1,000 ILSVRC-2012
    classes and there is no background class. Scores are the softmax over the 1,000 logits; a
    region showing no object spreads its probability thinly, so the per-class score threshold of
    ``detector.postprocess.postprocess(..., background=False)`` plays the role of background.
    Label ``i`` (1..1000) names ``class_names[i - 1]``.

    Args:
        weights: ``"imagenet"`` (torchvision's weights API) or a local torchvision GoogLeNet
            state-dict file such as ``googlenet-1378be20.pth``; its ``fc`` becomes ``cls_score``.
    """
    meta = GoogLeNet_Weights.IMAGENET1K_V1.meta
    model = RegionClassifier(len(meta["categories"]), input_size, background=False)
    state, source = weights_state_dict(weights)
    load_weights(model, state, source)
    return model, list(meta["categories"])


def load_weights(model: RegionClassifier, state: dict[str, Tensor], source: str) -> None:
    """Load a RegionClassifier or torchvision GoogLeNet state dict into ``model``.

    A torchvision state dict (keys without ``trunk.``) fills the trunk; its ``fc`` fills
    ``cls_score`` only for the 1,000-class no-background model, and heads not in the file keep
    their initialisation. Anything else that does not match raises DetectionError naming
    ``source`` and the keys.
    """
    optional: tuple[str, ...] = ()  # key prefixes the file may lack
    if not any(key.startswith("trunk.") for key in state):
        state = _from_torchvision(model, state)
        optional = ("bbox_pred.",) if _keeps_fc(model) else ("cls_score.", "bbox_pred.")
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches are raised even with strict=False
        shapes = "; ".join(line.strip() for line in str(e).splitlines()[1:2])
        raise DetectionError(f"{source}: weights do not fit this classifier ({shapes}); pass "
                             "weights trained with the same number of classes and "
                             "box-regression setting") from None
    missing = [k for k in result.missing_keys if not k.startswith(optional)
               and not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise DetectionError(
            f"{source}: weights do not fit this classifier (missing keys: {_few(missing)}; "
            f"unexpected keys: {_few(result.unexpected_keys)}); pass a RegionClassifier or "
            "torchvision GoogLeNet state dict with the same classes and box-regression setting")


def _from_torchvision(model: RegionClassifier, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename a torchvision GoogLeNet state dict's keys to RegionClassifier's."""
    keep_fc = _keeps_fc(model)
    renamed = {}
    for key, value in state.items():
        if key.startswith(AUX_PREFIXES) or (key.startswith("fc.") and not keep_fc):
            continue
        renamed["cls_score." + key[3:] if key.startswith("fc.") else "trunk." + key] = value
    return renamed


def _keeps_fc(model: RegionClassifier) -> bool:
    """Whether torchvision's 1,000-class ``fc`` is this model's head (the ImageNet classifier)."""
    return not model.background and model.num_classes == 1000


def _few(keys: list[str], limit: int = 5) -> str:
    """At most ``limit`` keys for a one-line message."""
    if not keys:
        return "none"
    more = f", ... ({len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more
