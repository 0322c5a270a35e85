"""The networks and pixels the proposals and the detector share: torchvision's GoogLeNet trunk
(random, ImageNet or a file's weights) and the ImageNet normalisation its weights expect.

MultiBox (`proposals.multibox`) and the region classifier (`detector.classifier`) both stand on
this trunk; it lives on the proposals floor so that the detector imports it and not the other
way round.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.models import GoogLeNet, GoogLeNet_Weights, googlenet

from eval.errors import DetectionError
from proposals.checkpoint import check_format, read_torch_file
from proposals.defaults import IMAGENET_MEAN, IMAGENET_STD, MIN_INPUT_SIZE

FEATURES = 1024  # GoogLeNet's pooled feature size (inception5b channels)


class WeightsUnavailable(DetectionError):
    """The weights named cannot be had (the ImageNet download failed, or no such file). The
    message says what happened; the caller adds the ways out its user has (a flag of the
    detect command, a key of the training config)."""


# Keys of torchvision GoogLeNet state dicts that a region classifier does not use: the auxiliary
# classifiers (only for ImageNet training) and, unless kept as the 1,000-class head, ``fc``.
AUX_PREFIXES = ("aux1.", "aux2.")


def normalize_image(image: Tensor | np.ndarray) -> Tensor:
    """uint8 RGB image -> float32 ``[3, H, W]`` tensor ``(x / 255 - mean) / std``.

    Args:
        image: uint8 ``Tensor[3, H, W]`` (on any device; the result stays there) or a uint8
            ``ndarray[H, W, 3]`` as PIL / OpenCV-after-RGB-conversion give (the result is on CPU).
    After this, the ImageNet mean colour is exactly 0, which is what makes roi_align's zero fill
    outside the image R-CNN's mean fill.
    """
    return standardize(unit_pixels(image))


def standardize(pixels: Tensor) -> Tensor:
    """Float ``[..., 3, H, W]`` RGB in [0, 1] -> ``(x - mean) / std`` with ImageNet's statistics."""
    mean = torch.tensor(IMAGENET_MEAN, device=pixels.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=pixels.device).view(3, 1, 1)
    return (pixels - mean) / std


def channels_first(image: Tensor | np.ndarray) -> Tensor:
    """An ``ndarray[H, W, 3]`` RGB image as a ``Tensor[3, H, W]`` of the same dtype, sharing
    its memory where it can (a tensor is returned as it is)."""
    if not isinstance(image, np.ndarray):
        return image
    if image.ndim != 3 or image.shape[2] != 3:
        raise DetectionError(f"image array has shape {image.shape}; expected [H, W, 3] RGB "
                             "(convert grayscale or RGBA images to RGB first)")
    # A read-only array (e.g. np.asarray of a PIL image) is copied: torch wants writable memory.
    image = np.ascontiguousarray(image) if image.flags.writeable else np.array(image)
    return torch.from_numpy(image).permute(2, 0, 1)


def unit_pixels(image: Tensor | np.ndarray) -> Tensor:
    """uint8 RGB ``Tensor[3, H, W]`` or ``ndarray[H, W, 3]`` -> float32 ``[3, H, W]`` in [0, 1]."""
    image = channels_first(image)
    if image.ndim != 3 or image.shape[0] != 3:
        raise DetectionError(f"image tensor has shape {tuple(image.shape)}; expected [3, H, W] RGB "
                             "(permute an [H, W, 3] tensor with .permute(2, 0, 1))")
    if image.dtype != torch.uint8:
        raise DetectionError(f"image tensor has dtype {image.dtype}; expected torch.uint8 pixels")
    return image.float() / 255.0


def build_trunk() -> GoogLeNet:
    """torchvision's GoogLeNet without its classifier: ``[B, 3, S, S]`` -> features ``[B, 1024]``.

    Randomly initialised (torchvision's truncated-normal init), no auxiliary heads; ``fc`` is an
    identity, so the output is dropout(global-average-pooled inception5b features).
    """
    trunk = googlenet(weights=None, aux_logits=False, transform_input=True, init_weights=True)
    trunk.fc = nn.Identity()
    return trunk


def load_trunk_weights(trunk: GoogLeNet, weights: str | os.PathLike) -> None:
    """Fill a `build_trunk` trunk from ``"imagenet"`` or a file of GoogLeNet weights.

    The file may hold a torchvision GoogLeNet state dict or the state dict of a model of ours
    with a ``trunk.`` (RegionClassifier, MultiBox); heads (``fc``, auxiliary, ours) are ignored.
    """
    state, source = weights_state_dict(weights)
    if any(key.startswith("trunk.") for key in state):
        state = {k[len("trunk."):]: v for k, v in state.items() if k.startswith("trunk.")}
    state = {k: v for k, v in state.items() if not k.startswith(AUX_PREFIXES + ("fc.",))}
    try:
        trunk.load_state_dict(state)
    except RuntimeError as e:
        reason = " ".join(str(e).split())[:300]
        raise DetectionError(f"{source}: not GoogLeNet trunk weights ({reason}); pass a "
                             "torchvision GoogLeNet state dict or a checkpoint of this toolkit") from None


def weights_state_dict(weights: str | os.PathLike) -> tuple[dict[str, Tensor], str]:
    """``"imagenet"`` or a file path -> (state dict, where it came from for messages)."""
    if str(weights) == "imagenet":
        return _download_imagenet(), "torchvision GoogLeNet_Weights.IMAGENET1K_V1"
    path = Path(weights)
    if not os.path.lexists(path):
        raise WeightsUnavailable(f"{path}: weights file not found")
    # weights_only: a file from elsewhere never runs code; a damaged one is one line.
    state = read_torch_file(path, "weights file not found")
    if isinstance(state, dict) and "format" in state:  # a checkpoint of ours: one we can read?
        check_format(path, state["format"])
    for nested in ("state_dict", "model"):  # a checkpoint dict rather than a bare state dict
        if isinstance(state, dict) and isinstance(state.get(nested), dict):
            state = state[nested]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise DetectionError(f"{path}: holds no state dict (a mapping of names to tensors); "
                             "save one with torch.save(model.state_dict(), path)")
    return state, str(path)


def _download_imagenet() -> dict[str, Tensor]:
    """ImageNet GoogLeNet weights via torchvision's weights API (cached after the first time)."""
    try:
        return GoogLeNet_Weights.IMAGENET1K_V1.get_state_dict(progress=False, check_hash=True)
    except Exception as e:  # URLError, HTTPError, hash mismatch, ...: all mean "no weights"
        reason = f"{type(e).__name__}: {e}".replace("\n", " ")
        raise WeightsUnavailable(
            f"cannot download torchvision's ImageNet GoogLeNet weights ({reason}); offline, use "
            "a local weights file: copy torchvision's googlenet-1378be20.pth into "
            f"{torch.hub.get_dir()}/checkpoints") from None


def check_input_size(input_size: int) -> None:
    if input_size < MIN_INPUT_SIZE:
        raise DetectionError(f"input_size is {input_size}; GoogLeNet needs regions of at least "
                             f"{MIN_INPUT_SIZE} px (224 as trained on ImageNet; 64 or 96 for CPU)")
