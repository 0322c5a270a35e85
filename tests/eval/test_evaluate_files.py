"""eval.evaluate_files: --split / --classes on COCO JSON select exactly as pycocotools'
params.imgIds / params.catIds, options that cannot apply are refused by name, and ground truth
with nothing to evaluate is an error."""
import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np
import pytest

from eval.errors import DetectionError
from eval import evaluate_files, format_table
from eval.evaluate import check_options

from test_coco import SHARED, needs_shared, random_case


def pycocotools_stats(gt: dict, results: list, img_ids=None, cat_ids=None) -> np.ndarray:
    """COCOeval stats with params.imgIds / params.catIds set as given."""
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        e = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(results)), "bbox")
        if img_ids is not None:
            e.params.imgIds = sorted(img_ids)
        if cat_ids is not None:
            e.params.catIds = sorted(cat_ids)
        e.evaluate()
        e.accumulate()
        e.summarize()
    return np.array(e.stats)


def filtered(gt: dict, results: list, img_ids=None, cat_names=None) -> tuple[dict, list]:
    """The ground truth and results as files holding only the selected images / categories."""
    img_ids = {i["id"] for i in gt["images"]} if img_ids is None else set(img_ids)
    cats = [c for c in gt["categories"] if cat_names is None or c["name"] in cat_names]
    cat_ids = {c["id"] for c in cats}
    keep = lambda a: a["image_id"] in img_ids and a["category_id"] in cat_ids  # noqa: E731
    return ({"images": [i for i in gt["images"] if i["id"] in img_ids], "categories": cats,
             "annotations": [a for a in gt["annotations"] if keep(a)]},
            [r for r in results if keep(r)])


def write(path: Path, obj) -> Path:
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def selection_case(tmp_path, gt, results, img_ids, cat_names):
    """(evaluate_files with split/classes, evaluate_files on the filtered files)."""
    split = write(tmp_path / "split.txt", "\n".join(map(str, img_ids))) if img_ids else None
    classes = write(tmp_path / "classes.txt", "\n".join(cat_names)) if cat_names else None
    selected = evaluate_files(write(tmp_path / "gt.json", gt), write(tmp_path / "dt.json", results),
                              split=split, classes=classes)
    sub_gt, sub_dt = filtered(gt, results, img_ids, cat_names)
    alone = evaluate_files(write(tmp_path / "sub_gt.json", sub_gt),
                           write(tmp_path / "sub_dt.json", sub_dt))
    return selected, alone


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("select", ["images", "classes", "both"])
def test_selection_is_params_imgids_and_catids(tmp_path, seed, select):
    gt, results = random_case(seed)
    rng = np.random.default_rng(seed)
    ids = [i["id"] for i in gt["images"]]
    img_ids = sorted(int(i) for i in rng.choice(ids, 5, replace=False)) if select != "classes" else None
    names = sorted(c["name"] for c in gt["categories"][1:4]) if select != "images" else None
    selected, alone = selection_case(tmp_path, gt, results, img_ids, names)
    cat_ids = ([c["id"] for c in gt["categories"] if c["name"] in names] if names else None)
    expected = pycocotools_stats(gt, results, img_ids, cat_ids)
    np.testing.assert_allclose(selected.stats, expected, rtol=0, atol=1e-12)
    assert selected.stats == alone.stats and selected.per_class == alone.per_class
    whole = evaluate_files(tmp_path / "gt.json", tmp_path / "dt.json")
    assert selected.stats != whole.stats  # the selection did something
    if names:
        assert sorted(selected.per_class) == names


@needs_shared
def test_split_on_the_official_vector(tmp_path):
    """The issue's case: 10 image ids gave the mAP of all 100 images; now as pycocotools."""
    gt = json.loads((SHARED / "coco_eval/instances_val2014_100.json").read_text())
    results = json.loads((SHARED / "coco_eval/instances_val2014_fakebbox100_results.json").read_text())
    img_ids = sorted(i["id"] for i in gt["images"])[:10]
    selected, alone = selection_case(tmp_path, gt, results, img_ids, None)
    np.testing.assert_allclose(selected.stats, pycocotools_stats(gt, results, img_ids),
                               rtol=0, atol=1e-12)
    assert selected.stats == alone.stats
    whole = evaluate_files(SHARED / "coco_eval/instances_val2014_100.json",
                           SHARED / "coco_eval/instances_val2014_fakebbox100_results.json")
    assert abs(selected.mAP - whole.mAP) > 0.05


def test_split_by_file_name_and_voc_protocol_on_coco(tmp_path):
    gt, results = random_case(1)
    names = [Path(i["file_name"]).stem for i in gt["images"][:4]]
    write(tmp_path / "split.txt", "\n".join(n + ".jpg" for n in names))
    by_name = evaluate_files(write(tmp_path / "gt.json", gt), write(tmp_path / "dt.json", results),
                             split=tmp_path / "split.txt", protocol="voc")
    sub_gt, sub_dt = filtered(gt, results, [int(n) for n in names])
    alone = evaluate_files(write(tmp_path / "s.json", sub_gt), write(tmp_path / "d.json", sub_dt),
                           protocol="voc")
    assert by_name.per_class == alone.per_class and by_name.protocol == "voc"


