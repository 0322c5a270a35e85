"""Error analysis: where a detector's AP goes, from the very matching its protocol scores with.

After Hoiem, Chodpathumwan and Dai, "Diagnosing Error in Object Detectors" (ECCV 2012) and
TIDE (Bolya et al., ECCV 2020). Each class's detections are taken as the protocol's evaluator
ranked and counted them (`eval.results.ClassMatch`: the same tp/fp flags its AP reads), and
every false positive gets one kind, tested in TIDE's order, where t is the protocol's IoU
threshold (VOC 0.5; ILSVRC min(0.5, wh / ((w + 10)(h + 10))) of each ground truth; COCO 0.5)
and IoU is the protocol's own (inclusive pixels for VOC/ILSVRC, pycocotools' for COCO):

1. confusion: IoU >= t with an object of another class (TIDE's classification error);
2. duplicate: IoU >= t with an object of its class, which a higher-ranked detection took;
3. localisation: IoU in [0.1, t) with an object of its class (TIDE's box error);
4. confusion: IoU in [0.1, t) with an object of another class (TIDE's "both");
5. background: IoU < 0.1 with every object.

Hoiem's "similar" and "other" classes are both confusion here. Objects of every kind count for
1 and 4, also difficult, crowd or blacklisted ones (they are there); for 2 and 3 the class's
objects the protocol looks at. What each kind costs is TIDE's dAP for false positives: the AP
(same protocol, same AP function) with that kind's false positives removed from the ranking,
minus the AP. A false positive takes no object, so removing it changes no other detection's
flag; removing all of them leaves the AP of precision 1 (VOC: the final recall).

COCO: the kinds and their costs are at IoU 0.5 over all areas with 100 detections per image
(AP50, TIDE's setting), beside the AP 0.50:0.95 of record. Missed objects are those that count
(not difficult, not crowd) and that no detection took, by area (COCO's small < 32^2 <= medium
< 96^2 <= large; COCO's ``area`` for COCO JSON, the box area otherwise). NumPy only.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from eval import coco
from eval.boxes import xywh_to_xyxy
from eval.datasets import Dataset
from eval.detections import Detections
from eval.evaluate import (EvalInputs, check_evaluated, coco_detections, coco_ground_truth,
                           coco_result, evaluate, load_inputs)
from eval.errors import DetectionError
from eval.ilsvrc import ilsvrc_class_matches, ilsvrc_thresholds
from eval.results import ClassMatch, EvalResult
from eval.voc import (flat_ground_truth, paired_inclusive_iou, precision_recall, same_image_pairs,
                      to_inclusive, voc_ap, voc_class_matches)

KINDS = ("localisation", "confusion", "duplicate", "background")
LOCALISATION, CONFUSION, DUPLICATE, BACKGROUND = range(len(KINDS))
# Below this IoU with every object a detection is on background (Hoiem's 0.1, TIDE's t_b).
BACKGROUND_IOU = 0.1
SIZES = ("small", "medium", "large")
SIZE_BOUNDS = (32 ** 2, 96 ** 2)  # COCO's area ranges, in square pixels
THRESHOLDS = {"voc": "IoU ≥ 0.5", "voc07": "IoU ≥ 0.5",
              "ilsvrc": "IoU ≥ min(0.5, wh / ((w + 10)(h + 10))) of the object",
              "coco": "IoU ≥ 0.5 (AP50), all areas, 100 detections per image"}


@dataclass(frozen=True, eq=False)
class GroundTruth:
    """The objects the analysis refers to by flat index: ``image`` int64 [G] (index into the
    dataset's images), ``boxes`` float64 [G, 4] continuous xyxy, ``labels`` int64 [G] 1..K,
    ``areas`` float64 [G], ``counted`` bool [G] (missed if no detection takes it),
    ``thresholds`` float64 [G] (the IoU a detection needs to take it)."""

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    areas: np.ndarray
    counted: np.ndarray
    thresholds: np.ndarray


@dataclass(frozen=True, eq=False)
class ClassErrors:
    """One class's errors.

    ``ap``: the evaluator's AP of record (None without objects); ``ap_at``: the AP the costs
    are measured against (the same for VOC and ILSVRC, AP50 for COCO). ``false_positives``
    and ``gain`` map each kind (and "all" in ``gain``) to a count and to the AP gained without
    those false positives. ``missed`` maps each size to a count. Per ranked detection (``rows``
    int64 [D], rows of the `Detections`, best first): ``tp`` bool [D], ``kind`` int8 [D]
    (index into `KINDS`, -1 for a TP or ignored one), ``partner`` int64 [D] (the object that
    decided the kind, or the one a TP took; -1 none) and ``iou`` float64 [D] with it
    (background: the highest IoU with any object; a TP: its highest IoU with an object of its
    class). ``missed_gt`` int64 [M]: the missed objects, largest first, with the IoU and
    detection row of the class's best detection on each (``missed_iou``, ``missed_det``, -1).
    """

    name: str
    label: int
    ap: float | None
    ap_at: float | None
    num_objects: int
    num_detections: int
    true_positives: int
    false_positives: dict[str, int]
    gain: dict[str, float]
    missed: dict[str, int]
    rows: np.ndarray
    tp: np.ndarray
    kind: np.ndarray
    partner: np.ndarray
    iou: np.ndarray
    missed_gt: np.ndarray
    missed_iou: np.ndarray
    missed_det: np.ndarray


@dataclass(frozen=True, eq=False)
class Analysis:
    """The error analysis of one evaluation (`analyse`): the evaluator's ``result``, the
    ``classes``' errors in label order, and the overall figures: ``mean_ap_at`` and
    ``mean_gain`` (means over the classes with objects), ``false_positives`` and ``missed``
    totals, and ``uncounted``, the detections the protocol leaves out (blacklisted, or past
    COCO's 100 per image)."""

    protocol: str
    threshold: str
    result: EvalResult
    classes: list[ClassErrors]
    dataset: Dataset
    detections: Detections
    gt: GroundTruth
    mean_ap_at: float
    mean_gain: dict[str, float]
    false_positives: dict[str, int]
    missed: dict[str, int]
    uncounted: int


def analyse_files(gt: str | os.PathLike, detections: str | os.PathLike | list, *,
                  protocol: str = "auto", images: str | os.PathLike | None = None,
                  classes: str | os.PathLike | None = None,
                  blacklist: str | os.PathLike | None = None,
                  split: str | os.PathLike | None = None) -> Analysis:
    """`analyse` what `eval.evaluate_files` evaluates, with its arguments and defaults: its
    ``result`` is that evaluation. ``images`` is where the report finds the images."""
    return analyse_inputs(load_inputs(gt, detections, protocol=protocol, images=images,
                                      classes=classes, blacklist=blacklist, split=split))


def analyse_inputs(inputs: EvalInputs) -> Analysis:
    """`analyse` of `eval.evaluate.load_inputs`' outcome (COCO JSON under the coco protocol
    keeps pycocotools' float64 boxes, as `evaluate_inputs` does)."""
    analysis = analyse(inputs.evaluation_dataset(), inputs.detections, inputs.protocol,
                       coco_gt=inputs.coco_ground_truth())
    check_evaluated(analysis.result, inputs)
    return analysis


def analyse(dataset: Dataset, detections: Detections, protocol: str,
            coco_gt: coco.CocoBoxes | None = None) -> Analysis:
    """The error analysis of ``detections`` on ``dataset`` under ``protocol`` ("voc",
    "voc07", "ilsvrc", "coco"); see the module docstring. ``coco_gt`` replaces the dataset's
    ground truth in COCO terms (COCO JSON as read; `coco_ground_truth` of it by default)."""
    if protocol == "coco":
        gt_boxes = coco_gt if coco_gt is not None else coco_ground_truth(dataset)
        dt = coco_detections(detections)
        matched = coco.match_boxes(gt_boxes, dt, len(dataset.classes))
        result = coco_result(coco.accumulate(matched, dt), dataset.classes)
        matches = coco.class_matches(matched, gt_boxes, dt)
        gt = _coco_objects(gt_boxes)
    elif protocol in ("voc", "voc07", "ilsvrc"):
        result = evaluate(dataset, detections, protocol)
        matches = (ilsvrc_class_matches(dataset, detections) if protocol == "ilsvrc"
                   else voc_class_matches(dataset, detections))
        gt = _xml_objects(dataset, protocol, matches)
    else:
        raise DetectionError(f"unknown protocol {protocol!r}; choose voc, voc07, ilsvrc or coco")
    overlaps = _Overlaps.of(protocol, detections, gt, gt_boxes if protocol == "coco" else None)
    counted = np.zeros(len(detections), bool)
    for m in matches:
        counted[m.rows] = True
    nearest = (overlaps.best(len(detections), overlaps.same),
               overlaps.best(len(detections), ~overlaps.same),
               overlaps.best(len(gt.labels), overlaps.same & counted[overlaps.det], by_gt=True))
    errors = [_class_errors(name, m, result.per_class[name], nearest, gt, protocol)
              for name, m in zip(dataset.classes, matches)]
    scored = [c for c in errors if c.ap_at is not None]
    mean_gain = {k: float(np.mean([c.gain[k] for c in scored])) if scored else float("nan")
                 for k in (*KINDS, "all")}
    return Analysis(protocol, THRESHOLDS[protocol], result, errors, dataset, detections, gt,
                    float(np.mean([c.ap_at for c in scored])) if scored else float("nan"),
                    mean_gain, _total(errors, "false_positives", KINDS),
                    _total(errors, "missed", SIZES), int(np.count_nonzero(~counted)))


def _total(errors: list[ClassErrors], field: str, keys: tuple[str, ...]) -> dict[str, int]:
    return {k: sum(getattr(c, field)[k] for c in errors) for k in keys}


def _coco_objects(gt: coco.CocoBoxes) -> GroundTruth:
    """COCO ground truth rows as objects: counted unless crowd or outside the "all" range."""
    low, high = coco.AREA_RANGES[0]
    counted = ~gt.iscrowd & (gt.area >= low) & (gt.area <= high)
    return GroundTruth(gt.image, xywh_to_xyxy(gt.bbox), gt.label + 1, gt.area, counted,
                       np.full(len(gt.label), coco.IOU_THRESHOLDS[0]))


def _xml_objects(dataset: Dataset, protocol: str, matches: list[ClassMatch]) -> GroundTruth:
    """The dataset's flat ground truth as objects: counted when its class's protocol looks at
    it (not blacklisted) and, for VOC, not difficult."""
    image, boxes, labels, difficult = flat_ground_truth(dataset)
    areas = np.concatenate([np.asarray(r.areas, np.float64) for r in dataset.images]
                           + [np.zeros(0)])
    counted = np.zeros(len(labels), bool)
    for m in matches:
        counted[m.gt] = True
    if protocol == "ilsvrc":
        thresholds = ilsvrc_thresholds(to_inclusive(boxes))
    else:
        counted &= ~difficult
        thresholds = np.full(len(labels), 0.5)
    return GroundTruth(image, boxes, labels, areas, counted, thresholds)


@dataclass(frozen=True, eq=False)
class _Overlaps:
    """Every (detection, object) pair on one image, with the protocol's IoU: ``det``, ``gt``
    int64 [P], ``iou`` float64 [P], ``hit`` bool [P] (IoU enough to take the object),
    ``same`` bool [P] (object of the detection's class)."""

    det: np.ndarray
    gt: np.ndarray
    iou: np.ndarray
    hit: np.ndarray
    same: np.ndarray

    @classmethod
    def of(cls, protocol: str, dets: Detections, gt: GroundTruth,
           coco_gt: coco.CocoBoxes | None) -> _Overlaps:
        det, g = same_image_pairs(dets.image_index, gt.image)
        if protocol == "coco":
            iou = coco.box_iou_xywh(dets.bbox[det], coco_gt.bbox[g], coco_gt.iscrowd[g])
        else:
            iou = paired_inclusive_iou(to_inclusive(dets.boxes)[det], to_inclusive(gt.boxes)[g])
        hit = iou >= np.minimum(gt.thresholds[g], 1 - 1e-10)  # COCO's cap: IoU 1 still matches
        if protocol == "ilsvrc":
            hit &= iou > 0  # the devkit only scores overlapping pairs
        return cls(det, g, iou, hit, dets.labels[det] == gt.labels[g])

    def best(self, num: int, mask: np.ndarray, by_gt: bool = False
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per detection (per object with ``by_gt``) of ``num`` among the pairs ``mask``: the
        highest IoU float64 [num] (0 where none), its partner int64 [num] (-1; ties to the
        first in file order) and whether any pair was a hit bool [num]."""
        key, other = (self.gt, self.det) if by_gt else (self.det, self.gt)
        sel = np.flatnonzero(mask)
        sel = sel[np.lexsort((other[sel], -self.iou[sel], key[sel]))]
        first = sel[np.r_[True, key[sel][1:] != key[sel][:-1]]] if len(sel) else sel
        iou, partner, hit = np.zeros(num), np.full(num, -1, np.int64), np.zeros(num, bool)
        iou[key[first]], partner[key[first]] = self.iou[first], other[first]
        hit[key[sel[self.hit[sel]]]] = True
        return iou, partner, hit


def _class_errors(name: str, match: ClassMatch, ap: float | None, nearest: tuple,
                  gt: GroundTruth, protocol: str) -> ClassErrors:
    """One class's kinds, costs and missed objects (see the module docstring). ``nearest``:
    `_Overlaps.best` per detection with objects of its class, of other classes, and per
    object with the counted detections of its class."""
    same, other, by_object = nearest
    kind, partner, iou = _kinds(match, [a[match.rows] for a in same],
                                [a[match.rows] for a in other])
    fp = {k: int(np.count_nonzero(match.fp & (kind == i))) for i, k in enumerate(KINDS)}
    ap_at, gain = _costs(match, kind, protocol)
    missed_gt = _missed(match, gt)
    missed_iou, missed_det = by_object[0][missed_gt], by_object[1][missed_gt]
    sizes = np.searchsorted(SIZE_BOUNDS, gt.areas[missed_gt], side="right")
    missed = {s: int(np.count_nonzero(sizes == i)) for i, s in enumerate(SIZES)}
    return ClassErrors(name, match.label, ap, ap_at, match.npos, len(match.rows),
                       int(np.count_nonzero(match.tp)), fp, gain, missed, match.rows, match.tp,
                       kind, partner, iou, missed_gt, missed_iou, missed_det)


def _kinds(match: ClassMatch, same: list, other: list
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(kind int8, partner int64, iou float64) [D] of a class's ranked detections from their
    nearest objects (IoU, object, hit) of their class (``same``) and of the others."""
    same_iou, same_gt, same_hit = same
    other_iou, other_gt, other_hit = other
    kind = np.select([other_hit, same_hit, same_iou >= BACKGROUND_IOU,
                      other_iou >= BACKGROUND_IOU],
                     [CONFUSION, DUPLICATE, LOCALISATION, CONFUSION], BACKGROUND).astype(np.int8)
    by_other = other_hit | (~same_hit & (same_iou < BACKGROUND_IOU)
                            & (other_iou >= BACKGROUND_IOU))
    partner = np.where(by_other, other_gt, same_gt)
    iou = np.where(by_other, other_iou, same_iou)
    background = kind == BACKGROUND
    partner[background], iou[background] = -1, np.maximum(same_iou, other_iou)[background]
    kind[~match.fp] = -1
    partner[match.tp], iou[match.tp] = match.matched[match.tp], same_iou[match.tp]
    return kind, partner, iou


def class_ap(tp: np.ndarray, fp: np.ndarray, npos: int, protocol: str) -> float:
    """The protocol's AP of one class from ranked tp/fp flags bool [D] (``npos`` > 0): VOC's
    all-point area (ILSVRC too), VOC2007's 11 points, COCO's 101 points at one threshold."""
    if protocol == "coco":
        return coco.interpolated_ap(tp, fp, npos)
    return voc_ap(*precision_recall(tp, fp, npos), use_07_metric=protocol == "voc07")


def _costs(match: ClassMatch, kind: np.ndarray, protocol: str
           ) -> tuple[float | None, dict[str, float]]:
    """The class's AP at the analysis threshold and what each kind's false positives cost
    (AP without them minus AP; "all": without any false positive). None / NaN without objects."""
    if match.npos == 0:
        return None, {k: float("nan") for k in (*KINDS, "all")}
    base = class_ap(match.tp, match.fp, match.npos, protocol)
    removed = {k: match.fp & (kind == i) for i, k in enumerate(KINDS)}
    removed["all"] = match.fp
    return base, {k: class_ap(match.tp[~r], match.fp[~r], match.npos, protocol) - base
                  for k, r in removed.items()}


def _missed(match: ClassMatch, gt: GroundTruth) -> np.ndarray:
    """The class's counted objects that no detection took, largest first (ties in file
    order), as flat indices int64 [M]."""
    taken = np.zeros(len(gt.labels), bool)
    taken[match.matched[match.matched >= 0]] = True
    missed = match.gt[gt.counted[match.gt] & ~taken[match.gt]]
    return missed[np.lexsort((missed, -gt.areas[missed]))]
