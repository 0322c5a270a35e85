"""The evaluate command: a COCO results file against COCO, PASCAL VOC or ILSVRC DET ground truth,
or proposal caches against the ground truth (the proposal report of Hosang et al.).

The library does the work (`eval.evaluate_files`, `eval.format_table`, `eval.plot.plot_curves`;
for proposals `proposals.report.evaluate_caches` and `eval.proposal_report`); this module
parses the flags, checks the output paths before evaluating, prints and writes. Torch-free,
like the whole evaluation path.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from detector.cli.common import (HelpFormatter, add_dataset_arguments, add_protocol_argument,
                                 check_images_given, run_main)
from eval.errors import DetectionError
from eval.outputs import check_output_file

DESCRIPTION = ("Evaluate a COCO results file against COCO, PASCAL VOC, ILSVRC DET or YOLO "
               "ground truth, or proposal caches (recall and AR versus proposals per image).")
EPILOG = """\
With COCO JSON ground truth, --split (image ids or file names) and --classes (category names)
select images and categories exactly as pycocotools' params.imgIds / params.catIds; --images
(except for --report's thumbnails) and --blacklist do not apply there and are refused.
--blacklist needs ILSVRC XMLs and --protocol ilsvrc (auto picks it for a map_det.txt class map).

--report DIR writes an error analysis (Hoiem et al. 2012, TIDE): DIR/index.html, one page with
the AP per class, its false positives by kind (localisation, confusion, duplicate, background)
and the AP each kind costs, the missed objects by size, and thumbnails of the worst of each
(DIR/thumbs/); all from the protocol's own matching, so its APs are those printed here.

--proposals CACHE (repeatable, instead of --detections) prints, for each cache, recall at IoU
0.5 and 0.7 and AR (mean recall over IoU 0.5:0.05:0.95) with the top 10, 20, 50, ..., 2000 and
all proposals per image, AR of small, medium and large objects (COCO's area bins) and the boxes
per image; every non-crowd object of every image of --gt (and --split) counts, whatever its
class. --json writes them per cache, --plot draws recall versus proposals and versus IoU, one
line per cache. --protocol and --blacklist do not apply there; --classes only where the ground
truth needs it to be read (ILSVRC's map_det.txt, YOLO class names), never with COCO JSON."""


def build_parser() -> argparse.ArgumentParser:
    """The evaluate command's flags."""
    p = argparse.ArgumentParser(prog="gdet-evaluate", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=HelpFormatter)
    add_dataset_arguments(p)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--detections",
                      help="COCO results JSON: a list of {image_id, category_id or "
                           "category_name, bbox [x, y, w, h], score}")
    what.add_argument("--proposals", action="append", metavar="CACHE",
                      help="a proposal cache folder (tools/propose.py --out) to report on "
                           "instead of detections; repeat it to compare methods")
    add_protocol_argument(p)
    p.add_argument("--json", metavar="OUT", help="write {protocol, mAP, per_class, stats} here "
                                                 "(with --proposals: each cache's report)")
    p.add_argument("--plot", metavar="FILE.png",
                   help="draw precision-recall curves, or with --proposals recall curves "
                        "(needs matplotlib; format from the suffix)")
    p.add_argument("--report", metavar="DIR",
                   help="write an error analysis here: DIR/index.html (AP per class, false "
                        "positives by kind and the AP each kind costs, missed objects by size) "
                        "and DIR/thumbs/ (the worst of each, cut from the images: with COCO "
                        "JSON pass --images)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and evaluate; 0 on success, 2 with one ``error:`` line on bad input."""
    return run_main(run, build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Check the flags and outputs, evaluate (`eval.evaluate_files`), print the table, write
    the files; with --proposals, `run_proposals`."""
    if args.proposals:
        return run_proposals(args)
    from eval.outputs import write_atomic
    from eval import evaluate_files, format_table

    check_inputs(args)
    check_outputs(args)
    options = dict(protocol=args.protocol, images=args.images, classes=args.classes,
                   blacklist=args.blacklist, split=args.split)
    if args.report:  # the analysis evaluates too, from the same matching
        from eval.analysis import analyse_files

        analysis = analyse_files(args.gt, args.detections, **options)
        result = analysis.result
    else:
        result = evaluate_files(args.gt, args.detections, **options)
    print(format_table(result))
    if args.json:
        import json

        write_atomic(args.json, json.dumps(result.to_json(), indent=1) + "\n")
        print(f"wrote {args.json}")
    if args.plot:
        from eval.plot import plot_curves

        plot_curves(result, args.plot)
        print(f"wrote {args.plot}")
    if args.report:
        from eval.report_html import write_report

        print(f"wrote {write_report(analysis, args.report)}")
    return 0


def run_proposals(args: argparse.Namespace) -> int:
    """The proposal report: check the flags and outputs, read each cache image by image
    (`proposals.report.evaluate_caches`), print a table per cache, write the files."""
    import json

    from eval.outputs import write_atomic
    from eval.proposal_report import plot_proposal_report
    from proposals.report import evaluate_caches

    check_proposal_flags(args)
    check_inputs(args)
    check_outputs(args)
    reports = evaluate_caches(args.gt, args.proposals, images=args.images, split=args.split,
                              classes=args.classes)
    print("\n\n".join(report.format(path) for path, report in reports.items()))
    if args.json:
        tables = {path: report.to_json() for path, report in reports.items()}
        write_atomic(args.json, json.dumps(tables, indent=1) + "\n")
        print(f"wrote {args.json}")
    if args.plot:
        plot_proposal_report(reports, args.plot)
        print(f"wrote {args.plot}")
    return 0


def check_proposal_flags(args: argparse.Namespace) -> None:
    """Refuse, by name, the detection flags that mean nothing for proposals, which are
    class-agnostic: --protocol (other than its default, auto), --blacklist, and --classes with
    COCO JSON (where it would select categories; XMLs and YOLO labels may need it to be
    read, and every object still counts)."""
    from eval.evaluate import is_coco_json

    why = "proposal recall counts every object whatever its class; drop it"
    if args.protocol != "auto":
        raise DetectionError(f"--protocol {args.protocol} with --proposals: a protocol scores "
                             "detections, proposals get recall and AR; drop --protocol")
    if args.blacklist is not None:
        raise DetectionError(f"--blacklist {args.blacklist} with --proposals: {why}")
    if args.report is not None:
        raise DetectionError(f"--report {args.report} with --proposals: the error report "
                             "analyses detections; drop --report (--plot draws the recall)")
    if args.classes is not None and is_coco_json(args.gt):
        raise DetectionError(f"--classes {args.classes} with --proposals and COCO JSON ground "
                             f"truth: {why}")


def check_inputs(args: argparse.Namespace) -> None:
    """What `eval.evaluate_files` does not refuse itself: --images where this command reads no
    image (COCO JSON ground truth; the test command passes it there, for detecting) or that is
    not a folder. Over-long names first: looking them up would raise."""
    from eval.inputs import check_input_names
    from eval.evaluate import is_coco_json

    check_input_names(gt=args.gt, detections=args.detections, images=args.images,
                      classes=args.classes, blacklist=args.blacklist, split=args.split)
    for cache in args.proposals or []:
        check_input_names(proposals=cache)
    check_images_given(args.gt, args.images)
    if args.images is not None and is_coco_json(args.gt) and args.report is None:
        raise DetectionError(f"--images {args.images}: evaluating COCO JSON ground truth "
                             f"({args.gt}) reads no image; drop --images")
    if args.report is not None and args.images is None and is_coco_json(args.gt):
        raise DetectionError(f"--report {args.report}: its thumbnails are cut from the "
                             "images; pass the COCO image root with --images")
    if args.images is not None and not Path(args.images).is_dir():
        raise DetectionError(f"--images {args.images}: no such folder; pass the folder of the "
                             "XMLs' images, or drop --images")


def check_outputs(args: argparse.Namespace) -> list[Path]:
    """--json, --plot and --report checked before the work (`eval.outputs.check_output_file`,
    `eval.report_html.check_report_dir`): writable (folders created), not one another, and not
    an input of the command (writing there would destroy it), nor inside a --proposals cache;
    --plot's format writable."""
    inputs = [("--gt", args.gt), ("--detections", args.detections), ("--split", args.split),
              ("--classes", args.classes), ("--blacklist", args.blacklist)]
    caches = args.proposals or []
    inputs += [("--proposals", cache) for cache in caches]
    outputs = []
    for flag, path in (("--json", args.json), ("--plot", args.plot)):
        if path is None:
            continue
        check_not_in_cache(path, flag, caches)  # first: the next check creates folders
        outputs.append(check_output_file(path, flag, inputs))
        inputs.append((flag, path))  # --plot must not be --json either
        if flag == "--plot":
            from eval.plot import plot_format

            plot_format(path)
    if args.report is not None:
        from eval.report_html import check_report_dir

        outputs.append(check_report_dir(args.report, "--report",
                                        inputs + [("--images", args.images)]))
    return outputs


def check_not_in_cache(path: str, flag: str, caches: list[str]) -> None:
    """Refuse an output inside a proposal cache folder: the cache holds its own files only
    (a file there could replace its manifest or an image's boxes)."""
    target = Path(path).resolve()
    for cache in caches:
        if target.is_relative_to(Path(cache).resolve()):
            raise DetectionError(f"{flag} {path}: is in the proposal cache --proposals "
                                 f"{cache}; write it outside the cache")


if __name__ == "__main__":
    sys.exit(main())
