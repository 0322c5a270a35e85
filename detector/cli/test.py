"""The test command: a trained detector over a dataset split, then its evaluation.

    gdet-test --gt ../shared/data/raccoon/annotations --images ../shared/data/raccoon/images \\
        --split ../shared/data/raccoon/data/test_labels.csv --protocol voc \\
        --checkpoint runs/raccoon_cpu/last.pt --proposals cache/raccoon_ss_x2 --out test_results/raccoon
    gdet-test --gt instances_val2017.json --images val2017/ \\
        --checkpoint a.pt --checkpoint b.pt --proposals cache/coco_val --out test_results/coco
    torchrun --nproc-per-node 4 tools/test.py --gt ... --checkpoint a.pt --out test_results/x

--out is a folder (as the detect command's): OUT/detections.json, a COCO results list with the
dataset's own image and category ids, and OUT/evaluation.json ({protocol, mAP, per_class,
stats}), which is exactly `eval.evaluate_files(gt, OUT/detections.json, ...)` with the same
--protocol/--split/--classes/--blacklist/--images: the numbers can be reproduced from the file.
Both paths are checked before any work. --report adds OUT/report/index.html, the error
analysis of the same matching (`eval.analysis`, `eval.report_html`), with its thumbnails.

Proposals come from --proposals (a propose-command cache of this dataset) or are computed as
the checkpoint's were. Images the cache records as failed are skipped (their count and the
cache's failed/ folder are printed first); without a cache an image that cannot be decoded is
skipped the same way, listed at the end, and the exit status is 1. A skipped image's ground
truth still counts as missed, so the mAP is that of a detector that found nothing there.
Images are read in their stored pixel grid (no EXIF rotation), as annotations refer to it.
Under torchrun the images are shared among the ranks; rank 0 writes the files and prints.
"""
from __future__ import annotations

import argparse
import functools
import json
import sys

from detector.cli.common import (HelpFormatter, add_dataset_arguments, add_inference_arguments,
                                 add_protocol_argument, check_cache_holds, check_images_given,
                                 check_inference_arguments, inference_options, report_failures,
                                 run_main)
from eval.errors import DetectionError
from eval.outputs import check_output_dir, check_output_file

RESULTS_NAME = "detections.json"
EVALUATION_NAME = "evaluation.json"
REPORT_NAME = "report"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gdet-test", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=HelpFormatter)
    add_dataset_arguments(p)
    p.add_argument("--checkpoint", action="append", required=True, metavar="CKPT",
                   help="a checkpoint of the train command; repeat it for an ensemble "
                        "(softmax averaged)")
    p.add_argument("--proposals", metavar="CACHE",
                   help="proposal cache of this dataset from the propose command (default: "
                        "compute them on the fly as the checkpoint was trained)")
    add_protocol_argument(p)
    p.add_argument("--out", default="test_results",
                   help=f"output folder: {RESULTS_NAME} and {EVALUATION_NAME} "
                        "(default test_results/)")
    p.add_argument("--report", action="store_true",
                   help=f"also write an error analysis to OUT/{REPORT_NAME}/index.html: AP per "
                        "class, false positives by kind and the AP each costs, missed objects "
                        "by size, thumbnails of the worst (as the evaluate command's --report)")
    add_inference_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_main(run, args)


