"""detector.export: an ensemble exported to ONNX detects as the PyTorch fp32 ensemble does
(boxes, labels, scores within 1e-4) through Detector.load(backend="onnxruntime"); its metadata
says what detection needs; an export that disagrees with PyTorch is not written; a file that
is not ours, or not ONNX, is one error; the onnxruntime backend's impossible choices are
refused by name before any file is read."""
import json

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="the `onnx` extra (onnxruntime) is not installed")
pytest.importorskip("onnxscript", reason="the `onnx` extra (onnxscript, torch's ONNX exporter) "
                                         "is not installed")
import onnx  # noqa: E402  (installed with onnxscript)

from detector import Detector  # noqa: E402
from detector import export as export_module  # noqa: E402
from detector.classifier import build_classifier  # noqa: E402
from detector.export import export_onnx, parity  # noqa: E402
from detector.runtime import METADATA_KEY, classify_exported, load_exported  # noqa: E402
from detector.pipeline import load_ensemble  # noqa: E402
from eval.errors import DetectionError  # noqa: E402
from proposals.checkpoint import ModelSpec, load_checkpoint, save_checkpoint  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def exported(tiny, tiny_run, tmp_path_factory):
    """The tiny run's trained classifier and a member with a box-regression head (random, the
    same classes, input size and proposals), exported together once: (folder, checkpoints)."""
    root = tmp_path_factory.mktemp("export")
    payload = load_checkpoint(tiny_run / "last.pt")
    spec = ModelSpec(**payload["model"])
    torch.manual_seed(0)
    regressor = build_classifier(spec.num_classes, weights=None, input_size=spec.input_size,
                                 box_regression=True)
    torch.nn.init.normal_(regressor.bbox_pred.weight, std=0.05)  # deltas worth comparing
    save_checkpoint(root / "reg.pt", classes=payload["classes"],
                    spec=ModelSpec(spec.num_classes, spec.input_size, spec.context_pad, True),
                    state_dict=regressor.state_dict(), proposals=payload["proposals"])
    checkpoints = [str(tiny_run / "last.pt"), str(root / "reg.pt")]
    difference = export_onnx(checkpoints, root / "model.onnx", tiny / "im0.png")
    assert 0 <= difference <= 1e-4
    return root, checkpoints


def test_the_exported_ensemble_detects_as_pytorch_fp32(tiny, exported):
    root, checkpoints = exported
    torch_detector = Detector.load(checkpoints, device="cpu", backend="torch", precision="fp32")
    onnx_detector = Detector.load([root / "model.onnx"], backend="onnxruntime")
    assert onnx_detector.describe() == "2 network(s) on cpu: onnxruntime (fp32)"
    assert onnx_detector.classes == torch_detector.classes
    assert onnx_detector.spec.input_size == torch_detector.spec.input_size
    assert onnx_detector.spec.context_pad == torch_detector.spec.context_pad
    found = 0
    for i in range(4):
        want, got = torch_detector(tiny / f"im{i}.png"), onnx_detector(tiny / f"im{i}.png")
        assert got.num_proposals == want.num_proposals
        np.testing.assert_array_equal(got.labels, want.labels)
        np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-3)  # deltas applied
        np.testing.assert_allclose(got.scores, want.scores, atol=1e-4, rtol=0)
        found += len(want.boxes)
    assert found > 0  # the comparison saw detections
    # Through detect_many (the commands' path), the same.
    many = list(onnx_detector.detect_many([tiny / "im1.png"]))
    np.testing.assert_array_equal(many[0].boxes, onnx_detector(tiny / "im1.png").boxes)


def test_the_metadata_says_what_detection_needs(tiny_run, exported):
    root, _ = exported
    model = onnx.load(root / "model.onnx")
    meta = json.loads({p.key: p.value for p in model.metadata_props}[METADATA_KEY])
    payload = load_checkpoint(tiny_run / "last.pt")
    assert meta["classes"] == payload["classes"] and meta["members"] == 2
    assert (meta["input_size"], meta["context_pad"]) == (payload["model"]["input_size"],
                                                       payload["model"]["context_pad"])
    assert meta["background"] is True and meta["box_regression"] is True
    assert meta["proposals"] == {"method": payload["proposals"]["method"],
                                 "params": payload["proposals"]["params"]}
    assert meta["normalization"]["mean"] == [0.485, 0.456, 0.406]
    assert meta["sources"] == ["last.pt", "reg.pt"]
    # The batch axis is free; the outputs are the mean softmax and the mean deltas.
    (regions,) = model.graph.input
    dims = regions.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 32, 32]
    assert [o.name for o in model.graph.output] == ["probs", "deltas"]


