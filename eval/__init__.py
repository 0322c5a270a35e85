"""Evaluation: COCO, PASCAL VOC and ILSVRC DET protocols, each as its official devkit, and
proposal recall. NumPy only: importing this package never imports torch.

`evaluate_files` is the one entry point from files; `format_table` prints its result.
"""
from eval.evaluate import (PROTOCOLS, evaluate, evaluate_coco, evaluate_coco_instances,
                           evaluate_files, guess_protocol)
from eval.results import EvalResult, format_table

__all__ = ["PROTOCOLS", "EvalResult", "evaluate", "evaluate_coco", "evaluate_coco_instances",
           "evaluate_files", "format_table", "guess_protocol"]