def run(args: argparse.Namespace) -> int:
    from detector import distributed
    from proposals import devices
    from detector.api import Detector, check_choices
    from eval.datasets import load_dataset
    from detector.evaluation import failed_records, results_of
    from eval.outputs import write_atomic
    from eval.evaluate import evaluate_files
    from eval.analysis import analyse_files
    from eval.report_html import check_report_dir, write_report
    from eval.results import format_table

    check_inference_arguments(args)
    check_choices(args.checkpoint, stacked=args.stacked, compile=args.compile)
    check_images_given(args.gt, args.images)
    inputs = [args.gt, args.images, args.classes, args.blacklist, args.split, args.proposals,
              *args.checkpoint]
    out = check_output_dir(args.out, "--out", inputs)
    for name in (RESULTS_NAME, EVALUATION_NAME):
        check_output_file(out / name, "--out", inputs)
    if args.report:
        check_report_dir(out / REPORT_NAME, "--report", inputs)
    dataset = load_dataset(args.gt, images=args.images, classes=args.classes,
                           blacklist=args.blacklist, split=args.split)
    options = dict(protocol=args.protocol, images=args.images, classes=args.classes,
                   blacklist=args.blacklist, split=args.split)
    evaluate = functools.partial(evaluate_files, args.gt, **options)
    evaluate([])  # ground truth with nothing to evaluate is refused now, not after detection
    device = devices.cpu_or_device(args.device)  # the CPU needs no torch: ONNX Runtime's path
    detector = Detector.load(args.checkpoint, device, proposals=args.proposals,
                             **inference_options(args))
    devices.join_process_group(detector.device)  # under torchrun: gloo, or NCCL on CUDA
    category_ids = dataset_category_ids(detector.classes, dataset, args.checkpoint[0])
    skipped = failed_records(dataset.images, detector.cache)
    skipped_ids = {r.image_id for r in skipped}
    records = [r for r in dataset.images if r.image_id not in skipped_ids]
    if detector.cache is not None:
        check_cache_holds(detector.cache, [r.image_id for r in records], args.proposals)
    rank = devices.world()[0]
    if rank == 0:
        if skipped:
            print(f"skipping {len(skipped)} image(s) that {detector.cache.root / 'failed'}/ "
                  "records as failed; their ground truth counts as missed")
        print(detector.describe())
    items = [(r.image_id, r.file_name) for r in records]
    results = distributed.detect_sharded(detector, items, workers=args.workers, keep_going=True,
                                         progress="test")
    devices.leave_process_group()
    if results is None:  # not rank 0
        return 0
    rows = results_of([r for r in results if r.error is None], category_ids)
    # Evaluated as the evaluate command would evaluate detections.json (JSON keeps every float
    # exactly), before either file is written: the two are written as a pair or not at all,
    # and an old evaluation.json never stands beside new detections.
    analysis = analyse_files(args.gt, rows, **options) if args.report else None
    result = evaluate(rows) if analysis is None else analysis.result  # the same evaluation
    print(format_table(result))
    (out / EVALUATION_NAME).unlink(missing_ok=True)
    write_atomic(out / RESULTS_NAME, json.dumps(rows) + "\n")
    write_atomic(out / EVALUATION_NAME, json.dumps(result.to_json(), indent=1) + "\n")
    print(f"wrote {len(rows)} detections of {len(dataset.images)} images to {out / RESULTS_NAME} "
          f"and their evaluation to {out / EVALUATION_NAME}")
    if analysis is not None:
        print(f"wrote the error analysis to {write_report(analysis, out / REPORT_NAME)}")
    return report_failures([r for r in results if r.error is not None], len(results))


def dataset_category_ids(classes: tuple[str, ...], dataset, checkpoint: str) -> list[int]:
    """The dataset's category id of each checkpoint class (label ``i`` -> ``ids[i - 1]``).

    Classes are matched by name, so a checkpoint trained on the same classes in another order
    still maps right; a class the dataset lacks is an error naming it.
    """
    by_name = dict(zip(dataset.classes, dataset.category_ids))
    missing = [name for name in classes if name not in by_name]
    if missing:
        source = dataset.source or "the dataset"
        raise DetectionError(f"{checkpoint}: class {missing[0]!r} ({len(missing)} of "
                             f"{len(classes)} classes) is not among {source}'s classes "
                             f"({', '.join(dataset.classes[:5])}, ...); test on the dataset the "
                             "model was trained for, or pass its --classes list")
    return [by_name[name] for name in classes]


if __name__ == "__main__":
    sys.exit(main())
