"""Benchmark: the selective search presets against OpenCV contrib's fast selective search, on COCO.

    python benchmarks/bench_presets.py                    # all 128 images of coco128
    python benchmarks/bench_presets.py --limit 10         # the first 10, quick
    python benchmarks/bench_presets.py --gt X.json --images DIR --json out.json

Methods, each run on every image in turn, in one process (so that the machine's load hits all
alike): our three presets (`proposals.config.PRESETS`; coco's boxes are chosen by objectness,
`proposals.objectness`), OpenCV's
``switchToSelectiveSearchFast()`` at its defaults (base_k = inc_k = 150), and the same with k
doubled (300 / 300, the analogue of superpixel size x2). OpenCV gets the full image (RGB ->
BGR; its xywh rectangles become xyxy); ours use each preset's working size. CPU time is
``time.process_time()`` around each call (every thread of the process counted), wall time
``time.perf_counter()``. OpenCV runs with ``cv2.setNumThreads(1)``, as ours does: on a busy
machine threads waiting on each other would only add to its CPU time.

Recall is against the non-crowd ground truth (`eval.recall.evaluate_proposals`), with all the
proposals of each image: at IoU 0.5 and 0.7, average recall over IoU 0.5:0.05:0.95, and at
IoU 0.5 for COCO's small / medium / large objects (annotation area below 32^2, below 96^2,
above). Rows are given for all images, the even-numbered ones (0, 2, ...: where the coco preset
was chosen and its objectness score fitted, benchmarks/fit_coco_objectness.py) and the
odd-numbered ones (held out). The goals are checked on all images and on the odd ones.
"""
from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from eval.datasets import ImageRecord, load_dataset, read_image
from eval.recall import evaluate_proposals
from eval.outputs import write_atomic
from proposals.config import PRESETS, preset_config
from proposals.selective_search import selective_search

COCO128 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "coco128"
SIZE_BOUNDS = (32 ** 2, 96 ** 2)  # COCO's small / medium / large, annotation area in px^2
OPENCV = "opencv fast k=150+150"  # the reference row: OpenCV at its defaults
GOAL_BOX_RATIO = 0.6  # coco preset's boxes / OpenCV's at most
GOAL_CPU_RATIO = 0.5  # coco preset's CPU time / OpenCV's at most


def opencv_fast(base_k: int, inc_k: int) -> Callable[[np.ndarray], np.ndarray]:
    """OpenCV contrib's fast selective search as a function RGB uint8 -> float32 [N, 4] xyxy."""
    def run(image: np.ndarray) -> np.ndarray:
        ss = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
        ss.setBaseImage(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        ss.switchToSelectiveSearchFast(base_k, inc_k)
        rects = np.asarray(ss.process(), np.float32).reshape(-1, 4)
        return np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1)
    return run


def preset(name: str) -> Callable[[np.ndarray], np.ndarray]:
    config = preset_config(name)
    return lambda image: selective_search(image, config)


METHODS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    **{f"preset {name}": preset(name) for name in PRESETS},
    OPENCV: opencv_fast(150, 150),
    "opencv fast k=300+300": opencv_fast(300, 300),
}


@dataclass
class Runs:
    """One method's proposals and seconds per image."""

    boxes: list[np.ndarray]
    cpu: list[float]
    wall: list[float]


@dataclass
class Row:
    """One method on one subset of images: means per image, recalls, CPU time vs OpenCV's."""

    method: str
    images: str
    boxes: float
    recall_50: float
    recall_70: float
    average_recall: float
    recall_50_small: float
    recall_50_medium: float
    recall_50_large: float
    cpu: float
    wall: float
    cpu_ratio: float


def run_all(records: list[ImageRecord]) -> dict[str, Runs]:
    """{method: its runs}, the methods interleaved on each image."""
    results = {name: Runs([], [], []) for name in METHODS}
    for i, record in enumerate(records):
        image = read_image(record.file_name)
        for name, method in METHODS.items():
            cpu, wall = time.process_time(), time.perf_counter()
            boxes = method(image)
            results[name].cpu.append(time.process_time() - cpu)
            results[name].wall.append(time.perf_counter() - wall)
            results[name].boxes.append(boxes)
        print(f"\r{i + 1}/{len(records)} images", end="", flush=True)
    print()
    return results


def size_recalls(records: list[ImageRecord], best_iou: np.ndarray) -> list[float]:
    """Recall at IoU 0.5 of the small, medium and large non-crowd gts (NaN where none)."""
    areas = np.concatenate([np.asarray(r.areas, np.float64).reshape(-1)[~np.asarray(r.iscrowd,
                                                                                    bool)]
                            for r in records] + [np.zeros(0)])
    size = np.digitize(areas, SIZE_BOUNDS)  # 0 small, 1 medium, 2 large
    return [float((best_iou[size == s] >= 0.5).mean()) if (size == s).any() else float("nan")
            for s in range(3)]


