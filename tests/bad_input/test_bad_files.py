"""Input files that are not files: a FIFO, a device or a folder given as ground truth, an
annotation XML, a split, a class list, a blacklist, detections, an image, a proposal cache's
manifest, boxes or failure record, or a checkpoint. Each is one error at once naming the file
(every read goes through `eval.inputs`), never a hang and never a read of a device's endless
bytes.

A FIFO blocks whoever opens it for reading until a writer comes. `within` runs each call in a
thread; should it still be blocked after `LIMIT_S` (what the readers before `eval.inputs` did),
it opens the FIFOs for writing to release the reader and fails the test. The verdict is the
error the call gives: the limit only turns a hang into a failure.
"""
from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from _check import assert_one_line_error
from detector.cli.detect import main as detect
from detector.cli.evaluate import main as evaluate
from eval.datasets import load_dataset, read_image
from eval.errors import DetectionError
from proposals.cache import ProposalCache
from proposals.checkpoint import ModelSpec, load_checkpoint, save_checkpoint

LIMIT_S = 60
GT = {"images": [{"id": 1, "width": 100, "height": 80, "file_name": "a.jpg"}],
      "categories": [{"id": 1, "name": "cat"}],
      "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20],
                       "area": 400, "iscrowd": 0}]}
DETS = [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "score": 0.9}]
XML = ("<annotation><filename>{stem}.jpg</filename><size><width>100</width><height>80</height>"
       "</size><object><name>{name}</name><bndbox><xmin>11</xmin><ymin>11</ymin><xmax>30</xmax>"
       "<ymax>30</ymax></bndbox></object></annotation>")
PARAMS = {"max_boxes": 4, "min_box_side": 4}


