"""What every evaluation protocol returns."""
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


def mean_ap(per_class: dict[str, float | None]) -> float:
    """Mean over the classes that have an AP; NaN when none has."""
    values = [v for v in per_class.values() if v is not None]
    return float(np.mean(values)) if values else float("nan")


def _finite_or_none(value: float | None) -> float | None:
    if value is None or math.isnan(value):
        return None
    return float(value)