def make_rows(results: dict[str, Runs], records: list[ImageRecord],
              subsets: dict[str, list[int]]) -> list[Row]:
    rows = []
    for subset, picked in subsets.items():
        chosen = [records[i] for i in picked]
        base = float(np.mean([results[OPENCV].cpu[i] for i in picked]))
        for name, runs in results.items():
            r = evaluate_proposals(chosen, [runs.boxes[i] for i in picked], counts=(None,))
            cpu = float(np.mean([runs.cpu[i] for i in picked]))
            rows.append(Row(name, subset, float(np.mean([len(runs.boxes[i]) for i in picked])),
                            float(r.recall_at(0.5)), float(r.recall_at(0.7)),
                            float(r.average_recall[0]), *size_recalls(chosen, r.best_iou[0]),
                            cpu, float(np.mean([runs.wall[i] for i in picked])), cpu / base))
    return rows


def format_table(rows: list[Row]) -> str:
    """A markdown table of the rows."""
    head = ["method", "images", "boxes/img", "R@0.5", "R@0.7", "AR", "R@0.5 small",
            "R@0.5 medium", "R@0.5 large", "CPU s/img", "wall s/img", "CPU vs OpenCV fast"]
    cells = [head] + [[r.method, r.images, f"{r.boxes:.0f}", f"{r.recall_50:.3f}",
                       f"{r.recall_70:.3f}", f"{r.average_recall:.3f}",
                       f"{r.recall_50_small:.3f}", f"{r.recall_50_medium:.3f}",
                       f"{r.recall_50_large:.3f}", f"{r.cpu:.3f}", f"{r.wall:.3f}",
                       f"{r.cpu_ratio:.2f}"] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def goals(rows: list[Row], subset: str = "all") -> list[tuple[str, bool]]:
    """The coco preset's goals against OpenCV fast at its defaults: (text, met)."""
    by = {r.method: r for r in rows if r.images == subset}
    coco, cv = by["preset coco"], by[OPENCV]
    return [
        (f"R@0.5 coco = {coco.recall_50:.4f} >= OpenCV's {cv.recall_50:.4f}",
         bool(coco.recall_50 >= cv.recall_50)),
        (f"boxes coco / OpenCV = {coco.boxes / cv.boxes:.3f} <= {GOAL_BOX_RATIO}",
         bool(coco.boxes <= GOAL_BOX_RATIO * cv.boxes)),
        (f"CPU coco / OpenCV = {coco.cpu_ratio:.3f} <= {GOAL_CPU_RATIO}",
         bool(coco.cpu_ratio <= GOAL_CPU_RATIO)),
    ]


def add_coco128_arguments(parser: argparse.ArgumentParser) -> None:
    """--gt and --images, by default ../shared/data/coco128 (also fit_coco_objectness.py's)."""
    parser.add_argument("--gt", type=Path, default=COCO128 / "instances_train2017_128.json",
                        help="COCO instances JSON (default: ../shared/data/coco128's)")
    parser.add_argument("--images", type=Path, default=COCO128 / "images" / "train2017",
                        help="its image folder (default: coco128's)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_coco128_arguments(parser)
    parser.add_argument("--limit", type=int, default=None, help="only the first N images")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    records = load_dataset(args.gt, images=args.images).images[:args.limit]
    for method in METHODS.values():  # warm-up: OpenCV builds its colour tables lazily
        method(np.zeros((32, 32, 3), np.uint8))
    cv2.setNumThreads(1)
    results = run_all(records)
    index = range(len(records))
    subsets = {"all": list(index), "even": list(index[0::2]), "odd": list(index[1::2])}
    rows = make_rows(results, records, {k: v for k, v in subsets.items() if v})
    print(f"{len(records)} images of {args.gt.name}, OpenCV {cv2.__version__}, "
          f"{time.strftime('%Y-%m-%d')}")
    print(format_table(rows))
    checks = goals(rows)
    for text, met in checks:
        print(("MET     " if met else "NOT MET ") + text)
    held_out = goals(rows, "odd") if len(records) > 1 else []
    if held_out:  # the held-out half, where nothing was fitted
        print("odd images: " + "; ".join(f"{text}: {'yes' if met else 'no'}"
                                          for text, met in held_out))
    if args.json:
        write_atomic(args.json, json.dumps({
            "date": time.strftime("%Y-%m-%d"), "opencv": cv2.__version__,
            "images": len(records), "presets": {k: p.settings for k, p in PRESETS.items()},
            "rows": [asdict(r) for r in rows], "goals": checks, "goals_odd": held_out},
            indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
