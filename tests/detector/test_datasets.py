"""Dataset readers: hand-computed conversions on generated fixtures, every malformed input, and
integration tests on ../shared/data (skipped when that folder is absent)."""
from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from eval.datasets import (
                           CocoInstances, Dataset, load_coco, load_coco_instances, load_dataset, load_ilsvrc, load_voc,
                           load_voc_folder, parse_coco_instances, read_class_list, read_image,
                           )
from eval.errors import DetectionError

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"real data folder {DATA} is absent")


# --- fixture writers ---------------------------------------------------------------------------


def voc_xml(filename: str = "a.jpg", size: tuple[int, int] | None = (100, 80),
            objects: list[tuple] = (), extra: str = "") -> str:
    """A VOC XML; each object is (name, xmin, ymin, xmax, ymax[, difficult])."""
    size_xml = "" if size is None else (
        f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>")
    objs = ""
    for name, *coords in objects:
        flag = f"<difficult>{coords[4]}</difficult>" if len(coords) > 4 else ""
        box = "".join(f"<{t}>{v}</{t}>" for t, v in zip(("xmin", "ymin", "xmax", "ymax"), coords))
        objs += f"<object><name>{name}</name>{flag}<bndbox>{box}</bndbox></object>"
    return f"<annotation><filename>{filename}</filename>{size_xml}{objs}{extra}</annotation>"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def voc_folder(tmp_path: Path, xmls: dict[str, str], images: tuple[str, ...] = ()) -> Path:
    """XMLs ``{stem: xml}`` and empty image files (only their existence is checked)."""
    folder = tmp_path / "ann"
    for stem, text in xmls.items():
        write(folder / f"{stem}.xml", text)
    for name in images or [f"{stem}.jpg" for stem in xmls]:
        (folder / name).touch()
    return folder


def one_warning(record: list) -> str:
    assert len(record) == 1, [str(w.message) for w in record]
    return str(record[0].message)


# --- PASCAL VOC --------------------------------------------------------------------------------


def test_voc_coordinates_labels_and_difficult(tmp_path):
    folder = voc_folder(tmp_path, {
        "a": voc_xml("a.jpg", (200, 80), [("cat", 1, 1, 10, 10, 1), ("dog", "174.0", 2, 180, 20)]),
        "b": voc_xml("b.jpg", objects=[("dog", 5, 6, 5, 6, 0)]),
    })
    ds = load_voc_folder(folder, classes=["dog", "cat"])
    a, b = ds.images
    assert (a.image_id, b.image_id) == ("a", "b")
    # 1-based inclusive pixels: xmin=1..xmax=10 covers the continuous span 0..10.
    np.testing.assert_array_equal(a.boxes, [[0, 0, 10, 10], [173, 1, 180, 20]])
    np.testing.assert_array_equal(b.boxes, [[4, 5, 5, 6]])  # a single pixel: 1 x 1
    assert a.boxes.dtype == np.float32 and a.labels.dtype == np.int64
    assert a.labels.tolist() == [2, 1] and b.labels.tolist() == [1]
    assert a.difficult.tolist() == [True, False] and b.difficult.tolist() == [False]
    np.testing.assert_array_equal(a.areas, [100.0, 7 * 19])
    assert ds.classes == ("dog", "cat") and ds.category_ids == (1, 2)
    assert (a.width, a.height) == (200, 80) and a.file_name == str(folder / "a.jpg")


def test_voc_default_classes_are_sorted_and_empty_images_kept(tmp_path):
    folder = voc_folder(tmp_path, {"x": voc_xml(objects=[("zebra", 1, 1, 5, 5)]),
                                   "y": voc_xml(objects=[("ant", 1, 1, 5, 5)]),
                                   "z": voc_xml()})
    ds = load_voc_folder(folder)
    assert ds.classes == ("ant", "zebra")
    assert [r.labels.tolist() for r in ds.images] == [[2], [1], []]
    empty = ds.images[2]
    assert empty.boxes.shape == (0, 4) and empty.boxes.dtype == np.float32
    assert empty.labels.dtype == np.int64 and empty.difficult.dtype == bool
    assert empty.areas.shape == (0,) and empty.areas.dtype == np.float64


def test_voc_boxes_past_the_image_are_kept_and_counted_in_one_warning(tmp_path):
    # The devkit never clips ground truth: boxes stay as annotated, the oddity is one warning.
    folder = voc_folder(tmp_path, {
        "a": voc_xml(size=(50, 40), objects=[("c", 0, 1, 60, 10), ("c", 1, 1, 10, 10)]),
        "b": voc_xml(size=(50, 40), objects=[("c", 10, 30, 20, 45), ("c", 60, 1, 70, 10)]),
    })
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        ds = load_voc_folder(folder)
    message = one_warning(record)
    assert "3 ground-truth boxes reach past the image (kept as annotated" in message
    assert "the XMLs' <size>, not checked against the images" in message
    assert "zero-size" not in message and str(folder) in message
    np.testing.assert_array_equal(ds.images[0].boxes, [[-1, 0, 60, 10], [0, 0, 10, 10]])
    np.testing.assert_array_equal(ds.images[1].boxes, [[9, 29, 20, 45], [59, 0, 70, 10]])
    np.testing.assert_array_equal(ds.images[1].areas, [11 * 16, 11 * 10])
    assert (ds.images[1].width, ds.images[1].height) == (50, 40)  # <size> as written


def test_voc_size_from_image_and_image_lookup(tmp_path):
    folder = voc_folder(tmp_path, {"a": voc_xml("a.jpg", size=None, objects=[("c", 1, 1, 3, 3)]),
                                   "b": voc_xml("b.jpg", size=(0, 0))}, images=("x",))
    images = tmp_path / "img"
    images.mkdir()
    Image.new("RGB", (7, 5)).save(images / "a.png")  # <filename> says .jpg: found by stem
    Image.new("L", (3, 9)).save(images / "b.jpg")
    a, b = load_voc_folder(folder, images_dir=images).images
    assert (a.width, a.height, a.file_name) == (7, 5, str(images / "a.png"))
    assert (b.width, b.height) == (3, 9)
    (images / "a.png").unlink()
    with pytest.raises(DetectionError, match=r"a\.xml.*not in .*img.*a\.jpg, .*a\.png"):
        load_voc_folder(folder, images_dir=images)


@pytest.mark.parametrize("xml, match", [
    ("<annotation><object>", "not valid XML"),
    (voc_xml(objects=[("c", 1, 1, 5, 5)], extra="<object><bndbox/></object>"),
     r"object #2 has no <name>"),
    (voc_xml(extra="<object><name>c</name></object>"), r"object #1 has no <bndbox>"),
    (voc_xml(objects=[("c", "abc", 1, 5, 5)]), r"object #1 \(c\): <xmin> is 'abc', not a number"),
    (voc_xml(extra="<object><name>c</name><bndbox><xmin>1</xmin></bndbox></object>"),
     "<ymin> is missing"),
    (voc_xml(objects=[("c", 9, 1, 5, 5)]), "inverted box"),
    (voc_xml(objects=[("c", 1, 1, 5, 5, "yes")]), "<difficult> is 'yes'"),
    (voc_xml(objects=[("dog", 1, 1, 5, 5)]), r"'dog', which is not in the class file .*classes"),
    ("<annotation><size><width>wide</width></size></annotation>", "<size/width> is 'wide'"),
])
def test_voc_malformed_xml_names_file_and_entry(tmp_path, xml, match):
    folder = voc_folder(tmp_path, {"good": voc_xml(objects=[("c", 1, 1, 2, 2)]), "bad": xml})
    classes = write(tmp_path / "classes.txt", "c\n")
    with pytest.raises(DetectionError, match=match) as err:
        load_voc_folder(folder, classes=classes)
    assert "bad.xml" in str(err.value)


def test_class_list_files(tmp_path):
    plain = write(tmp_path / "plain.txt", "# my classes\ndog\n\ndining table\n")
    assert read_class_list(plain) == ("dog", "dining table")
    mapped = write(tmp_path / "map_det.txt", "n02 2 bird of prey\nn01 1 accordion\nn03 3\n")
    assert read_class_list(mapped) == ("accordion", "bird of prey", "n03")
    write(tmp_path / "gap.txt", "n01 1 a\nn03 3 c\n")
    with pytest.raises(DetectionError, match=r"gap\.txt.*index 2 is missing"):
        read_class_list(tmp_path / "gap.txt")
    with pytest.raises(DetectionError, match="nothing.txt"):
        read_class_list(tmp_path / "nothing.txt")
    folder = voc_folder(tmp_path, {"a": voc_xml(objects=[("n02", 1, 1, 2, 2)])})
    assert load_voc_folder(folder, classes=mapped).images[0].labels.tolist() == [2]


def test_voc_folder_split_files(tmp_path):
    folder = voc_folder(tmp_path, {s: voc_xml(f"{s}.jpg", objects=[("c", 1, 1, 2, 2)])
                                   for s in "abcd"})
    txt = write(tmp_path / "split.txt", "d\nb.jpg 1\n\n")
    assert [r.image_id for r in load_voc_folder(folder, split_file=txt).images] == ["b", "d"]
    csv_split = write(tmp_path / "labels.csv", "filename,width,class\nc.jpg,1,x\na.jpg,1,x\n"
                                               "c.jpg,1,y\n")
    assert [r.image_id for r in load_voc_folder(folder, split_file=csv_split).images] == ["a", "c"]
    write(tmp_path / "bad.txt", "a\nzz\n")
    with pytest.raises(DetectionError, match=r"bad\.txt: 1 image without an XML.*'zz'"):
        load_voc_folder(folder, split_file=tmp_path / "bad.txt")
    write(tmp_path / "bad.csv", "file,x\na.jpg,1\n")
    with pytest.raises(DetectionError, match=r"bad\.csv: no 'filename' column"):
        load_voc_folder(folder, split_file=tmp_path / "bad.csv")


def make_voc_root(tmp_path: Path) -> Path:
    root = tmp_path / "VOC2007"
    for stem in ("001", "002", "003"):
        write(root / "Annotations" / f"{stem}.xml",
              voc_xml(f"{stem}.jpg", objects=[("car", 1, 1, 4, 4, int(stem == "002"))]))
    write(root / "ImageSets" / "Main" / "val.txt", "003\n001\n")
    return root


def test_voc_root_splits(tmp_path):
    root = make_voc_root(tmp_path)  # no JPEGImages: evaluation needs only the XMLs
    ds = load_voc(root)
    assert [r.image_id for r in ds.images] == ["001", "002", "003"]
    assert ds.images[0].file_name == str(root / "JPEGImages" / "001.jpg")
    assert [r.difficult.tolist() for r in ds.images] == [[False], [True], [False]]
    assert [r.image_id for r in load_voc(root, split="val").images] == ["001", "003"]
    own = write(tmp_path / "mine.txt", "002\n")
    assert [r.image_id for r in load_voc(root, split=str(own)).images] == ["002"]
    with pytest.raises(DetectionError, match=r"VOC2007: no split 'test'"):
        load_voc(root, split="test")
    with pytest.raises(DetectionError, match="no Annotations/ folder"):
        load_voc(tmp_path)


# --- ILSVRC ------------------------------------------------------------------------------------


def make_ilsvrc(tmp_path: Path) -> tuple[Path, Path, Path]:
    """3 val images; 0-based inclusive XML coordinates; XML filenames without extension."""
    ann, img = tmp_path / "Annotations", tmp_path / "Data"
    names = ["ILSVRC2013_val_00000001", "ILSVRC2013_val_00000002", "ILSVRC2013_val_00000003"]
    objects = [[("n02672831", 0, 0, 9, 9)], [("n02691156", 5, 5, 14, 24, 0)],
               [("n02672831", 1, 2, 3, 4), ("n02691156", 0, 0, 0, 0)]]
    for name, objs in zip(names, objects):
        write(ann / f"{name}.xml", voc_xml(name, size=(50, 40), objects=objs))
        write(img / f"{name}.JPEG", "")
    class_map = write(tmp_path / "map_det.txt", "n02672831 1 accordion\n"
                                                "n02691156 2 airplane\n")
    return ann, img, class_map


def test_ilsvrc_coordinates_classes_and_images(tmp_path):
    ann, img, class_map = make_ilsvrc(tmp_path)
    ds = load_ilsvrc(ann, class_map, images_dir=img)
    assert ds.classes == ("accordion", "airplane") and ds.category_ids == (1, 2)
    # 0-based inclusive: xmin=0..xmax=9 is ten pixels, the continuous span 0..10.
    np.testing.assert_array_equal(ds.images[0].boxes, [[0, 0, 10, 10]])
    np.testing.assert_array_equal(ds.images[1].boxes, [[5, 5, 15, 25]])
    np.testing.assert_array_equal(ds.images[2].boxes, [[1, 2, 4, 5], [0, 0, 1, 1]])
    assert [r.labels.tolist() for r in ds.images] == [[1], [2], [1, 2]]
    assert ds.images[0].file_name == str(img / "ILSVRC2013_val_00000001.JPEG")
    assert ds.images[0].image_id == "ILSVRC2013_val_00000001" and ds.blacklist == frozenset()


def test_ilsvrc_blacklist_maps_split_index_to_position(tmp_path):
    ann, img, class_map = make_ilsvrc(tmp_path)
    # The devkit's val.txt: "<id> <index>"; the dataset is sorted by id, the index is kept.
    split = write(tmp_path / "val.txt", "ILSVRC2013_val_00000003 7\nILSVRC2013_val_00000001 9\n")
    blacklist = write(tmp_path / "blacklist.txt", "7 2\n9 n02672831\n")
    ds = load_ilsvrc(ann, class_map, img, split_file=split, blacklist=blacklist)
    assert [r.image_id for r in ds.images] == ["ILSVRC2013_val_00000001", "ILSVRC2013_val_00000003"]
    assert ds.blacklist == frozenset({(1, 2), (0, 1)})
    # Without a split file the index is the 1-based position among the sorted XMLs.
    write(blacklist, "2 1\n3 2\n")
    assert load_ilsvrc(ann, class_map, img, blacklist=blacklist).blacklist == {(1, 1), (2, 2)}
    for bad in ("4 1", "1 3", "1 n09999999", "x 1"):
        write(blacklist, f"1 1\n{bad}\n")
        with pytest.raises(DetectionError, match=r"blacklist\.txt line 2"):
            load_ilsvrc(ann, class_map, img, blacklist=blacklist)


def test_ilsvrc_errors(tmp_path):
    ann, img, class_map = make_ilsvrc(tmp_path)
    write(tmp_path / "short_map.txt", "n02672831 1 accordion\n")
    with pytest.raises(DetectionError, match=r"00000002\.xml.*'n02691156'.*short_map\.txt"):
        load_ilsvrc(ann, tmp_path / "short_map.txt", img)
    write(tmp_path / "gap_map.txt", "n02672831 1 accordion\nn02691156 3 airplane\n")
    with pytest.raises(DetectionError, match=r"gap_map\.txt.*index 2 is missing"):
        load_ilsvrc(ann, tmp_path / "gap_map.txt", img)
    with pytest.raises(DetectionError, match=r"00000001\.xml: its image is not in .*JPEG"):
        load_ilsvrc(ann, class_map)


# --- COCO --------------------------------------------------------------------------------------


def coco_dict() -> dict:
    return {
        "images": [{"id": 7, "file_name": "b.jpg", "width": 20, "height": 10},
                   {"id": 3, "file_name": "a.jpg", "width": 30, "height": 40},
                   {"id": 5, "file_name": "c.jpg", "width": 10, "height": 10}],
        "categories": [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}],
        "annotations": [
            {"id": 11, "image_id": 7, "category_id": 18, "bbox": [1.5, 2, 3, 4], "area": 9.25,
             "iscrowd": 0},
            {"id": 4, "image_id": 3, "category_id": 1, "bbox": [0, 0, 10, 20], "iscrowd": 1},
            {"id": 12, "image_id": 7, "category_id": 1, "bbox": [15, 5, 10, 10], "area": 50},
            {"id": 13, "image_id": 7, "category_id": 1, "bbox": [4, 4, 0, 3], "area": 0},
        ],
    }


