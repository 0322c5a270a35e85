"""ILSVRC DET AP: hand-computed cases of its own rules, and a literal eval_detection.m loop."""
from __future__ import annotations

import numpy as np
import pytest

from eval.datasets import Dataset
from eval.detections import Detections
from eval.ilsvrc import evaluate_ilsvrc, ilsvrc_thresholds, match_ilsvrc
from eval.voc import evaluate_voc
from _builders import make_dataset as _make_dataset, make_detections




def make_dataset(images, classes=("a", "b"), blacklist=frozenset()):
    return _make_dataset(images, classes, blacklist)


# --- the small-object threshold -------------------------------------------------------------

def test_thresholds_by_hand() -> None:
    inclusive = np.array([[0.0, 0, 9, 9], [0, 0, 29, 29], [0, 0, 0, 0], [0, 0, 99, 9]])
    # 10x10: 100/400; 30x30: 900/1600 = 0.5625 capped at 0.5; 1x1: 1/121; 100x10: 1000/2200.
    expected = [0.25, 0.5, 1 / 121, 1000 / 2200]
    np.testing.assert_allclose(ilsvrc_thresholds(inclusive), expected, rtol=1e-15)


def test_small_gt_matches_below_half_iou() -> None:
    # Continuous gt (10,10,20,20) is 10x10 pixels, threshold exactly 0.25. A 20x20 detection
    # around it has IoU 100/400 = 0.25: TP under ILSVRC, FP under VOC's 0.5.
    dataset = make_dataset([[(10, 10, 20, 20, 1)]])
    around = make_detections([(0, 1, 0.9, 5, 5, 25, 25)])
    assert evaluate_ilsvrc(dataset, around).per_class["a"] == 1.0
    assert evaluate_voc(dataset, around).per_class["a"] == 0.0
    # One pixel wider: 100/420 < 0.25, an FP again.
    wider = make_detections([(0, 1, 0.9, 5, 5, 26, 25)])
    assert evaluate_ilsvrc(dataset, wider).per_class["a"] == 0.0


def test_large_gt_threshold_is_capped_at_half() -> None:
    # 30x30 gt: 900/1600 = 0.5625 would reject a 30x60 detection covering it (IoU 900/1800 = 0.5);
    # the cap at 0.5 accepts it, and a 30x61 one (900/1830) is rejected.
    dataset = make_dataset([[(0, 0, 30, 30, 1)]])
    half = make_detections([(0, 1, 0.9, 0, 0, 30, 60)])
    below_half = make_detections([(0, 1, 0.9, 0, 0, 30, 61)])
    assert evaluate_ilsvrc(dataset, half).per_class["a"] == 1.0
    assert evaluate_ilsvrc(dataset, below_half).per_class["a"] == 0.0


# --- matching rules by hand -----------------------------------------------------------------

def test_taken_best_gt_falls_back_to_next_unmatched() -> None:
    # Inclusive gt1 (0,0,9,9), gt2 (2,0,11,9); the second detection (0,0,10,9) overlaps gt1 by
    # 100/110 (taken) and gt2 by 90/120 = 0.75: ILSVRC gives it gt2, VOC calls it a duplicate.
    dataset = make_dataset([[(0, 0, 10, 10, 1), (2, 0, 12, 10, 1)]])
    detections = make_detections([(0, 1, 0.9, 0, 0, 10, 10), (0, 1, 0.8, 0, 0, 11, 10)])
    assert evaluate_ilsvrc(dataset, detections).per_class["a"] == 1.0
    assert evaluate_voc(dataset, detections).per_class["a"] == 0.5


def test_first_max_wins_among_unmatched() -> None:
    # Inclusive gt1 (10,0,19,9), gt2 (15,0,24,9). The first detection (10,0,24,9) overlaps both
    # by 100/150 and takes gt1, the first. The second (8,0,17,9) overlaps gt1 by 80/120 but gt2
    # only by 30/170, so with gt1 taken it is an FP (had the first taken gt2, it would be a TP).
    gt = np.array([[10.0, 0, 19, 9], [15, 0, 24, 9]])
    dets = np.array([[10.0, 0, 24, 9], [8, 0, 17, 9], [10, 0, 24, 9]])
    tp, fp = match_ilsvrc(np.zeros(3, int), dets, np.array([0.9, 0.8, 0.7]), np.zeros(2, int), gt)
    np.testing.assert_array_equal(tp, [True, False, True])  # the third takes the gt2 left over
    np.testing.assert_array_equal(fp, [False, True, False])


