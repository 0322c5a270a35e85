"""Train a region classifier (or, with ``task: multibox``, the MultiBox proposal network).

    python tools/propose.py --gt ../shared/data/raccoon/annotations \\
        --images ../shared/data/raccoon/images --out cache/raccoon_ss_x2
    python tools/train.py --config configs/raccoon_cpu.yaml
    python tools/train.py --config configs/raccoon_cpu.yaml --seed 1 --set output=runs/raccoon_s1
    python tools/train.py --resume runs/raccoon_cpu/last.pt --set solver.epochs=16
    python tools/train.py --config configs/raccoon_multibox_cpu.yaml
    torchrun --nproc-per-node 8 tools/train.py --config configs/X.yaml      # DDP

The command lives in detector.cli.train (also the gdet-train console script); from Python:
detector.training.loop.train(detector.training.config.load_train_config(path, overrides)).
"""
import sys

from detector.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
