"""YOLO ground truth (eval.datasets.yolo): a data.yaml and a labels folder read as the same
Dataset, evaluated exactly as the same labels converted to COCO JSON; hand-computed boxes,
segments, pose lines, image ids, splits; every bad line one error naming the file and line."""
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from _yolo import COCO128, coco128_names, coco128_yolo, jittered, needs_coco128, yolo_to_coco
from eval.datasets import load_dataset
from eval.datasets.yolo import is_yolo
from eval.errors import DetectionError
from eval.evaluate import evaluate_files, guess_protocol


def quietly(function, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return function(*args, **kwargs)


@needs_coco128
def test_coco128_yolo_evaluates_as_the_same_labels_in_coco_json(tmp_path):
    data = coco128_yolo(tmp_path)
    coco = yolo_to_coco(tmp_path, coco128_names())
    gt_json = tmp_path / "gt.json"
    gt_json.write_text(json.dumps(coco))
    dets = jittered(coco)
    for protocol in ("coco", "voc", "voc07"):
        ours = quietly(evaluate_files, data, dets, protocol=protocol, split="train")
        theirs = quietly(evaluate_files, gt_json, dets, protocol=protocol)
        assert ours.per_class == theirs.per_class
        assert ours.mAP == theirs.mAP
        assert 0.3 < ours.mAP < 0.95  # misses, false boxes, moved boxes: a real case
        if protocol == "coco":
            assert len(ours.stats) == 12 and list(ours.stats) == list(theirs.stats)
    # The same detections naming their classes instead of numbering them.
    names = coco128_names()
    by_name = [{**{k: v for k, v in d.items() if k != "category_id"},
                "category_name": names[d["category_id"] - 1]} for d in dets]
    again = quietly(evaluate_files, data, by_name, protocol="coco", split="train")
    assert list(again.stats) == list(quietly(evaluate_files, gt_json, dets).stats)


@needs_coco128
def test_coco128_yolo_maps_as_the_shipped_coco_json(tmp_path):
    # instances_train2017_128.json was converted from these labels with COCO's own category
    # ids and boxes rounded to 0.01 px: same images, classes, labels, boxes.
    yolo = quietly(load_dataset, coco128_yolo(tmp_path), split="train")
    coco = load_dataset(COCO128 / "instances_train2017_128.json")
    assert yolo.classes == coco.classes and len(yolo.classes) == 80
    assert yolo.category_ids == tuple(range(1, 81))  # class index + 1
    assert [r.image_id for r in yolo.images] == [r.image_id for r in coco.images]
    assert isinstance(yolo.images[0].image_id, int)  # 000000000009.jpg is image 9, as in COCO
    for a, b in zip(yolo.images, coco.images):
        assert (a.width, a.height) == (b.width, b.height)
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_allclose(a.boxes, b.boxes, atol=0.011)
    assert sum(len(r.labels) for r in yolo.images) == 929


@needs_coco128
def test_labels_folder_reads_as_its_data_yaml(tmp_path):
    data = coco128_yolo(tmp_path)
    names = tmp_path / "coco.names"
    names.write_text("\n".join(coco128_names()) + "\n")
    # coco128's labels of images 656 and 659 have no image (250 and 508 have no labels): one
    # warning, and no box counted past the image (the labels' rounding is allowed).
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from_yaml = load_dataset(data, split="train")
        # images/ found in place of labels/; the names from a .names file or the data.yaml
        for classes in (names, data):
            folder = load_dataset(tmp_path / "labels" / "train2017", classes=classes)
            assert folder.classes == from_yaml.classes
            for a, b in zip(folder.images, from_yaml.images):
                assert (a.image_id, a.file_name) == (b.image_id, b.file_name)
                np.testing.assert_array_equal(a.boxes, b.boxes)
    assert len(caught) == 3, [str(w.message) for w in caught]
    for warning in caught:
        assert "2 label files without an image not read" in str(warning.message)
        assert "000000000656.txt" in str(warning.message)
    empty = [r.image_id for r in from_yaml.images if len(r.labels) == 0]
    assert empty == [250, 508]
    assert guess_protocol(data) == "coco"
    assert guess_protocol(tmp_path / "labels" / "train2017") == "coco"


# --- small hand-made datasets ---------------------------------------------------------------


def yolo_folder(tmp_path: Path, labels: dict[str, str], size=(100, 80), names=("cat", "dog"),
                yaml_extra: str = "") -> Path:
    """images/val/<stem>.png of ``size`` and labels/val/<stem>.txt (text as given; None: no
    label file), and a data.yaml naming them."""
    for stem, text in labels.items():
        (tmp_path / "images" / "val").mkdir(parents=True, exist_ok=True)
        (tmp_path / "labels" / "val").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size).save(tmp_path / "images" / "val" / f"{stem}.png")
        if text is not None:
            (tmp_path / "labels" / "val" / f"{stem}.txt").write_text(text)
    data = tmp_path / "data.yaml"
    data.write_text(f"path: .\nval: images/val\nnames: {list(names)}\n{yaml_extra}")
    return data


