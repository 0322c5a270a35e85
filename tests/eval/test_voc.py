"""PASCAL VOC AP: the shared reference vector, hand-computed cases, and a literal devkit loop."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from eval.datasets import Dataset
from eval.detections import Detections
from eval.errors import DetectionError
from eval.voc import (VOC07_RECALL_POINTS, evaluate_voc, match_voc, paired_inclusive_iou,
                      precision_recall, to_inclusive, voc_ap)
from _builders import make_dataset, make_detections

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"




# --- the shared reference vector ------------------------------------------------------------

def _read_case(folder: Path, kind: str) -> tuple[np.ndarray, ...]:
    """Image ids, (left, top, left + w, top + h) used directly as inclusive boxes, scores."""
    image, boxes, scores = [], [], []
    for k, path in enumerate(sorted((folder / kind).glob("*.txt"))):
        for line in path.read_text().split("\n"):
            if not line.strip():
                continue
            fields = [float(v) for v in line.split()[1:]]
            score, (left, top, w, h) = (fields[0], fields[1:]) if kind == "dets" else (1.0, fields)
            image.append(k)
            boxes.append([left, top, left + w, top + h])
            scores.append(score)
    return np.array(image), np.array(boxes), np.array(scores)


@pytest.mark.parametrize("use_07", [True, False])
@pytest.mark.parametrize("iou", ["0.1", "0.3", "0.5", "0.75"])
def test_reference_vector(iou: str, use_07: bool) -> None:
    if not (SHARED_DATA / "voc_ap_case").is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}; the VOC vector needs ../shared/data")
    expected = json.loads((SHARED_DATA / "EXPECTED.json").read_text())["voc_ap_case"]
    gt_image, gt_boxes, _ = _read_case(SHARED_DATA / "voc_ap_case", "gts")
    det_image, det_boxes, scores = _read_case(SHARED_DATA / "voc_ap_case", "dets")
    tp, fp = match_voc(det_image, det_boxes, scores, gt_image, gt_boxes,
                       np.zeros(len(gt_image), bool), float(iou))
    ap = voc_ap(*precision_recall(tp, fp, len(gt_image)), use_07_metric=use_07)
    key = "ap_11point" if use_07 else "ap_every_point"
    assert ap == pytest.approx(expected[key][iou], abs=1e-6)


def test_reference_vector_through_evaluate_voc() -> None:
    """The same vector through the continuous-box entry point: x2 = left + w + 1 continuous."""
    if not (SHARED_DATA / "voc_ap_case").is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}; the VOC vector needs ../shared/data")
    gt_image, gt_boxes, _ = _read_case(SHARED_DATA / "voc_ap_case", "gts")
    det_image, det_boxes, scores = _read_case(SHARED_DATA / "voc_ap_case", "dets")
    images = [[(*(b + [0, 0, 1, 1]), 1) for b in gt_boxes[gt_image == k]] for k in range(7)]
    rows = [(i, 1, s, *(b + [0, 0, 1, 1])) for i, s, b in zip(det_image, scores, det_boxes)]
    result = evaluate_voc(make_dataset(images, ["object"]), make_detections(rows), 0.3, True)
    assert result.protocol == "voc07"
    assert result.per_class["object"] == pytest.approx(0.2683982683, abs=1e-6)


# --- IoU and AP by hand ---------------------------------------------------------------------

def inclusive_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU [N, M] of inclusive boxes a [N, 4] and b [M, 4], through the evaluator's core."""
    return paired_inclusive_iou(a[:, None, :], b[None, :, :])


def test_inclusive_iou_by_hand() -> None:
    # (0,0,1,1) and (1,1,2,2) are 2x2 pixel blocks sharing pixel (1,1): 1 / (4 + 4 - 1).
    # In continuous coordinates the same numbers only touch (IoU 0).
    a = np.array([[0.0, 0, 1, 1], [0, 0, 9, 9]])
    b = np.array([[1.0, 1, 2, 2], [5, 5, 14, 14], [0, 0, 0, 0], [20, 20, 30, 30]])
    # (1,1,2,2) lies inside (0,0,9,9): 4 / 100; (0,0,0,0) is one pixel: 1/4 and 1/100.
    expected = [[1 / 7, 0, 1 / 4, 0], [4 / 100, 25 / 175, 1 / 100, 0]]
    np.testing.assert_allclose(inclusive_iou(a, b), expected, rtol=1e-15)
    continuous = np.array([[5, 6, 15, 16]], np.float32)
    np.testing.assert_array_equal(to_inclusive(continuous), [[5, 6, 14, 15]])


