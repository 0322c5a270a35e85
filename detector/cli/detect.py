"""The detect command: a trained ensemble (or ImageNet GoogLeNet) on image files and folders.

    gdet-detect photo.jpg --checkpoint runs/raccoon/last.pt
    gdet-detect photos/ more.jpg --checkpoint a.pt --checkpoint b.pt --out dets/
    gdet-detect photo.jpg --imagenet-weights googlenet-1378be20.pth   # ImageNet, offline
    torchrun --nproc-per-node 2 tools/detect.py photos/ --checkpoint a.pt

Prints each image's detections scoring above --show-threshold, and writes into --out an
annotated copy of every image and detections.json, a COCO results list of every detection
(image_id = the file's stem; category_id = label 1..K in the checkpoint's class order) that
the evaluate command reads. It is `detector.Detector` with its defaults: `Detector.load(...)`
then `detector(path)` gives the same detections.

Images are read in their stored pixel grid: EXIF orientation is never applied, with or without
--proposals (annotations and proposal caches refer to the stored pixels), so the boxes and the
annotated copy are in that grid. An image that cannot be decoded is reported, the rest go on,
detections.json holds every image processed, and the exit status is 1. Under torchrun the
images are shared among the ranks; rank 0 writes detections.json in the one-process order and
each rank writes the annotated copies of its own images.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from detector.cli.common import (HelpFormatter, add_inference_arguments, check_cache_holds,
                                 check_inference_arguments, inference_options, report_failures,
                                 run_main)
from eval.errors import DetectionError
from eval.outputs import (JsonLines, check_not_an_input, check_output_dir, check_output_file,
                          identities)
from proposals.defaults import SHOW_THRESHOLD

RESULTS_NAME = "detections.json"
# Each rank's results as they come, removed once detections.json holds them.
PARTIAL_NAME = "detections.partial.{rank}.jsonl"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gdet-detect", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=HelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER",
                   help="image files, or folders (every image below them; what is skipped is "
                        "reported). Read in their stored pixel grid (no EXIF rotation)")
    p.add_argument("--checkpoint", action="append", default=[], metavar="CKPT",
                   help="a checkpoint of the train command; repeat it for an ensemble (softmax "
                        "averaged). Default: torchvision's ImageNet GoogLeNet (1,000 classes)")
    p.add_argument("--imagenet-weights", metavar="FILE",
                   help="without --checkpoint: a local torchvision GoogLeNet state dict (e.g. "
                        "googlenet-1378be20.pth) instead of downloading the ImageNet weights")
    p.add_argument("--out", default="detections",
                   help="output folder: detections.json and annotated images (default detections/)")
    p.add_argument("--show-threshold", type=float, default=SHOW_THRESHOLD,
                   help="print and draw the detections scoring above this, in [0, 1] "
                        f"(detections.json keeps all above --score-threshold; default "
                        f"{SHOW_THRESHOLD})")
    p.add_argument("--proposals", metavar="CACHE",
                   help="read proposals from this propose-command cache (key: the file's stem) "
                        "instead of computing them; it must hold every input image")
    p.add_argument("--resume", action="store_true",
                   help="skip the images that a stopped run into the same --out finished (kept "
                        "in its detections.partial.*.jsonl) and write detections.json of all")
    add_inference_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_main(run, args)


def check_arguments(args: argparse.Namespace) -> None:
    """Everything the flags alone can tell, refused by name before any work."""
    from detector.api import check_choices

    check_inference_arguments(args)
    if not (0 <= args.show_threshold <= 1):  # also refuses nan
        raise DetectionError(f"--show-threshold {args.show_threshold}: must be in [0, 1] "
                             "(a probability)")
    check_choices(args.checkpoint, imagenet_weights=args.imagenet_weights, stacked=args.stacked,
                  compile=args.compile)


def run(args: argparse.Namespace) -> int:
    from detector import distributed
    from proposals import devices
    from detector.api import Detector
    from detector.drawing import draw
    from detector.evaluation import results_of
    from detector.records import DetectionResult
    from eval.outputs import write_atomic
    from tqdm import tqdm

    check_arguments(args)
    out = check_output_dir(args.out, "--out", [*args.inputs, args.proposals, *args.checkpoint])
    items, skipped = list_images(args.inputs)
    sources = [path for _, path in items]
    known = identities(sources)
    targets = {path: annotated_path(out, path, known) for path in sources}  # clashes refused
    check_output_file(out / RESULTS_NAME, "--out", sources)
    finished = finished_images(out) if args.resume else {}
    todo = [item for item in items if item[0] not in finished]
    device = devices.cpu_or_device(args.device)  # the CPU needs no torch: ONNX Runtime's path
    detector = Detector.load(args.checkpoint, device, imagenet_weights=args.imagenet_weights,
                             proposals=args.proposals, **inference_options(args))
    devices.join_process_group(detector.device)  # under torchrun: gloo, or NCCL on CUDA
    if detector.cache is not None:
        check_cache_holds(detector.cache, [image_id for image_id, _ in items], args.proposals)
    rank = devices.world()[0]
    partial = JsonLines(out / PARTIAL_NAME.format(rank=rank))  # results as they come
    partial.remove()  # this rank's records of a run before the one resumed are all read
    if rank == 0:
        report_skipped(skipped)
        if finished:
            print(f"resuming: {len(finished)} of {len(items)} images finished before")
        print(detector.describe())

    def show(result) -> None:
        if result.error is not None:
            tqdm.write(f"{result.path}: FAILED: {result.error}", file=sys.stderr)
        else:
            shown = result.scores > args.show_threshold  # the Detector's comparison
            tqdm.write(format_detections(result, detector.classes, shown, args.show_threshold,
                                         detector.postprocess.score_threshold))
            draw(result.image, detector.classes, result.boxes[shown], result.scores[shown],
                 result.labels[shown], targets[result.path])
        # Finished (its annotated copy written): kept, whatever stops the run after this.
        partial.append({"image_id": result.image_id, "path": result.path, "error": result.error,
                        "rows": results_of([result], range(1, len(detector.classes) + 1))})

    try:
        results = distributed.detect_sharded(detector, todo, workers=args.workers,
                                             keep_going=True, each=show, progress="detect")
    except KeyboardInterrupt:
        print(f"stopped: the images finished so far are kept in {out}/ "
              f"({PARTIAL_NAME.format(rank='*')}); the same command with --resume finishes "
              "the rest", file=sys.stderr)
        raise
    devices.leave_process_group()
    if results is None:  # not rank 0: rank 0 writes and reports
        return 0
    records = {**finished, **{r.image_id: {"path": r.path, "error": r.error,
                                           "rows": results_of([r], range(1, len(detector.classes)
                                                                     + 1))}
                              for r in results}}
    ordered = [records[image_id] for image_id, _ in items]  # the one-process order
    rows = [row for record in ordered if record["error"] is None for row in record["rows"]]
    write_atomic(out / RESULTS_NAME, json.dumps(rows) + "\n")
    for path in out.glob(PARTIAL_NAME.format(rank="*")):
        path.unlink(missing_ok=True)  # detections.json holds them now
    failed = [DetectionResult.failed(image_id, r["path"], r["error"])
              for (image_id, _), r in zip(items, ordered) if r["error"] is not None]
    print(f"wrote {len(rows)} detections of {len(items) - len(failed)} image(s) to "
          f"{out / RESULTS_NAME}, annotated images to {out}/")
    return report_failures(failed, len(items))


def finished_images(out: Path) -> dict:
    """image id -> its record (path, error, rows) for every image that stopped runs into
    ``out`` finished (their detections.partial.*.jsonl)."""
    return {record["image_id"]: record
            for path in sorted(out.glob(PARTIAL_NAME.format(rank="*")))
            for record in JsonLines(path).read()}


def list_images(inputs: list[str]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """``(image_id, path)`` of every input, folders expanded (sorted; id = the file's stem),
    and the ``(path, reason)`` of what folders hold but cannot be read as images."""
    from eval.datasets.images import list_image_files

    items: list[tuple[str, str]] = []
    skipped: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            files, skips = list_image_files(path)
            skipped += [(str(p), why) for p, why in skips]
            if not files:
                raise DetectionError(f"{path}: no image files in this folder; give image files "
                                     "or a folder that holds some")
        elif path.exists():  # a file, or something the image door refuses by name
            files = [path]
        else:
            raise DetectionError(f"{path}: no such image file or folder; check the path")
        for file in files:
            if file.stem in seen:
                raise DetectionError(f"{file} and {seen[file.stem]} share the name {file.stem!r}, "
                                     "which is the image id and the output name; rename one")
            seen[file.stem] = str(file)
            items.append((file.stem, str(file)))
    return items, skipped


def annotated_path(out: Path, source: str, inputs: dict) -> Path:
    """``OUT/<stem>.jpg`` for JPEG inputs, ``OUT/<stem>.png`` otherwise; never an input image
    (``--out`` the photos' own folder would replace them by their annotated copies)."""
    suffix = ".jpg" if Path(source).suffix.lower() in (".jpg", ".jpeg") else ".png"
    target = out / (Path(source).stem + suffix)
    check_not_an_input(target, "--out", inputs)
    return target


def report_skipped(skipped: list[tuple[str, str]]) -> None:
    """One line per folder entry that is not read, and why."""
    for path, why in skipped:
        print(f"skipped {path}: {why}")


def format_detections(result, classes: tuple[str, ...], shown, threshold: float,
                      score_threshold: float) -> str:
    """One header line, then ``class  score  [x1, y1, x2, y2]`` per shown detection (pixels).
    When none is shown the header says the best score and the flag that shows more."""
    header = f"{result.path}: {int(shown.sum())} detection(s) shown of {len(result.boxes)}"
    if not shown.any():
        if len(result.scores):
            best = float(result.scores.max())
            header += (f" (best score {best:.3f}; --show-threshold {threshold:g} hides them: "
                       f"pass --show-threshold {math.floor(best * 1000) / 1000:g} or lower "
                       "to show more)")
        else:
            header += (f" (no region scored above {score_threshold:g} among "
                       f"{result.num_proposals} proposals)")
    lines = [header]
    for box, score, label in zip(result.boxes[shown], result.scores[shown], result.labels[shown]):
        x1, y1, x2, y2 = box
        lines.append(f"  {classes[label - 1]:<20} {score:.3f}  "
                     f"[{x1:.1f}, {y1:.1f}, {x2:.1f}, {y2:.1f}]")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