def test_coco_instances_arrays():
    inst = parse_coco_instances(coco_dict(), "x.json")
    assert isinstance(inst, CocoInstances) and inst.source == "x.json"
    assert inst.image_ids.tolist() == [3, 5, 7] and inst.file_names == ("a.jpg", "c.jpg", "b.jpg")
    assert inst.widths.tolist() == [30, 10, 20] and inst.heights.tolist() == [40, 10, 10]
    assert inst.category_ids.tolist() == [1, 18] and inst.category_names == ("person", "dog")
    assert inst.ann_ids.tolist() == [11, 4, 12, 13]  # file order
    assert inst.ann_image.tolist() == [2, 0, 2, 2] and inst.ann_label.tolist() == [2, 1, 1, 1]
    assert inst.ann_bbox.dtype == np.float64 and inst.ann_bbox[0].tolist() == [1.5, 2, 3, 4]
    assert inst.ann_bbox[3].tolist() == [4, 4, 0, 3]  # zero-size kept as pycocotools keeps it
    assert inst.ann_area.tolist() == [9.25, 200.0, 50.0, 0.0]  # missing area = w * h
    assert inst.ann_iscrowd.tolist() == [False, True, False, False]


def test_load_coco_converts_keeps_every_box_and_maps_labels():
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        ds = load_coco(coco_dict(), image_root="imgs")
    message = one_warning(record)
    assert "1 ground-truth box reaches past the image (kept as annotated" in message
    assert "1 zero-size box kept as annotated" in message
    assert isinstance(ds, Dataset) and ds.classes == ("person", "dog")
    assert ds.category_ids == (1, 18)
    a, c, b = ds.images
    assert (a.image_id, a.file_name) == (3, str(Path("imgs") / "a.jpg"))
    np.testing.assert_array_equal(a.boxes, [[0, 0, 10, 20]])
    assert a.iscrowd.tolist() == [True] and a.areas.tolist() == [200.0]
    assert c.boxes.shape == (0, 4) and c.labels.shape == (0,) and c.labels.dtype == np.int64
    # As pycocotools keeps them: not clipped to the 20 x 10 image, the zero-size box not dropped.
    np.testing.assert_array_equal(b.boxes, [[1.5, 2, 4.5, 6], [15, 5, 25, 15], [4, 4, 4, 7]])
    assert b.labels.tolist() == [2, 1, 1] and b.areas.tolist() == [9.25, 50.0, 0.0]
    assert not b.difficult.any()


