"""Benchmark: our selective search against OpenCV contrib's, on real photos.

    python benchmarks/bench_proposals.py                  # all 300 images of raccoon + voc100
    python benchmarks/bench_proposals.py --limit 10       # the first 10 of each, quick
    python benchmarks/bench_proposals.py --json out.json  # also write the figures

Methods, each run on every image in turn (so that the machine's load hits all alike):
(a) OpenCV ``switchToSelectiveSearchFast()`` at its defaults (base_k = inc_k = 150), (b) the same
with doubled base_k / inc_k (300 / 300), (c) ours, ``mode="fast", superpixel_scale=1``, (d) ours
with the default config (superpixel_scale=2, GoogLeNet's setting). OpenCV gets the image as given
(RGB -> BGR) and its xywh rectangles become xyxy; ours uses its defaults (500 px working copy,
boxes under 20 px dropped). Everything runs single-threaded (cv2.setNumThreads(1)); CPU time is
process time, so threads could not hide cost anyway. Before the table, OpenCV's default
threading is probed on a few images: process time above wall time means it runs threads.

Recall is against every ground-truth box (VOC ``difficult`` ones included), at IoU 0.5 and 0.7,
and average recall over IoU 0.5:0.05:0.95, with all the proposals of each image.
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
from tqdm import tqdm

from eval.datasets import Dataset, load_voc_folder, read_image
from eval.recall import proposal_recall
from proposals.config import SelectiveSearchConfig
from proposals.selective_search import selective_search

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
THREAD_PROBE_IMAGES = 3  # images timed with OpenCV's default threads, to see whether it uses them
GOAL_BOX_RATIO = 0.55  # (d) boxes / (a) boxes at most
GOAL_CPU_RATIO = 0.5  # (d) CPU / (a) CPU at most


def opencv_fast(base_k: int, inc_k: int) -> Callable[[np.ndarray], np.ndarray]:
    """OpenCV contrib's fast selective search as a function RGB uint8 -> float32 [N, 4] xyxy."""
    def run(image: np.ndarray) -> np.ndarray:
        ss = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
        ss.setBaseImage(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        ss.switchToSelectiveSearchFast(base_k, inc_k)
        rects = np.asarray(ss.process(), np.float32).reshape(-1, 4)
        return np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1)
    return run


def ours(config: SelectiveSearchConfig) -> Callable[[np.ndarray], np.ndarray]:
    return lambda image: selective_search(image, config)


METHODS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "(a) opencv fast k=150+150": opencv_fast(150, 150),
    "(b) opencv fast k=300+300": opencv_fast(300, 300),
    "(c) ours fast scale=1": ours(SelectiveSearchConfig(superpixel_scale=1.0)),
    "(d) ours fast scale=2": ours(SelectiveSearchConfig()),
}


@dataclass
class Row:
    """One method on one image set: mean CPU seconds and boxes per image, recalls."""

    method: str
    images: str
    seconds: float
    boxes: float
    recall_50: float
    recall_70: float
    average_recall: float
    num_gt: int


def load_sets(data: Path, limit: int | None) -> dict[str, tuple[Dataset, Path]]:
    """{name: (dataset, image folder)} for raccoon and voc100, each cut to ``limit`` images."""
    sets = {"raccoon": (data / "raccoon" / "annotations", data / "raccoon" / "images"),
            "voc100": (data / "voc100" / "gts" / "pascalvoc_format", data / "voc100" / "images")}
    out = {}
    for name, (ann, images) in sets.items():
        ds = load_voc_folder(ann, images)
        out[name] = (Dataset(ds.classes, ds.images[:limit], ds.category_ids, ds.source), images)
    return out


def probe_threads(image: np.ndarray) -> tuple[int, float]:
    """(OpenCV's default thread count, process time / wall time of method (a) with it)."""
    threads = cv2.getNumThreads()
    cpu, wall = time.process_time(), time.perf_counter()
    METHODS["(a) opencv fast k=150+150"](image)
    return threads, (time.process_time() - cpu) / (time.perf_counter() - wall)


