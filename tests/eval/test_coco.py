"""The COCO evaluator against pycocotools (the reference) and the official evaluation vector."""
import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np
import pytest

from eval.errors import DetectionError
from eval.datasets import load_coco_instances
from eval.evaluate import evaluate_coco_instances
from eval.coco import box_iou_xywh

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} not present")


def evaluate_coco(gt, detections) -> dict:
    """COCO evaluation of a file or dict, as the evaluate command's --json holds it."""
    return evaluate_coco_instances(load_coco_instances(gt), detections).to_json()


def pycocotools_eval(gt: dict, results: list):
    """stats, precision and recall from pycocotools for the same inputs."""
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(results)) if results else COCO()
        if not results:  # loadRes cannot take an empty list
            coco_dt.dataset = {"images": gt["images"], "categories": gt["categories"], "annotations": []}
            coco_dt.createIndex()
        e = COCOeval(coco_gt, coco_dt, "bbox")
        e.evaluate()
        e.accumulate()
        e.summarize()
    return np.array(e.stats), e.eval["precision"], e.eval["recall"]


def random_case(seed: int, num_images=12, num_classes=5, max_gt=8):
    """COCO ground truth and results that exercise every rule of COCOeval.

    Boxes on an integer grid make IoUs hit the thresholds exactly; rounded scores make ties;
    some images have no ground truth, one class has no ground truth, one has no detections,
    some ground truth is crowd, and some images get more than 100 detections.
    """
    rng = np.random.default_rng(seed)
    images = [{"id": int(i), "width": 640, "height": 480, "file_name": f"{i}.jpg"}
              for i in rng.permutation(np.arange(1, 3 * num_images))[:num_images]]
    categories = [{"id": int(c), "name": f"c{c}"} for c in rng.permutation(np.arange(1, 90))[:num_classes]]
    no_gt_class, no_dt_class = categories[0]["id"], categories[1]["id"]
    anns, results = [], []
    for image in images:
        n_gt = 0 if rng.random() < 0.15 else int(rng.integers(1, max_gt + 1))
        for _ in range(n_gt):
            cat = int(rng.choice([c["id"] for c in categories[1:]]))
            w, h = (float(v) for v in rng.integers(2, 200, size=2))
            x, y = float(rng.integers(0, 400)), float(rng.integers(0, 300))
            area = w * h * float(rng.choice([1.0, 0.5, 0.7]))  # segment areas differ from box areas
            anns.append({"id": len(anns) + 1, "image_id": image["id"], "category_id": cat,
                         "bbox": [x, y, w, h], "area": area, "iscrowd": int(rng.random() < 0.1)})
        image_anns = [a for a in anns if a["image_id"] == image["id"]]
        n_dt = int(rng.choice([0, 5, 30, 130])) if rng.random() < 0.9 else 0
        for _ in range(n_dt):
            if image_anns and rng.random() < 0.6:
                g = image_anns[int(rng.integers(len(image_anns)))]
                jitter = rng.integers(-6, 7, size=4) if rng.random() < 0.7 else rng.normal(0, 4, size=4)
                x, y, w, h = (np.array(g["bbox"]) + jitter).tolist()
                cat = g["category_id"] if rng.random() < 0.8 else int(rng.choice([c["id"] for c in categories]))
            else:
                x, y = float(rng.integers(0, 500)), float(rng.integers(0, 400))
                w, h = float(rng.integers(1, 150)), float(rng.integers(1, 150))
                cat = int(rng.choice([c["id"] for c in categories]))
            if cat == no_dt_class:
                continue
            results.append({"image_id": image["id"], "category_id": cat, "score": float(np.round(rng.random(), 1)),
                            "bbox": [float(x), float(y), max(float(w), 0.0), max(float(h), 0.0)]})
    assert not any(a["category_id"] == no_gt_class for a in anns)
    gt = {"images": images, "categories": categories, "annotations": anns}
    return gt, results


@needs_shared
def test_reproduces_the_official_vector():
    expected = json.loads((SHARED / "EXPECTED.json").read_text())["coco_eval"]
    out = evaluate_coco(SHARED / expected["gt"], SHARED / expected["dt"])
    np.testing.assert_allclose(out["stats"], expected["stats"], rtol=0, atol=1e-9)
    assert out["mAP"] == pytest.approx(expected["stats"][0], abs=1e-12)
    assert len(out["per_class"]) == 80


@pytest.mark.parametrize("seed", range(8))
def test_agrees_with_pycocotools_on_random_cases(seed):
    gt, results = random_case(seed)
    stats, precision, recall = pycocotools_eval(gt, results)
    from eval.datasets import parse_coco_instances
    from eval.evaluate import evaluate_coco_instances
    from eval import coco
    from eval.detections import load_results

    instances = parse_coco_instances(gt)
    dets = load_results(results, instances.image_ids, instances.category_ids, instances.category_names)
    arrays = coco.evaluate_boxes(
        coco.CocoBoxes(instances.ann_image, instances.ann_label - 1, instances.ann_bbox,
                       instances.ann_area, instances.ann_iscrowd),
        coco.CocoBoxes(dets.image_index, dets.labels - 1, dets.bbox, dets.bbox[:, 2] * dets.bbox[:, 3],
                       np.zeros(len(dets), bool), dets.scores),
        len(instances.image_ids), len(instances.category_ids))
    np.testing.assert_allclose(arrays.precision, precision, rtol=0, atol=1e-9)
    np.testing.assert_allclose(arrays.recall, recall, rtol=0, atol=1e-9)
    out = evaluate_coco_instances(instances, results)
    np.testing.assert_allclose(out.stats, stats, rtol=0, atol=1e-9)