def test_load_coco_keeps_file_order_within_each_image():
    # Enough annotations that an unstable sort would reorder them (ties are broken by order).
    anns = [{"id": 100 - i, "image_id": i % 2, "category_id": 1, "bbox": [i, 0, 1, 1]}
            for i in range(40)]
    ds = load_coco({"images": [{"id": k, "width": 50, "height": 5} for k in (0, 1)],
                    "categories": [{"id": 1, "name": "c"}], "annotations": anns})
    assert ds.images[0].boxes[:, 0].tolist() == list(range(0, 40, 2))
    assert ds.images[1].boxes[:, 0].tolist() == list(range(1, 40, 2))


def _broken(path: str, value) -> dict:
    """coco_dict() with the entry at ``path`` ("annotations.1.bbox") set to value (or deleted)."""
    obj = coco_dict()
    *parents, key = path.split(".")
    target = obj
    for p in parents:
        target = target[int(p)] if p.isdigit() else target[p]
    if value is KeyError:
        del target[int(key) if key.isdigit() else key]
    else:
        target[int(key) if key.isdigit() else key] = value
    return obj


@pytest.mark.parametrize("path, value, match", [
    ("images", KeyError, "needs 'images', 'annotations' and 'categories'"),
    ("annotations.1.bbox", KeyError, r"annotation #1 \(id 4\) lacks bbox"),
    ("annotations.1.image_id", KeyError, r"annotation #1 \(id 4\) lacks image_id"),
    ("annotations.2.category_id", KeyError, r"annotation #2 \(id 12\) lacks category_id"),
    ("annotations.1.bbox", [1, 2, 3], r"annotation #1 \(id 4\): bbox must be 4"),
    ("annotations.1.bbox", [1, 2, "3", 4], r"annotation #1 \(id 4\): bbox must be 4"),
    ("annotations.1.bbox", [1, 2, float("nan"), 4], "bbox must be 4 finite numbers"),
    ("annotations.1.bbox", [1, 2, float("inf"), 4], "bbox must be 4 finite numbers"),
    ("annotations.0.bbox", [1, 2, -3, 4], r"annotation #0 \(id 11\).*negative width"),
    ("annotations.0.image_id", 99, r"annotation #0 \(id 11\): image_id 99 is not in 'images'"),
    ("annotations.0.category_id", 2, r"annotation #0 \(id 11\): category_id 2 is not in"),
    ("annotations.3.id", 11, r"annotation #3 \(id 11\) repeats the id of annotation #0"),
    ("images.1.id", 7, r"images\[1\]: id 7 is not a unique integer"),
    ("categories.1.id", 18, r"categories\[1\]: id 18 is not a unique integer"),
    ("annotations.0.bbox", [True, 2, 3, 4], r"annotation #0 \(id 11\): bbox must be 4"),
    ("annotations.0.area", True, r"annotation #0 \(id 11\): area True is not"),
    ("annotations.0.area", -1.0, r"annotation #0 \(id 11\): area -1.0 is not a finite number >= 0"),
    ("annotations.0.area", 10 ** 400, r"annotation #0 \(id 11\): area 1000.*\.\.\. is not"),
    ("annotations.0.iscrowd", "no", r"annotation #0 \(id 11\): iscrowd 'no' is not 0, 1"),
    ("annotations.0.iscrowd", 0.5, r"iscrowd 0.5 is not 0, 1, true or false"),
    ("categories.1.name", "dog", r"categories 1 and 18 are both named 'dog'"),
    ("categories.1.name", None, r"category id 1 has name None"),
    ("images.0.width", True, r"image id 7: width and height must be positive"),
    ("images.0.width", 10 ** 30, r"image id 7: width and height must be positive"),
])
def test_coco_malformed_names_source_and_entry(path, value, match):
    with pytest.raises(DetectionError, match=match) as err:
        parse_coco_instances(_broken(path, value), "gt.json")
    assert str(err.value).startswith("gt.json: ")


