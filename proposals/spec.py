"""`ModelSpec`: what a region classifier was built with, as checkpoints and exported files
record it. Torch-free, so that a detector over an ONNX export never imports torch."""
from __future__ import annotations

from dataclasses import dataclass

from proposals.defaults import CONTEXT_PAD, INPUT_SIZE


@dataclass(frozen=True)
class ModelSpec:
    """What a network was built with: classes 1..K plus background, input size, context padding."""

    num_classes: int
    input_size: int = INPUT_SIZE
    context_pad: int = CONTEXT_PAD
    box_regression: bool = False