def test_boxes_by_hand(tmp_path):
    data = yolo_folder(tmp_path, {"a": "1 0.5 0.5 0.2 0.25\n\n0 0.25 0.5 0.5 1\n",
                                  "007": None})
    dataset = load_dataset(data)  # the only split named
    assert dataset.classes == ("cat", "dog") and dataset.category_ids == (1, 2)
    assert [r.image_id for r in dataset.images] == [7, "a"]  # ints (COCO's order) first
    a = dataset.images[1]
    np.testing.assert_array_equal(a.boxes, [[40, 30, 60, 50], [0, 0, 50, 80]])
    np.testing.assert_array_equal(a.labels, [2, 1])
    np.testing.assert_array_equal(a.areas, [400, 4000])
    assert (a.width, a.height) == (100, 80) and not a.difficult.any() and not a.iscrowd.any()
    assert len(dataset.images[0].labels) == 0  # no label file: a background image


def test_segment_line_counts_as_its_bounding_box(tmp_path):
    # A triangle (YOLO-seg) and an oriented box (4 points), as Ultralytics takes them.
    data = yolo_folder(tmp_path, {"a": "0 0.1 0.2 0.5 0.1 0.3 0.6\n1 0.2 0.2 0.4 0.2 0.4 0.4 "
                                       "0.2 0.4\n"})
    boxes = load_dataset(data).images[0].boxes
    np.testing.assert_allclose(boxes, [[10, 8, 50, 48], [20, 16, 40, 32]], rtol=1e-6)


def test_pose_lines_give_their_box(tmp_path):
    data = yolo_folder(tmp_path, {"a": "0 0.5 0.5 0.2 0.25 0.5 0.5 2 0.6 0.6 0\n"},
                       yaml_extra="kpt_shape: [2, 3]\n")
    np.testing.assert_array_equal(load_dataset(data).images[0].boxes, [[40, 30, 60, 50]])


def test_names_mapping_and_split_choice(tmp_path):
    data = yolo_folder(tmp_path, {"a": "1 0.5 0.5 0.2 0.25\n"})
    data.write_text("path: .\ntrain: images/val\nval: images/val\nnames: {1: dog, 0: cat}\n")
    assert load_dataset(data, split="val").classes == ("cat", "dog")
    with pytest.raises(DetectionError, match="names the splits train, val; pick one with --split"):
        load_dataset(data)
    with pytest.raises(DetectionError, match="has no 'test' split"):
        load_dataset(data, split="test")