def test_coco_file_errors(tmp_path):
    bad = write(tmp_path / "bad.json", '{"images": [],\n "annotations": [,]}')
    with pytest.raises(DetectionError, match=r"bad\.json: invalid JSON \(.* at line 2, column 18\)"):
        load_coco_instances(bad)
    with pytest.raises(DetectionError, match=r"missing\.json"):
        load_coco_instances(tmp_path / "missing.json")
    good = write(tmp_path / "gt.json", json.dumps(coco_dict()))
    assert load_coco_instances(good).source == str(good)


# --- load_dataset ------------------------------------------------------------------------------


def test_load_dataset_detects_each_format(tmp_path):
    coco = write(tmp_path / "gt.json", json.dumps({**coco_dict(), "annotations": []}))
    assert load_dataset(str(coco)).images[0].image_id == 3
    root = make_voc_root(tmp_path / "voc")
    assert [r.image_id for r in load_dataset(str(root), split="val").images] == ["001", "003"]
    folder = voc_folder(tmp_path / "plain", {"a": voc_xml(objects=[("c", 1, 1, 2, 2)])})
    assert load_dataset(str(folder)).classes == ("c",)
    ann, img, class_map = make_ilsvrc(tmp_path / "ilsvrc")
    ds = load_dataset(str(ann), images=str(img), classes=str(class_map))
    assert ds.classes == ("accordion", "airplane")
    np.testing.assert_array_equal(ds.images[0].boxes, [[0, 0, 10, 10]])  # ILSVRC's 0-based rule
    with pytest.raises(DetectionError, match="WordNet synsets"):
        load_dataset(str(ann), images=str(img))
    with pytest.raises(DetectionError, match=r"nowhere.*no such file or folder"):
        load_dataset(str(tmp_path / "nowhere"))
    with pytest.raises(DetectionError, match="COCO JSON takes no blacklist option"):
        load_dataset(str(coco), blacklist="b.txt")


