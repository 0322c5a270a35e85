"""The error analysis (eval.analysis): each kind of false positive on hand-made cases, what
each costs against hand-computed APs, missed objects by size, and on real data the same AP as
the evaluators for every protocol."""
import json
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from eval import coco
from eval.analysis import KINDS, analyse, analyse_files
from eval.datasets import load_dataset
from eval.evaluate import evaluate, evaluate_files
from eval.voc import VOC07_RECALL_POINTS

from _builders import make_dataset, make_detections

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} not present")
A, B, C = 1, 2, 3


def with_box_areas(dataset):
    """The dataset with each object's area its box area (as the VOC reader stores it)."""
    def area(r):
        return (r.boxes[:, 2] - r.boxes[:, 0]) * (r.boxes[:, 3] - r.boxes[:, 1])
    return replace(dataset, images=tuple(replace(r, areas=area(r).astype(np.float64))
                                         for r in dataset.images))


def hand_case():
    """Image 0: an `a` and a `b` side by side; image 1: a `c` (50 x 50) and a small `a`
    (20 x 20), both missed; image 2: an `a` and a `b` on the same box. Eight `a` detections,
    one of each kind and two TPs (see the comments), scores falling in this order."""
    dataset = with_box_areas(make_dataset([
        [(0, 0, 100, 100, A), (200, 0, 300, 100, B)],
        [(0, 0, 50, 50, C), (100, 100, 120, 120, A)],
        [(0, 0, 100, 100, A), (0, 0, 100, 100, B)],
    ]))
    dets = make_detections([
        (0, A, 0.9, 0, 0, 100, 100),    # TP
        (0, A, 0.8, 0, 0, 100, 95),     # duplicate of the TP's object
        (0, A, 0.7, 0, 0, 100, 40),     # localisation: IoU 0.4
        (0, A, 0.6, 200, 0, 300, 100),  # confusion: on the b (IoU 1)
        (0, A, 0.5, 250, 0, 350, 100),  # confusion: IoU 1/3 with the b, none with an a
        (0, A, 0.4, 400, 400, 450, 450),  # background
        (2, A, 0.3, 0, 0, 100, 100),    # TP
        (2, A, 0.2, 0, 0, 100, 100),    # taken a and a b at IoU 1: confusion (TIDE's order)
    ])
    return dataset, dets


EXPECTED_KINDS = [-1, KINDS.index("duplicate"), KINDS.index("localisation"),
                  KINDS.index("confusion"), KINDS.index("confusion"), KINDS.index("background"),
                  -1, KINDS.index("confusion")]


@pytest.mark.parametrize("protocol", ["voc", "ilsvrc", "coco"])
def test_each_kind_on_a_hand_made_case(protocol):
    dataset, dets = hand_case()
    analysis = analyse(dataset, dets, protocol)
    a = analysis.classes[0]
    assert a.rows.tolist() == list(range(8))  # scores fall in file order
    assert a.kind.tolist() == EXPECTED_KINDS
    assert a.tp.tolist() == [True, False, False, False, False, False, True, False]
    assert a.false_positives == {"localisation": 1, "confusion": 3, "duplicate": 1,
                                 "background": 1}
    # Flat ground truth: 0 a, 1 b (image 0), 2 c, 3 small a (image 1), 4 a, 5 b (image 2).
    assert a.partner.tolist() == [0, 0, 0, 1, 1, -1, 4, 5]
    np.testing.assert_allclose(a.iou[[1, 2, 3, 4, 5]], [0.95, 0.4, 1.0, 1 / 3, 0.0], atol=0.011)
    assert (a.num_objects, a.num_detections, a.true_positives) == (3, 8, 2)
    assert a.missed == {"small": 1, "medium": 0, "large": 0} and a.missed_gt.tolist() == [3]
    assert analysis.missed == {"small": 1, "medium": 1, "large": 2}  # the c and both b's
    assert analysis.false_positives == a.false_positives and analysis.uncounted == 0


@pytest.mark.parametrize("protocol", ["voc", "ilsvrc"])
def test_costs_are_the_ap_without_each_kind(protocol):
    # Ranked: TP dup loc conf conf bg TP conf, 3 objects. AP = 1/3 * 1 + 1/3 * 2/7 = 3/7.
    dataset, dets = hand_case()
    a = analyse(dataset, dets, protocol).classes[0]
    assert a.ap == pytest.approx(3 / 7, abs=1e-12) and a.ap_at == a.ap
    # Without the 3 confusions the second TP is 5th: 1/3 + 1/3 * 2/5; without any other single
    # false positive it is 6th: 1/3 + 1/3 * 2/6; without all of them precision is 1: 2/3.
    expected = {"confusion": 7 / 15, "duplicate": 4 / 9, "localisation": 4 / 9,
                "background": 4 / 9, "all": 2 / 3}
    for kind, ap in expected.items():
        assert a.gain[kind] == pytest.approx(ap - 3 / 7, abs=1e-12), kind


