"""Convert proposals between our cache and the files detectron2, Detectron, mmdetection and Fast R-CNN read.

    gdet-convert-proposals cache/voc07_trainval voc_2007_trainval.mat --to fast-rcnn \\
        --gt VOCdevkit/VOC2007 --split trainval
    gdet-convert-proposals voc_2007_trainval.mat cache/voc07_ff --gt VOCdevkit/VOC2007 \\
        --split trainval
    gdet-convert-proposals cache/coco_val coco_val_proposals.pkl --to detectron2
    gdet-convert-proposals SS-voc_2007_test.pkl cache/voc07_test_ss --gt VOCdevkit/VOC2007 \\
        --split test

Formats (--to, --from): cache (our proposal cache folder: the default for an OUTPUT without a
suffix), detectron2 (a pickle of ids, boxes, objectness_logits, bbox_mode), detectron (a pickle
of boxes, scores, indexes, as Detectron and wetectron read it), mmdet (a pickle of [N, 5]
arrays in dataset order, mmdetection 2.x) and fast-rcnn (Fast R-CNN's selective_search_data
.mat: the default for a .mat OUTPUT). The INPUT's format is found from its content; --from
settles a pickle of ids and boxes alone.

Images: mmdet files, and fast-rcnn files as Fast R-CNN reads them, go by position in the
dataset's order, so writing them (and reading an mmdet file) needs the dataset (--gt, with the
--split the other toolkit uses) or --ids FILE (one id a line, in order). For the other formats
these choose the images converted; without them every image of the INPUT is.

Boxes are converted at the edge (inclusive and 1-based pixels, (y1, x1, y2, x2)) and round-trip
(to the pixel where a format stores whole pixels). The cache keeps ranks, not scores: written
files score the boxes 0, -1, -2, ... best first; scores read rank the boxes. A cache made from a
file records its format and SHA-256, so it is never taken for selective search; an existing
OUTPUT cache must be the same import (it is resumed). Pickles are read as data only.
"""
from __future__ import annotations

import argparse
import sys

from detector.cli.common import HelpFormatter, add_dataset_arguments, check_images_given, run_main
from eval.errors import DetectionError
from proposals.formats.common import FORMATS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gdet-convert-proposals",
                                description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=HelpFormatter)
    p.add_argument("input", metavar="INPUT",
                   help="a proposal cache folder, or a file of another toolkit (.pkl, .mat)")
    p.add_argument("output", metavar="OUTPUT",
                   help="the cache folder or file to write (a cache is resumed if it holds this "
                        "same import)")
    p.add_argument("--to", choices=FORMATS,
                   help="OUTPUT's format (default: cache for a folder or a name without a "
                        "suffix, fast-rcnn for .mat)")
    p.add_argument("--from", dest="source_format", choices=FORMATS,
                   help="INPUT's format (default: found from its content)")
    p.add_argument("--ids", metavar="FILE",
                   help="the images to convert, in order: one image id a line (not with --gt)")
    g = p.add_argument_group("dataset: its images, in its order (not with --ids)")
    add_dataset_arguments(g, required=False)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_main(run, args)


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse flags that do not go together, by name, before any work."""
    if args.ids and args.gt:
        raise DetectionError("--ids and --gt both list the images; give one of them")
    for name in ("images", "classes", "blacklist", "split"):
        if getattr(args, name) is not None and not args.gt:
            raise DetectionError(f"--{name} needs --gt (the dataset it belongs to)")
    check_images_given(args.gt, args.images)


def run(args: argparse.Namespace) -> int:
    """The command: check everything, read the image list, convert, say what was done."""
    from eval.datasets import load_dataset
    from proposals.formats import check_output, convert_proposals, read_id_list, target_format

    check_arguments(args)
    to = args.to or target_format(args.output)
    inputs = [("INPUT", args.input), ("--gt", args.gt), ("--images", args.images),
              ("--classes", args.classes), ("--blacklist", args.blacklist),
              ("--split", args.split), ("--ids", args.ids)]
    check_output(args.output, to, "OUTPUT", inputs)
    ids = read_id_list(args.ids) if args.ids else None
    dataset = load_dataset(args.gt, images=args.images, classes=args.classes,
                           blacklist=args.blacklist, split=args.split) if args.gt else None
    print(f"converting {args.input} to {to} at {args.output}", flush=True)
    done = convert_proposals(args.input, args.output, to, source_format=args.source_format,
                             ids=ids, dataset=dataset, progress=True)
    summary = (f"{args.input} ({done.source_format}) -> {args.output} ({done.target_format}): "
               f"{done.images} images, {done.boxes} boxes")
    if done.left_out:
        summary += f"; {done.left_out} image(s) of the input not listed were left out"
    if done.already_there:
        summary += f"; {done.already_there} were already there (resumed)"
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
