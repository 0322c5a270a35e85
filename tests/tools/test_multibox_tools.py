"""MultiBox through the tools: train (task: multibox), propose --multibox / --config, a detector
trained on combined proposals that detect.py recomputes on the fly (the model one file: it
carries its MultiBox network), stale caches refused."""
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from proposals.checkpoint import load_checkpoint
from proposals.cache import ProposalCache
from proposals.combined import COMBINED, MULTIBOX, merge_proposals
from proposals.checkpoint import load_checkpoint
from proposals.multibox import multibox_from_payload, predict
from detector.cli.detect import main as detect
from detector.cli.propose import main as propose
from detector.cli.train import main as train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def multibox(tiny, tmp_path_factory) -> Path:
    """A MultiBox config on the session's tiny dataset (``tiny``, read-only) and its 2-epoch
    model: ``mb.yaml`` and ``run/epoch_002.pt`` in its folder."""
    root = tmp_path_factory.mktemp("multibox")
    (root / "mb.yaml").write_text(f"""
task: multibox
data:
  gt: {tiny}
model: {{num_priors: 16, input_size: 32, weights: null, prior_samples: 4}}
solver: {{epochs: 2, lr: 0.01, steps: [1], images_per_batch: 2, eval_every: 2}}
loader_workers: 0
output: {root / 'run'}
""")
    (root / "val.txt").write_text("im2\nim3\n")
    assert train(["--config", str(root / "mb.yaml"), "--device", "cpu",
                  "--set", f"data.val_split={root / 'val.txt'}"]) == 0
    return root


