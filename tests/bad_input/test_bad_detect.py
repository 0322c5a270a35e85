"""Bad input to the detect and test commands: every flag that cannot work, every output path,
a cache that lacks an image, and a folder of damaged photos (detected where possible, the rest
reported, exit 1, the JSON written). Each case is refused with one line naming the flag or file,
before any work, leaving no partial file."""
import contextlib
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from _check import assert_no_partial_files, assert_one_line_error, files_below
from corpus import EXPECTED, FILE_NAMES, SKIPPED_IN_FOLDERS, write_corpus
from proposals.checkpoint import ModelSpec, save_checkpoint
from detector.classifier import build_classifier
from detector.cli.detect import main as detect_command
from detector.cli.test import main as run_test_command
from proposals.cache import ProposalCache

pytestmark = pytest.mark.usefixtures("one_torch_thread")
PROPOSALS = {"method": "selective_search", "params": {"max_boxes": 4, "min_box_side": 4}}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """``{folder}``: a.pt, b.pt (input 32), photo.png, voc/ (one image), cache/ (photo, im0)."""
    root = tmp_path_factory.mktemp("bad_detect")
    for name, seed in (("a", 0), ("b", 1)):
        torch.manual_seed(seed)
        model = build_classifier(2, weights=None, input_size=32)
        save_checkpoint(root / f"{name}.pt", classes=["blue", "red"], spec=ModelSpec(2, 32, 2),
                        state_dict=model.state_dict(), proposals=PROPOSALS)
    image = np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)
    Image.fromarray(image).save(root / "photo.png")
    (root / "voc").mkdir()
    Image.fromarray(image).save(root / "voc" / "im0.png")
    (root / "voc" / "im0.xml").write_text(
        "<annotation><filename>im0.png</filename><size><width>48</width><height>40</height>"
        "</size><object><name>red</name><bndbox><xmin>3</xmin><ymin>3</ymin><xmax>20</xmax>"
        "<ymax>20</ymax></bndbox></object><object><name>blue</name><bndbox><xmin>25</xmin>"
        "<ymin>10</ymin><xmax>45</xmax><ymax>38</ymax></bndbox></object></annotation>")
    cache = ProposalCache.create(root / "cache", "selective_search", PROPOSALS["params"])
    for key in ("photo", "im0"):
        cache.save(key, np.array([[2, 2, 20, 20], [20, 5, 46, 38]], np.float32))
    ProposalCache.create(root / "empty", "selective_search", PROPOSALS["params"])
    (root / "notes.txt").write_text("not a folder")
    (root / "twins").mkdir()
    Image.fromarray(image).save(root / "twins" / "photo.jpg")
    (root / "no_images").mkdir()
    (root / "no_images" / "readme.txt").write_text("nothing here")
    return root


# (argv with {r} = the setup folder, the names the error line must contain)
DETECT_CASES = {
    "score threshold below 0": (["{r}/photo.png", "--score-threshold", "-0.1"],
                                ["--score-threshold -0.1", "[0, 1]"]),
    "score threshold above 1": (["{r}/photo.png", "--score-threshold", "1.5"],
                                ["--score-threshold 1.5"]),
    "score threshold nan": (["{r}/photo.png", "--score-threshold", "nan"],
                            ["--score-threshold nan"]),
    "show threshold above 1": (["{r}/photo.png", "--show-threshold", "1.5"],
                               ["--show-threshold 1.5", "[0, 1]"]),
    "nms iou 0": (["{r}/photo.png", "--nms-iou", "0"], ["--nms-iou 0.0", "(0, 1]"]),
    "max per image 0": (["{r}/photo.png", "--max-per-image", "0"], ["--max-per-image 0"]),
    "batch size 0": (["{r}/photo.png", "--batch-size", "0"], ["--batch-size 0"]),
    "workers -1": (["{r}/photo.png", "--workers", "-1"], ["--workers -1"]),
    "stacked with one checkpoint": (["{r}/photo.png", "--stacked"], ["--stacked", "drop"]),
    "stacked and compile": (["{r}/photo.png", "--checkpoint", "{r}/b.pt", "--stacked",
                             "--compile"], ["--stacked", "--compile"]),
    "unknown device": (["{r}/photo.png", "--device", "tpu"], ["--device tpu"]),
    "missing input": (["{r}/nope.jpg"], ["nope.jpg", "no such image"]),
    "folder without images": (["{r}/no_images"], ["no_images", "no image files"]),
    "two inputs share a stem": (["{r}/photo.png", "{r}/twins"], ["photo.jpg", "rename"]),
    "cache lacks the image": (["{r}/photo.png", "--proposals", "{r}/empty"],
                              ["--proposals", "empty", "propose"]),
    "not a cache": (["{r}/photo.png", "--proposals", "{r}/voc"], ["voc"]),
    "out is a file": (["{r}/photo.png", "--out", "{r}/notes.txt"], ["--out", "notes.txt"]),
    "out would overwrite the input": (["{r}/photo.png", "--out", "{r}"], ["photo.png", "--out"]),
    "out's detections.json is a folder": (["{r}/photo.png", "--out", "{r}/held"],
                                          ["--out", "detections.json", "is a folder"]),
}
# Without --checkpoint (the ImageNet baseline): its own flag's cases.
DETECT_BASELINE_CASES = {
    "imagenet weights with a checkpoint": (["{r}/photo.png", "--checkpoint", "{r}/a.pt",
                                            "--imagenet-weights", "{r}/w.pth"],
                                           ["--imagenet-weights", "--checkpoint"]),
    "imagenet weights file missing": (["{r}/photo.png", "--imagenet-weights", "{r}/w.pth"],
                                      ["w.pth", "not found"]),
}
TEST_CASES = {
    "max per image 0": (["--max-per-image", "0"], ["--max-per-image 0"]),
    "batch size 0": (["--batch-size", "0"], ["--batch-size 0"]),
    "workers -1": (["--workers", "-1"], ["--workers -1"]),
    "stacked with one checkpoint": (["--stacked"], ["--stacked"]),
    "stacked and compile": (["--checkpoint", "{r}/b.pt", "--stacked", "--compile"],
                            ["--stacked", "--compile"]),
    "unknown device": (["--device", "cuda:x"], ["--device cuda:x"]),
    "cache lacks an image": (["--proposals", "{r}/empty"], ["--proposals", "'im0'", "propose"]),
    "out is a file": (["--out", "{r}/notes.txt"], ["--out", "notes.txt"]),
    "out's detections.json is a folder": (["--out", "{r}/taken"], ["--out", "detections.json"]),
    "missing ground truth": (["--gt", "{r}/no_voc"], ["no_voc"]),
}


