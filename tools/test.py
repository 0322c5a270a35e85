"""Run a trained detector over a dataset split and evaluate it.

    python tools/test.py --gt ../shared/data/raccoon_voc --split test \\
        --checkpoint runs/raccoon/last.pt --proposals cache/raccoon --out dets.json
    python tools/test.py --gt instances_val2017.json --images val2017/ \\
        --checkpoint a.pt --checkpoint b.pt --proposals cache/coco_val --json results.json

Writes the detections (a COCO results list, the dataset's own image and category ids) to
--out, then evaluates them exactly as ``tools/evaluate.py --detections OUT`` would and prints
its table. Proposals come from --proposals (a tools/propose.py cache of this dataset) or are
computed on the fly as the checkpoint's were (selective search, ~0.5 s an image, plus its
MultiBox boxes where it was trained on those).
"""
from __future__ import annotations

import argparse
import json
import sys

from detector.datasets import Dataset, load_dataset
from detector.errors import DetectionError
from detector.fileio import write_atomic
from detector.evaluation import detect_records
from detector.pipeline import Ensemble, load_ensemble
from detector.cli.common import (add_dataset_arguments, add_inference_arguments, add_protocol_argument,
                                 check_inference_arguments, inference_path, pick_device)
from tools.detect import proposal_source
from tools.evaluate import format_table
from tools.evaluate import run as evaluate_run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataset_arguments(p)
    p.add_argument("--checkpoint", action="append", required=True, metavar="CKPT",
                   help="a checkpoint of tools/train.py; repeat it for an ensemble (softmax averaged)")
    p.add_argument("--proposals", metavar="CACHE",
                   help="proposal cache of this dataset from tools/propose.py (default: compute "
                        "them on the fly as the checkpoint was trained)")
    add_protocol_argument(p)
    p.add_argument("--out", default="detections.json",
                   help="write the detections here (COCO results JSON; default detections.json)")
    p.add_argument("--json", metavar="OUT", help="write {protocol, mAP, per_class, stats} here")
    add_inference_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except DetectionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def run(args: argparse.Namespace) -> None:
    check_inference_arguments(args)
    dataset = load_dataset(args.gt, images=args.images, classes=args.classes,
                           blacklist=args.blacklist, split=args.split)
    device = pick_device(args.device)
    ensemble = load_ensemble(args.checkpoint, device)
    category_ids = dataset_category_ids(ensemble, dataset, args.checkpoint[0])
    cache, proposer = proposal_source(args.proposals, ensemble, args.checkpoint)
    path = inference_path(args, device)
    print(f"{len(ensemble.members)} network(s) on {device}: {path.describe()}")
    results = detect_records(ensemble.members, ensemble.spec, dataset.images, cache, device,
                             category_ids, proposer=proposer, batch_size=args.batch_size,
                             max_per_image=args.max_per_image, progress="test",
                             workers=args.workers, path=path)
    write_atomic(args.out, json.dumps(results) + "\n")
    print(f"wrote {len(results)} detections of {len(dataset.images)} images to {args.out}")
    # Evaluate the file just written, as tools/evaluate.py would: the numbers can be reproduced
    # from it alone.
    result = evaluate_run(argparse.Namespace(**vars(args), detections=args.out))
    print(format_table(result))
    if args.json:
        write_atomic(args.json, json.dumps(result.to_json(), indent=1) + "\n")
        print(f"wrote {args.json}")


def dataset_category_ids(ensemble: Ensemble, dataset: Dataset, checkpoint: str) -> list[int]:
    """The dataset's category id of each checkpoint class (label ``i`` -> ``ids[i - 1]``).

    Classes are matched by name, so a checkpoint trained on the same classes in another order
    still maps right; a class the dataset lacks is an error naming it.
    """
    by_name = dict(zip(dataset.classes, dataset.category_ids))
    missing = [name for name in ensemble.classes if name not in by_name]
    if missing:
        source = dataset.source or "the dataset"
        raise DetectionError(f"{checkpoint}: class {missing[0]!r} ({len(missing)} of "
                             f"{len(ensemble.classes)} classes) is not among {source}'s classes "
                             f"({', '.join(dataset.classes[:5])}, ...); test on the dataset the "
                             "model was trained for, or pass its --classes list")
    return [by_name[name] for name in ensemble.classes]


if __name__ == "__main__":
    sys.exit(main())
