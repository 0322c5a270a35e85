"""Benchmark: GoogLeNet's proposal claim on held-out images (selective search x2 + MultiBox-200).

    python benchmarks/bench_multibox.py --set raccoon --multibox runs/raccoon_multibox/last.pt
    python benchmarks/bench_multibox.py --set coco128 --multibox runs/coco128_multibox/last.pt
    python benchmarks/bench_multibox.py --set raccoon --multibox M.pt --limit 5     # quick

Held-out images: raccoon's 40 test images (data/test_labels.csv), coco128's last 32
(configs/splits/coco128_val.txt); the MultiBox networks were trained on the other images.
Methods, all run on each image in turn:
(a) OpenCV ``switchToSelectiveSearchFast()`` at its defaults (base_k = inc_k = 150);
(b) ours, superpixel x1 (R-CNN's fast setting); (c) ours, superpixel x2 (GoogLeNet's);
(d) (c) + the top-200 MultiBox boxes after NMS, merged as `proposals.combined.Proposer` does;
(e) the top-200 MultiBox boxes alone. (d) and (e) are also shown with MultiBox NMS at IoU 0.5.
Recall is against every ground-truth box at IoU 0.5 and 0.7, and average recall over
IoU 0.5:0.05:0.95, with all the proposals of each image; CPU is process time per image.
Goal: (d) recall@0.5 at least (a)'s with at most 60% of its boxes.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from eval.datasets import Dataset, load_dataset, read_image
from eval.recall import proposal_recall
from proposals.combined import merge_proposals
from proposals.checkpoint import load_checkpoint
from proposals.defaults import MULTIBOX_TOP
from proposals.multibox import CHECKPOINT_KIND, multibox_from_payload, predict
from proposals.config import SelectiveSearchConfig
from proposals.selective_search import selective_search

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SETS = {
    "raccoon": dict(gt=DATA / "raccoon" / "annotations", images=DATA / "raccoon" / "images",
                    split=DATA / "raccoon" / "data" / "test_labels.csv"),
    "coco128": dict(gt=DATA / "coco128" / "instances_train2017_128.json",
                    images=DATA / "coco128" / "images" / "train2017",
                    split=ROOT / "configs" / "splits" / "coco128_val.txt"),
}
GOAL_BOX_RATIO = 0.6  # (d) boxes / (a) boxes at most


def opencv_fast(image: np.ndarray) -> np.ndarray:
    """OpenCV contrib's fast selective search at its defaults; float32 [N, 4] xyxy."""
    ss = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    ss.setBaseImage(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    ss.switchToSelectiveSearchFast()
    rects = np.asarray(ss.process(), np.float32).reshape(-1, 4)
    return np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1)


def timed(fn, *args) -> tuple[np.ndarray, float]:
    start = time.process_time()
    out = fn(*args)
    return out, time.process_time() - start


def run_image(image: np.ndarray, model) -> dict[str, tuple[np.ndarray, float]]:
    """Every method's boxes and CPU seconds on one image."""
    out = {"(a) opencv fast default": timed(opencv_fast, image),
           "(b) ours x1": timed(selective_search, image, SelectiveSearchConfig(superpixel_scale=1.0)),
           "(c) ours x2": timed(selective_search, image, SelectiveSearchConfig())}
    ss, ss_seconds = out["(c) ours x2"]
    for nms in (0.7, 0.5):
        (boxes, _), seconds = timed(predict, model, image, MULTIBOX_TOP, nms)
        boxes = boxes.numpy()
        out[f"(d) x2 + multibox-200, nms {nms}"] = (merge_proposals(boxes, ss), ss_seconds + seconds)
        out[f"(e) multibox-200 alone, nms {nms}"] = (boxes, seconds)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set", choices=sorted(SETS), required=True, help="held-out images to use")
    p.add_argument("--multibox", required=True, help="MultiBox checkpoint trained on the rest")
    p.add_argument("--limit", type=int, help="only the first N held-out images")
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args(argv)
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    spec = SETS[args.set]
    dataset: Dataset = load_dataset(str(spec["gt"]), images=str(spec["images"]),
                                    split=str(spec["split"]))
    records = dataset.images[:args.limit] if args.limit else dataset.images
    model = multibox_from_payload(load_checkpoint(args.multibox, kind=CHECKPOINT_KIND),
                                  args.multibox).eval()
    found: dict[str, list] = {}
    for record in tqdm(records, desc=args.set, unit="img"):
        for name, result in run_image(read_image(record.file_name), model).items():
            found.setdefault(name, []).append(result)
    gt = [r.boxes[~r.iscrowd] for r in records]
    rows = [summarise(name, results, gt) for name, results in found.items()]
    print(format_rows(args.set, len(records), rows))
    verdict = goal(rows)
    print(verdict)
    if args.json:
        Path(args.json).write_text(json.dumps({"set": args.set, "images": len(records),
                                               "multibox": args.multibox, "rows": rows,
                                               "goal": verdict}, indent=1))
    return 0


def summarise(name: str, results: list[tuple[np.ndarray, float]], gt: list[np.ndarray]) -> dict:
    recall = proposal_recall(gt, [boxes for boxes, _ in results])
    return {"method": name, "cpu_s": float(np.mean([s for _, s in results])),
            "boxes": float(np.mean([len(b) for b, _ in results])),
            "recall_50": recall.recall_at(0.5), "recall_70": recall.recall_at(0.7),
            "average_recall": float(recall.average_recall[-1]), "num_gt": recall.num_gt}


def format_rows(name: str, images: int, rows: list[dict]) -> str:
    lines = [f"{name}: {images} held-out images, {rows[0]['num_gt']} boxes",
             "| method | CPU s/img | boxes/img | R@0.5 | R@0.7 | AR |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['cpu_s']:.3f} | {r['boxes']:.0f} | {r['recall_50']:.4f} | "
              f"{r['recall_70']:.4f} | {r['average_recall']:.4f} |" for r in rows]
    return "\n".join(lines)


def goal(rows: list[dict]) -> str:
    by = {r["method"]: r for r in rows}
    a, d = by["(a) opencv fast default"], by["(d) x2 + multibox-200, nms 0.7"]
    ratio = d["boxes"] / a["boxes"]
    met = d["recall_50"] >= a["recall_50"] and ratio <= GOAL_BOX_RATIO
    return (f"goal {'met' if met else 'NOT met'}: (d) R@0.5 {d['recall_50']:.4f} vs (a) "
            f"{a['recall_50']:.4f}; boxes {ratio:.2f} of (a)'s (at most {GOAL_BOX_RATIO})")


if __name__ == "__main__":
    raise SystemExit(main())
