"""Evaluate a COCO results file against COCO, PASCAL VOC or ILSVRC DET ground truth.

    python tools/evaluate.py --gt instances_val2017.json --detections dets.json
    python tools/evaluate.py --gt VOC2007 --split test --detections dets.json --protocol voc07
    python tools/evaluate.py --gt ILSVRC/Annotations/DET/val --classes map_det.txt \\
        --blacklist ILSVRC2014_det_validation_blacklist.txt --detections dets.json

Prints per-class AP and the summary; ``--json`` writes them, ``--plot`` draws PR curves.
NumPy only: this tool never imports torch.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

from detector.cli.common import add_dataset_arguments, add_protocol_argument
from detector.datasets import load_coco_instances, load_dataset
from detector.errors import DetectionError
from detector.fileio import write_atomic
from eval.evaluate import evaluate_coco_instances, evaluate_results
from eval.results import EvalResult

COCO_STAT_NAMES = (
    "AP @[IoU=0.50:0.95 | area=   all | maxDets=100]",
    "AP @[IoU=0.50      | area=   all | maxDets=100]",
    "AP @[IoU=0.75      | area=   all | maxDets=100]",
    "AP @[IoU=0.50:0.95 | area= small | maxDets=100]",
    "AP @[IoU=0.50:0.95 | area=medium | maxDets=100]",
    "AP @[IoU=0.50:0.95 | area= large | maxDets=100]",
    "AR @[IoU=0.50:0.95 | area=   all | maxDets=  1]",
    "AR @[IoU=0.50:0.95 | area=   all | maxDets= 10]",
    "AR @[IoU=0.50:0.95 | area=   all | maxDets=100]",
    "AR @[IoU=0.50:0.95 | area= small | maxDets=100]",
    "AR @[IoU=0.50:0.95 | area=medium | maxDets=100]",
    "AR @[IoU=0.50:0.95 | area= large | maxDets=100]",
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataset_arguments(p)
    p.add_argument("--detections", required=True,
                   help="COCO results JSON: a list of {image_id, category_id or category_name, "
                        "bbox [x, y, w, h], score}")
    add_protocol_argument(p)
    p.add_argument("--json", metavar="OUT", help="write {protocol, mAP, per_class, stats} here")
    p.add_argument("--plot", metavar="FILE.png", help="draw precision-recall curves (needs matplotlib)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = run(args)
        print(format_table(result))
        if args.json:
            write_atomic(args.json, json.dumps(result.to_json(), indent=1) + "\n")
            print(f"wrote {args.json}")
        if args.plot:
            plot_curves(result, args.plot)
            print(f"wrote {args.plot}")
    except DetectionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def run(args: argparse.Namespace) -> EvalResult:
    """Read the ground truth and detections, evaluate with the chosen protocol."""
    protocol = args.protocol if args.protocol != "auto" else guess_protocol(args.gt, args.classes)
    if protocol == "coco" and Path(args.gt).suffix.lower() == ".json":
        # Exact path: ground truth as pycocotools reads it (float64 xywh, every box kept).
        return evaluate_coco_instances(load_coco_instances(args.gt), args.detections)
    dataset = load_dataset(args.gt, images=args.images, classes=args.classes,
                           blacklist=args.blacklist, split=args.split)
    return evaluate_results(dataset, args.detections, protocol)


def guess_protocol(gt: str, classes: str | None) -> str:
    if Path(gt).suffix.lower() == ".json":
        return "coco"
    if classes and _is_synset_map(classes):
        return "ilsvrc"
    return "voc"


def _is_synset_map(path: str) -> bool:
    lines = [ln.split() for ln in Path(path).read_text(errors="replace").splitlines()]
    lines = [ln for ln in lines if ln and not ln[0].startswith("#")]
    return bool(lines) and all(len(ln) >= 2 and ln[1].isdigit() for ln in lines)


def format_table(result: EvalResult) -> str:
    """Per-class AP, then the summary (COCO's 12 numbers in pycocotools' layout)."""
    width = max([len(name) for name in result.per_class] + [5])
    rows = [f"{'class':<{width}}  AP", f"{'-' * width}  ------"]
    for name, ap in result.per_class.items():
        rows.append(f"{name:<{width}}  " + ("   n/a (no ground truth)" if ap is None else f"{100 * ap:6.2f}"))
    rows.append(f"{'-' * width}  ------")
    if result.stats is not None:
        for name, value in zip(COCO_STAT_NAMES, result.stats):
            kind = "Average Precision" if name.startswith("AP") else "Average Recall   "
            rows.append(f" {kind}  ({name[:2]}) {name[3:]} = {value:0.3f}")
    rows.append(f"{result.protocol} mAP: {100 * result.mAP:.2f}")
    return "\n".join(rows)


def plot_curves(result: EvalResult, path: str) -> None:
    """Precision-recall curve of every class with an AP, written atomically as an image."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise DetectionError("--plot needs matplotlib: pip install 'googlenet-detection[plot]'") from None
    fig, ax = plt.subplots(figsize=(7, 6))
    for name, (recall, precision) in result.curves.items():
        ax.plot(recall, precision, label=f"{name} ({100 * result.per_class[name]:.1f})")
    title = "IoU 0.5" if result.protocol == "coco" else result.protocol
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
           title=f"{result.protocol} mAP {100 * result.mAP:.2f} — curves at {title}")
    if len(result.curves) <= 25:
        ax.legend(fontsize=7, loc="lower left")
    buffer = io.BytesIO()
    fig.savefig(buffer, format=Path(path).suffix.lstrip(".") or "png", dpi=120)
    plt.close(fig)
    write_atomic(path, buffer.getvalue())


if __name__ == "__main__":
    sys.exit(main())