def test_all_point_and_11_point_by_hand() -> None:
    recall = np.array([0.25, 0.5, 0.5, 0.75])
    precision = np.array([1.0, 1.0, 2 / 3, 0.75])
    # Envelope 1, 1, 0.75 over recall steps of 0.25 (the 2/3 is hidden by the 0.75 after it).
    assert voc_ap(recall, precision) == pytest.approx(0.25 + 0.25 + 0.25 * 0.75, abs=1e-15)
    # t = 0..0.5: 1 (six points); t = 0.6, 0.7: 0.75; t = 0.8..1: no recall that high.
    assert voc_ap(recall, precision, use_07_metric=True) == pytest.approx(7.5 / 11, abs=1e-15)
    assert voc_ap(np.zeros(0), np.zeros(0)) == 0.0
    assert voc_ap(np.zeros(0), np.zeros(0), use_07_metric=True) == 0.0


def test_11_point_grid_matches_python_devkit_ports() -> None:
    """np.arange(0, 1.1, 0.1): a recall of exactly 9/15 = 0.6 misses t = 0.6000000000000001,
    while 0.5 reaches t = 0.5 (the reference vector at IoU 0.1 depends on this)."""
    np.testing.assert_array_equal(VOC07_RECALL_POINTS, np.arange(0.0, 1.1, 0.1))
    assert voc_ap(np.array([9 / 15]), np.array([1.0]), use_07_metric=True) == pytest.approx(6 / 11)
    assert voc_ap(np.array([0.5]), np.array([1.0]), use_07_metric=True) == pytest.approx(6 / 11)


# --- matching rules by hand -----------------------------------------------------------------

def test_difficult_gt_is_neither_tp_nor_fp() -> None:
    dataset = make_dataset([[(0, 0, 10, 10, 1), (50, 50, 60, 60, 1, True)]])
    detections = make_detections([
        (0, 1, 0.9, 50, 50, 60, 60),  # on the difficult gt: ignored
        (0, 1, 0.8, 0, 0, 10, 10),  # TP
        (0, 1, 0.7, 100, 100, 110, 110)])  # FP
    tp, fp = match_voc(detections.image_index, to_inclusive(detections.boxes), detections.scores,
                       np.zeros(2, int), to_inclusive(dataset.images[0].boxes),
                       np.array([False, True]))
    np.testing.assert_array_equal(tp, [False, True, False])
    np.testing.assert_array_equal(fp, [False, False, True])
    result = evaluate_voc(dataset, detections)
    recall, precision = result.curves["a"]
    np.testing.assert_allclose(recall, [0, 1, 1])  # npos = 1: the difficult gt does not count
    np.testing.assert_allclose(precision, [0, 1, 0.5])
    assert result.per_class["a"] == pytest.approx(1.0)


def test_duplicate_detection_is_fp() -> None:
    dataset = make_dataset([[(0, 0, 10, 10, 1), (50, 50, 60, 60, 1)]])
    detections = make_detections([
        (0, 1, 0.9, 0, 0, 10, 10), (0, 1, 0.8, 0, 0, 10, 11), (0, 1, 0.7, 50, 50, 60, 60)])
    result = evaluate_voc(dataset, detections)
    recall, precision = result.curves["a"]
    np.testing.assert_allclose(recall, [0.5, 0.5, 1])
    np.testing.assert_allclose(precision, [1, 0.5, 2 / 3])
    assert result.per_class["a"] == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_best_gt_already_matched_makes_fp_even_if_another_gt_overlaps() -> None:
    # Inclusive: gt1 (0,0,9,9), gt2 (2,0,11,9), second detection (0,0,10,9) of 110 pixels:
    # IoU 100/110 with gt1 (taken by the first detection) and 90/120 = 0.75 with gt2.
    dataset = make_dataset([[(0, 0, 10, 10, 1), (2, 0, 12, 10, 1)]])
    detections = make_detections([(0, 1, 0.9, 0, 0, 10, 10), (0, 1, 0.8, 0, 0, 11, 10)])
    iou = inclusive_iou(to_inclusive(detections.boxes[1:]), to_inclusive(dataset.images[0].boxes))
    np.testing.assert_allclose(iou, [[100 / 110, 0.75]])
    result = evaluate_voc(dataset, detections)
    np.testing.assert_allclose(result.curves["a"][0], [0.5, 0.5])
    assert result.per_class["a"] == pytest.approx(0.5)


