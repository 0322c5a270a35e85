"""Evaluation, the torch-free ground of the toolkit: COCO, PASCAL VOC and ILSVRC DET protocols,
each as its official devkit, proposal recall, and the readers, box maths and file doors the
other packages stand on. NumPy only: importing this package never imports torch.

    from eval import evaluate_files, format_table
    print(format_table(evaluate_files("instances_val.json", "detections.json")))

`evaluate_files` is the one entry point from files; `evaluate` takes a `Dataset` and
`Detections` in memory; `proposal_recall` / `evaluate_proposals` measure proposals, and
`ProposalRecallAccumulator`, fed image by image, gives their `ProposalReport` (Hosang et al.).
`eval.analysis.analyse_files` (the arguments of `evaluate_files`) finds where the AP goes
(false positives by kind, missed objects by size); `eval.report_html.write_report` makes a page
of it.
"""
from eval.datasets import Dataset, load_dataset
from eval.errors import DetectionError
from eval.evaluate import PROTOCOLS, evaluate, evaluate_files
from eval.proposal_report import ProposalRecallAccumulator, ProposalReport
from eval.recall import evaluate_proposals, proposal_recall
from eval.results import EvalResult, format_table

__all__ = ["PROTOCOLS", "Dataset", "DetectionError", "EvalResult", "ProposalRecallAccumulator",
           "ProposalReport", "evaluate", "evaluate_files", "evaluate_proposals", "format_table",
           "load_dataset", "proposal_recall"]