def test_parity_sees_a_model_that_is_not_the_exported_one(tiny, exported, tmp_path):
    root, checkpoints = exported
    model = (root / "model.onnx").read_bytes()
    ensemble = load_ensemble(checkpoints, "cpu")
    pixels, boxes = export_module.check_regions(ensemble, tiny / "im1.png", "test")
    assert parity(ensemble, model, pixels, boxes) <= 1e-4
    other = load_ensemble([checkpoints[1], checkpoints[1]], "cpu")  # other weights, same shape
    assert parity(other, model, pixels, boxes) > 1e-3


def test_an_export_that_disagrees_is_not_written(tiny, tiny_run, tmp_path, monkeypatch):
    # The file is written only once the check passes: a disagreement leaves nothing behind.
    monkeypatch.setattr(export_module, "onnx_model", lambda ensemble, meta: b"not checked")
    monkeypatch.setattr(export_module, "parity", lambda *args: 3e-3)
    with pytest.raises(DetectionError, match=r"not written.*3\.00e-03.*im0\.png"):
        export_onnx([tiny_run / "last.pt"], tmp_path / "m.onnx", tiny / "im0.png")
    assert list(tmp_path.iterdir()) == []


def test_no_proposals_classify_to_nothing(exported):
    root, _ = exported
    members = load_exported(root / "model.onnx", 1).members
    probs, deltas = classify_exported(np.zeros((3, 20, 20), np.float32),
                                      np.zeros((0, 4), np.float32), members,
                                      input_size=32, context_pad=2)
    assert probs.shape == (0, 3) and deltas is None


def test_files_that_are_not_our_exports_are_one_error(exported, tmp_path):
    root, _ = exported
    node = onnx.helper.make_node("Identity", ["regions"], ["probs"])
    graph = onnx.helper.make_graph(
        [node], "plain", [onnx.helper.make_tensor_value_info("regions", 1, ["b", 3, 32, 32])],
        [onnx.helper.make_tensor_value_info("probs", 1, ["b", 3, 32, 32])])
    plain = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    onnx.save(plain, tmp_path / "plain.onnx")
    with pytest.raises(DetectionError, match=r"plain\.onnx: not exported by tools/export\.py"):
        Detector.load([tmp_path / "plain.onnx"], backend="onnxruntime")
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07junk" * 100)
    with pytest.raises(DetectionError, match=r"junk\.onnx: not an ONNX model ONNX Runtime"):
        Detector.load([tmp_path / "junk.onnx"], backend="onnxruntime")
    with pytest.raises(DetectionError, match=r"missing\.onnx: onnx file not found"):
        Detector.load([tmp_path / "missing.onnx"], backend="onnxruntime")
    # Our metadata, altered: what it says no longer fits the graph, or is not a record.
    model = onnx.load(root / "model.onnx")
    entry = next(p for p in model.metadata_props if p.key == METADATA_KEY)
    meta = json.loads(entry.value)
    for change, words in (({"classes": ["a", "b", "c"]}, "outputs"),
                          ({"input_size": 64}, "inputs"), ({"members": 0}, "members"),
                          ({"format": 9}, "format 9"), ({"normalization": {}}, "normalization")):
        entry.value = json.dumps({**meta, **change})
        onnx.save(model, tmp_path / "changed.onnx")
        with pytest.raises(DetectionError, match=rf"changed\.onnx: malformed .*{words}"):
            Detector.load([tmp_path / "changed.onnx"], backend="onnxruntime")


@pytest.mark.parametrize("choice, words", [
    (dict(device="cuda"), "runs on the CPU, not --device cuda"),
    (dict(precision="bf16"), "drop --precision bf16"),
    (dict(channels_last=True), "--channels-last"),
    (dict(stacked=True), "--stacked"),
    (dict(compile=True), "--compile"),
    (dict(imagenet_weights="w.pth"), "whole ensemble"),
    (dict(backend="tensorrt"), "--backend tensorrt"),
])
def test_impossible_choices_are_refused_before_any_file_is_read(tmp_path, choice, words):
    options = {"backend": "onnxruntime", **choice}
    with pytest.raises(DetectionError, match=words):
        Detector.load([tmp_path / "never_read.onnx"], **options)
    with pytest.raises(DetectionError, match="whole ensemble"):
        Detector.load([tmp_path / "a.onnx", tmp_path / "b.onnx"], backend="onnxruntime")
    with pytest.raises(DetectionError, match="whole ensemble"):  # auto reads .onnx the same way
        Detector.load([tmp_path / "a.onnx", tmp_path / "b.pt"], backend="auto")
    with pytest.raises(DetectionError, match="drop --backend torch"):
        Detector.load([tmp_path / "never_read.onnx"], backend="torch")