def test_first_of_equally_overlapping_gts_wins() -> None:
    # Two gts on the same box, the difficult one first: the detection takes it and is ignored;
    # with the order swapped it takes the ordinary gt and is a TP.
    detections = make_detections([(0, 1, 0.9, 0, 0, 10, 10)])
    first_difficult = make_dataset([[(0, 0, 10, 10, 1, True), (0, 0, 10, 10, 1)]])
    assert evaluate_voc(first_difficult, detections).per_class["a"] == 0.0
    first_ordinary = make_dataset([[(0, 0, 10, 10, 1), (0, 0, 10, 10, 1, True)]])
    assert evaluate_voc(first_ordinary, detections).per_class["a"] == 1.0


def test_score_ties_keep_file_order() -> None:
    dataset = make_dataset([[(0, 0, 10, 10, 1)]])
    on_gt, off_gt = (0, 1, 0.5, 0, 0, 10, 10), (0, 1, 0.5, 200, 200, 210, 210)
    assert evaluate_voc(dataset, make_detections([off_gt, on_gt])).per_class["a"] == 0.5
    assert evaluate_voc(dataset, make_detections([on_gt, off_gt])).per_class["a"] == 1.0
    # Two equal-score detections on one gt: the first in the file takes it.
    dets = np.array([[0.0, 0, 9, 9], [0, 0, 9, 10]])
    tp, fp = match_voc(np.zeros(2, int), dets, np.array([0.5, 0.5]),
                       np.zeros(1, int), np.array([[0.0, 0, 9, 9]]), np.zeros(1, bool))
    np.testing.assert_array_equal(tp, [True, False])


def test_entry_point_converts_continuous_boxes_at_the_edge() -> None:
    # Continuous gt (0,0,10,10) is inclusive (0,0,9,9). A detection (10,0,20,10) only touches it:
    # inclusive (10,0,19,9), no shared pixel, so it never matches. Read as inclusive numbers
    # directly, the same boxes would share a column of 10 pixels: IoU 10 / (110 + 110 - 10).
    dataset = make_dataset([[(0, 0, 10, 10, 1)]])
    touching = make_detections([(0, 1, 0.9, 10, 0, 20, 10)])
    assert evaluate_voc(dataset, touching, iou_threshold=1e-9).per_class["a"] == 0.0
    as_inclusive = inclusive_iou(np.array([[0.0, 0, 10, 10]]), np.array([[10.0, 0, 20, 10]]))
    np.testing.assert_allclose(as_inclusive, [[10 / 210]])
    # Detection (9,9,19,19) shares one pixel: 1 / (100 + 100 - 1), matched right at the threshold.
    corner = make_detections([(0, 1, 0.9, 9, 9, 19, 19)])
    assert evaluate_voc(dataset, corner, iou_threshold=1 / 199).per_class["a"] == 1.0
    assert evaluate_voc(dataset, corner, iou_threshold=1 / 199 + 1e-12).per_class["a"] == 0.0


def test_empty_detections_and_classes_without_gt() -> None:
    dataset = make_dataset([[(0, 0, 10, 10, 1), (5, 5, 20, 20, 3, True)], []])
    result = evaluate_voc(dataset, make_detections([]))
    assert result.per_class == {"a": 0.0, "b": None, "c": None}
    assert result.mAP == 0.0
    assert result.curves["a"][0].shape == (0,)
    # Detections of a class without (non-difficult) gt do not make it count.
    detections = make_detections([(1, 2, 0.9, 0, 0, 5, 5), (0, 1, 0.8, 0, 0, 10, 10),
                                  (0, 3, 0.7, 5, 5, 20, 20)])
    result = evaluate_voc(dataset, detections)
    assert result.per_class == {"a": 1.0, "b": None, "c": None}
    assert result.mAP == 1.0
    no_images = evaluate_voc(make_dataset([]), make_detections([]))
    assert no_images.per_class == {"a": None, "b": None, "c": None}


def test_bad_input_raises() -> None:
    dataset = make_dataset([[(0, 0, 10, 10, 1)]])
    with pytest.raises(DetectionError, match="labels"):
        evaluate_voc(dataset, make_detections([(0, 4, 0.9, 0, 0, 10, 10)]))
    with pytest.raises(DetectionError, match="image_index"):
        evaluate_voc(dataset, make_detections([(1, 1, 0.9, 0, 0, 10, 10)]))
    with pytest.raises(DetectionError, match="iou_threshold"):
        evaluate_voc(dataset, make_detections([]), iou_threshold=0.0)


# --- against a literal transcription of VOCevaldet.m ----------------------------------------

