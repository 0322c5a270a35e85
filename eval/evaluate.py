"""Entry points: evaluate detections on a dataset with the protocol of your choice."""
from __future__ import annotations

import os

import numpy as np

from detector.datasets import CocoInstances, Dataset, load_coco_instances
from detector.errors import DetectionError
from eval import coco
from eval.detections import Detections, load_results
from eval.results import EvalResult

PROTOCOLS = ("coco", "voc07", "voc", "ilsvrc")


def evaluate_coco(gt: str | os.PathLike | dict, detections: str | os.PathLike | list) -> dict:
    """COCO bbox evaluation of a results list (or file) against a COCO instances dict (or file).

    Returns ``{"protocol": "coco", "mAP": AP@[.5:.95], "per_class": {name: AP or None},
    "stats": [12 numbers of COCOeval.summarize]}``, the form `tools/evaluate.py --json` writes.
    Ground truth is used exactly as pycocotools reads it (float64 ``xywh``, annotation areas).
    """
    return evaluate_coco_instances(load_coco_instances(gt), detections).to_json()


def evaluate_coco_instances(instances: CocoInstances, detections) -> EvalResult:
    """`evaluate_coco` on parsed ground truth, returning the full `EvalResult` (with curves)."""
    dets = load_results(detections, instances.image_ids, instances.category_ids,
                        instances.category_names)
    gt = coco.CocoBoxes(instances.ann_image, instances.ann_label - 1, instances.ann_bbox,
                        instances.ann_area, instances.ann_iscrowd)
    return _coco_result(gt, dets, len(instances.image_ids), instances.category_names)


def evaluate(dataset: Dataset, detections: Detections, protocol: str) -> EvalResult:
    """Evaluate with ``protocol`` in "coco", "voc07" (11-point), "voc" (all-point), "ilsvrc"."""
    if protocol == "coco":
        return _coco_result(_coco_ground_truth(dataset), detections, len(dataset.images),
                            dataset.classes)
    if protocol in ("voc07", "voc"):
        from eval.voc import evaluate_voc
        return evaluate_voc(dataset, detections, use_07_metric=protocol == "voc07")
    if protocol == "ilsvrc":
        from eval.ilsvrc import evaluate_ilsvrc
        return evaluate_ilsvrc(dataset, detections)
    raise DetectionError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")


def evaluate_results(dataset: Dataset, results: str | os.PathLike | list, protocol: str
                     ) -> EvalResult:
    """`evaluate` of COCO results (a list or a JSON file) on ``dataset``: the results are read
    against its images and categories (`eval.detections.load_results`)."""
    detections = load_results(results, [r.image_id for r in dataset.images],
                              dataset.category_ids, dataset.classes)
    return evaluate(dataset, detections, protocol)


def _coco_ground_truth(dataset: Dataset) -> coco.CocoBoxes:
    """Ground truth of any dataset in COCO terms (xywh from the xyxy boxes, stored areas)."""
    images = [np.full(len(r.labels), i) for i, r in enumerate(dataset.images)]
    boxes = np.concatenate([r.boxes for r in dataset.images] + [np.zeros((0, 4), np.float32)])
    boxes = boxes.astype(np.float64)
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    return coco.CocoBoxes(
        image=np.concatenate(images + [np.zeros(0, np.int64)]).astype(np.int64),
        label=np.concatenate([r.labels for r in dataset.images] + [np.zeros(0, np.int64)]) - 1,
        bbox=xywh,
        area=np.concatenate([r.areas for r in dataset.images] + [np.zeros(0)]).astype(np.float64),
        iscrowd=np.concatenate([r.iscrowd for r in dataset.images] + [np.zeros(0, bool)]),
    )


def _coco_result(gt: coco.CocoBoxes, dets: Detections, num_images: int, class_names) -> EvalResult:
    dt = coco.CocoBoxes(dets.image_index, dets.labels - 1, dets.bbox,
                        dets.bbox[:, 2] * dets.bbox[:, 3], np.zeros(len(dets), bool), dets.scores)
    arrays = coco.evaluate_boxes(gt, dt, num_images, len(class_names))
    stats = coco.summarize(arrays)
    per_class = {name: (None if np.isnan(ap) else float(ap))
                 for name, ap in zip(class_names, coco.per_class_ap(arrays))}
    # Curves at IoU 0.5, all areas, 100 detections: the view people plot for COCO.
    curves = {name: (coco.RECALL_THRESHOLDS, arrays.precision[0, :, k, 0, -1])
              for k, name in enumerate(class_names) if per_class[name] is not None}
    return EvalResult("coco", stats[0], per_class, stats=stats, curves=curves)
