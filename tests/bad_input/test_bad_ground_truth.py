"""Ground truth scored as the devkits score it, however it is drawn.

VOCevaldet.m, ILSVRC's eval_detection.m and pycocotools' COCOeval never clip a ground-truth box
to its image, never drop one, and never look at the image's size: a detection identical to a box
that reaches past the image edge matches it (AP 1.0), and a wrong ``<size>`` in an XML changes
nothing. COCO numbers are compared with pycocotools itself on the same boxes.
"""
from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from detector.cli.evaluate import main as evaluate_main
from eval.datasets import load_dataset, read_image, with_image_sizes
from eval.evaluate import evaluate_files, evaluate_results

# Continuous xyxy boxes on a 100 x 80 image: the first reaches past the right and bottom edges,
# the second past the left and top ones, the third lies inside. Dyadic numbers: exact in float32.
BOXES = [(60.0, 40.0, 130.0, 95.0), (-8.0, -4.5, 30.0, 20.0), (40.0, 10.0, 70.0, 60.0)]
NAMES = ["cat", "dog", "cat"]
SYNSETS = {"cat": "n02121808", "dog": "n02084071"}


def xml(boxes: list[tuple[float, ...]], names: list[str], size: tuple[int, int] | None,
        base: int) -> str:
    """A VOC/ILSVRC XML of continuous ``boxes``, in inclusive pixels counted from ``base``."""
    size_xml = "" if size is None else (
        f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>")
    objects = ""
    for name, (x1, y1, x2, y2) in zip(names, boxes):
        coords = dict(xmin=x1 + base, ymin=y1 + base, xmax=x2 - 1 + base, ymax=y2 - 1 + base)
        box = "".join(f"<{k}>{v:g}</{k}>" for k, v in coords.items())
        objects += (f"<object><name>{name}</name><difficult>0</difficult><bndbox>{box}</bndbox>"
                    "</object>")
    return f"<annotation><filename>a.jpg</filename>{size_xml}{objects}</annotation>"


def detections(image_id, boxes=BOXES, names=NAMES) -> list[dict]:
    """One detection identical to each box, as COCO results (xywh)."""
    return [{"image_id": image_id, "category_name": name, "score": 0.9 - 0.1 * k,
             "bbox": [x1, y1, x2 - x1, y2 - y1]}
            for k, (name, (x1, y1, x2, y2)) in enumerate(zip(names, boxes))]


def voc_root(tmp_path: Path, size=(100, 80), boxes=BOXES) -> Path:
    """A VOC root with one XML and no images (evaluation from the XMLs alone)."""
    root = tmp_path / "voc"
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    (root / "Annotations" / "a.xml").write_text(xml(boxes, NAMES, size, base=1))
    return root


def ilsvrc_folder(tmp_path: Path, size=(100, 80), boxes=BOXES) -> tuple[Path, Path]:
    """An ILSVRC folder (0-based XML of synsets and its 100 x 80 image) and its class map."""
    folder = tmp_path / "ilsvrc"
    folder.mkdir(exist_ok=True)
    (folder / "a.xml").write_text(xml(boxes, [SYNSETS[n] for n in NAMES], size, base=0))
    Image.new("RGB", (100, 80)).save(folder / "a.jpg")
    class_map = tmp_path / "map_det.txt"
    class_map.write_text("".join(f"{s} {k} {n}\n" for k, (n, s) in enumerate(SYNSETS.items(), 1)))
    return folder, class_map


def coco_json(tmp_path: Path, boxes=BOXES, names=NAMES, size=(100, 80)) -> Path:
    """The same ground truth as COCO instances (xywh, area = w * h), as pycocotools reads it."""
    cats = {name: k for k, name in enumerate(SYNSETS, 1)}
    anns = [{"id": k, "image_id": 1, "category_id": cats[name], "iscrowd": 0,
             "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)}
            for k, (name, (x1, y1, x2, y2)) in enumerate(zip(names, boxes), 1)]
    path = tmp_path / "gt.json"
    path.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg", "width": size[0], "height": size[1]}],
        "categories": [{"id": k, "name": name} for name, k in cats.items()],
        "annotations": anns}))
    return path


def pycocotools_stats(gt: Path, results: list[dict]) -> list[float]:
    """COCOeval's 12 summary numbers (results given by category_id)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt))
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(results), "bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return [float(v) for v in coco_eval.stats]


def by_category_id(results: list[dict], image_id: int = 1) -> list[dict]:
    cats = {name: k for k, name in enumerate(SYNSETS, 1)}
    return [{"image_id": image_id, "category_id": cats[r["category_name"]], "bbox": r["bbox"],
             "score": r["score"]} for r in results]


def quietly(function, *args, **kwargs):
    """Call ``function``; the readers' oddity warnings are checked by their own tests."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return function(*args, **kwargs)


# --- boxes reaching past the image edge ---------------------------------------------------------


@pytest.mark.parametrize("protocol", ["voc", "voc07", "coco"])
def test_voc_box_past_the_image_matches_an_identical_detection(tmp_path, protocol):
    result = quietly(evaluate_files, voc_root(tmp_path), detections("a"), protocol=protocol)
    assert result.mAP == pytest.approx(1.0)
    assert list(result.per_class.values()) == [pytest.approx(1.0)] * 2