def test_ilsvrc_small_objects_take_a_lower_threshold_than_voc():
    # A 10 x 10 object needs IoU 100 / (20 * 20) = 0.25 under ILSVRC; this box has 0.3.
    dataset = with_box_areas(make_dataset([[(0, 0, 10, 10, A)]]))
    dets = make_detections([(0, A, 0.9, 0, 0, 10, 3)])
    assert analyse(dataset, dets, "ilsvrc").classes[0].tp.tolist() == [True]
    voc = analyse(dataset, dets, "voc").classes[0]
    assert voc.kind.tolist() == [KINDS.index("localisation")]
    assert voc.missed == {"small": 1, "medium": 0, "large": 0}


def test_difficult_and_crowd_objects_are_neither_errors_nor_missed():
    dataset = with_box_areas(make_dataset([[(0, 0, 100, 100, A, True), (200, 0, 300, 100, A)]]))
    dets = make_detections([(0, A, 0.9, 0, 0, 100, 100), (0, A, 0.8, 200, 0, 300, 100)])
    for protocol in ("voc", "coco"):  # coco reads a difficult object as a crowd region
        a = analyse(dataset, dets, protocol).classes[0]
        assert a.tp.tolist() == [False, True] and a.kind.tolist() == [-1, -1], protocol
        assert sum(a.false_positives.values()) == 0 and sum(a.missed.values()) == 0
        assert a.num_objects == 1 and a.ap == pytest.approx(1.0, abs=1e-12)


def test_detections_the_protocol_leaves_out_are_not_counted():
    dataset = with_box_areas(make_dataset([[(0, 0, 10, 10, A)], [(0, 0, 10, 10, A)]],
                                          blacklist={(1, A)}))
    # COCO keeps the 100 best of each image and class; ILSVRC skips blacklisted pairs.
    dets = make_detections([(0, A, 1 - i / 1000, 20 + i, 20, 30 + i, 30) for i in range(101)]
                           + [(1, A, 0.5, 0, 0, 10, 10)])
    coco_analysis = analyse(dataset, dets, "coco")
    assert coco_analysis.uncounted == 1 and 100 not in coco_analysis.classes[0].rows
    ilsvrc = analyse(dataset, dets, "ilsvrc")
    assert ilsvrc.uncounted == 1 and 101 not in ilsvrc.classes[0].rows
    assert ilsvrc.classes[0].num_objects == 1  # the blacklisted object is not looked at


def test_a_class_without_objects_or_detections():
    dataset = make_dataset([[(0, 0, 10, 10, A)]])
    analysis = analyse(dataset, make_detections([(0, B, 0.5, 0, 0, 10, 10)]), "voc")
    a, b, c = analysis.classes
    assert a.ap == 0.0 and a.missed == {"small": 1, "medium": 0, "large": 0}
    assert b.ap is None and b.ap_at is None and b.kind.tolist() == [KINDS.index("confusion")]
    assert np.isnan(b.gain["all"]) and c.num_detections == 0
    assert analysis.mean_ap_at == 0.0 and analysis.result.mAP == 0.0


def jittered(dataset, seed=0):
    """COCO results from the ground truth: boxes moved by 5% of their size or (one in four)
    by 25%, 10% missed, 10% given another class, 15% found twice, and two background boxes
    per image."""
    rng = np.random.default_rng(seed)
    results = []
    for record in dataset.images:
        for box, label in zip(record.boxes.astype(np.float64), record.labels):
            if rng.random() < 0.1:
                continue
            size = np.tile(box[2:] - box[:2], 2)
            copies = 2 if rng.random() < 0.15 else 1
            for _ in range(copies):
                moved = box + rng.normal(0, 0.25 if rng.random() < 0.25 else 0.05, 4) * size
                if rng.random() < 0.1:
                    label = rng.integers(1, len(dataset.classes) + 1)
                results.append(_result(record, moved, label, rng.random()))
        for _ in range(2):
            x, y = rng.uniform(0, 300, 2)
            results.append(_result(record, [x, y, x + 40, y + 30],
                                   rng.integers(1, len(dataset.classes) + 1), rng.random() / 2))
    return results


