"""How proposals are made, as configs: `SelectiveSearchConfig` (a small typed parameter object
that `proposals.selective_search.selective_search` takes) and `ProposalConfig` (the ``proposals``
section of a training config, which `proposals.combined.build_proposer` turns into a
`Proposer`). Free of OpenCV and torch, so that the commands' ``--help`` and the training
config read without the `detect` extra; their defaults are these dataclasses' own.

`PRESETS` names whole selective search settings (``gdet-propose --preset coco``, a config's
``proposals: {selective_search: {preset: coco}}``, `preset_config` in Python); ``googlenet`` is
`SelectiveSearchConfig`'s defaults. A value given beside a preset replaces the preset's.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from eval.config import check_fields, short_repr
from eval.errors import DetectionError
from proposals.defaults import MULTIBOX_NMS, MULTIBOX_TOP

# Selective search's diversification settings by name (`proposals.selective_search.MODES`
# holds what each runs): R-CNN's "fast", the paper's "quality", and "coco" (7 hierarchies whose
# boxes are chosen by an objectness score, `proposals.objectness`).
MODES = ("fast", "quality", "coco")


@dataclass(frozen=True)
class SelectiveSearchConfig:
    """Selective search settings (plain values: `dataclasses.asdict` gives the cache's JSON).

    ``mode``: "fast" (R-CNN), "quality" (the paper's quality setting) or "coco" (boxes chosen
    by objectness: at most 1290, non-maximum suppressed at IoU 0.7; its score was fitted at
    superpixel_scale 1.0 and max_side 500, the coco preset's). ``superpixel_scale``
    multiplies the graph segmentation's k and minimum region size (2.0 = GoogLeNet, 1.0 =
    R-CNN). ``max_side``: segment a copy resized so that its longer side is at most this many
    pixels (None: full size; boxes are always returned in the original pixels).
    ``min_box_side``: drop boxes with a side shorter than this, in original pixels (capped at
    the image's own side, so tiny images keep their full-image box). ``max_boxes``: keep the
    top-ranked N (None: all). ``seed``: the ranking's pseudo-random factor (the coco mode has
    none: its score orders the boxes).
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
class Preset:
    """A named selective search setting: what it is for, and the `SelectiveSearchConfig`
    values it sets (every field but ``seed``)."""

    about: str
    settings: dict


# The one table of presets: the propose command's --preset and its --help, a config's
# ``proposals.selective_search.preset`` and the README all read it.
PRESETS: dict[str, Preset] = {
    "rcnn": Preset("R-CNN (Girshick et al. 2014): fast mode at the paper's superpixel size",
                   {"mode": "fast", "superpixel_scale": 1.0, "max_side": 500,
                    "min_box_side": 20.0, "max_boxes": None}),
    "googlenet": Preset("GoogLeNet's ILSVRC 2014 entry: superpixel size x2, half R-CNN's "
                        "boxes (default)",
                        {"mode": "fast", "superpixel_scale": 2.0, "max_side": 500,
                         "min_box_side": 20.0, "max_boxes": None}),
    # Issue 18's goal against OpenCV's fast selective search on COCO photos: its recall at IoU
    # 0.5 with at most 0.6x its boxes and 0.5x its CPU time (BENCHMARKS.md, coco128). A box
    # under 4 px can only reach IoU 0.5 with an object under 8 px.
    "coco": Preset("COCO-style photos, many small objects: R-CNN's superpixels plus a finer "
                   "Lab segmentation, at most 1290 boxes chosen by objectness, down to 4 px",
                   {"mode": "coco", "superpixel_scale": 1.0, "max_side": 500,
                    "min_box_side": 4.0, "max_boxes": None}),
}
DEFAULT_PRESET = "googlenet"  # SelectiveSearchConfig()'s own values


def preset_settings(name: object, where: str = "preset") -> dict:
    """A copy of preset ``name``'s settings; an unknown name is one error (starting with
    ``where``) listing the presets."""
    if not isinstance(name, str) or name not in PRESETS:
        raise DetectionError(f"{where}: unknown selective search preset {short_repr(name)}; "
                             f"use one of {', '.join(PRESETS)}")
    return dict(PRESETS[name].settings)


def preset_config(name: str, **overrides: object) -> SelectiveSearchConfig:
    """The `SelectiveSearchConfig` of preset ``name``, with ``overrides`` (field=value)
    replacing its values: ``preset_config("coco", max_boxes=1000)``."""
    return SelectiveSearchConfig(**{**preset_settings(name), **overrides})


def expand_preset(section: dict, where: str) -> dict:
    """A ``selective_search`` config section (plain data) with its ``preset`` key replaced by
    that preset's settings; the section's other keys win over the preset's, as a config's own
    keys win over its ``_base_``. A section without ``preset`` comes back as it is."""
    if "preset" not in section:
        return section
    given = {key: value for key, value in section.items() if key != "preset"}
    return {**preset_settings(section["preset"], where), **given}


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
