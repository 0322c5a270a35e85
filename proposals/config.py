"""How proposals are made, as configs: `SelectiveSearchConfig` (a small typed parameter object
that `proposals.selective_search.selective_search` takes) and `ProposalConfig` (the ``proposals``
section of a training config, which `proposals.combined.build_proposer` turns into a
`Proposer`). Free of OpenCV and torch, so that the commands' ``--help`` and the training
config read without the `detect` extra; their defaults are these dataclasses' own.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from eval.config import check_fields
from eval.errors import DetectionError
from proposals.defaults import MULTIBOX_NMS, MULTIBOX_TOP

# Selective search's diversification settings by name (`proposals.selective_search.MODES`
# holds what each runs): R-CNN's "fast" and the paper's "quality".
MODES = ("fast", "quality")


@dataclass(frozen=True)
class SelectiveSearchConfig:
    """Selective search settings (plain values: `dataclasses.asdict` gives the cache's JSON).

    ``mode``: "fast" (R-CNN) or "quality" (the paper's quality setting). ``superpixel_scale``
    multiplies the graph segmentation's k and minimum region size (2.0 = GoogLeNet, 1.0 =
    R-CNN). ``max_side``: segment a copy resized so that its longer side is at most this many
    pixels (None: full size; boxes are always returned in the original pixels).
    ``min_box_side``: drop boxes with a side shorter than this, in original pixels (capped at
    the image's own side, so tiny images keep their full-image box). ``max_boxes``: keep the
    top-ranked N (None: all). ``seed``: the ranking's pseudo-random factor.
    """

    mode: str = "fast"  # one of MODES
    superpixel_scale: float = 2.0
    max_side: int | None = 500
    min_box_side: float = 20.0
    max_boxes: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise DetectionError(f"selective search mode {self.mode!r} is unknown; "
                                 f"use one of {sorted(MODES)}")
        if not self.superpixel_scale > 0:
            raise DetectionError(f"superpixel_scale must be > 0, got {self.superpixel_scale}")
        _check_optional_count("max_side", self.max_side)
        _check_optional_count("max_boxes", self.max_boxes)
        if not self.min_box_side >= 0:
            raise DetectionError(f"min_box_side must be >= 0 pixels, got {self.min_box_side}")


def _check_optional_count(name: str, value: object) -> None:
    integer = isinstance(value, int) and not isinstance(value, bool)
    if value is not None and not (integer and value >= 1):
        raise DetectionError(f"{name} must be a positive integer or None, got {value!r}")


@dataclass(frozen=True)
class ProposalConfig:
    """How proposals are made (the ``proposals`` section of a training config)."""

    selective_search: SelectiveSearchConfig = field(default_factory=SelectiveSearchConfig)
    multibox: str | None = None    # a MultiBox checkpoint (tools/train.py, task: multibox); null: none
    multibox_top: int = MULTIBOX_TOP   # GoogLeNet's 200 boxes, after NMS
    multibox_nms: float = MULTIBOX_NMS  # IoU of the NMS among MultiBox boxes
    selective_search_on: bool = True  # false: MultiBox boxes alone (for comparisons)

    def __post_init__(self) -> None:
        check_fields(self, multibox_top="size", multibox_nms="iou")