def test_random_cases_cover_the_hard_rules():
    """Guard on the generator: the cases above really contain what they claim to test."""
    gt, results = random_case(0)
    per_image = np.bincount([r["image_id"] for r in results])
    assert per_image.max() > 100
    assert any(a["iscrowd"] for a in gt["annotations"])
    assert len({r["score"] for r in results}) < len(results)  # score ties
    assert {i["id"] for i in gt["images"]} - {a["image_id"] for a in gt["annotations"]}  # empty images


def test_hand_computed_case():
    """One 10x10 object, a perfect detection (0.9) and a duplicate (0.8).

    At every IoU threshold the first detection is a TP and the duplicate a FP, so precision is 1
    up to recall 1: AP = 1. AR@1 = 1. The object is small (area 100 < 32^2): APs = 1, APm/APl = -1.
    """
    gt = {"images": [{"id": 1, "width": 50, "height": 50}], "categories": [{"id": 3, "name": "a"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 10, 10, 10],
                           "area": 100.0, "iscrowd": 0}]}
    results = [{"image_id": 1, "category_id": 3, "bbox": [10, 10, 10, 10], "score": 0.9},
               {"image_id": 1, "category_id": 3, "bbox": [10, 10, 10, 10], "score": 0.8}]
    stats = evaluate_coco(gt, results)["stats"]
    # (pycocotools divides by tp + fp + eps, hence 1 - 2e-16 rather than 1)
    assert stats[:6] == pytest.approx([1.0, 1.0, 1.0, 1.0, -1.0, -1.0], abs=1e-12)
    # Duplicate first: the 0.9 detection misses (IoU 0.25), so precision at recall 1 is 1/2.
    results[0]["bbox"] = [10, 10, 20, 20]
    stats = evaluate_coco(gt, results)["stats"]
    assert stats[0] == pytest.approx(0.5)


def test_iou_matches_pycocotools_mask_api():
    mask = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(1)
    dt = np.c_[rng.uniform(0, 50, (40, 2)), rng.uniform(0, 40, (40, 2))]
    gt = np.c_[rng.uniform(0, 50, (30, 2)), rng.uniform(0, 40, (30, 2))]
    crowd = rng.random(30) < 0.3
    expected = mask.iou(dt.tolist(), gt.tolist(), crowd.astype(np.uint8).tolist())
    d, g = np.meshgrid(np.arange(40), np.arange(30), indexing="ij")
    ours = box_iou_xywh(dt[d.ravel()], gt[g.ravel()], crowd[g.ravel()]).reshape(40, 30)
    np.testing.assert_array_equal(ours, expected)


@pytest.mark.parametrize("entry, message", [
    ({"image_id": 99, "category_id": 3, "bbox": [0, 0, 1, 1], "score": 0.5}, "image_id 99"),
    ({"image_id": 1, "category_id": 7, "bbox": [0, 0, 1, 1], "score": 0.5}, "category_id 7"),
    ({"image_id": 1, "category_name": "zebra", "bbox": [0, 0, 1, 1], "score": 0.5}, "zebra"),
    ({"image_id": 1, "category_id": 3, "bbox": [0, 0, 1, 1], "score": float("nan")}, "NaN"),
    ({"image_id": 1, "category_id": 3, "bbox": [0, 0, -1, 1], "score": 0.5}, "negative"),
    ({"image_id": 1, "category_id": 3, "bbox": [0, 0, 1], "score": 0.5}, "bbox"),
    ({"category_id": 3, "bbox": [0, 0, 1, 1], "score": 0.5}, "image_id"),
])
def test_bad_detections_name_the_entry(entry, message):
    gt = {"images": [{"id": 1, "width": 50, "height": 50}], "categories": [{"id": 3, "name": "a"}],
          "annotations": []}
    with pytest.raises(DetectionError, match=message) as info:
        evaluate_coco(gt, [{"image_id": 1, "category_id": 3, "bbox": [0, 0, 1, 1], "score": 0.1}, entry])
    assert "entry 1" in str(info.value)


def test_bad_results_file(tmp_path):
    gt = {"images": [{"id": 1, "width": 5, "height": 5}], "categories": [{"id": 1, "name": "a"}],
          "annotations": []}
    bad = tmp_path / "dets.json"
    bad.write_text('[{"image_id": 1,')
    with pytest.raises(DetectionError, match="dets.json: invalid JSON"):
        evaluate_coco(gt, bad)
    with pytest.raises(DetectionError, match="not found"):
        evaluate_coco(gt, tmp_path / "missing.json")


def test_category_name_and_empty_results():
    gt = {"images": [{"id": 1, "width": 50, "height": 50}], "categories": [{"id": 3, "name": "a"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 10, 10, 10],
                           "area": 100.0, "iscrowd": 0}]}
    out = evaluate_coco(gt, [{"image_id": 1, "category_name": "a", "bbox": [10, 10, 10, 10], "score": 1}])
    assert out["mAP"] == pytest.approx(1.0) and out["per_class"]["a"] == pytest.approx(1.0)
    empty = evaluate_coco(gt, [])
    assert empty["stats"][0] == 0.0