def reference_voc(dataset: Dataset, dets: Detections, thr: float, use_07: bool) -> dict:
    """VOCevaldet.m + VOCap.m line by line, on inclusive boxes (x2 - 1)."""
    aps = {}
    for c, name in enumerate(dataset.classes, start=1):
        gt = [(im.boxes[im.labels == c] - [0, 0, 1, 1], im.difficult[im.labels == c])
              for im in dataset.images]
        detected = [np.zeros(len(b), bool) for b, _ in gt]
        npos = sum(int((~d).sum()) for _, d in gt)
        ids = [i for i in range(len(dets)) if dets.labels[i] == c]
        si = sorted(ids, key=lambda i: -dets.scores[i])  # Python's sort is stable, as MATLAB's
        tp, fp = np.zeros(len(si)), np.zeros(len(si))
        for d, i in enumerate(si):
            bb = dets.boxes[i] - [0, 0, 1, 1]
            boxes, difficult = gt[dets.image_index[i]]
            ovmax, jmax = -np.inf, -1
            for j, bbgt in enumerate(boxes):
                iw = min(bb[2], bbgt[2]) - max(bb[0], bbgt[0]) + 1
                ih = min(bb[3], bbgt[3]) - max(bb[1], bbgt[1]) + 1
                if iw > 0 and ih > 0:
                    ua = ((bb[2] - bb[0] + 1) * (bb[3] - bb[1] + 1)
                          + (bbgt[2] - bbgt[0] + 1) * (bbgt[3] - bbgt[1] + 1) - iw * ih)
                    if iw * ih / ua > ovmax:
                        ovmax, jmax = iw * ih / ua, j
            if ovmax >= thr:
                if not difficult[jmax]:
                    if not detected[dets.image_index[i]][jmax]:
                        tp[d] = 1
                        detected[dets.image_index[i]][jmax] = True
                    else:
                        fp[d] = 1
            else:
                fp[d] = 1
        if npos == 0:
            aps[name] = None
            continue
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        rec = tp / npos
        with np.errstate(invalid="ignore"):
            prec = tp / (fp + tp)  # 0/0 = NaN as in MATLAB, whose max() skips NaN
        if use_07:
            ap = 0.0
            for t in np.arange(0.0, 1.1, 0.1):
                p = prec[(rec >= t) & ~np.isnan(prec)]
                ap += (p.max() if p.size else 0.0) / 11
        else:
            mrec, mpre = np.concatenate([[0], rec, [1]]), np.concatenate([[0], prec, [0]])
            for k in range(len(mpre) - 2, -1, -1):
                mpre[k] = np.fmax(mpre[k], mpre[k + 1])
            idx = [k for k in range(1, len(mrec)) if mrec[k] != mrec[k - 1]]
            ap = sum((mrec[k] - mrec[k - 1]) * mpre[k] for k in idx)
        aps[name] = ap
    return aps


def random_case(seed: int, num_images: int = 12,
                num_classes: int = 3) -> tuple[Dataset, Detections]:
    """Integer boxes with many near-threshold overlaps, difficult gts and tied scores."""
    rng = np.random.default_rng(seed)
    images, rows = [], []
    for i in range(num_images):
        objects = []
        for _ in range(rng.integers(0, 6)):
            x, y = rng.integers(0, 80, 2)
            w, h = rng.integers(3, 40, 2)
            label = int(rng.integers(1, num_classes + 1))
            objects.append((x, y, x + w, y + h, label, bool(rng.random() < 0.2)))
            for _ in range(rng.integers(0, 4)):  # detections jittered around the gt
                jitter = rng.integers(-4, 5, 4)
                box = np.array([x, y, x + w, y + h]) + jitter
                box[2:] = np.maximum(box[2:], box[:2] + 1)
                rows.append((i, label, round(rng.random(), 1), *box))
        images.append(objects)
        for _ in range(rng.integers(0, 4)):  # background detections
            x, y = rng.integers(0, 100, 2)
            label = int(rng.integers(1, num_classes + 1))
            rows.append((i, label, round(rng.random(), 1), x, y, x + 10, y + 12))
    order = rng.permutation(len(rows))
    dataset = make_dataset(images, ["a", "b", "c"][:num_classes])
    return dataset, make_detections([rows[k] for k in order])


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("use_07", [False, True])
def test_matches_literal_devkit_loop(seed: int, use_07: bool) -> None:
    dataset, detections = random_case(seed)
    for thr in (0.3, 0.5, 0.7):
        result = evaluate_voc(dataset, detections, thr, use_07)
        expected = reference_voc(dataset, detections, thr, use_07)
        assert result.per_class.keys() == expected.keys()
        for name, ap in expected.items():
            assert (result.per_class[name] is None) == (ap is None)
            if ap is not None:
                assert result.per_class[name] == pytest.approx(ap, abs=1e-12)