def test_multibox_training_writes_checkpoints_priors_and_metrics(multibox):
    payload = load_checkpoint(multibox / "run" / "last.pt", kind="multibox")
    assert payload["epoch"] == 2 and payload["model"] == {"num_priors": 16, "input_size": 32}
    assert payload["priors"].shape == (16, 4) and payload["config"]["task"] == "multibox"
    rows = list(csv.DictReader((multibox / "run" / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"] and float(rows[-1]["val_recall50"]) >= 0
    assert set(rows[0]) >= {"loss_loc", "loss_conf", "matched_iou", "val_AR"}


def test_multibox_resume_is_exact(multibox, tmp_path):
    """Resuming after epoch 1 of the fixture's run gives its epoch 2 bitwise (priors included)."""
    assert train(["--resume", str(multibox / "run" / "epoch_001.pt"), "--set",
                  f"output={tmp_path / 'resumed'}", "--device", "cpu"]) == 0
    full = load_checkpoint(multibox / "run" / "epoch_002.pt", kind="multibox")
    resumed = load_checkpoint(tmp_path / "resumed" / "epoch_002.pt", kind="multibox")
    assert torch.equal(full["priors"], resumed["priors"])
    assert all(torch.equal(full["state_dict"][k], resumed["state_dict"][k]) for k in full["state_dict"])
    assert not (tmp_path / "resumed" / "epoch_001.pt").exists()


def test_propose_with_multibox_puts_its_boxes_first(tiny, multibox, tmp_path):
    mb = str(multibox / "run" / "epoch_002.pt")
    out = tmp_path / "combined"
    assert propose(["--gt", str(tiny), "--out", str(out), "--min-box-side", "4", "--multibox", mb,
                    "--multibox-top", "5"]) == 0
    cache = ProposalCache.open(out)
    assert cache.method == COMBINED and cache.params["multibox"]["top_n"] == 5
    image = np.asarray(__import__("PIL.Image").Image.open(tiny / "im0.png").convert("RGB"))
    network = multibox_from_payload(load_checkpoint(mb, kind="multibox"), str(mb)).eval()
    mb_boxes = predict(network, image, top_n=5)[0].numpy()
    expected = merge_proposals(mb_boxes, ProposalCache.open(tiny / "cache").load("im0"))
    assert np.array_equal(cache.load("im0"), expected)
    alone = tmp_path / "alone"
    assert propose(["--gt", str(tiny), "--out", str(alone), "--multibox", mb, "--multibox-top", "5",
                    "--no-selective-search"]) == 0
    assert ProposalCache.open(alone).method == MULTIBOX
    assert np.array_equal(ProposalCache.open(alone).load("im0"), mb_boxes)


def test_merge_drops_selective_search_near_duplicates_of_multibox_boxes():
    mb = np.array([[0, 0, 10, 10], [20, 20, 40, 40]], np.float32)
    ss = np.array([[0, 0, 10, 10.5],        # IoU 0.95 with the first: dropped
                   [0, 0, 12, 12],          # IoU 0.69: kept
                   [50, 50, 60, 60]], np.float32)
    assert np.array_equal(merge_proposals(mb, ss), np.concatenate([mb, ss[1:]]))
    assert np.array_equal(merge_proposals(np.zeros((0, 4)), ss), ss)


def test_a_config_chooses_the_proposals_for_propose_train_and_detect(tiny, multibox, tmp_path,
                                                                   capsys):
    mb = str(multibox / "run" / "epoch_002.pt")
    config = (tiny / "tiny.yaml").read_text().replace(
        f"proposals: {tiny / 'cache'}", f"proposals: {tmp_path / 'cache'}")
    config += f"""proposals:
  selective_search: {{min_box_side: 4.0}}
  multibox: {mb}
  multibox_top: 5
output: {tmp_path / 'det'}
"""
    (tmp_path / "combined.yaml").write_text(config)
    assert propose(["--config", str(tmp_path / "combined.yaml")]) == 0
    assert ProposalCache.open(tmp_path / "cache").method == COMBINED
    assert train(["--config", str(tmp_path / "combined.yaml"), "--device", "cpu",
                  "--set", "solver.epochs=1"]) == 0
    ckpt = load_checkpoint(tmp_path / "det" / "last.pt")
    assert ckpt["proposals"]["method"] == COMBINED
    # detect.py without --proposals recomputes them the way the checkpoint was trained.
    assert detect([str(tiny / "im0.png"), "--checkpoint", str(tmp_path / "det" / "last.pt"),
                   "--out", str(tmp_path / "dets"), "--device", "cpu"]) == 0
    assert json.loads((tmp_path / "dets" / "detections.json").read_text())
    # The config asks for 6 MultiBox boxes now: the cache of 5 is refused, by name.
    capsys.readouterr()
    # (--overwrite: the folder holds the first run, which stays whole when the new one is refused.)
    assert train(["--config", str(tmp_path / "combined.yaml"), "--device", "cpu", "--overwrite",
                  "--set", "proposals.multibox_top=6"]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'cache'}: this cache holds {COMBINED} proposals" in err
    assert "tools/propose.py --config" in err
    assert load_checkpoint(tmp_path / "det" / "last.pt")["epoch"] == 1


def test_a_combined_model_is_one_file(tiny, multibox, tmp_path, monkeypatch):
    """Trained with a MultiBox checkpoint given by a relative path, the classifier checkpoint
    detects the same after it is moved, the MultiBox file deleted and the working directory
    changed, in this process and in proposal worker processes."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nets").mkdir()
    shutil.copy(multibox / "run" / "epoch_002.pt", tmp_path / "nets" / "mb.pt")
    config = (tiny / "tiny.yaml").read_text().replace(f"proposals: {tiny / 'cache'}",
                                                     "proposals: cache")
    config += ("proposals:\n  selective_search: {min_box_side: 4.0}\n  multibox: nets/mb.pt\n"
               "  multibox_top: 5\noutput: det\n")
    (tmp_path / "combined.yaml").write_text(config)
    assert propose(["--config", "combined.yaml"]) == 0
    assert "mb.pt" not in (tmp_path / "cache" / "manifest.json").read_text()
    assert train(["--config", "combined.yaml", "--device", "cpu", "--set", "solver.epochs=1"]) == 0
    image = str(tiny / "im1.png")
    assert detect([image, "--checkpoint", "det/last.pt", "--out", "before", "--device", "cpu",
                   "--show-threshold", "0"]) == 0
    before = json.loads((tmp_path / "before" / "detections.json").read_text())
    assert before
    (tmp_path / "elsewhere").mkdir()
    shutil.move(tmp_path / "det" / "last.pt", tmp_path / "elsewhere" / "model.pt")
    shutil.rmtree(tmp_path / "nets")
    shutil.rmtree(tmp_path / "det")
    monkeypatch.chdir(tmp_path / "elsewhere")
    for workers in ("0", "1"):
        assert detect([image, "--checkpoint", "model.pt", "--out", f"after{workers}",
                       "--device", "cpu", "--show-threshold", "0", "--workers", workers]) == 0
        after = json.loads((tmp_path / "elsewhere" / f"after{workers}" / "detections.json")
                           .read_text())
        assert after == before


def test_bad_multibox_inputs_are_one_line_errors(tiny, multibox, tmp_path, capsys):
    assert propose(["--gt", str(tiny), "--out", str(tmp_path / "x"), "--multibox",
                    str(tmp_path / "none.pt")]) == 2
    assert "none.pt: MultiBox checkpoint not found" in capsys.readouterr().err
    assert propose(["--gt", str(tiny), "--out", str(tmp_path / "x"), "--no-selective-search"]) == 2
    assert "--no-selective-search needs --multibox" in capsys.readouterr().err
    assert detect([str(tiny / "im0.png"), "--checkpoint", str(multibox / "run" / "last.pt"),
                   "--out", str(tmp_path / "d"), "--device", "cpu"]) == 2
    assert "a multibox checkpoint where a classifier is needed" in capsys.readouterr().err


def test_ddp_under_torchrun_with_two_ranks(multibox, tmp_path, torchrun):
    """Both tasks' loop under torchrun (gloo on CPU): every rank steps, rank 0 writes."""
    out = tmp_path / "ddp"
    done = torchrun(["tools/train.py", "--config", multibox / "mb.yaml", "--device", "cpu",
                     "--set", f"output={out}", "--set", "solver.eval_every=0"])
    assert done.returncode == 0, done.stderr[-2000:]
    payload = load_checkpoint(out / "last.pt", kind="multibox")
    assert payload["epoch"] == 2 and (out / "epoch_001.pt").exists()
    # 4 images, 2 per batch, 2 ranks: one step per rank per epoch; rank 0 alone logs.
    assert len(list(csv.DictReader((out / "metrics.csv").open()))) == 2
