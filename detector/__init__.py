"""The detector: dataset readers, region warping, classifiers, training and inference.

``from detector import Detector`` is the entry point for detection (`detector.api`). This file
stays free of heavy imports: `eval.datasets` and `eval.errors` serve the evaluation
path, which must not import torch, so `Detector` is imported on first use (module
``__getattr__``).
"""
from __future__ import annotations

__all__ = ["Detector", "DetectionResult"]


def __getattr__(name: str):
    if name in __all__:
        from detector import api

        return getattr(api, name)
    raise AttributeError(f"module 'detector' has no attribute {name!r}")
