"""The evaluate command: a COCO results file against COCO, PASCAL VOC or ILSVRC DET ground truth.

The library does the work (`eval.evaluate_files`, `eval.format_table`, `eval.plot.plot_curves`);
this module parses the flags, checks the output paths before evaluating, prints and writes.
Torch-free, like the whole evaluation path.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from detector.cli.common import (HelpFormatter, add_dataset_arguments, add_protocol_argument,
                                 check_images_given, run_main)
from eval.errors import DetectionError
from eval.outputs import check_output_file

DESCRIPTION = "Evaluate a COCO results file against COCO, PASCAL VOC or ILSVRC DET ground truth."
EPILOG = """\
With COCO JSON ground truth, --split (image ids or file names) and --classes (category names)
select images and categories exactly as pycocotools' params.imgIds / params.catIds; --images and
--blacklist do not apply there and are refused. --blacklist needs ILSVRC XMLs and --protocol
ilsvrc (auto picks it for a map_det.txt class map)."""


def build_parser() -> argparse.ArgumentParser:
    """The evaluate command's flags."""
    p = argparse.ArgumentParser(prog="gdet-evaluate", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=HelpFormatter)
    add_dataset_arguments(p)
    p.add_argument("--detections", required=True,
                   help="COCO results JSON: a list of {image_id, category_id or category_name, "
                        "bbox [x, y, w, h], score}")
    add_protocol_argument(p)
    p.add_argument("--json", metavar="OUT", help="write {protocol, mAP, per_class, stats} here")
    p.add_argument("--plot", metavar="FILE.png",
                   help="draw precision-recall curves (needs matplotlib; format from the suffix)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and evaluate; 0 on success, 2 with one ``error:`` line on bad input."""
    return run_main(run, build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Check the flags and outputs, evaluate (`eval.evaluate_files`), print the table, write
    the files."""
    from eval.outputs import write_atomic
    from eval import evaluate_files, format_table

    check_inputs(args)
    check_outputs(args)
    result = evaluate_files(args.gt, args.detections, protocol=args.protocol,
                            images=args.images, classes=args.classes, blacklist=args.blacklist,
                            split=args.split)
    print(format_table(result))
    if args.json:
        import json

        write_atomic(args.json, json.dumps(result.to_json(), indent=1) + "\n")
        print(f"wrote {args.json}")
    if args.plot:
        from eval.plot import plot_curves

        plot_curves(result, args.plot)
        print(f"wrote {args.plot}")
    return 0


def check_inputs(args: argparse.Namespace) -> None:
    """What `eval.evaluate_files` does not refuse itself: --images where this command reads no
    image (COCO JSON ground truth; the test command passes it there, for detecting) or that is
    not a folder. Over-long names first: looking them up would raise."""
    from eval.inputs import check_input_names
    from eval.evaluate import is_coco_json

    check_input_names(gt=args.gt, detections=args.detections, images=args.images,
                      classes=args.classes, blacklist=args.blacklist, split=args.split)
    check_images_given(args.gt, args.images)
    if args.images is not None and is_coco_json(args.gt):
        raise DetectionError(f"--images {args.images}: evaluating COCO JSON ground truth "
                             f"({args.gt}) reads no image; drop --images")
    if args.images is not None and not Path(args.images).is_dir():
        raise DetectionError(f"--images {args.images}: no such folder; pass the folder of the "
                             "XMLs' images, or drop --images")


def check_outputs(args: argparse.Namespace) -> list[Path]:
    """--json and --plot checked before the work (`eval.outputs.check_output_file`): writable
    files (folders created), not one another, and not an input of the command (writing there
    would destroy it); --plot's format writable."""
    inputs = [("--gt", args.gt), ("--detections", args.detections), ("--split", args.split),
              ("--classes", args.classes), ("--blacklist", args.blacklist)]
    outputs = []
    for flag, path in (("--json", args.json), ("--plot", args.plot)):
        if path is None:
            continue
        outputs.append(check_output_file(path, flag, inputs))
        inputs.append((flag, path))  # --plot must not be --json either
        if flag == "--plot":
            from eval.plot import plot_format

            plot_format(path)
    return outputs


if __name__ == "__main__":
    sys.exit(main())
