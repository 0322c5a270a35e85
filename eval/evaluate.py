"""Entry points: evaluate detections on a dataset with the protocol of your choice.

`evaluate_files` is what the evaluate command runs (and the test command after detecting):
ground truth and results files in, an `EvalResult` out, every option checked before the work.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from eval.datasets import (CocoInstances, Dataset, coco_class_mask, coco_dataset,
                           coco_split_mask, load_coco_instances, load_dataset,
                           subset_coco_instances)
from eval.inputs import check_input_names
from eval.datasets.ilsvrc import _is_class_map
from eval.datasets.yolo import is_yolo
from eval.boxes import xyxy_to_xywh
from eval.errors import DetectionError
from eval import coco
from eval.detections import Detections, load_results, restrict_detections
from eval.results import EvalResult

PROTOCOLS = ("coco", "voc07", "voc", "ilsvrc")


PathLike = str | os.PathLike


def evaluate_files(gt: PathLike, detections: PathLike | list, *, protocol: str = "auto",
                   images: PathLike | None = None, classes: PathLike | None = None,
                   blacklist: PathLike | None = None, split: PathLike | None = None
                   ) -> EvalResult:
    """Evaluate a COCO results file (or list) against ground truth in any supported format.

    ``gt``: COCO instances JSON, a PASCAL VOC root, a folder of VOC/ILSVRC XMLs, a YOLO
    data.yaml or a YOLO labels folder (see `eval.datasets.load_dataset` for ``images``,
    ``classes``, ``blacklist``, ``split``).
    ``protocol``: "coco", "voc07", "voc", "ilsvrc" or "auto" (`guess_protocol`). ``images``
    (where the XMLs' images are) is not read for COCO JSON, whose evaluation needs no image:
    the test command passes the image root it detected on; the evaluate command refuses it.

    With COCO JSON ground truth, ``split`` (a file of image ids or file names) and ``classes``
    (a file of category names) select images and categories exactly as pycocotools'
    ``params.imgIds`` and ``params.catIds`` do: detections elsewhere are dropped, the numbers
    equal those of a file holding only the selection. An option that cannot apply is refused
    by name (`check_options`) before anything is read; ground truth with nothing to evaluate
    (no object that counts) is an error, not a -1 or NaN mAP.
    """
    return evaluate_inputs(load_inputs(gt, detections, protocol=protocol, images=images,
                                       classes=classes, blacklist=blacklist, split=split))


@dataclass(frozen=True, eq=False)
class EvalInputs:
    """What `evaluate_files` reads, checked: the ground truth and detections of one evaluation.

    ``protocol`` is resolved (never "auto"); ``detections`` are mapped onto the ground truth's
    images and classes. Ground truth from XML folders is ``dataset``; COCO JSON is
    ``instances``, as pycocotools reads it (what the coco protocol evaluates), and its
    `Dataset` (image paths under ``images``) is built only when asked for (`evaluation_dataset`).
    ``selection`` names the selecting flags given, for messages.
    """

    protocol: str
    gt: PathLike
    detections: Detections
    selection: tuple[str, ...] = ()
    dataset: Dataset | None = None
    instances: CocoInstances | None = None
    images: PathLike | None = None

    def evaluation_dataset(self) -> Dataset:
        """The ground truth as a `Dataset`. From COCO JSON, crowd regions are also marked
        difficult, VOC's analog (neither true nor false positive) for voc/voc07."""
        if self.instances is None:
            return self.dataset
        dataset = coco_dataset(self.instances, self.images)
        return replace(dataset, images=tuple(replace(r, difficult=r.difficult | r.iscrowd)
                                             for r in dataset.images))

    def coco_ground_truth(self) -> coco.CocoBoxes | None:
        """COCO JSON ground truth in the coco protocol's terms (float64 xywh as in the file);
        None for XML ground truth (`coco_ground_truth` of the dataset stands for it there)."""
        if self.instances is None:
            return None
        inst = self.instances
        return coco.CocoBoxes(inst.ann_image, inst.ann_label - 1, inst.ann_bbox, inst.ann_area,
                              inst.ann_iscrowd)


def load_inputs(gt: PathLike, detections: PathLike | list, *, protocol: str = "auto",
                images: PathLike | None = None, classes: PathLike | None = None,
                blacklist: PathLike | None = None, split: PathLike | None = None) -> EvalInputs:
    """Read and check what `evaluate_files` evaluates (same arguments, same errors), so that
    the error analysis (`eval.analysis.analyse_inputs`) reads exactly what it does."""
    check_input_names(gt=gt, detections=detections, images=images, classes=classes,
                      blacklist=blacklist, split=split)
    protocol = check_options(gt, protocol, classes=classes, blacklist=blacklist)
    selection = tuple(f"--{k}" for k, v in (("split", split), ("classes", classes),
                                           ("blacklist", blacklist)) if v is not None)
    if is_coco_json(gt):
        instances, dets = _read_coco_file(gt, detections, protocol, classes, split, selection)
        return EvalInputs(protocol, gt, dets, selection, instances=instances, images=images)
    dataset = load_dataset(gt, images=images, classes=classes, blacklist=blacklist, split=split)
    if not any(len(record.labels) for record in dataset.images):
        _nothing_to_evaluate(gt, selection)
    dets = load_results(detections, [r.image_id for r in dataset.images], dataset.category_ids,
                        dataset.classes)
    return EvalInputs(protocol, gt, dets, selection, dataset=dataset)


def evaluate_inputs(inputs: EvalInputs) -> EvalResult:
    """`evaluate_files` on inputs `load_inputs` read: COCO JSON under the coco protocol keeps
    pycocotools' exact arrays, anything else goes through `evaluate`."""
    if inputs.instances is not None and inputs.protocol == "coco":
        result = _coco_instances_result(inputs.instances, inputs.detections)
    else:
        result = evaluate(inputs.evaluation_dataset(), inputs.detections, inputs.protocol)
    check_evaluated(result, inputs)
    return result


def check_evaluated(result: EvalResult, inputs: EvalInputs) -> None:
    """Refuse a result where no class has an AP: nothing in the ground truth counted."""
    if all(ap is None for ap in result.per_class.values()):
        _nothing_to_evaluate(inputs.gt, list(inputs.selection))


def _nothing_to_evaluate(gt: PathLike, selection: list[str]) -> None:
    """Raise the error for ground truth without an object that counts (rather than COCO's -1
    or a NaN mAP)."""
    after = f" after {' '.join(selection)}" if selection else ""
    raise DetectionError(f"{gt}: no ground-truth object that counts{after} (crowd and difficult "
                         "ones do not), so there is nothing to evaluate; check the ground truth"
                         + (" and those options" if selection else ""))


def guess_protocol(gt: PathLike, classes: PathLike | None = None) -> str:
    """What ``protocol="auto"`` means: "coco" for a .json ground truth and for YOLO labels
    (Ultralytics reports COCO's mAP@[.5:.95]), "ilsvrc" when ``classes`` is a synset map
    (ILSVRC's map_det.txt), "voc" otherwise."""
    if Path(gt).suffix.lower() == ".json" or is_yolo(gt, classes):
        return "coco"
    if classes is not None and _is_class_map(classes):
        return "ilsvrc"
    return "voc"


def check_options(gt: PathLike, protocol: str, *, classes: PathLike | None = None,
                  blacklist: PathLike | None = None) -> str:
    """The protocol `evaluate_files` will use ("auto" resolved); an option that would do
    nothing for this ground truth and protocol raises `DetectionError` naming it."""
    if protocol == "auto":
        protocol = guess_protocol(gt, classes)
    if protocol not in PROTOCOLS:
        raise DetectionError(f"--protocol {protocol}: unknown protocol; choose auto or one of "
                             f"{', '.join(PROTOCOLS)}")
    coco_json = is_coco_json(gt)
    if blacklist is not None and (protocol != "ilsvrc" or coco_json):
        need = ("ILSVRC XML ground truth, not COCO JSON" if coco_json
                else f"--protocol ilsvrc (this is {protocol})")
        raise DetectionError(f"--blacklist {blacklist}: only the ILSVRC protocol skips "
                             f"blacklisted images; it needs {need}; drop --blacklist")
    return protocol


def is_coco_json(gt: PathLike) -> bool:
    """True when ``gt`` names COCO JSON ground truth (a .json path that is not a folder)."""
    return Path(gt).suffix.lower() == ".json" and not Path(gt).is_dir()


def _read_coco_file(gt: PathLike, detections: PathLike | list, protocol: str,
                    classes: PathLike | None, split: PathLike | None,
                    selection: tuple[str, ...]) -> tuple[CocoInstances, Detections]:
    """COCO JSON ground truth, read as pycocotools reads it, with ``split`` / ``classes`` as
    ``params.imgIds`` / ``params.catIds``, and the detections mapped onto it."""
    instances = load_coco_instances(gt)
    if len(instances.ann_ids) == 0:
        _nothing_to_evaluate(gt, [])
    dets = load_results(detections, instances.image_ids, instances.category_ids,
                        instances.category_names)
    image_keep = (coco_split_mask(instances, split) if split is not None
                  else np.ones(len(instances.image_ids), bool))
    category_keep = (coco_class_mask(instances, classes) if classes is not None
                     else np.ones(len(instances.category_ids), bool))
    if split is not None or classes is not None:
        instances = subset_coco_instances(instances, image_keep, category_keep)
        dets = restrict_detections(dets, image_keep, category_keep)
        if len(instances.ann_ids) == 0:
            _nothing_to_evaluate(gt, list(selection))
    if protocol == "ilsvrc" and instances.ann_iscrowd.any():
        raise DetectionError(f"{gt}: has crowd annotations (iscrowd 1), for which the ilsvrc "
                             "protocol has no rule; use --protocol coco (or voc, which treats "
                             "them as difficult)")
    return instances, dets


def evaluate_coco_instances(instances: CocoInstances, detections) -> EvalResult:
    """COCO bbox evaluation of a results list (or file) against parsed COCO instances
    (`eval.datasets.load_coco_instances` of a file or a dict), used exactly as pycocotools reads
    them (float64 ``xywh``, annotation areas): the `EvalResult` with its 12 ``stats``."""
    dets = load_results(detections, instances.image_ids, instances.category_ids,
                        instances.category_names)
    return _coco_instances_result(instances, dets)


def _coco_instances_result(instances: CocoInstances, dets: Detections) -> EvalResult:
    gt = EvalInputs("coco", "", dets, instances=instances).coco_ground_truth()
    return _coco_result(gt, dets, len(instances.image_ids), instances.category_names)


def evaluate(dataset: Dataset, detections: Detections, protocol: str) -> EvalResult:
    """Evaluate with ``protocol`` in "coco", "voc07" (11-point), "voc" (all-point), "ilsvrc"."""
    if protocol == "coco":
        return _coco_result(coco_ground_truth(dataset), detections, len(dataset.images),
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


def coco_ground_truth(dataset: Dataset) -> coco.CocoBoxes:
    """Ground truth of any dataset in COCO terms (xywh from the xyxy boxes, stored areas).

    VOC's difficult objects become crowd regions, COCO's analog: a detection on one is
    neither a true nor a false positive, and none is missed."""
    images = [np.full(len(r.labels), i) for i, r in enumerate(dataset.images)]
    boxes = np.concatenate([r.boxes for r in dataset.images] + [np.zeros((0, 4), np.float32)])
    return coco.CocoBoxes(
        image=np.concatenate(images + [np.zeros(0, np.int64)]).astype(np.int64),
        label=np.concatenate([r.labels for r in dataset.images] + [np.zeros(0, np.int64)]) - 1,
        bbox=xyxy_to_xywh(boxes),
        area=np.concatenate([r.areas for r in dataset.images] + [np.zeros(0)]).astype(np.float64),
        iscrowd=np.concatenate([r.iscrowd | r.difficult for r in dataset.images]
                               + [np.zeros(0, bool)]),
    )


def coco_detections(dets: Detections) -> coco.CocoBoxes:
    """Detections in the coco protocol's terms (their area is w * h, as pycocotools')."""
    return coco.CocoBoxes(dets.image_index, dets.labels - 1, dets.bbox,
                          dets.bbox[:, 2] * dets.bbox[:, 3], np.zeros(len(dets), bool), dets.scores)


def _coco_result(gt: coco.CocoBoxes, dets: Detections, num_images: int, class_names) -> EvalResult:
    arrays = coco.evaluate_boxes(gt, coco_detections(dets), num_images, len(class_names))
    return coco_result(arrays, class_names)


def coco_result(arrays: coco.CocoEvalArrays, class_names) -> EvalResult:
    """The `EvalResult` of COCOeval's arrays: the 12 stats, AP 0.50:0.95 per class."""
    stats = coco.summarize(arrays)
    per_class = {name: (None if np.isnan(ap) else float(ap))
                 for name, ap in zip(class_names, coco.per_class_ap(arrays))}
    # Curves at IoU 0.5, all areas, 100 detections: the view people plot for COCO.
    curves = {name: (coco.RECALL_THRESHOLDS, arrays.precision[0, :, k, 0, -1])
              for k, name in enumerate(class_names) if per_class[name] is not None}
    return EvalResult("coco", stats[0], per_class, stats=stats, curves=curves)