def test_duplicates_are_fp_and_classes_do_not_mix() -> None:
    dataset = make_dataset([[(0, 0, 50, 50, 1), (0, 0, 50, 50, 2)]])
    detections = make_detections([(0, 1, 0.9, 0, 0, 50, 50), (0, 1, 0.8, 1, 1, 50, 50),
                                  (0, 2, 0.7, 0, 0, 50, 50)])
    result = evaluate_ilsvrc(dataset, detections)
    np.testing.assert_allclose(result.curves["a"][1], [1, 0.5])
    assert result.per_class == {"a": 1.0, "b": 1.0}


def test_multi_image_ap_by_hand() -> None:
    # Class a: image 0 holds g1, g2; image 1 holds g3 (all 50x50: threshold 0.5).
    dataset = make_dataset([[(0, 0, 50, 50, 1), (100, 100, 150, 150, 1)], [(0, 0, 50, 50, 1)]])
    detections = make_detections([
        (0, 1, 0.9, 0, 0, 50, 50),  # g1: TP
        (1, 1, 0.6, 300, 300, 350, 350),  # nothing: FP (ties with the duplicate below)
        (0, 1, 0.6, 0, 0, 50, 52),  # g1 again: FP
        (1, 1, 0.8, 200, 200, 250, 250),  # nothing: FP
        (1, 1, 0.7, 0, 0, 52, 50)])  # g3: TP
    # Ranked: TP, FP, TP, FP, FP; npos 3. Precision envelope 1 up to recall 1/3, then 2/3 up to
    # recall 2/3: AP = 1/3 + 2/9.
    result = evaluate_ilsvrc(dataset, detections)
    np.testing.assert_allclose(result.curves["a"][0], np.array([1, 1, 2, 2, 2]) / 3)
    np.testing.assert_allclose(result.curves["a"][1], [1, 0.5, 2 / 3, 0.5, 0.4])
    assert result.per_class["a"] == pytest.approx(1 / 3 + 2 / 9, abs=1e-15)
    assert result.per_class["b"] is None
    assert result.mAP == pytest.approx(5 / 9)
    assert result.protocol == "ilsvrc"


def test_score_ties_across_images_go_in_image_order() -> None:
    # One gt per image; equal scores: an FP on image 1 first in the file, a TP on image 0 second.
    # ILSVRC ranks image 0 first (TP, FP: AP 0.5); VOC keeps file order (FP, TP: AP 0.25).
    dataset = make_dataset([[(0, 0, 50, 50, 1)], [(0, 0, 50, 50, 1)]])
    detections = make_detections([(1, 1, 0.5, 200, 200, 250, 250), (0, 1, 0.5, 0, 0, 50, 50)])
    assert evaluate_ilsvrc(dataset, detections).per_class["a"] == pytest.approx(0.5)
    assert evaluate_voc(dataset, detections).per_class["a"] == pytest.approx(0.25)


def test_blacklist_removes_detections_and_gts() -> None:
    images = [[(0, 0, 50, 50, 1)], [(0, 0, 50, 50, 1), (60, 60, 110, 110, 2)]]
    detections = make_detections([
        (0, 1, 0.9, 0, 0, 50, 50),  # TP
        (1, 1, 0.95, 300, 300, 350, 350),  # FP on image 1, class a
        (1, 2, 0.5, 60, 60, 110, 110)])  # TP, class b on image 1
    # Without the blacklist: FP then TP for class a, npos 2: recall 0 then 0.5 at precision 0.5.
    plain = evaluate_ilsvrc(make_dataset(images), detections)
    assert plain.per_class == {"a": 0.25, "b": 1.0}
    # Blacklisting (image 1, class a) drops the FP and image 1's class-a gt; class b is untouched.
    skipped = evaluate_ilsvrc(make_dataset(images, blacklist={(1, 1)}), detections)
    assert skipped.per_class == {"a": 1.0, "b": 1.0}
    # A class whose only gts are blacklisted has no AP.
    only = evaluate_ilsvrc(make_dataset(images, blacklist={(1, 2)}), detections)
    assert only.per_class == {"a": 0.25, "b": None}


def test_difficult_flag_is_ignored_and_empty_input() -> None:
    dataset = make_dataset([[(0, 0, 50, 50, 1, True), (100, 0, 150, 50, 1)]])
    result = evaluate_ilsvrc(dataset, make_detections([(0, 1, 0.9, 0, 0, 50, 50)]))
    assert result.per_class["a"] == 0.5  # the difficult gt is an ordinary gt: npos 2
    empty = evaluate_ilsvrc(dataset, make_detections([]))
    assert empty.per_class == {"a": 0.0, "b": None}
    assert empty.mAP == 0.0


# --- against a literal transcription of eval_detection.m ------------------------------------