def _result(record, box, label, score):
    x1, y1, x2, y2 = (float(v) for v in box)
    return {"image_id": record.image_id, "category_id": int(label),
            "bbox": [x1, y1, max(x2 - x1, 1.0), max(y2 - y1, 1.0)], "score": float(score)}


def precision_one_ap(errors, protocol):
    """The AP of the class's true positives alone (precision 1 all along)."""
    recall = errors.true_positives / errors.num_objects
    if protocol == "voc07":
        return float(np.sum(VOC07_RECALL_POINTS <= recall) / 11)
    if protocol == "coco":
        return float(np.sum(coco.RECALL_THRESHOLDS <= recall) / 101)
    return recall


@pytest.fixture(scope="module")
def voc100(tmp_path_factory):
    """voc100's XMLs with its class list, and jittered ground truth as detections."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} not present")
    root = tmp_path_factory.mktemp("voc100")
    (root / "classes.txt").write_text((SHARED / "voc100/voc.names").read_text())
    args = dict(images=SHARED / "voc100/images", classes=root / "classes.txt")
    dataset = load_dataset(SHARED / "voc100/gts/pascalvoc_format", **args)
    (root / "dets.json").write_text(json.dumps(jittered(dataset)))
    return SHARED / "voc100/gts/pascalvoc_format", root / "dets.json", args


@pytest.mark.parametrize("protocol", ["voc", "voc07", "ilsvrc", "coco"])
def test_the_analysis_scores_as_the_evaluator(voc100, protocol):
    gt, dets, args = voc100
    analysis = analyse_files(gt, dets, protocol=protocol, **args)
    result = evaluate_files(gt, dets, protocol=protocol, **args)
    assert analysis.result.per_class == result.per_class and analysis.result.mAP == result.mAP
    assert 0.2 < result.mAP < 0.9  # a real mix of errors
    ap_at = {c.name: c.ap_at for c in analysis.classes}
    if protocol == "coco":  # the costs' baseline is AP50, the evaluator's second stat
        assert analysis.mean_ap_at == pytest.approx(result.stats[1], abs=1e-12)
    else:
        assert ap_at == result.per_class
    for c in analysis.classes:
        fp = ~c.tp & (c.kind >= 0)
        assert sum(c.false_positives.values()) == np.count_nonzero(fp)
        assert np.all(c.kind[c.tp] == -1) and np.all(c.partner[c.tp] >= 0)
        assert sum(c.missed.values()) + c.true_positives == c.num_objects
        if c.ap_at is not None:
            assert c.ap_at + c.gain["all"] == pytest.approx(precision_one_ap(c, protocol),
                                                            abs=1e-9)
            assert all(c.gain[k] >= -1e-12 for k in KINDS)  # dropping an FP never costs AP
    assert {k for k, n in analysis.false_positives.items() if n} == set(KINDS)


@needs_shared
def test_coco_json_per_class_ap50_is_pycocotools(tmp_path):
    """COCO JSON as pycocotools reads it: AP 0.50:0.95 as the evaluator, AP50 of each class
    as COCOeval's precision at IoU 0.5; the voc protocol on it (crowd as difficult) too."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = SHARED / "coco128/instances_train2017_128.json"
    images = SHARED / "coco128/images/train2017"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # coco128 has boxes past their image
        dataset = load_dataset(gt, images=images)
    inverse = dict(zip(range(1, 81), dataset.category_ids))
    results = [{**r, "category_id": inverse[r["category_id"]]} for r in jittered(dataset, 1)]
    analysis = analyse_files(gt, results, images=images)
    assert analysis.result.per_class == evaluate_files(gt, results).per_class
    with open(gt) as f, np.errstate(all="ignore"):
        cocogt = COCO()
        cocogt.dataset = json.load(f)
        cocogt.createIndex()
        run = COCOeval(cocogt, cocogt.loadRes(results), "bbox")
        run.evaluate()
        run.accumulate()
    for k, c in enumerate(analysis.classes):
        precision = run.eval["precision"][0, :, k, 0, 2]
        expected = None if (precision < 0).all() else float(precision.mean())
        assert c.ap_at == pytest.approx(expected, abs=1e-12) if expected is not None else \
            c.ap_at is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        voc = analyse_files(gt, results, protocol="voc", images=images)
        assert voc.result.per_class == evaluate_files(gt, results, protocol="voc").per_class


def test_analyse_equals_evaluate_in_memory():
    dataset, dets = hand_case()
    for protocol in ("voc", "voc07", "ilsvrc", "coco"):
        assert analyse(dataset, dets, protocol).result.per_class == \
            evaluate(dataset, dets, protocol).per_class
