"""The train command (detector.cli.train) on a tiny generated dataset: checkpoints, metrics, determinism, exact resume."""
import csv
from pathlib import Path

import pytest
import torch

from detector.checkpoint import load_checkpoint
from detector.cli.train import main as train

from _tiny import CLASSES, make_tiny

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """4 images with a red and a blue rectangle each, VOC XMLs, their proposal cache, a config."""
    return make_tiny(tmp_path_factory.mktemp("tiny"))


def run(tiny: Path, out: Path, *extra: str) -> int:
    return train(["--config", str(tiny / "tiny.yaml"), "--set", f"output={out}", "--device", "cpu", *extra])


def weights(path: Path) -> dict:
    return load_checkpoint(path)["state_dict"]


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_trains_and_writes_checkpoints_and_metrics(tiny, tmp_path):
    assert run(tiny, tmp_path / "a") == 0
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == ["config.yaml", "epoch_001.pt", "epoch_002.pt", "last.pt", "metrics.csv"]
    payload = load_checkpoint(tmp_path / "a" / "last.pt")
    assert payload["classes"] == sorted(CLASSES) and payload["epoch"] == 2
    assert payload["model"] == {"num_classes": 2, "input_size": 32, "context_pad": 2, "box_regression": False}
    assert payload["proposals"]["method"] == "selective_search"
    assert payload["config"]["solver"]["epochs"] == 2
    rows = (tmp_path / "a" / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,loss") and len(rows) == 3
    # the step schedule: lr 0.01 in epoch 1, then 0.001
    lr = [float(row["lr"]) for row in csv.DictReader(rows)]
    assert lr == pytest.approx([0.001, 0.001])


def test_same_seed_same_weights_other_seed_differs(tiny, tmp_path):
    assert run(tiny, tmp_path / "a", "--set", "solver.epochs=1") == 0
    assert run(tiny, tmp_path / "b", "--set", "solver.epochs=1") == 0
    assert run(tiny, tmp_path / "c", "--set", "solver.epochs=1", "--seed", "1") == 0
    a, b, c = (weights(tmp_path / n / "last.pt") for n in "abc")
    assert same(a, b) and not same(a, c)


def test_resume_gives_the_uninterrupted_result(tiny, tmp_path):
    assert run(tiny, tmp_path / "full") == 0
    resumed = ["--resume", str(tmp_path / "full" / "epoch_001.pt"), "--set", f"output={tmp_path / 'resumed'}",
               "--device", "cpu"]
    assert train(resumed) == 0
    assert same(weights(tmp_path / "full" / "epoch_002.pt"), weights(tmp_path / "resumed" / "epoch_002.pt"))
    assert not (tmp_path / "resumed" / "epoch_001.pt").exists()


def test_config_errors_are_one_line(tiny, tmp_path, capsys):
    assert train(["--config", str(tiny / "tiny.yaml"), "--set", "solver.lrr=1"]) == 2
    assert "unknown key solver.lrr" in capsys.readouterr().err
    assert train(["--config", str(tiny / "tiny.yaml"), "--set", f"data.proposals={tmp_path}/none"]) == 2
    assert "not a proposal cache" in capsys.readouterr().err
    assert train(["--resume", str(tmp_path / "missing.pt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_whole_path_propose_train_detect_test(tiny, tmp_path, capsys):
    """The tiny config end to end: proposals (fixture), two training iterations with validation,
    tools/detect.py on an image, tools/test.py on the dataset (same numbers as evaluate.py)."""
    import json

    from detector.cli.detect import main as detect
    from detector.cli.evaluate import main as evaluate
    from detector.cli.test import main as test

    (tmp_path / "val.txt").write_text("im2\nim3\n")
    assert run(tiny, tmp_path / "run", "--set", "solver.epochs=1", "--set", "solver.eval_every=1",
               "--set", f"data.val_split={tmp_path / 'val.txt'}") == 0
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert rows[0].split(",")[-1] == "val_mAP" and rows[1].split(",")[-1] != ""
    ckpt = str(tmp_path / "run" / "last.pt")
    assert detect([str(tiny / "im0.png"), "--checkpoint", ckpt, "--out", str(tmp_path / "det"),
                   "--device", "cpu", "--score-threshold", "0"]) == 0
    assert (tmp_path / "det" / "detections.json").exists() and (tmp_path / "det" / "im0.png").exists()
    out = tmp_path / "tested"
    assert test(["--gt", str(tiny), "--checkpoint", ckpt, "--proposals", str(tiny / "cache"),
                 "--out", str(out), "--protocol", "voc", "--device", "cpu"]) == 0
    assert evaluate(["--gt", str(tiny), "--detections", str(out / "detections.json"),
                     "--protocol", "voc", "--json", str(tmp_path / "again.json")]) == 0
    assert (json.loads((out / "evaluation.json").read_text())
            == json.loads((tmp_path / "again.json").read_text()))
    assert "voc mAP" in capsys.readouterr().out
