"""Seconds per `Detector` call on CPU: the whole per-image path (warping, the members, mean
softmax, NMS) on one thread, for comparing two versions of the code.

    python benchmarks/bench_detect.py
    git worktree add /tmp/old REV
    (cd /tmp && PYTHONPATH=/tmp/old python /path/to/repo/benchmarks/bench_detect.py)

Random-init members (20 classes) over random proposals of a random 500 x 375 image, float32,
best of --repeats calls after a warm-up. Run the two versions alternately, a few times each:
the machine is shared, so compare their best figures, not single runs.
"""
import argparse
import time

import numpy as np
import torch

from detector.api import Detector
from detector.classifier import RegionClassifier
from proposals.checkpoint import ModelSpec


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--members", type=int, default=2, help="networks in the ensemble")
    p.add_argument("--proposals", type=int, default=400, help="boxes per image")
    p.add_argument("--size", type=int, default=64, help="network input size (px)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls; the best is printed")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    members = [RegionClassifier(20, args.size).eval() for _ in range(args.members)]
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)
    corner = rng.uniform(0, 400, (args.proposals, 2))
    side = rng.uniform(20, 100, (args.proposals, 2))
    boxes = np.concatenate([corner, corner + side], 1).astype(np.float32)
    pad = round(16 * args.size / 224)
    detector = Detector(members, ModelSpec(20, args.size, pad), [str(k) for k in range(20)], "cpu")
    run = lambda: detector(image, boxes)  # noqa: E731
    run()
    best = float("inf")
    for _ in range(args.repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    print(f"detect: {best:.3f} s per image ({args.members} members, {args.proposals} proposals, "
          f"{args.size} px)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