def test_module_imports_neither_torch_nor_pillow():
    code = ("import sys, eval.datasets; "
            "print(sorted(m for m in ('torch', 'PIL') if m in sys.modules))")
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(root)}, check=True)
    assert out.stdout.strip() == "[]"


# --- images ------------------------------------------------------------------------------------


def save(im: Image.Image, path: Path, **kwargs) -> Path:
    im.save(path, **kwargs)
    return path


def test_read_image_every_mode(tmp_path):
    gray16 = Image.fromarray(np.array([[0, 256, 65535, 0x1234]], np.uint16))
    palette = Image.new("P", (2, 1))
    palette.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    palette.putpixel((1, 0), 1)
    rgba = Image.new("RGBA", (2, 1), (10, 20, 30, 0))
    cases = {
        "I;16": (save(gray16, tmp_path / "g16.png"), [0, 1, 255, 0x12]),
        "I;16B": (save(gray16.convert("I").convert("I;16B"), tmp_path / "g16b.tif"),
                  [0, 1, 255, 0x12]),
        "I": (save(Image.fromarray(np.array([[-5, 7, 300]], np.int32)), tmp_path / "i.tif"),
              [0, 7, 255]),
        "F": (save(Image.fromarray(np.array([[-1.0, 7.6, 1e6]], np.float32)), tmp_path / "f.tif"),
              [0, 8, 255]),
        "L": (save(Image.new("L", (2, 1), 77), tmp_path / "l.png"), [77, 77]),
        "1": (save(Image.new("1", (2, 1), 1), tmp_path / "b.png"), [255, 255]),
        "LA": (save(Image.new("LA", (2, 1), (90, 0)), tmp_path / "la.png"), [90, 90]),
    }
    for mode, (path, gray) in cases.items():
        with Image.open(path) as im:
            assert im.mode == mode, (path, im.mode)
        rgb = read_image(path)
        assert rgb.dtype == np.uint8 and rgb.shape == (1, len(gray), 3), mode
        np.testing.assert_array_equal(rgb, np.repeat(np.array(gray)[None, :, None], 3, 2), mode)
    np.testing.assert_array_equal(read_image(save(palette, tmp_path / "p.png")),
                                  [[[255, 0, 0], [0, 255, 0]]])
    # Per-entry alpha ("transparency expressed in bytes") makes Pillow warn unless taken via RGBA.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pixels = read_image(save(palette, tmp_path / "pt.png", transparency=bytes([0, 128])))
    np.testing.assert_array_equal(pixels, [[[255, 0, 0], [0, 255, 0]]])
    np.testing.assert_array_equal(read_image(save(rgba, tmp_path / "rgba.png")),
                                  [[[10, 20, 30]] * 2])