def fill(argv, root):
    return [a.replace("{r}", str(root)) for a in argv]


@pytest.mark.parametrize("case", DETECT_CASES)
def test_detect_refuses(case, setup, tmp_path, capsys):
    argv, names = DETECT_CASES[case]
    (setup / "held" / "detections.json").mkdir(parents=True, exist_ok=True)
    argv = fill(argv, setup)
    if "--checkpoint" not in argv or argv.count("--checkpoint") == 1 and "--stacked" in argv:
        argv += ["--checkpoint", str(setup / "a.pt")]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    before = files_below(tmp_path, setup)
    assert_one_line_error(capsys, detect_command, argv, *fill(names, setup))
    assert_no_partial_files(before, tmp_path, setup)


@pytest.mark.parametrize("case", DETECT_BASELINE_CASES)
def test_detect_baseline_refuses(case, setup, tmp_path, capsys):
    argv, names = DETECT_BASELINE_CASES[case]
    before = files_below(tmp_path)
    argv = fill(argv, setup) + ["--out", str(tmp_path / "o")]
    assert_one_line_error(capsys, detect_command, argv, *fill(names, setup))
    assert_no_partial_files(before, tmp_path)


@pytest.mark.parametrize("case", TEST_CASES)
def test_test_refuses(case, setup, tmp_path, capsys):
    argv, names = TEST_CASES[case]
    (setup / "taken" / "detections.json").mkdir(parents=True, exist_ok=True)
    base = ["--gt", str(setup / "voc"), "--checkpoint", str(setup / "a.pt"),
            "--out", str(tmp_path / "out")]
    argv = fill(argv, setup)
    for flag in ("--gt", "--out"):
        if flag in argv:
            i = base.index(flag)
            del base[i:i + 2]
    before = files_below(tmp_path, setup)
    assert_one_line_error(capsys, run_test_command, base + argv, *fill(names, setup))
    assert_no_partial_files(before, tmp_path, setup)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus") / "images"
    return write_corpus(folder), folder


# The corpus images detect must read; the rest it must report by name.
GOOD = sorted(n for n, e in EXPECTED.items() if e == "ok" and n not in SKIPPED_IN_FOLDERS)
BAD = sorted(n for n, e in EXPECTED.items() if e == "error" and n not in SKIPPED_IN_FOLDERS)


@pytest.fixture(scope="module")
def corpus_run(corpus, setup, tmp_path_factory):
    """The detect command once over the corpus folder: (status, stdout, stderr, out folder)."""
    _, folder = corpus
    out = tmp_path_factory.mktemp("corpus_out")
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = detect_command([str(folder), "--checkpoint", str(setup / "a.pt"),
                                 "--out", str(out), "--show-threshold", "0"])
    return status, stdout.getvalue(), stderr.getvalue(), out


def test_corpus_folder_exits_1_with_a_summary(corpus_run):
    status, out, err, folder = corpus_run
    assert status == 1 and "Traceback" not in err
    total = len(GOOD) + len(BAD)
    assert f"{total} image(s), {len(BAD)} failed:" in err
    assert not list(folder.glob("*.tmp")) and (folder / "detections.json").exists()


@pytest.mark.parametrize("name", GOOD)
def test_corpus_good_image_is_detected(name, corpus_run):
    status, out, err, folder = corpus_run
    stem = FILE_NAMES[name].rsplit(".", 1)[0]
    assert f"{FILE_NAMES[name]}: " in out and f"{FILE_NAMES[name]}: FAILED" not in err
    annotated = [p for p in folder.iterdir() if p.stem == stem]
    assert annotated, f"no annotated copy of {name}"
    json.loads((folder / "detections.json").read_text())  # valid JSON


@pytest.mark.parametrize("name", BAD)
def test_corpus_bad_image_is_reported(name, corpus_run):
    status, out, err, folder = corpus_run
    summary = err.rpartition(" failed:\n")[2]  # the lines after the summary header
    assert f"/{FILE_NAMES[name]}: " in summary, summary
    rows = json.loads((folder / "detections.json").read_text())
    assert FILE_NAMES[name].rsplit(".", 1)[0] not in {r["image_id"] for r in rows}


@pytest.mark.parametrize("name", sorted(SKIPPED_IN_FOLDERS))
def test_corpus_skipped_entry_is_reported(name, corpus_run):
    status, out, err, folder = corpus_run
    assert any(line.startswith("skipped ") and f"/{FILE_NAMES[name]}: " in line
               for line in out.splitlines()), out