def test_split_as_a_list_of_images(tmp_path):
    yolo_folder(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n", "b": "1 0.5 0.5 0.2 0.2\n"})
    (tmp_path / "val.txt").write_text("./images/val/b.png\n")
    data = tmp_path / "list.yaml"
    data.write_text("val: val.txt\nnames: [cat, dog]\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a.txt is not read, rightly: a.png is not in the list
        dataset = load_dataset(data, split="val")
    assert [r.image_id for r in dataset.images] == ["b"]
    assert dataset.images[0].labels.tolist() == [2]


def test_labels_folder_with_images_beside_and_unread_labels(tmp_path):
    folder = tmp_path / "darknet"
    folder.mkdir()
    Image.new("RGB", (100, 80)).save(folder / "a.jpg")
    (folder / "a.txt").write_text("1 0.5 0.5 0.2 0.25\n")
    (folder / "orphan.txt").write_text("0 0.5 0.5 0.2 0.25\n")
    (folder / "obj.names").write_text("cat\ndog\n")
    with pytest.warns(UserWarning, match="1 label file without an image not read .*orphan.txt"):
        dataset = load_dataset(folder, classes=folder / "obj.names")
    assert [r.image_id for r in dataset.images] == ["a"]
    (tmp_path / "split.txt").write_text("b\n")
    with pytest.raises(DetectionError, match="'b' is not an image id"):
        quietly(load_dataset, folder, classes=folder / "obj.names", split=tmp_path / "split.txt")


def test_label_within_the_rounding_slack_is_kept_as_annotated(tmp_path):
    data = yolo_folder(tmp_path, {"a": "0 0.5 0.5 1.005 0.2\n"})
    with pytest.warns(UserWarning, match="1 ground-truth box reaches past the image"):
        boxes = load_dataset(data).images[0].boxes
    np.testing.assert_allclose(boxes, [[-0.25, 32, 100.25, 48]])


BAD_LINES = {
    "0 0.5 0.5 0.2": "4 fields",
    "0 0.5 0.5 0.2 0.2 0.9": "a 6th number is a score",
    "0 0.1 0.1 0.2 0.1 0.2 0.2 0.3": "8 fields",
    "0 0.5 half 0.2 0.2": "'half' is not a number",
    "0 0.5 nan 0.2 0.2": "'nan' is not a number",
    "2 0.5 0.5 0.2 0.2": "class 2 is not a class index 0..1",
    "-1 0.5 0.5 0.2 0.2": "class -1 is not a class index",
    "0.5 0.5 0.5 0.2 0.2": "class 0.5 is not a class index",
    "0 0.5 0.5 40 20": "w 40 is outside [0, 1]",
    "0 1.2 0.5 0.2 0.2": "cx 1.2 is outside [0, 1]",
    "0 0.5 0.5 -0.001 0.2": "w -0.001 is a negative size",
    "0 0.1 0.2 0.5 1.5 0.3 0.6": "y 1.5 is outside [0, 1]",
}


@pytest.mark.parametrize("line", BAD_LINES)
def test_bad_line_is_one_error_naming_file_and_line(tmp_path, line):
    data = yolo_folder(tmp_path, {"a": f"0 0.5 0.5 0.2 0.2\n{line}\n"})
    with pytest.raises(DetectionError) as caught:
        load_dataset(data)
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'labels' / 'val' / 'a.txt'} line 2: ")
    assert BAD_LINES[line] in message and "fix the line" in message


@pytest.mark.parametrize("yaml_text, expected", [
    ("val: images/val\n", "'names' must list the class names"),
    ("val: images/val\nnames: {0: cat, 2: dog}\n", "keys of 'names' must be the class indices"),
    ("val: images/val\nnames: [cat, cat]\n", "'cat' is named twice"),
    ("val: images/val\nnames: [cat, no]\n", "class 1 is named False"),
    ("val: images/val\nnc: 3\nnames: [cat, dog]\n", "nc is 3 but 'names' has 2"),
    ("val: images/nowhere\nnames: [cat, dog]\n", "does not exist"),
    ("val: images/val\nnames: [cat, dog]\nkpt_shape: [17, 4]\n", "kpt_shape must be"),
    ("- val\n", "not a mapping"),
    ("val: images/val\nval: images/val\nnames: [a]\n", "lines 1 and 2"),  # the safe loader's
])
def test_bad_data_yaml_is_one_error_naming_it(tmp_path, yaml_text, expected):
    data = yolo_folder(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n"})
    data.write_text(yaml_text)
    with pytest.raises(DetectionError, match=re.escape(expected)) as caught:
        load_dataset(data)
    assert str(data) in str(caught.value)


def test_dataset_without_any_label_file_is_refused(tmp_path):
    data = yolo_folder(tmp_path, {"a": None, "b": None})
    with pytest.raises(DetectionError, match="none of the 2 images has a label file"):
        load_dataset(data)


def test_options_that_do_not_apply_are_refused(tmp_path):
    data = yolo_folder(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n"})
    with pytest.raises(DetectionError, match="takes no images option"):
        load_dataset(data, images=tmp_path / "images" / "val")
    with pytest.raises(DetectionError, match="pass the class names"):
        load_dataset(tmp_path / "labels" / "val")
    with pytest.raises(DetectionError, match="a data.yaml's split is train, val or test"):
        load_dataset(data, split="configs/split.txt")


def test_exif_rotated_image_is_one_warning(tmp_path):
    data = yolo_folder(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n", "b": "0 0.5 0.5 0.2 0.2\n"})
    exif = Image.Exif()
    exif[0x0112] = 6
    for stem in "ab":
        Image.new("RGB", (100, 80)).save(tmp_path / "images" / "val" / f"{stem}.png", exif=exif)
    with pytest.warns(UserWarning, match=r"a.png \(and 1 more image\) has an EXIF orientation"):
        dataset = load_dataset(data)
    assert (dataset.images[0].width, dataset.images[0].height) == (100, 80)  # stored pixels


def test_image_whose_size_cannot_be_read_is_one_error(tmp_path):
    # Its labels cannot be placed without the size: refused at load, naming the image (an XML
    # with <size> lets the commands skip such an image later; a YOLO label cannot).
    data = yolo_folder(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n", "b": "0 0.5 0.5 0.2 0.2\n"})
    bad = tmp_path / "images" / "val" / "b.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(DetectionError, match=re.escape(f"{bad}: cannot read the image's size")):
        load_dataset(data)


def test_xml_folder_with_a_names_class_file_is_read_as_voc():
    """voc100 ships its class list as voc.names: the XML folder stays VOC whatever the list's
    suffix (a .names file once made any folder count as YOLO labels)."""
    voc = COCO128.parent / "voc100"
    if not voc.is_dir():
        pytest.skip(f"{voc} is not here")
    gt, names = voc / "gts" / "pascalvoc_format", voc / "voc.names"
    assert not is_yolo(gt, names)
    dataset = load_dataset(gt, images=voc / "images", classes=names)
    assert len(dataset.images) == 100 and sum(len(im.boxes) for im in dataset.images) > 100
