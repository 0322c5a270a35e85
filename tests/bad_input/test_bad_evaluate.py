"""The evaluate command on bad input: each case exits 2 with one ``error:`` line naming the file
(or flag) and the fix, no traceback, and no output file. Inputs are generated in tmp_path.

Each case is ``(argv builder, names the line must contain)``; a builder gets the folder of the
good fixtures (COCO JSON ``gt.json`` + ``dets.json``, a VOC root ``voc/``, an ILSVRC folder
``il/`` with ``map.txt``) and returns the arguments, writing what it needs beside them.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from _check import assert_no_partial_files, assert_one_line_error, files_below

from detector.cli.evaluate import main

GT = {"images": [{"id": 1, "width": 100, "height": 80, "file_name": "a.jpg"},
                 {"id": 2, "width": 100, "height": 80, "file_name": "b.jpg"}],
      "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
      "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20],
                       "area": 400, "iscrowd": 0},
                      {"id": 2, "image_id": 2, "category_id": 2, "bbox": [5, 5, 30, 30],
                       "area": 900, "iscrowd": 0}]}
DET = {"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "score": 0.9}


def voc_xml(objects: str, size: str = "<size><width>100</width><height>80</height></size>") -> str:
    return f"<annotation><filename>a.jpg</filename>{size}{objects}</annotation>"


def voc_object(name: str, box=(11, 11, 50, 50), difficult: int = 0) -> str:
    x1, y1, x2, y2 = box
    return (f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox><xmin>{x1}"
            f"</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>")


@pytest.fixture
def data(tmp_path) -> Path:
    """Good inputs: each case below breaks one thing."""
    (tmp_path / "gt.json").write_text(json.dumps(GT))
    (tmp_path / "dets.json").write_text(json.dumps([DET]))
    ann = tmp_path / "voc" / "Annotations"
    ann.mkdir(parents=True)
    (ann / "a.xml").write_text(voc_xml(voc_object("cat")))
    (tmp_path / "voc" / "ImageSets" / "Main").mkdir(parents=True)
    (tmp_path / "voc" / "ImageSets" / "Main" / "val.txt").write_text("a\n")
    (tmp_path / "vdets.json").write_text(json.dumps(
        [{"image_id": "a", "category_name": "cat", "bbox": [10, 10, 40, 40], "score": 0.9}]))
    (tmp_path / "il").mkdir()
    (tmp_path / "il" / "x.xml").write_text(voc_xml(voc_object("n01234567", (0, 0, 20, 20))))
    from PIL import Image
    Image.new("RGB", (100, 80)).save(tmp_path / "il" / "x.jpg")
    (tmp_path / "map.txt").write_text("n01234567 1 thing\nn07654321 2 other\n")
    (tmp_path / "idets.json").write_text(json.dumps(
        [{"image_id": "x", "category_id": 1, "bbox": [0, 0, 21, 21], "score": 0.9}]))
    (tmp_path / "out").mkdir()
    return tmp_path


def put(path: Path, content) -> Path:
    """Write ``content`` (bytes, text, or JSON of anything else) to ``path``; returns it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def coco(d: Path, dets=None, gt=None, *extra) -> list:
    """argv for COCO ground truth; ``dets`` / ``gt`` replace the good files when given."""
    return ["--gt", gt or d / "gt.json", "--detections", dets or d / "dets.json", *extra]


def bad_dets(name: str, content) -> callable:
    return lambda d: (coco(d, put(d / name, content)), [d / name])


def det(**change) -> list:
    return [dict(DET, **change)]


def bad_gt(name: str, content) -> callable:
    return lambda d: (coco(d, None, put(d / name, content)), [d / name])


def gt_with(**change) -> dict:
    return {**GT, **change}


def ann(**change) -> list:
    return [dict(GT["annotations"][0], **change)]


def voc_with(name: str, xml) -> callable:
    """The VOC root with ``Annotations/<name>`` replaced by ``xml`` (text, bytes, or None for a
    folder of that name)."""
    def build(d: Path):
        path = d / "voc" / "Annotations" / name
        path.mkdir() if xml is None else put(path, xml)
        return ["--gt", d / "voc", "--detections", d / "vdets.json"], [path]
    return build


def ilsvrc(d: Path, *extra) -> list:
    return ["--gt", d / "il", "--classes", d / "map.txt", "--detections", d / "idets.json", *extra]


