"""The convert_proposals command (detector.cli.convert_proposals) on the session's tiny dataset:
the README's two commands (a cache to Fast R-CNN's .mat and back), the imported cache under
the test command, training and detection, and the user's mistakes, each one line. ``tiny`` and
``tiny_run`` are the session's dataset and its trained run (tests/conftest.py), read-only."""
import json
import os
import pickle

import numpy as np
import pytest
from scipy.io import loadmat

from detector.cli.convert_proposals import main
from detector.cli.detect import main as detect
from detector.cli.test import main as run_test
from proposals.cache import ProposalCache
from proposals.checkpoint import load_checkpoint

from _tiny import train_tiny

pytestmark = pytest.mark.usefixtures("one_torch_thread")
IMAGES = ["im0", "im1", "im2", "im3"]


@pytest.fixture(scope="module")
def converted(tiny, tmp_path_factory):
    """tiny's selective-search cache written as Fast R-CNN's .mat for its dataset, and that
    .mat imported into a new cache, with the README's two commands."""
    root = tmp_path_factory.mktemp("converted")
    mat, cache = root / "voc_2007_trainval.mat", root / "cache_ff"
    assert main([str(tiny / "cache"), str(mat), "--to", "fast-rcnn", "--gt", str(tiny)]) == 0
    assert main([str(mat), str(cache), "--gt", str(tiny)]) == 0
    return root


def test_a_cache_goes_to_fast_rcnn_and_back_unchanged(tiny, converted):
    raw = loadmat(converted / "voc_2007_trainval.mat")
    assert [str(name[0]) for name in raw["images"].ravel()] == IMAGES
    ours, back = ProposalCache.open(tiny / "cache"), ProposalCache.open(converted / "cache_ff")
    assert (back.method, back.params["format"]) == ("imported", "fast-rcnn")
    for image_id, cell in zip(IMAGES, raw["boxes"].ravel()):
        boxes = ours.load(image_id)
        assert len(boxes) > 0 and np.array_equal(back.load(image_id), boxes)
        # What Fast R-CNN's reader makes of the cell: the boxes in 0-based inclusive pixels.
        assert np.array_equal(cell[:, (1, 0, 3, 2)] - 1, boxes - [0, 0, 1, 1])


def test_the_test_command_on_an_imported_cache_gives_the_same_detections(tiny, tiny_run,
                                                                         converted, tmp_path,
                                                                         capsys):
    checkpoint = str(tiny_run / "last.pt")
    for name, cache in (("ours", tiny / "cache"), ("imported", converted / "cache_ff")):
        assert run_test(["--gt", str(tiny), "--checkpoint", checkpoint, "--proposals", str(cache),
                     "--out", str(tmp_path / name), "--device", "cpu"]) == 0
    assert "holds imported proposals" in capsys.readouterr().out  # not taken for selective search
    ours, imported = (json.loads((tmp_path / name / "detections.json").read_text())
                      for name in ("ours", "imported"))
    assert len(ours) > 0 and imported == ours


def test_training_on_an_imported_cache_records_it(tiny, converted, tmp_path, capsys):
    run = tmp_path / "run"
    assert train_tiny(tiny, run, "--set", f"data.proposals={converted / 'cache_ff'}",
                      "--set", "solver.epochs=1") == 0
    record = load_checkpoint(run / "last.pt")["proposals"]
    assert record["method"] == "imported" and record["params"]["format"] == "fast-rcnn"
    image = str(tiny / "im0.png")
    capsys.readouterr()
    # Detection cannot recompute imported proposals: one line saying to pass the cache.
    assert detect([image, "--checkpoint", str(run / "last.pt"), "--out", str(tmp_path / "a"),
                   "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "unknown proposal method 'imported'" in err and len(err.strip().splitlines()) == 1
    assert detect([image, "--checkpoint", str(run / "last.pt"), "--out", str(tmp_path / "b"),
                   "--device", "cpu", "--proposals", str(converted / "cache_ff")]) == 0


def test_ids_order_a_positional_file_and_a_cache_resumes_the_same_import(tiny, converted,
                                                                         tmp_path, capsys):
    order = tmp_path / "order.txt"
    order.write_text("im3\nim1\n\n")
    out = tmp_path / "mm.pkl"
    assert main([str(converted / "cache_ff"), str(out), "--to", "mmdet", "--ids", str(order)]) == 0
    listed = pickle.loads(out.read_bytes())
    ours = ProposalCache.open(tiny / "cache")
    assert [a.shape[1] for a in listed] == [5, 5]
    assert np.array_equal(listed[0][:, :4], ours.load("im3"))
    assert np.array_equal(listed[1][:, :4], ours.load("im1"))
    assert main([str(converted / "voc_2007_trainval.mat"), str(converted / "cache_ff"),
                 "--gt", str(tiny)]) == 0
    assert "4 were already there (resumed)" in capsys.readouterr().out


def _error(capsys, argv) -> str:
    capsys.readouterr()
    assert main([str(a) for a in argv]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in captured.err
    return lines[0]


def test_user_errors_are_one_line(tiny, converted, tmp_path, capsys):
    mat, cache = converted / "voc_2007_trainval.mat", tiny / "cache"
    (tmp_path / "ids.txt").write_text("im0\n")
    cases = [
        ([mat, tmp_path / "x", "--ids", tmp_path / "ids.txt", "--gt", tiny], "--ids and --gt"),
        ([mat, tmp_path / "x", "--split", "trainval"], "--split needs --gt"),
        ([cache, tmp_path / "x.pkl"], "Give --to"),
        ([cache, tmp_path / "x.pkl", "--to", "mmdet"], "read by position"),
        ([mat, converted / "cache_ff", "--gt", tiny, "--from", "detectron2"], "not a readable "
         "pickle"),
        ([mat, cache, "--gt", tiny], "this cache holds selective_search"),  # never mixed
        ([mat, mat, "--to", "fast-rcnn"], "is also an input"),
        ([tmp_path / "ids.txt", tmp_path / "y"], "not a readable pickle"),
        ([tmp_path / "missing.pkl", tmp_path / "y"], "not found"),
        ([mat, tmp_path / "z", "--ids", tmp_path / "ids.txt"], None),  # fine: a subset
    ]
    for argv, message in cases:
        if message is None:
            assert main([str(a) for a in argv]) == 0
        else:
            assert message in _error(capsys, argv), argv
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_a_hostile_pickle_is_refused_and_runs_nothing(tmp_path, capsys):
    target = tmp_path / "pwned"

    class Hostile:
        def __reduce__(self):
            return os.system, (f"touch {target}",)

    path = tmp_path / "proposals.pkl"
    path.write_bytes(pickle.dumps({"boxes": [Hostile()], "ids": ["a"]}))
    line = _error(capsys, [path, tmp_path / "cache"])
    assert "system" in line and "refused unread" in line and str(path) in line
    assert not target.exists() and not (tmp_path / "cache").exists()
