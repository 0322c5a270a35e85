"""The train command (detector.cli.train) on a tiny generated dataset: checkpoints, metrics,
determinism, exact resume, extended runs, config.yaml, skipped damaged images. ``tiny`` and
``tiny_run`` are the session's dataset and its 2-epoch run (tests/conftest.py), read-only."""
import csv
from pathlib import Path

import pytest
import torch

from proposals.checkpoint import load_checkpoint
from detector.cli.train import main as train

from _tiny import CLASSES, train_tiny as run

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def weights(path: Path) -> dict:
    return load_checkpoint(path)["state_dict"]


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_trains_and_writes_checkpoints_and_metrics(tiny_run):
    # The session's run: tiny.yaml as it is (2 epochs), by the same call as run() below.
    names = sorted(p.name for p in tiny_run.iterdir())
    assert names == ["config.yaml", "epoch_001.pt", "epoch_002.pt", "last.pt", "metrics.csv"]
    payload = load_checkpoint(tiny_run / "last.pt")
    assert payload["classes"] == sorted(CLASSES) and payload["epoch"] == 2
    assert payload["model"] == {"num_classes": 2, "input_size": 32, "context_pad": 2, "box_regression": False}
    assert payload["proposals"]["method"] == "selective_search"
    assert payload["config"]["solver"]["epochs"] == 2
    rows = (tiny_run / "metrics.csv").read_text().splitlines()
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


def test_resume_gives_the_uninterrupted_result(tiny_run, tmp_path):
    resumed = ["--resume", str(tiny_run / "epoch_001.pt"), "--set",
               f"output={tmp_path / 'resumed'}", "--device", "cpu"]
    assert train(resumed) == 0
    assert same(weights(tiny_run / "epoch_002.pt"), weights(tmp_path / "resumed" / "epoch_002.pt"))
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
                   "--device", "cpu", "--show-threshold", "0"]) == 0
    assert (tmp_path / "det" / "detections.json").exists() and (tmp_path / "det" / "im0.png").exists()
    out = tmp_path / "tested"
    assert test(["--gt", str(tiny), "--checkpoint", ckpt, "--proposals", str(tiny / "cache"),
                 "--out", str(out), "--protocol", "voc", "--device", "cpu"]) == 0
    assert evaluate(["--gt", str(tiny), "--detections", str(out / "detections.json"),
                     "--protocol", "voc", "--json", str(tmp_path / "again.json")]) == 0
    assert (json.loads((out / "evaluation.json").read_text())
            == json.loads((tmp_path / "again.json").read_text()))
    assert "voc mAP" in capsys.readouterr().out


def test_resume_extends_a_finished_run(tiny, tiny_run, tmp_path, capsys):
    # A 1-epoch run resumed with solver.epochs=2 ends with the weights of a 2-epoch run.
    assert run(tiny, tmp_path / "short", "--set", "solver.epochs=1") == 0
    assert train(["--resume", str(tmp_path / "short" / "last.pt"), "--set", "solver.epochs=2",
                  "--device", "cpu"]) == 0
    assert same(weights(tiny_run / "last.pt"), weights(tmp_path / "short" / "last.pt"))
    assert load_checkpoint(tmp_path / "short" / "last.pt")["config"]["solver"]["epochs"] == 2
    assert "epochs: 2" in (tmp_path / "short" / "config.yaml").read_text()
    assert len((tmp_path / "short" / "metrics.csv").read_text().splitlines()) == 3


def test_resume_of_a_finished_run_does_nothing(tiny, tmp_path, capsys):
    assert run(tiny, tmp_path / "a", "--set", "solver.epochs=1") == 0
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "a").iterdir()}
    capsys.readouterr()
    assert train(["--resume", str(tmp_path / "a" / "last.pt"), "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    assert out.count("\n") == 1 and "already finished" in out and "solver.epochs" in out
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "a").iterdir()} == before


def test_config_yaml_reproduces_the_run(tiny, tmp_path):
    assert run(tiny, tmp_path / "a", "--set", "solver.epochs=1", "--seed", "2") == 0
    saved = tmp_path / "a" / "config.yaml"
    assert train(["--config", str(saved), "--set", f"output={tmp_path / 'b'}",
                  "--device", "cpu"]) == 0
    assert same(weights(tmp_path / "a" / "last.pt"), weights(tmp_path / "b" / "last.pt"))
    assert not list((tmp_path / "a").glob("*.tmp"))


