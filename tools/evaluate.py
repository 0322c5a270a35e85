"""Evaluate a COCO results file against COCO, PASCAL VOC or ILSVRC DET ground truth, or proposals.

    python tools/evaluate.py --gt instances_val2017.json --detections dets.json
    python tools/evaluate.py --gt instances_val2017.json --split ids.txt --detections dets.json
    python tools/evaluate.py --gt VOC2007 --split test --detections dets.json --protocol voc07
    python tools/evaluate.py --gt ILSVRC/Annotations/DET/val --classes map_det.txt \\
        --blacklist ILSVRC2014_det_validation_blacklist.txt --detections dets.json
    python tools/evaluate.py --gt instances_val2017.json --proposals cache/ss_x2 \\
        --proposals cache/ss_x2_mb --json recall.json --plot recall.png

Prints per-class AP and the summary; ``--json`` writes them, ``--plot`` draws PR curves. With
``--proposals`` (proposal caches of tools/propose.py), the proposal report of each cache:
recall at IoU 0.5 / 0.7 and AR versus proposals per image, AR by object size, boxes per image.
The same as ``gdet-evaluate`` and, from Python, ``eval.evaluate_files`` + ``eval.format_table``.
NumPy only: this tool never imports torch.
"""
import sys

from detector.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