def reference_ilsvrc(dataset: Dataset, dets: Detections) -> dict:
    """eval_detection.m line by line: per image, all its detections sorted by confidence,
    each scanning the image's gts for the best undetected one of its class."""
    num_classes = len(dataset.classes)
    confidence = [[] for _ in range(num_classes + 1)]
    tp_all = [[] for _ in range(num_classes + 1)]
    npos = np.zeros(num_classes + 1)
    for i, im in enumerate(dataset.images):
        gt_labels = [int(c) for c in im.labels]
        gt_boxes = im.boxes.astype(np.float64) - [0, 0, 1, 1]
        for c in gt_labels:
            if (i, c) not in dataset.blacklist:
                npos[c] += 1
        gt_w = gt_boxes[:, 2] - gt_boxes[:, 0] + 1
        gt_h = gt_boxes[:, 3] - gt_boxes[:, 1] + 1
        thr = np.minimum(0.5, (gt_w * gt_h) / ((gt_w + 10) * (gt_h + 10)))
        ids = [k for k in range(len(dets)) if dets.image_index[k] == i
               and (i, int(dets.labels[k])) not in dataset.blacklist]
        ids = sorted(ids, key=lambda k: -dets.scores[k])
        detected = np.zeros(len(gt_labels), bool)
        for k in ids:
            c, bb = int(dets.labels[k]), dets.boxes[k] - [0, 0, 1, 1]
            ovmax, kmax = -np.inf, -1
            for g in range(len(gt_labels)):
                if gt_labels[g] != c or detected[g]:
                    continue
                bbgt = gt_boxes[g]
                iw = min(bb[2], bbgt[2]) - max(bb[0], bbgt[0]) + 1
                ih = min(bb[3], bbgt[3]) - max(bb[1], bbgt[1]) + 1
                if iw > 0 and ih > 0:
                    ua = ((bb[2] - bb[0] + 1) * (bb[3] - bb[1] + 1)
                          + (bbgt[2] - bbgt[0] + 1) * (bbgt[3] - bbgt[1] + 1) - iw * ih)
                    ov = iw * ih / ua
                    if ov >= thr[g] and ov > ovmax:
                        ovmax, kmax = ov, g
            if kmax >= 0:
                detected[kmax] = True
            confidence[c].append(dets.scores[k])
            tp_all[c].append(kmax >= 0)
    aps = {}
    for c, name in enumerate(dataset.classes, start=1):
        if npos[c] == 0:
            aps[name] = None
            continue
        si = sorted(range(len(confidence[c])), key=lambda k: -confidence[c][k])
        tp = np.cumsum([tp_all[c][k] for k in si])
        fp = np.cumsum([not tp_all[c][k] for k in si])
        rec, prec = tp / npos[c], tp / np.maximum(tp + fp, 1)
        mrec, mpre = np.concatenate([[0], rec, [1]]), np.concatenate([[0], prec, [0]])
        for k in range(len(mpre) - 2, -1, -1):
            mpre[k] = max(mpre[k], mpre[k + 1])
        idx = [k for k in range(1, len(mrec)) if mrec[k] != mrec[k - 1]]
        aps[name] = sum((mrec[k] - mrec[k - 1]) * mpre[k] for k in idx)
    return aps


def random_case(seed: int, num_images: int = 12) -> tuple[Dataset, Detections]:
    """Small and large integer gts (thresholds from 0.1 to 0.5), jittered and background
    detections, tied scores, and a few blacklisted (image, class) pairs."""
    rng = np.random.default_rng(seed)
    images, rows = [], []
    for i in range(num_images):
        objects = []
        for _ in range(rng.integers(0, 7)):
            x, y = rng.integers(0, 60, 2)
            w, h = rng.integers(2, 50, 2)
            label = int(rng.integers(1, 4))
            objects.append((x, y, x + w, y + h, label))
            for _ in range(rng.integers(0, 4)):
                box = np.array([x, y, x + w, y + h]) + rng.integers(-5, 6, 4)
                box[2:] = np.maximum(box[2:], box[:2] + 1)
                rows.append((i, label, round(rng.random(), 1), *box))
        images.append(objects)
        for _ in range(rng.integers(0, 3)):
            x, y = rng.integers(0, 90, 2)
            rows.append((i, int(rng.integers(1, 4)), round(rng.random(), 1), x, y, x + 8, y + 15))
    blacklist = {(int(rng.integers(0, num_images)), int(rng.integers(1, 4))) for _ in range(3)}
    order = rng.permutation(len(rows))
    return (make_dataset(images, ("a", "b", "c"), blacklist),
            make_detections([rows[k] for k in order]))


@pytest.mark.parametrize("seed", range(10))
def test_matches_literal_devkit_loop(seed: int) -> None:
    dataset, detections = random_case(seed)
    result = evaluate_ilsvrc(dataset, detections)
    expected = reference_ilsvrc(dataset, detections)
    assert result.per_class.keys() == expected.keys()
    for name, ap in expected.items():
        assert (result.per_class[name] is None) == (ap is None)
        if ap is not None:
            assert result.per_class[name] == pytest.approx(ap, abs=1e-12)
