"""The test command (detector.cli.test) on a tiny generated VOC folder: detections JSON,
evaluation table, class mapping by name, errors."""
import json

import numpy as np
import pytest
import torch

import detector.pipeline
from proposals.checkpoint import ModelSpec, save_checkpoint
from detector.classifier import build_classifier
from eval.datasets import load_dataset
from eval.detections import load_results
from proposals.cache import ProposalCache
from detector.cli.evaluate import main as evaluate_main
from detector.cli.test import main

from _tiny import save_voc_image

# The checkpoint lists its classes in another order than the dataset (sorted: blue, red).
CLASSES = ["red", "blue"]
RED, BLUE = (5, 5, 30, 25), (35, 20, 60, 45)  # x1, y1, x2, y2 in pixels of the 64 x 48 images
PROPOSALS = {"method": "selective_search", "params": {"max_boxes": 5, "min_box_side": 8}}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    """Three images with a red and a blue box each, and their VOC XMLs (1-based, inclusive)."""
    root = tmp_path_factory.mktemp("voc")
    rng = np.random.default_rng(0)
    for i in range(3):
        image = rng.integers(90, 110, (48, 64, 3), dtype=np.uint8)
        image[RED[1]:RED[3], RED[0]:RED[2]] = (200, 30, 30)
        image[BLUE[1]:BLUE[3], BLUE[0]:BLUE[2]] = (20, 40, 220)
        save_voc_image(root, f"im{i}", image, {"red": RED, "blue": BLUE})
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    torch.manual_seed(0)
    model = build_classifier(2, weights=None, input_size=64)
    save_checkpoint(path, classes=CLASSES, spec=ModelSpec(2, 64, 4), state_dict=model.state_dict(),
                    proposals=PROPOSALS)
    return path