def test_read_image_cmyk_and_ycbcr(tmp_path):
    cmyk = save(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), tmp_path / "cmyk.jpg")
    with Image.open(cmyk) as im:
        assert im.mode == "CMYK"
    rgb = read_image(cmyk)
    assert rgb.shape == (8, 8, 3)
    np.testing.assert_allclose(rgb.reshape(-1, 3).mean(0), [255, 0, 0], atol=3)  # red
    ycc = save(Image.new("YCbCr", (4, 4), (200, 128, 128)), tmp_path / "ycc.tif")
    with Image.open(ycc) as im:
        assert im.mode == "YCbCr"
    np.testing.assert_allclose(read_image(ycc).reshape(-1, 3).mean(0), [200, 200, 200], atol=2)


def test_read_image_exif_orientation(tmp_path):
    stored = np.zeros((2, 4, 3), np.uint8)  # H=2, W=4 as stored; top-left pixel white
    stored[0, 0] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # display = stored rotated 90 degrees clockwise
    path = save(Image.fromarray(stored), tmp_path / "rot.png", exif=exif)
    np.testing.assert_array_equal(read_image(path), stored)  # the grid annotations refer to
    from PIL import ImageOps  # the file's EXIF really says to rotate it for display:
    shown = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    assert shown.shape == (4, 2, 3)
    assert shown[0, 1].tolist() == [255] * 3 and shown[0, 0].tolist() == [0] * 3


