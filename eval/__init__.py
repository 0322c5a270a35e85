"""Evaluation: COCO, PASCAL VOC and ILSVRC DET protocols, each as its official devkit, and
proposal recall. NumPy only: importing this package never imports torch.
"""
from eval.evaluate import PROTOCOLS, evaluate, evaluate_coco, evaluate_coco_instances
from eval.results import EvalResult

__all__ = ["PROTOCOLS", "EvalResult", "evaluate", "evaluate_coco", "evaluate_coco_instances"]
