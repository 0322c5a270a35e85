"""`ModelSpec`: what a region classifier was built with, as checkpoints and exported files
record it. Torch-free, so that a detector over an ONNX export never imports torch."""
from __future__ import annotations

from dataclasses import dataclass

from eval.errors import DetectionError
from proposals.defaults import CONTEXT_PAD, INPUT_SIZE

# Zero margin the region warp adds around the normalised image (both warps: `detector.regions`
# with roi_align, `detector.onnx_warp` with ONNX Runtime's RoiAlign): the half-pixel band just
# outside the image then ramps from the edge colour to the mean instead of stepping.
WARP_BORDER = 1


@dataclass(frozen=True)
class ModelSpec:
    """What a network was built with: classes 1..K plus background, input size, context padding."""

    num_classes: int
    input_size: int = INPUT_SIZE
    context_pad: int = CONTEXT_PAD
    box_regression: bool = False


def check_warp_sizes(output_size: int, context_pad: int) -> None:
    """Refuse a warp size and context padding that leave no room for the box (both warps)."""
    if output_size < 1 or context_pad < 0 or output_size - 2 * context_pad < 1:
        raise DetectionError(
            f"output_size {output_size} with context_pad {context_pad} leaves no room for the box; "
            "use context_pad >= 0 and output_size > 2 * context_pad (R-CNN: 16 at 224, "
            "scale it with the input size, e.g. 4 at 64)")