def test_read_image_bad_files(tmp_path):
    whole = save(Image.new("RGB", (64, 64), (1, 2, 3)), tmp_path / "whole.jpg")
    (tmp_path / "cut.jpg").write_bytes(whole.read_bytes()[:300])
    (tmp_path / "text.png").write_text("not an image")
    for name in ("cut.jpg", "text.png"):
        with pytest.raises(DetectionError, match=rf"cannot decode image .*{name}: .*re-download"):
            read_image(tmp_path / name)
    with pytest.raises(DetectionError, match=r"missing\.jpg: image file not found; re-download"):
        read_image(tmp_path / "missing.jpg")


# --- integration on ../shared/data -------------------------------------------------------------


@needs_data
def test_raccoon():
    ann, images = DATA / "raccoon" / "annotations", DATA / "raccoon" / "images"
    ds = load_dataset(str(ann), images=str(images))
    assert len(ds.images) == 200 and sum(len(r.boxes) for r in ds.images) == 217
    assert ds.classes == ("raccoon",)
    first = next(r for r in ds.images if r.image_id == "raccoon-1")  # xmin 81 .. xmax 522
    np.testing.assert_array_equal(first.boxes, [[80, 87, 522, 408]])
    train = load_voc_folder(ann, images, split_file=DATA / "raccoon" / "data" / "train_labels.csv")
    assert len(train.images) == 160
    gray = [r for r in ds.images if r.image_id in ("raccoon-150", "raccoon-152", "raccoon-161")]
    for record in gray:
        pixels = read_image(record.file_name)
        assert pixels.shape == (record.height, record.width, 3) and pixels.dtype == np.uint8


@needs_data
def test_voc100():
    voc = DATA / "voc100"
    ds = load_dataset(str(voc / "gts" / "pascalvoc_format"), images=str(voc / "images"),
                      classes=str(voc / "voc.names"))
    assert ds.classes == read_class_list(voc / "voc.names") and len(ds.classes) == 20
    assert len(ds.images) == 100 and sum(len(r.boxes) for r in ds.images) == 273
    assert sum(int(r.difficult.sum()) for r in ds.images) == 38
    assert ds.classes[ds.images[0].labels[0] - 1] == "person"  # 2007_000027: one person


@needs_data
def test_coco128():
    coco = DATA / "coco128"
    ds = load_coco(coco / "instances_train2017_128.json", coco / "images" / "train2017")
    assert len(ds.images) == 128 and sum(len(r.boxes) for r in ds.images) == 929
    assert len(ds.classes) == 80 and ds.category_ids[-1] == 90  # official ids have gaps
    assert all(Path(r.file_name).is_file() for r in ds.images)


