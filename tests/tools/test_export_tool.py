"""tools/export.py: the tiny run's checkpoint exported to ONNX and detected with
`--backend onnxruntime` gives detect's PyTorch fp32 detections.json (same boxes and labels,
scores within 1e-4); outputs over inputs, conflicting inputs, a missing checkpoint, a MultiBox
model and the onnx extra missing are one error line each, before any export."""
import json
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="the `onnx` extra (onnxruntime) is not installed")
pytest.importorskip("onnxscript", reason="the `onnx` extra (onnxscript, torch's ONNX exporter) "
                                         "is not installed")

from detector.cli.detect import main as detect  # noqa: E402
from detector.cli.export import main as export  # noqa: E402
from proposals.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def rows_by_image(path) -> dict:
    """detections.json's rows grouped by image id, each group best first."""
    grouped: dict = {}
    for row in json.loads(path.read_text()):
        grouped.setdefault(row["image_id"], []).append(row)
    return {k: sorted(v, key=lambda r: -r["score"]) for k, v in grouped.items()}


def test_export_then_detect_with_onnxruntime_equals_pytorch(tiny, tiny_run, tmp_path, capsys):
    model = tmp_path / "tiny.onnx"
    assert export([str(tiny_run / "last.pt"), "--format", "onnx", "--out", str(model),
                   "--check-image", str(tiny / "im0.png")]) == 0
    assert f"wrote {model}: ONNX Runtime's softmax within" in capsys.readouterr().out
    images = [str(tiny / f"im{i}.png") for i in range(4)]
    assert detect(images + ["--checkpoint", str(model), "--backend", "onnxruntime",
                            "--out", str(tmp_path / "ort"), "--device", "cpu"]) == 0
    assert "1 network(s) on cpu: onnxruntime (fp32)" in capsys.readouterr().out
    assert detect(images + ["--checkpoint", str(tiny_run / "last.pt"), "--precision", "fp32",
                            "--backend", "torch", "--out", str(tmp_path / "torch"),
                            "--device", "cpu"]) == 0
    got = rows_by_image(tmp_path / "ort" / "detections.json")
    want = rows_by_image(tmp_path / "torch" / "detections.json")
    assert sorted(got) == sorted(want) == ["im0", "im1", "im2", "im3"]
    for image_id in want:
        assert [r["category_id"] for r in got[image_id]] == \
            [r["category_id"] for r in want[image_id]]
        np.testing.assert_allclose([r["bbox"] for r in got[image_id]],
                                   [r["bbox"] for r in want[image_id]], atol=1e-3)
        np.testing.assert_allclose([r["score"] for r in got[image_id]],
                                   [r["score"] for r in want[image_id]], atol=1e-4, rtol=0)


def one_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def test_bad_inputs_are_one_error_line_before_any_export(tiny, tiny_run, tmp_path, capsys,
                                                        monkeypatch):
    ckpt, image = str(tiny_run / "last.pt"), str(tiny / "im0.png")
    before = (tiny_run / "last.pt").read_bytes()
    assert export([ckpt, "--out", ckpt, "--check-image", image]) == 2
    assert "is also an input" in one_error(capsys)
    assert (tiny_run / "last.pt").read_bytes() == before
    assert export([ckpt, "--out", image, "--check-image", image]) == 2
    assert "--check-image" in one_error(capsys)
    assert export([ckpt, "--imagenet-weights", "w.pth", "--out", str(tmp_path / "m.onnx"),
                   "--check-image", image]) == 2
    assert "drop one of them" in one_error(capsys)
    assert export(["--out", str(tmp_path / "m.onnx"), "--check-image", image]) == 2
    assert "nothing to export" in one_error(capsys)
    assert export([str(tmp_path / "gone.pt"), "--out", str(tmp_path / "m.onnx"),
                   "--check-image", image]) == 2
    assert "gone.pt: checkpoint not found" in one_error(capsys)
    # An exported file is not a checkpoint for PyTorch.
    assert detect([image, "--checkpoint", str(tmp_path / "m.onnx"), "--backend", "torch",
                   "--out", str(tmp_path / "d")]) == 2
    assert "drop --backend torch" in one_error(capsys)
    assert detect([image, "--checkpoint", ckpt, "--backend", "onnxruntime", "--precision",
                   "bf16", "--out", str(tmp_path / "d")]) == 2
    assert "drop --precision bf16" in one_error(capsys)
    # Without the onnx extra: the line that says what to install.
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    assert export([ckpt, "--out", str(tmp_path / "m.onnx"), "--check-image", image]) == 2
    assert "[onnx]" in one_error(capsys)
    assert not list(tmp_path.glob("*.onnx"))


def test_a_model_with_multibox_proposals_is_refused(tiny, tiny_run, tmp_path, capsys):
    from proposals.checkpoint import ModelSpec
    from proposals.combined import COMBINED
    from proposals.multibox import MultiBox, network_digest, network_of_model

    network = network_of_model(MultiBox(torch.tensor([[0.1, 0.1, 0.6, 0.6]]), input_size=32))
    payload = load_checkpoint(tiny_run / "last.pt")
    params = {"selective_search": payload["proposals"]["params"],
              "multibox": {"network_sha256": network_digest(network), "top_n": 5,
                           "nms_iou": 0.7}}
    save_checkpoint(tmp_path / "combined.pt", classes=payload["classes"],
                    spec=ModelSpec(**payload["model"]), state_dict=payload["state_dict"],
                    proposals={"method": COMBINED, "params": params, "multibox": network})
    assert export([str(tmp_path / "combined.pt"), "--out", str(tmp_path / "m.onnx"),
                   "--check-image", str(tiny / "im0.png")]) == 2
    assert "MultiBox network, which an ONNX export does not carry" in one_error(capsys)
    assert not (tmp_path / "m.onnx").exists()
