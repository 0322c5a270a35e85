"""A stopped detect run keeps what it finished, and --resume finishes the rest: the final
detections.json equals that of a run that was never stopped."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import detector.drawing
from detector.classifier import build_classifier
from detector.cli.detect import main
from proposals.checkpoint import ModelSpec, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(5):
        image = rng.integers(80, 120, (40, 48, 3), dtype=np.uint8)
        image[4 + i:20 + i, 6:26] = (200, 30, 30)
        Image.fromarray(image).save(tmp_path / f"im{i}.png")
    torch.manual_seed(0)
    model = build_classifier(2, weights=None, input_size=32)
    save_checkpoint(tmp_path / "m.pt", classes=["a", "b"], spec=ModelSpec(2, 32, 2),
                    state_dict=model.state_dict(),
                    proposals={"method": "selective_search",
                               "params": {"max_boxes": 5, "min_box_side": 6}})
    return tmp_path


def test_a_stopped_run_keeps_what_it_finished_and_resume_finishes(folder, monkeypatch, capsys):
    argv = [str(folder / f"im{i}.png") for i in range(5)] + [
        "--checkpoint", str(folder / "m.pt"), "--device", "cpu", "--show-threshold", "0"]
    assert main(argv + ["--out", str(folder / "whole")]) == 0
    whole = json.loads((folder / "whole" / "detections.json").read_text())

    draw, drawn = detector.drawing.draw, []

    def stop_at_the_third(*args):  # Ctrl-C (or SIGTERM) while the third image is drawn
        if len(drawn) == 2:
            raise KeyboardInterrupt
        drawn.append(args[-1])
        return draw(*args)

    monkeypatch.setattr(detector.drawing, "draw", stop_at_the_third)
    out = folder / "out"
    assert main(argv + ["--out", str(out)]) == 130
    assert "--resume" in capsys.readouterr().err
    assert not (out / "detections.json").exists()
    kept = [json.loads(line) for line in (out / "detections.partial.0.jsonl").read_text()
            .splitlines()]
    assert [r["image_id"] for r in kept] == ["im0", "im1"]

    monkeypatch.setattr(detector.drawing, "draw", draw)
    assert main(argv + ["--out", str(out), "--resume"]) == 0
    assert "resuming: 2 of 5 images finished before" in capsys.readouterr().out
    assert json.loads((out / "detections.json").read_text()) == whole
    assert not list(out.glob("detections.partial.*"))  # detections.json holds them now
    assert sorted(p.name for p in out.glob("*.png")) == [f"im{i}.png" for i in range(5)]
