"""detector.Detector: the detect command's detections from Python, arrays and given proposals,
detect_many (order, workers, damaged images), the ImageNet baseline from a local weights file,
values refused at load, and evaluate_model = the test command."""
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models import googlenet

from detector import Detector
from proposals.checkpoint import ModelSpec, save_checkpoint
from detector.classifier import build_classifier
from detector.cli.detect import main as detect_main
from detector.cli.test import main as run_test_command
from eval.datasets import load_dataset
from eval.errors import DetectionError
from detector.evaluation import evaluate_model, results_of
from proposals.cache import ProposalCache

CLASSES = ["blue", "red"]  # the dataset's (sorted) order, as training writes it
PROPOSALS = {"method": "selective_search", "params": {"max_boxes": 6, "min_box_side": 8}}
RED, BLUE = (5, 5, 30, 25), (35, 20, 60, 45)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def save_voc_image(root, stem: str, image: np.ndarray) -> None:
    """``root/stem.png`` and its VOC XML with the red and blue boxes (1-based, inclusive)."""
    Image.fromarray(image).save(root / f"{stem}.png")
    objects = "".join(f"<object><name>{name}</name><bndbox><xmin>{x1 + 1}</xmin><ymin>{y1 + 1}"
                      f"</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
                      for name, (x1, y1, x2, y2) in (("red", RED), ("blue", BLUE)))
    (root / f"{stem}.xml").write_text(f"<annotation><filename>{stem}.png</filename><size><width>64"
                                      f"</width><height>48</height></size>{objects}</annotation>")


