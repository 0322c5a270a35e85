"""R-CNN bounding-box regression targets (Girshick et al. 2014, appendix C).

For a proposal P and its ground-truth box G, with centres (x, y), widths w = x2 - x1 and heights
h = y2 - y1 in image pixels::

    tx = (Gx - Px) / Pw    ty = (Gy - Py) / Ph    tw = log(Gw / Pw)    th = log(Gh / Ph)

Optionally each target is divided by a standard deviation (``stds``) so that all four have about
unit variance, as Fast R-CNN does (``FAST_RCNN_STDS``); ``decode`` multiplies it back. Whoever
trains with some ``stds`` must decode with the same ones (store them with the checkpoint).
All arithmetic is float32 (or float64 if given), never half precision: log/exp of box ratios and
large pixel coordinates lose too much in 16 bits.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from eval.errors import DetectionError

# Largest log-scale change decode applies (as detectron2's _DEFAULT_SCALE_CLAMP): a 16 px
# proposal may grow to at most 1000 px, the largest image side expected. Without it an untrained
# or diverging head can predict tw = 100 and exp() overflows to inf boxes.
SCALE_CLAMP = math.log(1000.0 / 16)

# Fast R-CNN's BBOX_NORMALIZE_STDS: roughly the spread of targets for proposals with IoU > 0.5,
# so that normalised targets have ~unit variance and the regression loss balances the
# classification loss. None (or all ones) = R-CNN's raw targets.
FAST_RCNN_STDS = (0.1, 0.1, 0.2, 0.2)


def encode(proposals: Tensor, gt_boxes: Tensor, stds: Sequence[float] | None = None) -> Tensor:
    """Regression targets that turn each proposal into its ground-truth box.

    Args:
        proposals: ``Tensor[N, 4]`` ``(x1, y1, x2, y2)`` in pixels, positive width and height.
        gt_boxes: ``Tensor[N, 4]``, the ground-truth box matched to each proposal.
        stds: per-target divisors ``(sx, sy, sw, sh)``; None = 1.
    Returns:
        float32 ``Tensor[N, 4]`` ``(tx, ty, tw, th)``, each divided by its std.
    """
    if proposals.shape != gt_boxes.shape or proposals.shape[-1:] != (4,):
        raise DetectionError(f"encode needs matching [N, 4] boxes, got {tuple(proposals.shape)} "
                             f"and {tuple(gt_boxes.shape)}")
    p_ctr, p_size = _centre_size(proposals)
    g_ctr, g_size = _centre_size(gt_boxes)
    if bool((p_size <= 0).any()) or bool((g_size <= 0).any()):
        raise DetectionError("encode got a box with zero or negative width or height; drop them "
                             "first (torchvision.ops.remove_small_boxes)")
    deltas = torch.cat([(g_ctr - p_ctr) / p_size, torch.log(g_size / p_size)], dim=-1)
    return deltas / _stds(stds, deltas)


def decode(deltas: Tensor, proposals: Tensor, stds: Sequence[float] | None = None,
           scale_clamp: float = SCALE_CLAMP) -> Tensor:
    """Apply regression deltas to proposals: the inverse of :func:`encode`.

    Args:
        deltas: ``Tensor[N, 4]``, or ``Tensor[N, C, 4]`` for class-specific deltas (one box per
            class for every proposal), in ``encode``'s units (divided by ``stds``).
        proposals: ``Tensor[N, 4]`` ``(x1, y1, x2, y2)`` in pixels.
        stds: the ``stds`` the deltas were encoded with; None = 1.
        scale_clamp: upper bound on ``tw`` and ``th`` after un-normalising (see SCALE_CLAMP).
    Returns:
        float32 boxes with the shape of ``deltas``, in pixels, not clipped to the image.
    """
    if (deltas.ndim not in (2, 3) or deltas.shape[-1] != 4
            or deltas.shape[0] != proposals.shape[0]):
        raise DetectionError(f"decode needs deltas [N, 4] or [N, C, 4] for proposals [N, 4], got "
                             f"{tuple(deltas.shape)} and {tuple(proposals.shape)}")
    deltas = _float(deltas) * _stds(stds, deltas)
    ctr, size = _centre_size(proposals)
    if deltas.ndim == 3:  # the same proposal under every class
        ctr, size = ctr[:, None], size[:, None]
    new_ctr = ctr + deltas[..., :2] * size
    new_size = size * torch.exp(deltas[..., 2:].clamp(max=scale_clamp))
    return torch.cat([new_ctr - new_size / 2, new_ctr + new_size / 2], dim=-1)


def _centre_size(boxes: Tensor) -> tuple[Tensor, Tensor]:
    """``[..., 4]`` boxes -> centres ``[..., 2]`` (x, y) and sizes ``[..., 2]`` (w, h)."""
    boxes = _float(boxes)
    return (boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2:] - boxes[..., :2]


def _float(t: Tensor) -> Tensor:
    """float32 unless already float64: box arithmetic never runs in half precision."""
    return t if t.dtype == torch.float64 else t.float()


def _stds(stds: Sequence[float] | None, like: Tensor) -> Tensor:
    if stds is None:
        stds = (1.0, 1.0, 1.0, 1.0)
    if len(stds) != 4 or min(stds) <= 0:
        raise DetectionError(f"box-regression stds {tuple(stds)} must be 4 positive numbers "
                             f"(e.g. {FAST_RCNN_STDS})")
    return torch.tensor(stds, dtype=_float(like).dtype, device=like.device)
