"""R-CNN bounding-box regression targets (Girshick et al. 2014, appendix C).

For a proposal P and its ground-truth box G, with centres (x, y), widths w = x2 - x1 and heights
h = y2 - y1 in image pixels::

    tx = (Gx - Px) / Pw    ty = (Gy - Py) / Ph    tw = log(Gw / Pw)    th = log(Gh / Ph)

Optionally each target is divided by a standard deviation (``stds``) so that all four have about
unit variance, as Fast R-CNN does (``FAST_RCNN_STDS``); ``decode`` multiplies it back. Whoever
trains with some ``stds`` must decode with the same ones (store them with the checkpoint).

Which runs where: ``encode`` serves training, on torch tensors on the training device (torch is
imported inside it); ``decode`` serves detection, on numpy arrays after the networks have run,
so that importing this module (and `detector.postprocess`) does not import torch.
All arithmetic is float32 (or float64 if given), never half precision: log/exp of box ratios and
large pixel coordinates lose too much in 16 bits.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import numpy as np

from eval.errors import DetectionError

if TYPE_CHECKING:
    from torch import Tensor

# Largest log-scale change decode applies (as detectron2's _DEFAULT_SCALE_CLAMP): a 16 px
# proposal may grow to at most 1000 px, the largest image side expected. Without it an untrained
# or diverging head can predict tw = 100 and exp() overflows to inf boxes.
SCALE_CLAMP = math.log(1000.0 / 16)

# Fast R-CNN's BBOX_NORMALIZE_STDS: roughly the spread of targets for proposals with IoU > 0.5,
# so that normalised targets have ~unit variance and the regression loss balances the
# classification loss. None (or all ones) = R-CNN's raw targets.
FAST_RCNN_STDS = (0.1, 0.1, 0.2, 0.2)


def encode(proposals: Tensor, gt_boxes: Tensor, stds: Sequence[float] | None = None) -> Tensor:
    """Regression targets that turn each proposal into its ground-truth box (training, torch).

    Args:
        proposals: ``Tensor[N, 4]`` ``(x1, y1, x2, y2)`` in pixels, positive width and height.
        gt_boxes: ``Tensor[N, 4]``, the ground-truth box matched to each proposal.
        stds: per-target divisors ``(sx, sy, sw, sh)``; None = 1.
    Returns:
        float32 ``Tensor[N, 4]`` ``(tx, ty, tw, th)``, each divided by its std, on the inputs'
        device.
    """
    import torch

    if proposals.shape != gt_boxes.shape or proposals.shape[-1:] != (4,):
        raise DetectionError(f"encode needs matching [N, 4] boxes, got {tuple(proposals.shape)} "
                             f"and {tuple(gt_boxes.shape)}")
    p_ctr, p_size = _centre_size(_float_tensor(proposals))
    g_ctr, g_size = _centre_size(_float_tensor(gt_boxes))
    if bool((p_size <= 0).any()) or bool((g_size <= 0).any()):
        raise DetectionError("encode got a box with zero or negative width or height; drop them "
                             "first (torchvision.ops.remove_small_boxes)")
    deltas = torch.cat([(g_ctr - p_ctr) / p_size, torch.log(g_size / p_size)], dim=-1)
    return deltas / torch.tensor(_checked_stds(stds), dtype=deltas.dtype, device=deltas.device)


def decode(deltas: np.ndarray, proposals: np.ndarray, stds: Sequence[float] | None = None,
           scale_clamp: float = SCALE_CLAMP) -> np.ndarray:
    """Apply regression deltas to proposals: the inverse of :func:`encode` (detection, numpy).

    Args:
        deltas: ``ndarray[N, 4]``, or ``ndarray[N, C, 4]`` for class-specific deltas (one box per
            class for every proposal), in ``encode``'s units (divided by ``stds``).
        proposals: ``ndarray[N, 4]`` ``(x1, y1, x2, y2)`` in pixels.
        stds: the ``stds`` the deltas were encoded with; None = 1.
        scale_clamp: upper bound on ``tw`` and ``th`` after un-normalising (see SCALE_CLAMP).
    Returns:
        float32 boxes with the shape of ``deltas`` (float64 if either input is float64), in
        pixels, not clipped to the image.
    """
    deltas, proposals = _float_array(deltas), _float_array(proposals)
    if (deltas.ndim not in (2, 3) or deltas.shape[-1] != 4
            or deltas.shape[0] != proposals.shape[0]):
        raise DetectionError(f"decode needs deltas [N, 4] or [N, C, 4] for proposals [N, 4], got "
                             f"{tuple(deltas.shape)} and {tuple(proposals.shape)}")
    # An untrained head may predict a huge tx: its box goes to +-inf (clipped to the image later)
    # without a warning, as in torch.
    with np.errstate(over="ignore", invalid="ignore"):
        deltas = deltas * np.array(_checked_stds(stds), dtype=deltas.dtype)
        ctr, size = _centre_size(proposals)
        if deltas.ndim == 3:  # the same proposal under every class
            ctr, size = ctr[:, None], size[:, None]
        new_ctr = ctr + deltas[..., :2] * size
        new_size = size * _exp(np.minimum(deltas[..., 2:], deltas.dtype.type(scale_clamp)))
        return np.concatenate([new_ctr - new_size / 2, new_ctr + new_size / 2], axis=-1)


def _exp(x: np.ndarray) -> np.ndarray:
    """``exp(x)`` in x's dtype. float32 goes through float64 to get the correctly rounded value:
    numpy's own float32 exp is off by an ulp on ~40% of inputs (torch's on ~1%), and the two
    disagree, so a box would depend on which library decoded it."""
    if x.dtype == np.float32:
        return np.exp(x.astype(np.float64)).astype(np.float32)
    return np.exp(x)


def _centre_size(boxes):
    """``[..., 4]`` boxes -> centres ``[..., 2]`` (x, y) and sizes ``[..., 2]`` (w, h); numpy
    arrays or torch tensors alike."""
    return (boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2:] - boxes[..., :2]


def _float_tensor(t: Tensor) -> Tensor:
    """float32 unless already float64: box arithmetic never runs in half precision."""
    import torch

    return t if t.dtype == torch.float64 else t.float()


def _float_array(a: np.ndarray) -> np.ndarray:
    """`_float_tensor` for numpy."""
    a = np.asarray(a)
    return a if a.dtype == np.float64 else a.astype(np.float32, copy=False)


def _checked_stds(stds: Sequence[float] | None) -> tuple[float, ...]:
    """The four stds (1 each for None), checked positive."""
    if stds is None:
        return (1.0, 1.0, 1.0, 1.0)
    if len(stds) != 4 or min(stds) <= 0:
        raise DetectionError(f"box-regression stds {tuple(stds)} must be 4 positive numbers "
                             f"(e.g. {FAST_RCNN_STDS})")
    return tuple(float(s) for s in stds)