def picture(seed: int) -> np.ndarray:
    image = np.random.default_rng(seed).integers(90, 110, (48, 64, 3), dtype=np.uint8)
    image[RED[1]:RED[3], RED[0]:RED[2]] = (200, 30, 30)
    image[BLUE[1]:BLUE[3], BLUE[0]:BLUE[2]] = (20, 40, 220)
    return image


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Two checkpoints (input 32) and a VOC folder of three images (also detect's inputs)."""
    root = tmp_path_factory.mktemp("api")
    for name, seed in (("a", 1), ("b", 2)):
        torch.manual_seed(seed)
        model = build_classifier(2, weights=None, input_size=32)
        torch.nn.init.normal_(model.cls_score.bias, std=1.0)
        save_checkpoint(root / f"{name}.pt", classes=CLASSES, spec=ModelSpec(2, 32, 2),
                        state_dict=model.state_dict(), proposals=PROPOSALS)
    (root / "voc").mkdir()
    for i in range(3):
        save_voc_image(root / "voc", f"im{i}", picture(i))
    return root


def test_detector_gives_what_the_detect_command_writes(data, tmp_path):
    ckpts = [str(data / "a.pt"), str(data / "b.pt")]
    images = [str(data / "voc" / f"im{i}.png") for i in range(3)]
    assert detect_main(images + sum([["--checkpoint", c] for c in ckpts], []) +
                       ["--out", str(tmp_path / "out"), "--device", "cpu"]) == 0
    written = json.loads((tmp_path / "out" / "detections.json").read_text())
    detector = Detector.load(ckpts, device="cpu")
    assert detector.classes == tuple(CLASSES)
    results = [detector(path) for path in images]
    assert all(r.labels.min() >= 1 and r.labels.max() <= 2 and r.boxes.shape[1] == 4
               for r in results)
    assert written and results_of(results, [1, 2]) == written
    # detect_many yields the same, in order, with or without worker processes.
    for workers in (0, 1):
        many = list(detector.detect_many(images, workers=workers))
        assert [r.image_id for r in many] == ["im0", "im1", "im2"]
        assert results_of(many, [1, 2]) == written


def test_arrays_and_given_proposals(data):
    detector = Detector.load([data / "a.pt"], device="cpu", score_threshold=0.0)
    path = data / "voc" / "im0.png"
    image = np.asarray(Image.open(path).convert("RGB"))
    from_file = detector(path)
    from_array = detector(image)
    assert np.array_equal(from_file.boxes, from_array.boxes)
    assert np.array_equal(from_file.scores, from_array.scores)
    given = detector(image, proposals=np.array([RED, BLUE], np.float32))
    assert given.num_proposals == 2 and len(given.boxes) == 4  # 2 boxes x 2 classes above 0
    assert set(map(tuple, given.boxes.tolist())) == {tuple(map(float, RED)),
                                                      tuple(map(float, BLUE))}


def test_detect_many_reports_an_undecodable_image_and_goes_on(data, tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    detector = Detector.load([data / "a.pt"], device="cpu")
    items = [data / "voc" / "im0.png", tmp_path / "bad.jpg", data / "voc" / "im1.png"]
    results = list(detector.detect_many(items, keep_going=True))
    assert [r.error is None for r in results] == [True, False, True]
    assert "bad.jpg" in results[1].error and len(results[1].boxes) == 0
    assert np.array_equal(results[2].scores, detector(items[2]).scores)
    with pytest.raises(DetectionError, match="bad.jpg"):
        list(detector.detect_many(items))


def test_a_cache_serves_the_proposals(data, tmp_path):
    cache = ProposalCache.create(tmp_path / "cache", "selective_search", {})
    cache.save("im0", np.array([RED, BLUE], np.float32))
    detector = Detector.load([data / "a.pt"], device="cpu", proposals=tmp_path / "cache",
                             score_threshold=0.0)
    result = detector(data / "voc" / "im0.png")
    assert result.num_proposals == 2
    with pytest.raises(DetectionError, match="image_id"):
        detector(picture(0))  # an array: which cache entry?
    assert detector(picture(0), image_id="im0").num_proposals == 2


@pytest.mark.usefixtures("no_downloads")
def test_imagenet_baseline_from_a_local_weights_file(data, tmp_path):
    with pytest.raises(DetectionError, match="--imagenet-weights FILE"):
        Detector.load(device="cpu")
    torch.manual_seed(0)
    state = googlenet(weights=None, aux_logits=True, init_weights=True).state_dict()
    state["fc.bias"][[10, 20]] = torch.tensor([8.0, 7.0])  # peaked: labels 11 and 21
    torch.save(state, tmp_path / "googlenet.pth")
    detector = Detector.load(device="cpu", imagenet_weights=tmp_path / "googlenet.pth")
    assert len(detector.classes) == 1000
    result = detector(picture(0), proposals=np.array([RED, BLUE], np.float32))
    assert set(result.labels.tolist()) == {11, 21}
    # The detect command's flag is the same thing.
    (tmp_path / "p.png").write_bytes((data / "voc" / "im0.png").read_bytes())
    assert detect_main([str(tmp_path / "p.png"), "--imagenet-weights",
                        str(tmp_path / "googlenet.pth"), "--out", str(tmp_path / "o"),
                        "--max-per-image", "3"]) == 0
    rows = json.loads((tmp_path / "o" / "detections.json").read_text())
    assert 0 < len(rows) <= 3 and {r["category_id"] for r in rows} <= {11, 21}


@pytest.mark.parametrize("kwargs, message", [
    ({"score_threshold": 1.5}, "--score-threshold 1.5 (score_threshold=1.5)"),
    ({"score_threshold": float("nan")}, "score_threshold=nan"),
    ({"nms_iou": 0.0}, "--nms-iou 0.0 (nms_iou=0.0): must be in (0, 1]"),
    ({"max_per_image": 0}, "max_per_image=0"),
    ({"batch_size": 0}, "batch_size=0"),
    ({"device": "gpu"}, "device gpu: unknown device"),
    ({"stacked": True}, "stacked"),
    ({"precision": "fp16"}, "precision 'fp16'"),
    ({"imagenet_weights": "x.pth"}, "imagenet_weights x.pth applies only without"),
])
def test_load_refuses_values_that_cannot_work(data, kwargs, message):
    with pytest.raises(DetectionError, match=re.escape(message)):
        Detector.load([data / "a.pt"], **{"device": "cpu", **kwargs})


def test_evaluate_model_is_the_test_command(data, tmp_path):
    cache = ProposalCache.create(tmp_path / "cache", "selective_search", {})
    for i in range(3):
        cache.save(f"im{i}", np.array([RED, BLUE, (0, 0, 40, 40)], np.float32))
    assert run_test_command(["--gt", str(data / "voc"), "--checkpoint", str(data / "a.pt"),
                      "--proposals", str(tmp_path / "cache"), "--out", str(tmp_path / "t"),
                      "--protocol", "voc", "--device", "cpu", "--backend", "torch"]) == 0
    detector = Detector.load([data / "a.pt"], device="cpu", backend="torch")
    dataset = load_dataset(data / "voc")
    ours = evaluate_model(detector.members, dataset, cache, detector.spec, torch.device("cpu"))
    assert ours.to_json() == json.loads((tmp_path / "t" / "evaluation.json").read_text())


def test_importing_the_datasets_and_the_detector_does_not_import_torch():
    # The Detector imports torch only for the torch backend (an ONNX export runs without it).
    code = ("import sys, detector, eval.datasets; assert 'torch' not in sys.modules; "
            "detector.Detector; assert 'torch' not in sys.modules; "
            "import detector.pipeline; assert 'torch' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