def test_voc_boxes_scored_by_coco_as_pycocotools_scores_them(tmp_path):
    # The XML boxes as COCO JSON, unclipped: what pycocotools gives is what we give.
    ours = quietly(evaluate_files, voc_root(tmp_path), detections("a"), protocol="coco")
    shifted = [(x1 + 4.5, y1, x2 + 4.5, y2) for x1, y1, x2, y2 in BOXES]  # IoU below 1
    theirs = pycocotools_stats(coco_json(tmp_path), by_category_id(detections(1)))
    assert ours.stats == theirs and theirs[0] == 1.0
    ours = quietly(evaluate_files, voc_root(tmp_path), detections("a", shifted), protocol="coco")
    theirs = pycocotools_stats(coco_json(tmp_path), by_category_id(detections(1, shifted)))
    assert ours.stats == theirs and theirs[0] < 1.0


def test_ilsvrc_box_past_the_image_matches_an_identical_detection(tmp_path):
    folder, class_map = ilsvrc_folder(tmp_path)
    result = quietly(evaluate_files, folder, detections("a"), protocol="ilsvrc",
                     classes=class_map)
    assert result.mAP == pytest.approx(1.0)
    assert list(result.per_class.values()) == [pytest.approx(1.0)] * 2


@pytest.mark.parametrize("protocol", ["voc", "voc07", "ilsvrc"])
def test_coco_box_past_the_image_matches_an_identical_detection(tmp_path, protocol):
    result = quietly(evaluate_files, coco_json(tmp_path), by_category_id(detections(1)),
                     protocol=protocol)
    assert result.mAP == pytest.approx(1.0)


def test_coco_dataset_scores_as_pycocotools_with_every_box_kept(tmp_path):
    # A zero-size box (pycocotools keeps it: a positive no detection can match) and boxes past
    # the edge: the Dataset route (what training's validation takes) agrees with pycocotools.
    boxes, names = BOXES + [(20.0, 30.0, 20.0, 50.0)], NAMES + ["dog"]
    gt = coco_json(tmp_path, boxes, names)
    results = by_category_id(detections(1))
    dataset = quietly(load_dataset, gt)
    assert [len(r.labels) for r in dataset.images] == [4]
    ours = evaluate_results(dataset, results, "coco")
    assert ours.stats == pycocotools_stats(gt, results)
    assert ours.stats[8] == pytest.approx((1.0 + 0.5) / 2)  # AR@100: dog recall is 1 of 2


# --- an XML <size> that disagrees with the image ------------------------------------------------


@pytest.mark.parametrize("protocol", ["voc", "voc07", "coco"])
def test_wrong_xml_size_changes_nothing(tmp_path, protocol):
    # <size> says 50 x 40; the boxes lie on the real 100 x 80 image, some wholly outside 50 x 40.
    result = quietly(evaluate_files, voc_root(tmp_path, size=(50, 40)), detections("a"),
                     protocol=protocol)
    assert result.mAP == pytest.approx(1.0)


def test_wrong_xml_size_changes_nothing_for_ilsvrc(tmp_path):
    folder, class_map = ilsvrc_folder(tmp_path, size=(50, 40))
    result = quietly(evaluate_files, folder, detections("a"), protocol="ilsvrc",
                     classes=class_map)
    assert result.mAP == pytest.approx(1.0)


def test_evaluate_command_says_the_sizes_come_from_the_xmls(tmp_path, capsys):
    dets = tmp_path / "dets.json"
    dets.write_text(json.dumps(detections("a")))
    status = evaluate_main(["--gt", str(voc_root(tmp_path, size=(50, 40))), "--detections",
                            str(dets), "--protocol", "voc"])
    out, err = capsys.readouterr()
    assert status == 0, err
    lines = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(lines) == 1, err
    assert "3 ground-truth boxes reach past the image (kept as annotated" in lines[0]
    assert "the XMLs' <size>, not checked against the images" in lines[0]
    assert "100.0" in out  # mAP, in percent


def test_where_the_image_is_read_its_real_size_wins_with_one_warning(tmp_path):
    folder, class_map = ilsvrc_folder(tmp_path, size=(50, 40))
    dataset = quietly(load_dataset, folder, classes=class_map)
    records = list(dataset.images) * 3  # three images whose <size> is wrong
    sizes = [read_image(r.file_name).shape[1::-1] for r in records]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fixed = with_image_sizes(records, sizes)
    assert [(r.width, r.height) for r in fixed] == [(100, 80)] * 3
    assert len(caught) == 1
    message = str(caught[0].message)
    assert str(folder / "a.jpg") in message and "100 x 80" in message and "50 x 40" in message
    assert "2 more images" in message
    np.testing.assert_array_equal(fixed[0].boxes, records[0].boxes)  # ground truth untouched
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # sizes that agree: no warning
        assert with_image_sizes(fixed, sizes)[0] is fixed[0]