@needs_data
def test_coco_eval_instances_match_pycocotools():
    pycocotools = pytest.importorskip("pycocotools.coco")
    path = DATA / "coco_eval" / "instances_val2014_100.json"
    inst = load_coco_instances(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            ref = pycocotools.COCO(str(path))
    assert inst.image_ids.tolist() == sorted(ref.getImgIds()) and len(inst.image_ids) == 100
    assert inst.category_ids.tolist() == sorted(ref.getCatIds()) and len(inst.category_ids) == 80
    anns = ref.loadAnns(inst.ann_ids.tolist())
    assert len(anns) == 839 and inst.ann_iscrowd.sum() == 9
    np.testing.assert_array_equal(inst.ann_bbox, [a["bbox"] for a in anns])
    np.testing.assert_array_equal(inst.ann_area, [a["area"] for a in anns])
    assert inst.image_ids[inst.ann_image].tolist() == [a["image_id"] for a in anns]
    assert inst.category_ids[inst.ann_label - 1].tolist() == [a["category_id"] for a in anns]


def test_coco_split_by_id_or_file_name(tmp_path):
    """A split file selects COCO images by id or by file name; unknown entries are errors."""
    from eval.datasets import load_dataset

    gt = {"images": [{"id": i, "width": 10, "height": 10, "file_name": f"{i:012d}.jpg"} for i in (3, 1, 2)],
          "categories": [{"id": 5, "name": "a"}],
          "annotations": [{"id": 1, "image_id": 2, "category_id": 5, "bbox": [1, 1, 3, 3], "area": 9}]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "split.txt").write_text("3\n000000000002.jpg\n")
    subset = load_dataset(tmp_path / "gt.json", split=str(tmp_path / "split.txt"))
    assert [r.image_id for r in subset.images] == [2, 3]
    assert len(subset.images[0].boxes) == 1 and subset.classes == ("a",)
    (tmp_path / "bad.txt").write_text("7\n")
    with pytest.raises(DetectionError, match="bad.txt.*'7'"):
        load_dataset(tmp_path / "gt.json", split=str(tmp_path / "bad.txt"))


def test_coco_booleans_as_iscrowd_are_accepted():
    obj = _broken("annotations.0.iscrowd", True)
    assert parse_coco_instances(obj).ann_iscrowd.tolist() == [True, True, False, False]


def test_subset_coco_instances_renumbers():
    from eval.datasets import subset_coco_instances

    inst = parse_coco_instances(coco_dict(), "x.json")  # images 3, 5, 7; categories 1, 18
    sub = subset_coco_instances(inst, np.array([False, True, True]), np.array([True, False]))
    assert sub.image_ids.tolist() == [5, 7] and sub.file_names == ("c.jpg", "b.jpg")
    assert sub.category_ids.tolist() == [1] and sub.category_names == ("person",)
    assert sub.ann_ids.tolist() == [12, 13]  # the person boxes of image 7, file order
    assert sub.ann_image.tolist() == [1, 1] and sub.ann_label.tolist() == [1, 1]
    assert sub.ann_bbox.tolist() == [[15, 5, 10, 10], [4, 4, 0, 3]]


def test_coco_split_and_class_masks(tmp_path):
    from eval.datasets import coco_class_mask, coco_split_mask

    inst = parse_coco_instances(coco_dict(), "x.json")
    assert coco_split_mask(inst, write(tmp_path / "s.txt", "7\nc.jpg\n7\n")).tolist() == [False, True, True]
    assert coco_class_mask(inst, write(tmp_path / "c.txt", "dog\n")).tolist() == [False, True]
    with pytest.raises(DetectionError, match=r"c.txt: class 'cat' is not a category of x.json"):
        coco_class_mask(inst, write(tmp_path / "c.txt", "cat\n"))


def test_loaders_refuse_numbers_too_long_and_xml_folders(tmp_path):
    from eval.datasets.common import _read_split

    with pytest.raises(DetectionError, match=r"s.txt line 2: image index 9{20}\.\.\. is out of range"):
        _read_split(write(tmp_path / "s.txt", "a 1\nb " + "9" * 5000 + "\n"))
    assert _read_split(write(tmp_path / "s.txt", "a \u00b2\n")) == [("a", 1)]  # not an index
    with pytest.raises(DetectionError, match=r"class index 9{20} is out of range"):
        read_class_list(write(tmp_path / "m.txt", "n01234567 " + "9" * 5000 + " x\n"))
    (tmp_path / "xmls" / "b.xml").mkdir(parents=True)
    with pytest.raises(DetectionError, match=r"b.xml: is a folder, not an XML file"):
        load_voc_folder(tmp_path / "xmls")
