"""What every evaluation protocol returns, and its printed form (`format_table`)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class EvalResult:
    """The outcome of one evaluation.

    ``per_class`` maps each class name to its AP in [0, 1], or None where the class has no
    ground truth (such classes are left out of ``mAP``, as every devkit does). ``stats`` holds
    COCO's 12 summary numbers (None for the other protocols). ``curves`` maps class names to
    ``(recall, precision)`` arrays for plotting; it is not part of the JSON form.
    """

    protocol: str
    mAP: float
    per_class: dict[str, float | None]
    stats: list[float] | None = None
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def to_json(self) -> dict:
        """The dict `tools/evaluate.py --json` writes (NaN never appears: JSON has none)."""
        out = {
            "protocol": self.protocol,
            "mAP": _finite_or_none(self.mAP),
            "per_class": {k: _finite_or_none(v) for k, v in self.per_class.items()},
        }
        if self.stats is not None:
            out["stats"] = [float(s) for s in self.stats]
        return out


@dataclass(frozen=True, eq=False)
class ClassMatch:
    """One class's detections as a protocol counted them, for its AP and the error analysis.

    ``label`` 1..K. ``rows`` int64 [D]: the class's detections (rows of the `Detections`) in the
    order the protocol's AP reads them (score descending, its own tie rule), only those it
    counts (not ILSVRC's blacklisted, not past COCO's 100 per image). ``tp``, ``fp`` bool [D];
    neither for a detection the protocol ignores (VOC difficult, COCO crowd). ``matched`` int64
    [D]: the ground truth a TP took, as an index into the dataset's flat ground truth (images in
    order, each image's objects in file order), -1 elsewhere. ``gt`` int64 [G]: that flat index
    of every ground truth of the class the protocol looks at; ``npos`` how many of them count.
    """

    label: int
    rows: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    matched: np.ndarray
    gt: np.ndarray
    npos: int


# pycocotools' summarize() labels, in the order of `EvalResult.stats`.
COCO_STAT_NAMES = (
    "AP @[IoU=0.50:0.95 | area=   all | maxDets=100]",
    "AP @[IoU=0.50      | area=   all | maxDets=100]",
    "AP @[IoU=0.75      | area=   all | maxDets=100]",
    "AP @[IoU=0.50:0.95 | area= small | maxDets=100]",
    "AP @[IoU=0.50:0.95 | area=medium | maxDets=100]",
    "AP @[IoU=0.50:0.95 | area= large | maxDets=100]",
    "AR @[IoU=0.50:0.95 | area=   all | maxDets=  1]",
    "AR @[IoU=0.50:0.95 | area=   all | maxDets= 10]",
    "AR @[IoU=0.50:0.95 | area=   all | maxDets=100]",
    "AR @[IoU=0.50:0.95 | area= small | maxDets=100]",
    "AR @[IoU=0.50:0.95 | area=medium | maxDets=100]",
    "AR @[IoU=0.50:0.95 | area= large | maxDets=100]",
)


def format_table(result: EvalResult) -> str:
    """Per-class AP in percent, then the summary (COCO's 12 numbers in pycocotools' layout) and
    the last line ``<protocol> mAP: <percent>``; what the evaluate and test commands print."""
    width = max([len(name) for name in result.per_class] + [5])
    rows = [f"{'class':<{width}}  AP", f"{'-' * width}  ------"]
    for name, ap in result.per_class.items():
        shown = "   n/a (no ground truth)" if ap is None else f"{100 * ap:6.2f}"
        rows.append(f"{name:<{width}}  {shown}")
    rows.append(f"{'-' * width}  ------")
    if result.stats is not None:
        for name, value in zip(COCO_STAT_NAMES, result.stats):
            kind = "Average Precision" if name.startswith("AP") else "Average Recall   "
            rows.append(f" {kind}  ({name[:2]}) {name[3:]} = {value:0.3f}")
    rows.append(f"{result.protocol} mAP: {100 * result.mAP:.2f}")
    return "\n".join(rows)


def mean_ap(per_class: dict[str, float | None]) -> float:
    """Mean over the classes that have an AP; NaN when none has."""
    values = [v for v in per_class.values() if v is not None]
    return float(np.mean(values)) if values else float("nan")


def _finite_or_none(value: float | None) -> float | None:
    if value is None or math.isnan(value):
        return None
    return float(value)
