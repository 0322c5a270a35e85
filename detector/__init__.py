"""The detector: the region classifier ensemble, per-class NMS, training, and the commands.

    from detector import Detector
    detector = Detector.load(["runs/a/last.pt"], device="auto")
    result = detector("photo.jpg")          # boxes, scores, labels

The names below are imported on first use (module ``__getattr__``): the commands' modules
(`detector.cli`) sit in this package and must answer ``--help``, and say which extra to install,
without torch.
"""
from __future__ import annotations

from eval.lazy import lazy_attributes

# The public face: name -> the module that defines it.
_PUBLIC = {
    "Detector": "detector.api",
    "DetectionResult": "detector.records",
    "PostProcess": "detector.postprocess",
    "train": "detector.training.loop",
    "load_train_config": "detector.training.config",
}
__all__ = sorted(_PUBLIC)
__getattr__ = lazy_attributes(__name__, _PUBLIC)
