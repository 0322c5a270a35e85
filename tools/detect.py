"""Detect objects in images with a trained region-classifier ensemble (or ImageNet GoogLeNet).

    python tools/detect.py photo.jpg --checkpoint runs/raccoon/last.pt
    python tools/detect.py photos/ more.jpg --checkpoint a.pt --checkpoint b.pt --out dets/
    python tools/detect.py photo.jpg      # torchvision's ImageNet GoogLeNet, 1,000 classes

Prints each image's detections scoring at least --score-threshold, and writes into --out an
annotated copy of every image (boxes, class names, scores) and detections.json, a COCO results
list of every detection (image_id = the file's stem; category_id = label 1..K in the
checkpoint's class order) that tools/evaluate.py reads. Proposals: as the checkpoint was
trained with (selective search, plus the top MultiBox boxes where it was trained on those),
computed on the fly, or read from a tools/propose.py cache.
Without --checkpoint the model is R-CNN's "no fine-tuning" baseline: torchvision's ImageNet
GoogLeNet classifying every proposal into the 1,000 ILSVRC-2012 classes.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from detector.cli.common import (add_inference_arguments, check_inference_arguments,
                                 inference_path, pick_device)
from detector.datasets.images import IMAGE_SUFFIXES
from detector.ensemble import prepare_members
from detector.errors import DetectionError
from detector.evaluation import detect_array
from detector.fileio import write_atomic
from detector.pipeline import Ensemble, imagenet_ensemble, load_ensemble
from detector.prefetch import prefetch_inputs
from eval.detections import to_results
from proposals.cache import ProposalCache
from proposals.combined import Proposer, proposer_for

RESULTS_NAME = "detections.json"
# Colours for the drawn boxes, cycled by label (distinct on photos: saturated, not grey).
PALETTE = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
           (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER",
                   help="image files, or folders (every image below them)")
    p.add_argument("--checkpoint", action="append", default=[], metavar="CKPT",
                   help="a checkpoint of tools/train.py; repeat it for an ensemble (softmax averaged). "
                        "Default: torchvision's ImageNet GoogLeNet (1,000 classes, downloaded once)")
    p.add_argument("--out", default="detections", help="output folder (default: detections/)")
    p.add_argument("--score-threshold", type=float, default=0.5,
                   help="print and draw detections scoring at least this (the JSON keeps all)")
    p.add_argument("--proposals", metavar="CACHE",
                   help="read proposals from this tools/propose.py cache (key: the file's stem) "
                        "instead of computing them")
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
    items = list_images(args.inputs)
    device = pick_device(args.device)
    ensemble = load_model(args.checkpoint, device)
    inference = inference_path(args, device)
    members = prepare_members(ensemble.members, inference)
    cache, proposer = proposal_source(args.proposals, ensemble, args.checkpoint)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    # Photos are shown upright (EXIF orientation), except where cached proposals refer to the
    # stored pixel grid.
    inputs = prefetch_inputs(items, cache=cache, proposer=proposer, apply_exif=cache is None,
                             workers=args.workers)
    print(f"{len(members)} network(s) on {device}: {inference.describe()}")
    with contextlib.closing(inputs):  # an error stops the workers at once
        for image_id, path, image, proposals in tqdm(inputs, total=len(items), desc="detect",
                                                     unit="img"):
            boxes, scores, labels = detect_array(members, ensemble.spec, image, proposals,
                                                 device, args.batch_size, args.max_per_image,
                                                 inference)
            results += to_results(image_id, range(1, len(ensemble.classes) + 1), boxes, scores,
                                  labels)
            shown = scores >= args.score_threshold
            tqdm.write(format_detections(path, ensemble.classes, boxes[shown], scores[shown],
                                         labels[shown], len(boxes)))
            draw(image, ensemble.classes, boxes[shown], scores[shown], labels[shown],
                 annotated_path(out, path))
    write_atomic(out / RESULTS_NAME, json.dumps(results) + "\n")
    print(f"wrote {len(results)} detections of {len(items)} image(s) to {out / RESULTS_NAME}, "
          f"annotated images to {out}/")


def list_images(inputs: list[str]) -> list[tuple[str, str]]:
    """``(image_id, path)`` of every input, folders expanded (sorted); id = the file's stem."""
    items: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*")
                           if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not files:
                raise DetectionError(f"{path}: no image files in this folder "
                                     f"({', '.join(sorted(IMAGE_SUFFIXES))})")
        elif path.is_file():
            files = [path]
        else:
            raise DetectionError(f"{path}: no such image file or folder; check the path")
        for file in files:
            if file.stem in seen:
                raise DetectionError(f"{file} and {seen[file.stem]} share the name {file.stem!r}, "
                                     "which is the image id and the output name; rename one")
            seen[file.stem] = str(file)
            items.append((file.stem, str(file)))
    return items


