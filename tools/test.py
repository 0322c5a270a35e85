"""Run a trained detector over a dataset split and evaluate it.

    python tools/test.py --gt ../shared/data/raccoon_voc --split test \\
        --checkpoint runs/raccoon/last.pt --proposals cache/raccoon --out test/raccoon
    torchrun --nproc-per-node 2 tools/test.py --gt ... --checkpoint a.pt --out test/x

Writes OUT/detections.json and OUT/evaluation.json and prints the table. The command lives in
detector/cli/test.py (also the console script gdet-test).
"""
import sys

from detector.cli.test import main

if __name__ == "__main__":
    sys.exit(main())
