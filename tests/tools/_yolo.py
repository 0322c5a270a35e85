"""YOLO datasets for the tests (tests/tools is on pytest's pythonpath): coco128 in Ultralytics'
layout, its labels converted to COCO JSON independently of the reader, detections jittered from
them, and a tiny generated dataset."""
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
COCO128 = SHARED / "coco128"
needs_coco128 = pytest.mark.skipif(not COCO128.is_dir(), reason=f"{COCO128} not present")


def coco128_yolo(tmp_path: Path) -> Path:
    """coco128 in Ultralytics' layout (images/train2017 beside labels/train2017, links to the
    shared folders) with the data.yaml it ships (names as a {index: name} mapping)."""
    for kind, target in (("images", COCO128 / "images" / "train2017"),
                         ("labels", COCO128 / "object_detection" / "labels" / "train2017")):
        (tmp_path / kind).mkdir()
        (tmp_path / kind / "train2017").symlink_to(target)
    data = tmp_path / "data.yaml"
    data.write_text((COCO128 / "object_detection" / "config.yaml").read_text())
    return data


def coco128_names() -> list[str]:
    """The 80 names of the shipped config.yaml, read with a regex (not the reader under test)."""
    text = (COCO128 / "object_detection" / "config.yaml").read_text()
    return [m.group(2) for m in re.finditer(r"^  (\d+): (.+)$", text, re.M)]


def yolo_to_coco(root: Path, names: list[str]) -> dict:
    """The labels below root/labels/train2017 as COCO instances: image id = int(stem), category
    id = class index + 1, xywh in pixels of each image's own size, area = w * h."""
    images, annotations = [], []
    for image in sorted((root / "images" / "train2017").iterdir()):
        width, height = Image.open(image).size
        images.append({"id": int(image.stem), "file_name": image.name, "width": width,
                       "height": height})
        label = root / "labels" / "train2017" / f"{image.stem}.txt"
        rows = np.loadtxt(label, ndmin=2) if label.exists() else np.zeros((0, 5))
        for k, cx, cy, w, h in rows:
            box = [(cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height]
            annotations.append({"id": len(annotations) + 1, "image_id": int(image.stem),
                                "category_id": int(k) + 1, "bbox": box, "iscrowd": 0,
                                "area": box[2] * box[3]})
    return {"images": images, "annotations": annotations,
            "categories": [{"id": k + 1, "name": n} for k, n in enumerate(names)]}


def jittered(coco: dict, seed: int = 0) -> list[dict]:
    """Detections from the ground truth: 85% of the boxes, moved and resized by a few percent,
    plus one false box per image; distinct random scores (no ties to break)."""
    rng = np.random.default_rng(seed)
    sizes = {image["id"]: (image["width"], image["height"]) for image in coco["images"]}
    dets = []
    for ann in coco["annotations"]:
        if rng.random() < 0.85:
            x, y, w, h = ann["bbox"]
            dx, dy = rng.normal(0, 0.08, 2) * (w, h)
            sw, sh = np.exp(rng.normal(0, 0.1, 2))
            dets.append({"image_id": ann["image_id"], "category_id": ann["category_id"],
                         "bbox": [x + dx, y + dy, w * sw, h * sh]})
    for image_id, (width, height) in sizes.items():
        x, y = rng.uniform(0, 0.5, 2) * (width, height)
        dets.append({"image_id": image_id, "category_id": int(rng.integers(1, 81)),
                     "bbox": [x, y, width / 4, height / 4]})
    for det, score in zip(dets, rng.permutation(len(dets))):
        det["score"] = float(score + 1) / len(dets)
    return dets


def tiny_yolo(root: Path) -> Path:
    """images/{train,val}/ (3 and 2 flat-coloured 96 x 128 PNGs, a red and a blue box each) with
    their labels/, and a data.yaml naming them (classes red, blue)."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 3), ("val", 2)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(count):
            image = rng.integers(90, 110, size=(96, 128, 3), dtype=np.uint8)
            image[10 + 5 * i:50 + 5 * i, 20:70] = (200, 30, 30)
            image[60:90, 80:120] = (20, 40, 220)
            Image.fromarray(image).save(root / "images" / split / f"{split}{i}.png")
            (root / "labels" / split / f"{split}{i}.txt").write_text(
                f"0 {45 / 128} {(30 + 5 * i) / 96} {50 / 128} {40 / 96}\n"
                f"1 {100 / 128} {75 / 96} {40 / 128} {30 / 96}\n")
    data = root / "data.yaml"
    data.write_text("path: .\ntrain: images/train\nval: images/val\nnames: [red, blue]\n")
    return data