def load_model(checkpoints: list[str], device: torch.device) -> Ensemble:
    """The checkpoints' ensemble, or without any, torchvision's ImageNet GoogLeNet."""
    if checkpoints:
        return load_ensemble(checkpoints, device)
    try:
        return imagenet_ensemble(device)
    except DetectionError as e:
        # Name the way out: a trained checkpoint needs no download.
        raise DetectionError(f"{e}; or pass --checkpoint CKPT (a model from tools/train.py)") from None


def proposal_source(cache_dir: str | None, ensemble: Ensemble, checkpoints: list[str]
                    ) -> tuple[ProposalCache | None, Proposer | None]:
    """(cache, None) with --proposals, else (None, the proposer the checkpoint was trained with:
    selective search, or selective search + its MultiBox network)."""
    if cache_dir:
        cache = ProposalCache.open(cache_dir)
        if checkpoints and (cache.method, cache.params) != (ensemble.proposal_method,
                                                           ensemble.proposal_params):
            # Allowed (e.g. MultiBox boxes added at test time), but worth knowing.
            print(f"note: {cache_dir} holds {cache.method} proposals with {cache.params}; "
                  f"{checkpoints[0]} was trained on {ensemble.proposal_method} with "
                  f"{ensemble.proposal_params}")
        return cache, None
    where = checkpoints[0] if checkpoints else "the ImageNet model"
    return None, proposer_for(ensemble.proposal_method, ensemble.proposal_params, where)


def format_detections(path: str, classes: tuple[str, ...], boxes: np.ndarray, scores: np.ndarray,
                      labels: np.ndarray, total: int) -> str:
    """One header line, then ``class  score  [x1, y1, x2, y2]`` per detection (pixels)."""
    lines = [f"{path}: {len(boxes)} detection(s) shown of {total}"]
    for box, score, label in zip(boxes, scores, labels):
        x1, y1, x2, y2 = box
        lines.append(f"  {classes[label - 1]:<20} {score:.3f}  [{x1:.1f}, {y1:.1f}, {x2:.1f}, {y2:.1f}]")
    return "\n".join(lines)


def annotated_path(out: Path, source: str) -> Path:
    """``OUT/<stem>.jpg`` for JPEG inputs, ``OUT/<stem>.png`` otherwise; never the input itself."""
    suffix = ".jpg" if Path(source).suffix.lower() in (".jpg", ".jpeg") else ".png"
    target = out / (Path(source).stem + suffix)
    if target.resolve() == Path(source).resolve():
        raise DetectionError(f"{source}: --out {out} would overwrite this input with its annotated "
                             "copy; choose another --out folder")
    return target


def draw(image: np.ndarray, classes: tuple[str, ...], boxes: np.ndarray, scores: np.ndarray,
         labels: np.ndarray, path: Path) -> None:
    """Write ``image`` (RGB uint8 [H, W, 3]) with its boxes, class names and scores, atomically."""
    from PIL import Image, ImageDraw

    canvas = Image.fromarray(image)
    pen = ImageDraw.Draw(canvas)
    width = max(1, round(max(canvas.size) / 300))  # ~2 px lines on a 500 px photo
    # Lowest score first, so the best detection's label is drawn on top.
    for box, score, label in sorted(zip(boxes, scores, labels), key=lambda d: d[1]):
        colour = PALETTE[(label - 1) % len(PALETTE)]
        x1, y1, x2, y2 = (float(v) for v in box)
        pen.rectangle((x1, y1, x2, y2), outline=colour, width=width)
        text = f"{classes[label - 1]} {score:.2f}"
        left, top, right, bottom = pen.textbbox((x1, y1), text)
        ty = y1 - (bottom - top) - 2 if y1 - (bottom - top) - 2 >= 0 else y1  # above the box if room
        pen.rectangle((x1, ty, x1 + right - left + 4, ty + bottom - top + 2), fill=colour)
        pen.text((x1 + 2, ty - (top - y1)), text, fill=(0, 0, 0))
    buffer = io.BytesIO()
    canvas.save(buffer, format="JPEG" if path.suffix == ".jpg" else "PNG", quality=92)
    write_atomic(path, buffer.getvalue())


if __name__ == "__main__":
    sys.exit(main())