def within(call: Callable[[], object], *fifos: Path) -> object:
    """``call()``'s result (or its exception), provided it does not block on ``fifos``."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as e:  # handed to the test's thread below
            outcome["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(LIMIT_S)
    if thread.is_alive():
        for fifo in fifos:  # a writer's open and close: the reader sees an empty file
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
        thread.join(LIMIT_S)
        pytest.fail(f"blocked reading {', '.join(map(str, fifos))} (a FIFO)")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


@pytest.fixture
def d(tmp_path) -> Path:
    """Good inputs beside which each case puts one that is not a file: COCO ``gt.json`` with
    ``dets.json``, a VOC root ``voc/`` with ``vdets.json``, an ILSVRC folder ``il/`` with its
    class map ``map.txt`` and ``idets.json``."""
    (tmp_path / "gt.json").write_text(json.dumps(GT))
    (tmp_path / "dets.json").write_text(json.dumps(DETS))
    (tmp_path / "voc" / "Annotations").mkdir(parents=True)
    (tmp_path / "voc" / "Annotations" / "a.xml").write_text(XML.format(stem="a", name="cat"))
    (tmp_path / "vdets.json").write_text(json.dumps(
        [{"image_id": "a", "category_name": "cat", "bbox": [10, 10, 20, 20], "score": 0.9}]))
    (tmp_path / "il").mkdir()
    (tmp_path / "il" / "x.xml").write_text(XML.format(stem="x", name="n01234567"))
    Image.new("RGB", (100, 80)).save(tmp_path / "il" / "x.jpg")
    (tmp_path / "map.txt").write_text("n01234567 1 thing\n")
    (tmp_path / "idets.json").write_text(json.dumps(
        [{"image_id": "x", "category_id": 1, "bbox": [10, 10, 20, 20], "score": 0.9}]))
    return tmp_path


def coco(d: Path, *extra) -> list:
    return ["--gt", d / "gt.json", "--detections", d / "dets.json", *extra]


def voc(d: Path, *extra) -> list:
    return ["--gt", d / "voc", "--detections", d / "vdets.json", *extra]


def ilsvrc(d: Path, *extra) -> list:
    return ["--gt", d / "il", "--classes", d / "map.txt", "--detections", d / "idets.json", *extra]


# name: d -> (evaluate's argv, the FIFO or device it holds, what the error line must name)
EVALUATE_CASES = {
    "gt_coco_json_fifo": lambda d: (["--gt", fifo(d / "g.json"), "--detections", d / "dets.json"],
                                    d / "g.json"),
    "gt_voc_xml_fifo": lambda d: (voc(d), fifo(d / "voc" / "Annotations" / "b.xml")),
    "gt_ilsvrc_xml_fifo": lambda d: (ilsvrc(d), fifo(d / "il" / "y.xml")),
    "detections_fifo": lambda d: (["--gt", d / "gt.json", "--detections", fifo(d / "d.json")],
                                  d / "d.json"),
    "split_fifo": lambda d: (coco(d, "--split", fifo(d / "s.txt")), d / "s.txt"),
    "split_csv_fifo": lambda d: (coco(d, "--split", fifo(d / "s.csv")), d / "s.csv"),
    "split_of_voc_root_fifo": lambda d: (voc(d, "--split", fifo(d / "s.txt")), d / "s.txt"),
    "split_of_xml_folder_fifo": lambda d: (["--gt", d / "voc" / "Annotations", "--detections",
                                            d / "vdets.json", "--images", d / "il", "--split",
                                            fifo(d / "s.txt")], d / "s.txt"),
    "classes_fifo": lambda d: (coco(d, "--classes", fifo(d / "c.txt")), d / "c.txt"),
    "classes_of_voc_fifo": lambda d: (voc(d, "--classes", fifo(d / "c.txt")), d / "c.txt"),
    "class_map_fifo": lambda d: (["--gt", d / "il", "--classes", fifo(d / "m.txt"),
                                  "--detections", d / "idets.json"], d / "m.txt"),
    "blacklist_fifo": lambda d: (ilsvrc(d, "--blacklist", fifo(d / "b.txt")), d / "b.txt"),
}


@pytest.mark.parametrize("case", EVALUATE_CASES)
def test_evaluate_refuses_a_fifo_at_once(case, d, capsys):
    argv, path = EVALUATE_CASES[case](d)
    line = within(lambda: assert_one_line_error(capsys, evaluate, argv, path), path)
    assert "a FIFO" in line


@pytest.mark.parametrize("flag", ["--classes", "--split", "--detections"])
def test_evaluate_refuses_dev_zero_unread(d, capsys, flag):
    """/dev/zero never ends: read whole, it fills memory (a MemoryError after minutes)."""
    argv = coco(d) if flag != "--detections" else ["--gt", d / "gt.json"]
    line = assert_one_line_error(capsys, evaluate, argv + [flag, "/dev/zero"], "/dev/zero")
    assert "a device" in line


def test_a_fifo_named_like_an_image_is_refused_unread(tmp_path):
    path = fifo(tmp_path / "x.jpg")
    with pytest.raises(DetectionError, match="x.jpg: is a FIFO"):
        within(lambda: read_image(path), path)


def test_a_fifo_image_of_an_xml_without_size_is_refused_unread(tmp_path):
    xml = XML.format(stem="a", name="cat").replace(
        "<size><width>100</width><height>80</height></size>", "")
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Annotations" / "a.xml").write_text(xml)
    path = fifo(tmp_path / "JPEGImages" / "a.jpg")
    with pytest.raises(DetectionError, match="a.jpg: is a FIFO.*a.xml has no <size>"):
        within(lambda: load_dataset(tmp_path), path)


# --- caches and checkpoints ----------------------------------------------------------------


@pytest.fixture
def cache(tmp_path) -> ProposalCache:
    cache = ProposalCache.create(tmp_path / "cache", "selective_search", PARAMS)
    cache.save("photo", np.array([[2, 2, 20, 20]], np.float32))
    return cache


def test_a_fifo_as_a_cache_manifest_is_refused_at_once(cache):
    manifest = cache.root / "manifest.json"
    manifest.unlink()
    fifo(manifest)
    for call in (lambda: ProposalCache.open(cache.root),
                 lambda: ProposalCache.create(cache.root, "selective_search", PARAMS)):
        with pytest.raises(DetectionError, match="manifest.json: is a FIFO.*compute it again"):
            within(call, manifest)


@pytest.mark.parametrize("make", [fifo, Path.mkdir])
def test_a_cached_box_file_that_is_not_a_file_is_refused_at_once(cache, make):
    path = cache.box_path("other")
    make(path)
    with pytest.raises(DetectionError, match="other.npy: is a .*tools/propose.py"):
        within(lambda: cache.load("other"), path)


def test_a_fifo_as_a_failure_record_is_refused_at_once(cache):
    path = fifo(cache.failure_path("lost"))
    with pytest.raises(DetectionError, match="lost.json: is a FIFO"):
        within(lambda: cache.load("lost"), path)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from detector.classifier import build_classifier

    root = tmp_path_factory.mktemp("bad_files_ckpt")
    torch.manual_seed(0)
    model = build_classifier(1, weights=None, input_size=32)
    Image.fromarray(np.full((40, 48, 3), 120, np.uint8)).save(root / "photo.png")
    save_checkpoint(root / "a.pt", classes=["red"], spec=ModelSpec(1, 32, 2),
                    state_dict=model.state_dict(),
                    proposals={"method": "selective_search", "params": PARAMS})
    return root


@pytest.mark.usefixtures("one_torch_thread")
def test_detect_refuses_a_fifo_checkpoint_at_once(checkpoint, tmp_path, capsys):
    path = fifo(tmp_path / "fifo.pt")
    argv = [checkpoint / "photo.png", "--checkpoint", path, "--out", tmp_path / "out"]
    line = within(lambda: assert_one_line_error(capsys, detect, argv, path), path)
    assert "a FIFO" in line


def test_a_fifo_or_device_as_a_checkpoint_is_refused_unread(tmp_path):
    path = fifo(tmp_path / "c.pt")
    with pytest.raises(DetectionError, match="c.pt: is a FIFO"):
        within(lambda: load_checkpoint(path), path)
    with pytest.raises(DetectionError, match="/dev/zero: is a device"):
        load_checkpoint("/dev/zero")


@pytest.mark.usefixtures("one_torch_thread")
def test_detect_refuses_a_fifo_manifest_at_once(checkpoint, tmp_path, capsys):
    (tmp_path / "cache").mkdir()
    path = fifo(tmp_path / "cache" / "manifest.json")
    argv = [checkpoint / "photo.png", "--checkpoint", checkpoint / "a.pt", "--proposals",
            tmp_path / "cache", "--out", tmp_path / "out"]
    line = within(lambda: assert_one_line_error(capsys, detect, argv, path), path)
    assert "a FIFO" in line


def test_cached_boxes_of_another_photo_are_refused_where_they_are_used(cache):
    """The photo under a cached id replaced by a smaller one: detection refuses the old boxes
    (they reach past the new image) instead of classifying regions that are not in it."""
    from detector.records import proposals_for

    cache.save("photo", np.array([[2, 2, 400, 300]], np.float32))
    image = np.zeros((40, 48, 3), np.uint8)
    with pytest.raises(DetectionError, match="photo.npy: its boxes span .* past the 48 x 40 image"):
        proposals_for(image, "photo", "photo.png", cache=cache)
    cache.save("photo", np.array([[2, 2, 48, 40]], np.float32))
    assert proposals_for(image, "photo", "photo.png", cache=cache).shape == (1, 4)