def run_all(images: list[np.ndarray]) -> dict[str, tuple[list[np.ndarray], list[float]]]:
    """{method: (proposals per image, CPU seconds per image)}, methods interleaved per image."""
    results = {name: ([], []) for name in METHODS}
    for image in tqdm(images, desc="images", unit="img"):
        for name, method in METHODS.items():
            start = time.process_time()
            boxes = method(image)
            results[name][1].append(time.process_time() - start)
            results[name][0].append(boxes)
    return results


def make_rows(results: dict, gts: list[np.ndarray], slices: dict[str, slice]) -> list[Row]:
    rows = []
    for name, (proposals, seconds) in results.items():
        for subset, part in slices.items():
            r = proposal_recall(gts[part], proposals[part], counts=(None,))
            rows.append(Row(name, subset, float(np.mean(seconds[part])),
                            float(np.mean([len(p) for p in proposals[part]])),
                            float(r.recall_at(0.5)), float(r.recall_at(0.7)),
                            float(r.average_recall[0]),
                            r.num_gt))
    return rows


def format_table(rows: list[Row]) -> str:
    head = ["method", "images", "CPU s/img", "boxes/img", "R@0.5", "R@0.7", "AR", "gt"]
    cells = [head] + [[r.method, r.images, f"{r.seconds:.3f}", f"{r.boxes:.0f}",
                       f"{r.recall_50:.4f}", f"{r.recall_70:.4f}", f"{r.average_recall:.4f}",
                       str(r.num_gt)] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    lines.insert(1, "-|-".join("-" * w for w in widths))
    return "\n".join(lines)


def goals(rows: list[Row]) -> list[tuple[str, bool]]:
    """The issue's goals for (d), on all images: (text, met)."""
    by = {r.method[:3]: r for r in rows if r.images == "all"}
    a, b, d = by["(a)"], by["(b)"], by["(d)"]
    return [
        (f"boxes (d)/(a) = {d.boxes / a.boxes:.3f} <= {GOAL_BOX_RATIO}",
         bool(d.boxes <= GOAL_BOX_RATIO * a.boxes)),
        (f"R@0.5 (d) = {d.recall_50:.4f} >= (b) = {b.recall_50:.4f}",
         bool(d.recall_50 >= b.recall_50)),
        (f"CPU (d)/(a) = {d.seconds / a.seconds:.3f} <= {GOAL_CPU_RATIO}",
         bool(d.seconds <= GOAL_CPU_RATIO * a.seconds)),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="folder holding raccoon/ and voc100/ (default: ../shared/data)")
    parser.add_argument("--limit", type=int, default=None,
                        help="use only the first N images of each data set (quick run)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    sets = load_sets(args.data, args.limit)
    images, gts, slices, start = [], [], {}, 0
    for name, (ds, folder) in sets.items():
        images += [read_image(folder / im.file_name) for im in ds.images]
        gts += [im.boxes for im in ds.images]
        slices[name] = slice(start, len(images))
        start = len(images)
    slices["all"] = slice(0, len(images))

    for name, method in METHODS.items():  # warm-up: OpenCV builds its colour tables lazily
        method(images[0][:64, :64])
    probes = [probe_threads(im) for im in images[:THREAD_PROBE_IMAGES]]
    print(f"OpenCV {cv2.__version__}, default threads {probes[0][0]}: process/wall time of (a) "
          f"= {np.mean([p[1] for p in probes]):.2f} on {len(probes)} images "
          "(> 1: it runs threads); timed runs below use cv2.setNumThreads(1)")
    cv2.setNumThreads(1)
    rows = make_rows(run_all(images), gts, slices)
    print(format_table(rows))
    checks = goals(rows)
    for text, met in checks:
        print(("MET     " if met else "NOT MET ") + text)
    if args.json:
        args.json.write_text(json.dumps({
            "date": time.strftime("%Y-%m-%d"), "opencv": cv2.__version__,
            "opencv_threads_probe": probes, "rows": [asdict(r) for r in rows],
            "goals": checks, "ours_config": asdict(SelectiveSearchConfig())}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
