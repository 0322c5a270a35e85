"""Run a trained detector over a dataset split and evaluate it.

    python tools/test.py --gt ../shared/data/raccoon/annotations \\
        --images ../shared/data/raccoon/images \\
        --split ../shared/data/raccoon/data/test_labels.csv --protocol voc \\
        --checkpoint runs/raccoon_cpu/last.pt --proposals cache/raccoon_ss_x2 --out test_results/raccoon
    torchrun --nproc-per-node 2 tools/test.py --gt ... --checkpoint a.pt --out test_results/x

Writes OUT/detections.json and OUT/evaluation.json and prints the table. The command lives in
detector/cli/test.py (also the console script gdet-test).
"""
import sys

from detector.cli.test import main

if __name__ == "__main__":
    sys.exit(main())