CASES = {
    # --- requirement 1: an option that does not apply is refused by name
    "blacklist_with_coco_json": lambda d: (coco(d, None, None, "--blacklist", put(d / "b.txt", "1 1")),
                                           ["--blacklist", "COCO JSON"]),
    "blacklist_with_voc_protocol": lambda d: (ilsvrc(d, "--protocol", "voc", "--blacklist",
                                                     put(d / "b.txt", "1 1")),
                                              ["--blacklist", "--protocol ilsvrc"]),
    "blacklist_with_voc_root": lambda d: (["--gt", d / "voc", "--detections", d / "vdets.json",
                                           "--protocol", "ilsvrc", "--blacklist",
                                           put(d / "b.txt", "1 1")], [d / "voc", "blacklist"]),
    "images_with_coco_json": lambda d: (coco(d, None, None, "--images", d), ["--images", "COCO"]),
    "images_not_a_folder": lambda d: (["--gt", d / "voc", "--detections", d / "vdets.json",
                                       "--images", d / "dets.json"], ["--images", "folder"]),
    "split_unknown_image": lambda d: (coco(d, None, None, "--split", put(d / "s.txt", "77\n")),
                                      [d / "s.txt", "'77'"]),
    "split_empty": lambda d: (coco(d, None, None, "--split", put(d / "s.txt", "\n")),
                              [d / "s.txt", "no images"]),
    "classes_unknown_category": lambda d: (coco(d, None, None, "--classes", put(d / "c.txt", "cow")),
                                           [d / "c.txt", "'cow'"]),
    "voc_split_name_missing": lambda d: (["--gt", d / "voc", "--detections", d / "vdets.json",
                                          "--split", "test"], [d / "voc", "'test'"]),
    # --- requirement 2: unreadable files
    "detections_is_a_folder": lambda d: (coco(d, d / "out"), [d / "out", "folder"]),
    "detections_missing": lambda d: (coco(d, d / "nope.json"), [d / "nope.json"]),
    "detections_not_utf8": bad_dets("d.json", b"\xff\xfe[\x00]"),
    "detections_deeply_nested": bad_dets("d.json", "[" * 200_000),
    "detections_empty_file": bad_dets("d.json", ""),
    "detections_an_object": bad_dets("d.json", {"annotations": [DET]}),
    "detections_entry_not_object": bad_dets("d.json", [[1, 1, 10, 10, 20, 20, 0.9]]),
    "detections_integer_of_5000_digits": bad_dets("d.json", json.dumps(det()).replace(
        '"score": 0.9', '"score": ' + "9" * 5000)),
    "detections_integer_beyond_float": bad_dets("d.json", det(bbox=[10 ** 400, 1, 1, 1])),
    "gt_deeply_nested": bad_gt("g.json", "[" * 200_000),
    "gt_deeply_nested_object": bad_gt("g.json", '{"a": ' * 200_000),
    "gt_not_utf8": bad_gt("g.json", b"\xff\xfe{}"),
    "gt_empty_file": bad_gt("g.json", ""),
    "gt_a_list": bad_gt("g.json", []),
    "gt_missing": lambda d: (coco(d, None, d / "none.json"), [d / "none.json"]),
    "gt_text_file": bad_gt("g.txt", "hello"),
    "gt_integer_of_5000_digits": bad_gt("g.json", json.dumps(GT).replace('"area": 400', '"area": ' + "9" * 5000)),
    "gt_huge_width": bad_gt("g.json", gt_with(images=[{"id": 1, "width": 10 ** 30, "height": 8}])),
    "gt_area_beyond_float": bad_gt("g.json", gt_with(annotations=ann(area=10 ** 400))),
    "classes_missing_file": lambda d: (coco(d, None, None, "--classes", d / "nope.txt"),
                                       [d / "nope.txt"]),
    "classes_missing_file_voc": lambda d: (["--gt", d / "voc", "--detections", d / "vdets.json",
                                            "--classes", d / "nope.txt"], [d / "nope.txt"]),
    "classes_binary": lambda d: (coco(d, None, None, "--classes", put(d / "c.txt", b"\xff\x00")),
                                 [d / "c.txt"]),
    "classes_a_folder": lambda d: (coco(d, None, None, "--classes", d / "out"), [d / "out"]),
    "split_binary": lambda d: (coco(d, None, None, "--split", put(d / "s.txt", b"\x00\xff\xfe")),
                               [d / "s.txt"]),
    "split_csv_binary": lambda d: (coco(d, None, None, "--split", put(d / "s.csv", b"\xff\xfe\x00")),
                                   [d / "s.csv"]),
    "split_a_folder": lambda d: (coco(d, None, None, "--split", d / "out"), [d / "out"]),
    "split_index_of_5000_digits": lambda d: (ilsvrc(d, "--split", put(d / "s.txt", "x " + "9" * 5000)),
                                             [d / "s.txt", "line 1"]),
    "xml_is_a_folder": voc_with("b.xml", None),
    "xml_not_xml": voc_with("b.xml", b"\xff\xfe\x00<annotation"),
    "xml_huge_size": voc_with("b.xml", voc_xml(voc_object("cat"), "<size><width>" + "9" * 30
                                              + "</width><height>8</height></size>")),
    "xml_negative_size": voc_with("b.xml", voc_xml(voc_object("cat"), "<size><width>-5</width>"
                                                   "<height>8</height></size>")),
    "xml_coordinate_of_5000_digits": voc_with("b.xml", voc_xml(voc_object("cat", (1, 1, "9" * 5000, 5)))),
    "xml_folder_among_ilsvrc": lambda d: ((d / "il" / "y.xml").mkdir() or ilsvrc(d), [d / "il" / "y.xml"]),
    "class_map_index_of_5000_digits": lambda d: (["--gt", d / "il", "--detections", d / "idets.json",
                                                  "--classes", put(d / "m.txt", "n01234567 " + "9" * 5000)],
                                                 [d / "m.txt", "line 1"]),
    "class_map_unicode_digit": lambda d: (["--gt", d / "il", "--detections", d / "idets.json",
                                           "--classes", put(d / "m.txt", "n01234567 \u00b2 thing")],
                                          [d / "m.txt"]),
    "blacklist_binary": lambda d: (ilsvrc(d, "--blacklist", put(d / "b.txt", b"\xff\x00")), [d / "b.txt"]),
    "blacklist_index_of_5000_digits": lambda d: (ilsvrc(d, "--blacklist", put(d / "b.txt", "9" * 5000 + " 1")),
                                                 [d / "b.txt", "line 1"]),
    "gt_name_of_300_bytes": lambda d: (coco(d, None, d / ("g" * 300 + ".json")), ["--gt", "305 bytes"]),
    "detections_name_of_300_bytes": lambda d: (coco(d, d / ("d" * 300 + ".json")),
                                               ["--detections", "305 bytes"]),
    "split_folder_name_of_256_bytes": lambda d: (coco(d, None, None, "--split", d / ("s" * 256) / "s.txt"),
                                                 ["--split", "256 bytes"]),
    # --- requirement 3: garbage is not data
    "detections_bbox_boolean": bad_dets("d.json", det(bbox=[True, 10, 5, 5])),
    "detections_bbox_boolean_among_floats": bad_dets("d.json", det() + det(bbox=[1.5, 2.5, False, 5])),
    "detections_score_boolean": bad_dets("d.json", det(score=True)),
    "detections_score_boolean_among_floats": bad_dets("d.json", det() + det(score=False)),
    "detections_image_id_boolean": bad_dets("d.json", det(image_id=True)),
    "detections_category_id_boolean": bad_dets("d.json", det(category_id=True)),
    "detections_category_name_a_list": bad_dets("d.json", [{"image_id": 1, "category_name": ["cat"],
                                                            "bbox": [1, 1, 1, 1], "score": 1}]),
    "detections_score_a_string": bad_dets("d.json", det(score="0.9")),
    "detections_negative_width": bad_dets("d.json", det(bbox=[10, 10, -5, 5])),
    "gt_bbox_boolean": bad_gt("g.json", gt_with(annotations=ann(bbox=[True, 10, 5, 5]))),
    "gt_area_boolean": bad_gt("g.json", gt_with(annotations=ann(area=True))),
    "gt_iscrowd_no": bad_gt("g.json", gt_with(annotations=ann(iscrowd="no"))),
    "gt_iscrowd_two": bad_gt("g.json", gt_with(annotations=ann(iscrowd=2))),
    "gt_negative_area": bad_gt("g.json", gt_with(annotations=ann(area=-5))),
    "gt_width_boolean": bad_gt("g.json", gt_with(images=[{"id": 1, "width": True, "height": 8}])),
    "gt_image_id_boolean": bad_gt("g.json", gt_with(images=[{"id": True, "width": 9, "height": 8}])),
    "gt_two_categories_one_name": bad_gt("g.json", gt_with(categories=[{"id": 1, "name": "cat"},
                                                                       {"id": 2, "name": "cat"}])),
    "gt_category_name_a_number": bad_gt("g.json", gt_with(categories=[{"id": 1, "name": 5},
                                                                      {"id": 2, "name": "dog"}])),
    "gt_no_objects_coco": bad_gt("g.json", gt_with(annotations=[])),
    "gt_only_crowd_coco": bad_gt("g.json", gt_with(annotations=ann(iscrowd=1))),
    "gt_no_objects_in_split": lambda d: (coco(d, None, put(d / "g.json", gt_with(annotations=ann())),
                                              "--split", put(d / "s.txt", "2\n")),
                                         [d / "g.json", "--split", "nothing to evaluate"]),
    "gt_no_objects_voc": lambda d: ((d / "voc" / "Annotations" / "a.xml").write_text(voc_xml(""))
                                    and ["--gt", d / "voc", "--detections", d / "vdets.json"],
                                    [d / "voc", "nothing to evaluate"]),
    "gt_only_difficult_voc": lambda d: ((d / "voc" / "Annotations" / "a.xml").write_text(
        voc_xml(voc_object("cat", difficult=1))) and ["--gt", d / "voc", "--detections",
                                                      d / "vdets.json", "--protocol", "voc07"],
        [d / "voc", "nothing to evaluate"]),
}

