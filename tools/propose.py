"""Compute proposals (selective search, optionally + MultiBox) for a dataset or folder into a cache.

    python tools/propose.py --images photos/ --out cache/ss_x2
    python tools/propose.py --gt VOC2007 --split test --out cache/voc07_test --workers 8
    python tools/propose.py --gt VOC2007 --out cache/voc07_mb --multibox runs/voc_mb/last.pt
    python tools/propose.py --config configs/raccoon_combined_cpu.yaml     # as a config says
    python tools/propose.py --config configs/raccoon_cpu.yaml --set proposals.multibox_top=100
    torchrun --nproc-per-node 4 tools/propose.py --gt instances_train2017.json \\
        --images train2017/ --out cache/coco_train --workers 4

The command is `detector.cli.propose` (also installed as ``gdet-propose``); the library behind
it is `proposals.extract`. ``--help`` lists every flag with its default.
"""
import sys

from detector.cli.propose import main

if __name__ == "__main__":
    sys.exit(main())