def test_unknown_split_entry_and_class_are_refused(tmp_path):
    gt, results = random_case(2)
    write(tmp_path / "gt.json", gt), write(tmp_path / "dt.json", results)
    with pytest.raises(DetectionError, match=r"split.txt: image '999999' is not in"):
        evaluate_files(tmp_path / "gt.json", tmp_path / "dt.json",
                       split=write(tmp_path / "split.txt", "999999\n"))
    with pytest.raises(DetectionError, match=r"classes.txt: class 'zebra' is not a category"):
        evaluate_files(tmp_path / "gt.json", tmp_path / "dt.json",
                       classes=write(tmp_path / "classes.txt", "zebra\n"))


def test_options_that_cannot_apply_are_refused(tmp_path):
    with pytest.raises(DetectionError, match="--blacklist b.txt: .*COCO JSON"):
        check_options("gt.json", "auto", blacklist="b.txt")
    with pytest.raises(DetectionError, match="--blacklist b.txt: .*--protocol ilsvrc.*voc07"):
        check_options(tmp_path, "voc07", blacklist="b.txt")
    with pytest.raises(DetectionError, match="--protocol yolo"):
        check_options("gt.json", "yolo")
    assert check_options("gt.json", "auto") == "coco"
    assert check_options(tmp_path, "ilsvrc", blacklist="b.txt") == "ilsvrc"


def test_nothing_to_evaluate_is_an_error(tmp_path):
    gt, results = random_case(3)
    gt["annotations"] = []
    with pytest.raises(DetectionError, match=r"gt.json: no ground-truth object that counts"):
        evaluate_files(write(tmp_path / "gt.json", gt), write(tmp_path / "dt.json", results))
    gt, _ = random_case(3)
    for a in gt["annotations"]:
        a["iscrowd"] = 1  # crowd boxes count as nothing
    with pytest.raises(DetectionError, match="nothing to evaluate"):
        evaluate_files(write(tmp_path / "gt.json", gt), tmp_path / "dt.json", protocol="coco")


def test_nothing_to_evaluate_in_a_selection(tmp_path):
    gt, results = random_case(0)
    empty = next(i["id"] for i in gt["images"]
                 if not any(a["image_id"] == i["id"] for a in gt["annotations"]))
    with pytest.raises(DetectionError, match="after --split"):
        evaluate_files(write(tmp_path / "gt.json", gt), write(tmp_path / "dt.json", results),
                       split=write(tmp_path / "split.txt", f"{empty}\n"))


def test_format_table_lines():
    from eval.results import EvalResult

    table = format_table(EvalResult("voc", 0.5, {"cat": 1.0, "dog": None})).splitlines()
    assert table[-1] == "voc mAP: 50.00"
    assert table[2] == "cat    100.00" and "n/a (no ground truth)" in table[3]


def crowd_case(tmp_path) -> tuple[Path, Path]:
    """One object found, one crowd region with no detection."""
    gt = {"images": [{"id": 1, "width": 100, "height": 100}], "categories": [{"id": 1, "name": "a"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20],
                           "area": 400, "iscrowd": 0},
                          {"id": 2, "image_id": 1, "category_id": 1, "bbox": [50, 50, 30, 30],
                           "area": 900, "iscrowd": 1}]}
    results = [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "score": 0.9}]
    return write(tmp_path / "gt.json", gt), write(tmp_path / "dt.json", results)


def test_voc_protocol_on_coco_treats_crowd_as_difficult(tmp_path):
    gt, dt = crowd_case(tmp_path)
    assert evaluate_files(gt, dt, protocol="voc").per_class == {"a": 1.0}  # not 0.5: crowd unmissed
    with pytest.raises(DetectionError, match="gt.json: has crowd annotations .* ilsvrc"):
        evaluate_files(gt, dt, protocol="ilsvrc")


def test_coco_protocol_on_voc_treats_difficult_as_crowd(tmp_path):
    ann = tmp_path / "voc" / "Annotations"
    ann.mkdir(parents=True)
    objects = "".join(
        f"<object><name>a</name><difficult>{d}</difficult><bndbox><xmin>{x + 1}</xmin><ymin>{x + 1}"
        f"</ymin><xmax>{x + 20}</xmax><ymax>{x + 20}</ymax></bndbox></object>" for x, d in ((10, 0), (50, 1)))
    (ann / "i.xml").write_text(f"<annotation><size><width>100</width><height>100</height></size>"
                               f"{objects}</annotation>")
    results = [{"image_id": "i", "category_name": "a", "bbox": [10, 10, 20, 20], "score": 0.9}]
    out = evaluate_files(tmp_path / "voc", write(tmp_path / "dt.json", results), protocol="coco")
    assert out.per_class["a"] == pytest.approx(1.0)  # the missed difficult object is not a miss