# --- requirement 2: output paths, checked before the work (no file appears on failure)
OUTPUT_CASES = {
    "json_is_a_folder": lambda d: (coco(d, None, None, "--json", d / "out"), ["--json", d / "out"]),
    "plot_is_a_folder": lambda d: (coco(d, None, None, "--plot", d / "out"), ["--plot", d / "out"]),
    "json_is_the_detections": lambda d: (coco(d, None, None, "--json", d / "dets.json"),
                                         ["--json", "--detections"]),
    "json_is_the_gt": lambda d: (coco(d, None, None, "--json", d / "gt.json"), ["--json", "--gt"]),
    "plot_is_the_json": lambda d: (coco(d, None, None, "--json", d / "out" / "r.json", "--plot",
                                        d / "out" / "r.json"), ["--plot", "--json"]),
    "json_is_the_split": lambda d: (coco(d, None, None, "--split", put(d / "s.txt", "1\n"),
                                         "--json", d / "s.txt"), ["--json", "(--split "]),
    "json_is_the_class_list": lambda d: (coco(d, None, None, "--classes", put(d / "c.txt", "cat\n"),
                                              "--json", d / "c.txt"), ["--json", "--classes"]),
    "plot_unknown_format": lambda d: (coco(d, None, None, "--plot", d / "out" / "pr.txt"),
                                      ["--plot", "pr.txt", ".png"]),
    "json_fine_but_evaluation_fails": lambda d: (coco(d, put(d / "d.json", "["), None, "--json",
                                                      d / "out" / "r.json", "--plot",
                                                      d / "out" / "pr.png"), [d / "d.json"]),
    "json_name_of_300_bytes": lambda d: (coco(d, None, None, "--json", d / ("x" * 300 + ".json")),
                                         ["--json", "305 bytes"]),
    "plot_folder_name_of_600_bytes": lambda d: (coco(d, None, None, "--plot", d / ("\u00e9" * 300) / "p.png"),
                                                ["--plot", "600 bytes"]),
    "json_in_read_only_folder": lambda d: ((d / "ro").mkdir(mode=0o555) or
                                           coco(d, None, None, "--json", d / "ro" / "r.json"),
                                           ["--json", "cannot write"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input(data, capsys, case):
    argv, names = CASES[case](data)
    before = files_below(data / "out")
    assert_one_line_error(capsys, main, argv, *names)
    assert_no_partial_files(before, data / "out")


@pytest.mark.parametrize("case", sorted(OUTPUT_CASES))
def test_bad_output_path(data, capsys, case):
    import os
    if case == "json_in_read_only_folder" and os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    argv, names = OUTPUT_CASES[case](data)
    before = files_below(data)
    assert_one_line_error(capsys, main, argv, *names)
    assert_no_partial_files(before, data)


def test_the_good_fixtures_evaluate(data, capsys):
    """Guard on the fixtures: each case above breaks one thing of inputs that work."""
    out = data / "out" / "missing" / "r.json"  # a missing folder is created
    assert main([str(a) for a in coco(data, None, None, "--json", out)]) == 0
    assert json.loads(out.read_text())["protocol"] == "coco"
    # Names of any alphabet, up to the file system's 255 bytes, are fine.
    odd = data / "\u6570\u636e \u2014 \U0001F600" / ("\u00e9" * 120 + ".json")
    put(odd, [DET])
    assert main([str(a) for a in coco(data, odd, None, "--json", odd.with_name("r\u00e9s.json"))]) == 0
    assert main([str(a) for a in ["--gt", data / "voc", "--detections", data / "vdets.json",
                                  "--split", "val"]]) == 0
    assert main([str(a) for a in ilsvrc(data, "--blacklist", put(data / "b.txt", "2 1"))]) == 2
    assert main([str(a) for a in ilsvrc(data, "--blacklist", put(data / "b.txt", "1 2"))]) == 0
    assert "ilsvrc mAP: 100.00" in capsys.readouterr().out