def test_runs_the_split_and_prints_the_table(voc, checkpoint, tmp_path, capsys):
    out = tmp_path / "missing" / "out"  # created
    dets, res = out / "detections.json", out / "evaluation.json"
    assert main(["--gt", str(voc), "--checkpoint", str(checkpoint), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "voc mAP:" in printed and "blue" in printed and "red" in printed
    result = json.loads(res.read_text())
    assert set(result) == {"protocol", "mAP", "per_class"} and result["protocol"] == "voc"
    assert set(result["per_class"]) == {"red", "blue"}
    # The detections JSON is a COCO results list of this dataset, and evaluating it alone gives
    # the same numbers.
    dataset = load_dataset(voc)
    found = load_results(dets, [r.image_id for r in dataset.images], dataset.category_ids,
                         dataset.classes)
    assert len(found) > 0 and set(found.image_index.tolist()) == {0, 1, 2}
    assert evaluate_main(["--gt", str(voc), "--detections", str(dets),
                          "--json", str(tmp_path / "again.json")]) == 0
    assert json.loads((tmp_path / "again.json").read_text()) == result


def test_classes_map_to_the_dataset_by_name(voc, checkpoint, tmp_path, monkeypatch, capsys):
    """A detector that returns its proposals (here exactly the ground truth), labelled in the
    checkpoint's order (red = 1, blue = 2), must score AP 100: the dataset's order is the
    reverse, so mapping by position would give 0."""
    cache = ProposalCache.create(tmp_path / "cache", "selective_search", {})
    for i in range(3):
        cache.save(f"im{i}", np.array([RED, BLUE], np.float32))

    def oracle(pixels, boxes, members, **_):  # the ensemble's verdict: red, then blue
        return torch.tensor([[0.1, 0.9, 0.0], [0.2, 0.0, 0.8]]), None

    monkeypatch.setattr(detector.pipeline, "classify_regions", oracle)
    assert main(["--gt", str(voc), "--checkpoint", str(checkpoint), "--proposals",
                 str(tmp_path / "cache"), "--protocol", "voc07", "--out", str(tmp_path / "o"),
                 "--backend", "torch"]) == 0
    result = json.loads((tmp_path / "o" / "evaluation.json").read_text())
    assert result["protocol"] == "voc07" and result["per_class"] == {"blue": 1.0, "red": 1.0}
    assert "voc07 mAP: 100.00" in capsys.readouterr().out


def test_errors_are_one_line_and_exit_2(voc, checkpoint, tmp_path, capsys):
    other = tmp_path / "cats.pt"
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    save_checkpoint(other, classes=["cat", "red"], spec=ModelSpec(2, 64, 4), state_dict=state,
                    proposals=PROPOSALS)
    ProposalCache.create(tmp_path / "empty", "selective_search", {})
    cases = [
        (["--checkpoint", str(other)], "cats.pt: class 'cat'"),
        (["--checkpoint", str(checkpoint), "--proposals", str(tmp_path / "empty")],
         "no proposals for image 'im0'"),
        (["--checkpoint", str(tmp_path / "nope.pt")], "nope.pt: checkpoint not found"),
    ]
    for args, message in cases:
        assert main(["--gt", str(voc), "--out", str(tmp_path / "d")] + args) == 2
        err = [ln for ln in capsys.readouterr().err.strip().splitlines()
               if not ln.startswith("test:")]
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (tmp_path / "d" / "detections.json").exists()


@pytest.fixture(scope="module")
def cache(voc, tmp_path_factory):
    """Proposals of the three images: the two objects and two boxes around them."""
    cache = ProposalCache.create(tmp_path_factory.mktemp("cache") / "c", "selective_search", {})
    for i in range(3):
        cache.save(f"im{i}", np.array([RED, BLUE, (0, 0, 40, 30), (20, 10, 64, 48)], np.float32))
    return cache


def copy_cache(cache, folder):
    """A copy of ``cache`` (its files) in ``folder``, to record a failure in."""
    import shutil

    shutil.copytree(cache.root, folder)
    return ProposalCache.open(folder)


def test_images_the_cache_records_as_failed_are_skipped_and_count_as_missed(
        voc, checkpoint, cache, tmp_path, capsys):
    from eval.evaluate import evaluate_files

    assert main(["--gt", str(voc), "--checkpoint", str(checkpoint), "--proposals",
                 str(cache.root), "--out", str(tmp_path / "all")]) == 0
    broken = copy_cache(cache, tmp_path / "broken")
    broken.box_path("im1").unlink()
    broken.record_failure("im1", str(voc / "im1.png"), "cannot decode image")
    capsys.readouterr()
    assert main(["--gt", str(voc), "--checkpoint", str(checkpoint), "--proposals",
                 str(broken.root), "--out", str(tmp_path / "skip")]) == 0
    printed = capsys.readouterr().out
    assert f"skipping 1 image(s) that {broken.root / 'failed'}/ records as failed" in printed
    skipped = json.loads((tmp_path / "skip" / "evaluation.json").read_text())
    # The same as evaluating the full run's detections without im1's: its boxes are missed.
    rows = json.loads((tmp_path / "all" / "detections.json").read_text())
    without = [r for r in rows if r["image_id"] != "im1"]
    assert len(without) < len(rows)
    assert json.loads((tmp_path / "skip" / "detections.json").read_text()) == without
    assert skipped == evaluate_files(voc, without).to_json()
    assert skipped["mAP"] < json.loads((tmp_path / "all" / "evaluation.json").read_text())["mAP"]


def test_an_undecodable_image_without_a_cache_is_skipped_the_same_way(voc, checkpoint, tmp_path,
                                                                      capsys):
    import shutil

    shutil.copytree(voc, tmp_path / "voc")
    (tmp_path / "voc" / "im1.png").write_bytes(b"\x89PNG broken")
    assert main(["--gt", str(tmp_path / "voc"), "--checkpoint", str(checkpoint), "--out",
                 str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "3 image(s), 1 failed:" in err and "im1.png" in err and "Traceback" not in err
    rows = json.loads((tmp_path / "o" / "detections.json").read_text())
    assert rows and {r["image_id"] for r in rows} == {"im0", "im2"}
    assert (tmp_path / "o" / "evaluation.json").exists()


def test_two_torchrun_ranks_write_what_one_process_writes(voc, checkpoint, cache, tmp_path,
                                                          torchrun):
    args = ["--gt", str(voc), "--checkpoint", str(checkpoint), "--proposals", str(cache.root),
            "--device", "cpu"]
    assert main(args + ["--out", str(tmp_path / "one")]) == 0
    done = torchrun(["tools/test.py", *args, "--out", tmp_path / "two"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("voc mAP:") == 1  # only rank 0 prints the table
    for name in ("detections.json", "evaluation.json"):
        assert (tmp_path / "two" / name).read_text() == (tmp_path / "one" / name).read_text()


def test_nothing_to_evaluate_is_refused_before_detection_and_keeps_the_last_pair(
        voc, checkpoint, tmp_path, capsys):
    """A split whose images hold no object: refused before the model is loaded, and the
    previous run's detections.json and evaluation.json stay as they were (a pair)."""
    import shutil

    data = tmp_path / "voc"
    shutil.copytree(voc, data)
    save_voc_image(data, "empty", np.full((48, 64, 3), 100, np.uint8), {})
    (tmp_path / "split.txt").write_text("empty\n")
    out = tmp_path / "out"
    assert main(["--gt", str(data), "--checkpoint", str(checkpoint), "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert main(["--gt", str(data), "--checkpoint", str(checkpoint), "--out", str(out),
                 "--split", str(tmp_path / "split.txt")]) == 2
    printed = capsys.readouterr()
    assert "nothing to evaluate" in printed.err and "network(s) on" not in printed.out
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
