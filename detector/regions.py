"""Region warping: every proposal of an image cropped, context-padded and resized in one op.

R-CNN (Girshick et al. 2014, appendix A) warps each proposal to the network's input size after
enlarging it so that the warped region has ``context_pad`` pixels of image context on every side;
pixels outside the image are filled with the mean. Here that is one ``torchvision.ops.roi_align``
call over all boxes of an image on the image's device, instead of a crop-and-resize per box.

The ONNX Runtime path warps with `detector.onnx_warp` instead (ONNX Runtime's RoiAlign on numpy
arrays, no torch), bit-identical to this (tests/detector/test_onnx_warp.py).

Coordinate frame: boxes are ``(x1, y1, x2, y2)`` in absolute pixels of the original image, with
pixel ``i`` covering ``[i, i + 1)`` (width = x2 - x1, as ``torchvision.ops``).
"""
from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import roi_align

from eval.errors import DetectionError
from proposals.defaults import CONTEXT_PAD, INPUT_SIZE, REGION_BATCH
from proposals.spec import WARP_BORDER, check_warp_sizes



def context_boxes(boxes: Tensor, output_size: int = INPUT_SIZE,
                  context_pad: int = CONTEXT_PAD) -> Tensor:
    """Enlarge boxes about their centres by R-CNN's context padding.

    Each side is scaled by ``output_size / (output_size - 2 * context_pad)``, width and height
    separately, so that once the enlarged box is warped to ``output_size`` pixels the original box
    fills the central ``output_size - 2 * context_pad`` pixels.

    Args:
        boxes: ``Tensor[N, 4]`` ``(x1, y1, x2, y2)`` in image pixels.
    Returns:
        float32 ``Tensor[N, 4]`` in image pixels; may extend beyond the image.
    """
    check_warp_sizes(output_size, context_pad)
    boxes = boxes.float()
    scale = output_size / (output_size - 2 * context_pad)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]) * (scale / 2)
    return torch.cat([centres - half, centres + half], dim=1)


def warp_regions(image: Tensor, boxes: Tensor, output_size: int = INPUT_SIZE,
                 context_pad: int = CONTEXT_PAD) -> Tensor:
    """Crop every box (context-padded) out of ``image`` and resize it to ``output_size`` square.

    One ``roi_align`` call on the image's device. Each output pixel averages
    ``ceil(box side / output_size)`` bilinear samples per axis (roi_align's adaptive sampling
    ratio), so boxes larger than the output are area-averaged rather than aliased; smaller boxes
    are bilinearly upsampled exactly as ``F.interpolate(..., align_corners=False)`` would.

    Args:
        image: float ``Tensor[3, H, W]`` normalised by `proposals.networks.normalize_image` (mean colour = 0).
        boxes: ``Tensor[N, 4]`` ``(x1, y1, x2, y2)`` in pixels of ``image``, before context
            padding (this function adds it). Boxes may lie partly or wholly outside the image.
        output_size: side ``S`` of the square regions, the classifier's input size.
        context_pad: pixels of context on each side of the warped region (R-CNN: 16 at 227).
    Returns:
        float32 ``Tensor[N, 3, S, S]`` on the image's device; outside the image it is 0, the mean.
    """
    if image.ndim != 3 or image.shape[0] != 3:
        raise DetectionError(f"image has shape {tuple(image.shape)}; expected a normalised "
                             "[3, H, W] tensor (see proposals.networks.normalize_image)")
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise DetectionError(f"boxes have shape {tuple(boxes.shape)}; "
                             "expected [N, 4] (x1, y1, x2, y2)")
    padded = context_boxes(boxes.to(image.device), output_size, context_pad)
    if padded.shape[0] == 0:
        return image.new_zeros((0, 3, output_size, output_size), dtype=torch.float32)
    # roi_align reads a sample in the half-pixel band just outside the image as the edge pixel,
    # and one further out as 0: a step from edge colour to mean. One pixel of zeros around the
    # image turns that into the linear ramp bilinear interpolation of a mean-filled canvas gives
    # (the per-box reference), and everything further out is 0 = the mean in normalised units.
    canvas = F.pad(image.float(), (WARP_BORDER, WARP_BORDER, WARP_BORDER, WARP_BORDER))
    return roi_align(canvas[None], [padded + WARP_BORDER], output_size=output_size,
                     spatial_scale=1.0, sampling_ratio=-1, aligned=True)


def iter_warped_regions(image: Tensor, boxes: Tensor, output_size: int = INPUT_SIZE,
                        context_pad: int = CONTEXT_PAD,
                        batch_size: int = REGION_BATCH) -> Iterator[Tensor]:
    """:func:`warp_regions` in chunks of ``batch_size`` boxes, in box order.

    Yields float32 ``Tensor[<=batch_size, 3, S, S]``; memory stays bounded by ``batch_size``
    whatever the proposal count. Yields nothing for zero boxes.
    """
    if batch_size < 1:
        raise DetectionError(f"batch_size is {batch_size}; it must be at least 1")
    for start in range(0, boxes.shape[0], batch_size):
        yield warp_regions(image, boxes[start:start + batch_size], output_size, context_pad)
