"""The train command: parse the arguments, read and check the config, call
`detector.training.loop.train`.

Torch-free at import: the library is imported inside `run`, so a missing torch is one line.
"""
from __future__ import annotations

import argparse
import sys
import os

from detector.cli.common import HelpFormatter, run_main
from eval.errors import DetectionError
from eval.outputs import check_output_dir

DESCRIPTION = """\
Fine-tune an Inception (GoogLeNet) region classifier on a dataset and its proposal cache, or
train the MultiBox proposal network (a config with task: multibox).

    python tools/propose.py --gt ../shared/data/raccoon/annotations \\
        --images ../shared/data/raccoon/images --out cache/raccoon_ss_x2
    python tools/train.py --config configs/raccoon_cpu.yaml
    python tools/train.py --config configs/raccoon_cpu.yaml --seed 1 --set output=runs/raccoon_s1
    python tools/train.py --resume runs/raccoon_cpu/last.pt                  # after a stop
    python tools/train.py --resume runs/raccoon_cpu/last.pt --set solver.epochs=16  # extend
    python tools/train.py --config runs/raccoon_cpu/config.yaml              # the run again
    torchrun --nproc-per-node 8 tools/train.py --config configs/X.yaml      # DDP

Writes epoch_NNN.pt and last.pt checkpoints (model, optimizer, schedule, RNG states, config,
classes), config.yaml (the resolved config), metrics.csv (and TensorBoard logs when
tensorboard is installed) under the config's output folder. Ensemble members: the same config
with different --seed. From Python: detector.training.loop.train(load_train_config(path, overrides)).
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gdet-train", description=DESCRIPTION,
                                formatter_class=HelpFormatter)
    p.add_argument("--config", help="YAML config (see configs/, or a run's config.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set solver.lr=0.01 (repeatable)")
    p.add_argument("--seed", type=int, help="shortcut for --set seed=N")
    p.add_argument("--resume", metavar="CKPT",
                   help="continue a run from its checkpoint, with its own config; --set may "
                        "change solver.epochs (to extend it), solver.eval_every and output")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run in the output folder (its checkpoints, config.yaml and "
                        "metrics.csv); without it, a folder holding a run is refused")
    p.add_argument("--device", default="auto",
                   help="auto (CUDA when present), cpu, cuda, cuda:N (default: auto)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_main(run, args)


def run(args: argparse.Namespace) -> int:
    """Read the config (or the resumed checkpoint's), check its output folder (the error names
    the config file), train: `train` checks the device and the output again before any work,
    as it does for a Python caller."""
    config, where = read_config(args)
    from detector.training.loop import train

    check_output_dir(config.output, f"{where}: output")
    train(config, device=args.device, resume=args.resume, overwrite=args.overwrite)
    return 0


def read_config(args: argparse.Namespace):
    """(config, the file it came from): ``--config`` with ``--set``/``--seed``, or the config
    of the ``--resume`` checkpoint with the changes a resumed run allows."""
    overrides = list(args.set) + ([f"seed={args.seed}"] if args.seed is not None else [])
    if args.resume:
        if args.config:
            raise DetectionError(f"--config {args.config} with --resume {args.resume}: a resumed "
                                 "run keeps its checkpoint's config; drop --config")
        from detector.training.loop import resume_config

        return resume_config(args.resume, overrides), args.resume
    if not args.config:
        raise DetectionError("give --config FILE (see configs/) or --resume CKPT")
    from detector.training.config import load_train_config

    return load_train_config(args.config, overrides), args.config


if __name__ == "__main__":
    sys.exit(main())