def test_stored_config_names_absolute_paths_and_resumes_from_anywhere(tiny, tmp_path,
                                                                     monkeypatch):
    # A config written with paths relative to the working directory: the run stores them
    # absolute (checkpoint and config.yaml), so it resumes from any other folder.
    import os

    import yaml

    monkeypatch.chdir(tiny)
    config = yaml.safe_load((tiny / "tiny.yaml").read_text())
    config["data"] = {"gt": ".", "proposals": "cache"}
    (tmp_path / "relative.yaml").write_text(yaml.safe_dump(config))  # tiny is read-only
    out = os.path.relpath(tmp_path / "rel", tiny)
    assert train(["--config", os.path.relpath(tmp_path / "relative.yaml", tiny), "--set",
                  "solver.epochs=1", "--set", f"output={out}", "--device", "cpu"]) == 0
    stored = load_checkpoint(tmp_path / "rel" / "last.pt")["config"]
    assert stored["data"]["gt"] == str(tiny) and stored["data"]["proposals"] == str(tiny / "cache")
    assert stored["output"] == str(tmp_path / "rel")
    assert yaml.safe_load((tmp_path / "rel" / "config.yaml").read_text()) == yaml.safe_load(
        yaml.safe_dump(stored))
    monkeypatch.chdir(tmp_path)
    assert train(["--resume", "rel/last.pt", "--set", "solver.epochs=2", "--device", "cpu"]) == 0
    assert load_checkpoint(tmp_path / "rel" / "last.pt")["epoch"] == 2


def test_python_users_train_through_the_same_function(tiny, tmp_path):
    from detector.training.config import TrainConfig, load_train_config
    from detector.training.loop import train as train_config

    config = load_train_config(tiny / "tiny.yaml", ["solver.epochs=1", f"output={tmp_path / 'py'}"])
    assert isinstance(config, TrainConfig)
    assert train_config(config, device="cpu") == tmp_path / "py" / "last.pt"
    assert run(tiny, tmp_path / "cli", "--set", "solver.epochs=1") == 0
    assert same(weights(tmp_path / "py" / "last.pt"), weights(tmp_path / "cli" / "last.pt"))


def test_images_whose_proposals_failed_are_skipped(tiny, tmp_path, capsys):
    import shutil

    from proposals.cache import ProposalCache

    cache_dir = tmp_path / "cache"
    shutil.copytree(tiny / "cache", cache_dir)
    cache = ProposalCache.open(cache_dir)
    cache.box_path("im3").unlink()
    cache.record_failure("im3", str(tiny / "im3.png"), "cannot decode image: truncated")
    (tmp_path / "val.txt").write_text("im2\nim3\n")
    capsys.readouterr()
    assert run(tiny, tmp_path / "a", "--set", "solver.epochs=1", "--set", "solver.eval_every=1",
               "--set", f"data.proposals={cache_dir}",
               "--set", f"data.val_split={tmp_path / 'val.txt'}") == 0
    out = capsys.readouterr().out
    assert f"skipping 1 of 4 training images whose proposals failed" in out
    assert "skipping 1 of 2 validation images" in out and "counted as missed" in out
    assert str(cache_dir / "failed") in out
    assert load_checkpoint(tmp_path / "a" / "last.pt")["epoch"] == 1


def test_multibox_skips_images_that_cannot_be_decoded(tiny, tmp_path, capsys):
    import shutil

    data = tmp_path / "data"
    data.mkdir()
    for path in tiny.glob("im*.*"):
        shutil.copy(path, data)
    png = (data / "im1.png").read_bytes()
    (data / "im1.png").write_bytes(png[:len(png) // 3])  # a truncated photo
    (tmp_path / "mb.yaml").write_text(f"task: multibox\ndata: {{gt: {data}}}\n"
                                      "model: {num_priors: 4, input_size: 32, weights: null}\n"
                                      "solver: {epochs: 1, images_per_batch: 3}\n"
                                      "loader_workers: 0\n")
    capsys.readouterr()
    assert train(["--config", str(tmp_path / "mb.yaml"), "--set", f"output={tmp_path / 'mb'}",
                  "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "skipping 1 of 4 training images that cannot be decoded" in out and "im1.png" in out
    assert load_checkpoint(tmp_path / "mb" / "last.pt", kind="multibox")["epoch"] == 1


def test_multibox_refuses_a_batch_of_one_image_it_cannot_train(tiny, tmp_path, capsys):
    # 4 images in batches of 3 leave one of 1: at input 32 batch norm cannot train on it.
    from detector.training.multibox import ONE_IMAGE_MIN_SIZE
    from proposals.multibox import MultiBox

    net = MultiBox(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), 32).train()
    net(torch.zeros(1, 3, ONE_IMAGE_MIN_SIZE, ONE_IMAGE_MIN_SIZE))  # trains on one image
    with pytest.raises(ValueError):
        net(torch.zeros(1, 3, ONE_IMAGE_MIN_SIZE - 1, ONE_IMAGE_MIN_SIZE - 1))
    (tmp_path / "mb.yaml").write_text(f"task: multibox\ndata: {{gt: {tiny}}}\n"
                                      "model: {num_priors: 4, input_size: 32, weights: null}\n"
                                      "solver: {epochs: 1, images_per_batch: 3}\n"
                                      "loader_workers: 0\n")
    assert train(["--config", str(tmp_path / "mb.yaml"), "--set", f"output={tmp_path / 'mb'}",
                  "--device", "cpu"]) == 2
    assert "solver.images_per_batch" in capsys.readouterr().err
    assert not (tmp_path / "mb" / "last.pt").exists()
