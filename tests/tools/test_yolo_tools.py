"""YOLO ground truth through the commands: tools/evaluate.py --gt data.yaml (coco128, as the
same labels in COCO JSON), propose --gt data.yaml --split, and a training config naming a data.yaml."""
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np

from _yolo import coco128_names, coco128_yolo, jittered, needs_coco128, tiny_yolo, yolo_to_coco
from detector.cli.evaluate import main as evaluate_main
from detector.cli.propose import main as propose_main
from eval.evaluate import evaluate_files

REPO = Path(__file__).resolve().parents[2]


@needs_coco128
def test_evaluate_tool_on_a_data_yaml(tmp_path):
    data = coco128_yolo(tmp_path)
    coco = yolo_to_coco(tmp_path, coco128_names())
    (tmp_path / "gt.json").write_text(json.dumps(coco))
    (tmp_path / "dets.json").write_text(json.dumps(jittered(coco)))
    out = tmp_path / "out.json"
    done = subprocess.run([sys.executable, "tools/evaluate.py", "--gt", str(data), "--split",
                           "train", "--detections", str(tmp_path / "dets.json"), "--json",
                           str(out)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["protocol"] == "coco"  # auto: Ultralytics reports COCO's mAP
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = evaluate_files(tmp_path / "gt.json", tmp_path / "dets.json")
    assert result["stats"] == list(reference.stats) and result["mAP"] == reference.mAP
    assert "2 label files without an image not read" in done.stderr  # coco128's 656 and 659


def test_evaluate_command_on_a_labels_folder(tmp_path, capsys):
    data = tiny_yolo(tmp_path)
    (tmp_path / "names.txt").write_text("red\nblue\n")
    dets = [{"image_id": "val0", "category_id": 1, "bbox": [20, 10, 50, 40], "score": 0.9},
            {"image_id": "val1", "category_name": "blue", "bbox": [80, 60, 40, 30], "score": 0.8}]
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    out = tmp_path / "res.json"
    assert evaluate_main(["--gt", str(tmp_path / "labels" / "val"), "--classes",
                          str(tmp_path / "names.txt"), "--detections", str(tmp_path / "dets.json"),
                          "--protocol", "voc", "--json", str(out)]) == 0
    # red: 1 of 2 found first (AP 0.5); blue: 1 of 2 found (AP 0.5).
    assert json.loads(out.read_text())["per_class"] == {"red": 0.5, "blue": 0.5}
    assert evaluate_main(["--gt", str(data), "--split", "val", "--detections",
                          str(tmp_path / "dets.json"), "--protocol", "voc", "--json",
                          str(out)]) == 0
    assert json.loads(out.read_text())["per_class"] == {"red": 0.5, "blue": 0.5}


def test_propose_on_a_data_yaml_split(tmp_path, capsys):
    from proposals.cache import ProposalCache

    data = tiny_yolo(tmp_path)
    out = tmp_path / "cache"
    assert propose_main(["--gt", str(data), "--split", "val", "--out", str(out),
                         "--max-side", "64"]) == 0
    cache = ProposalCache.open(out, "selective_search")
    assert cache.image_ids() == ["val0", "val1"]
    assert "computed 2 images, 0 failed" in capsys.readouterr().out


def test_training_config_naming_a_data_yaml_loads_its_splits(tmp_path):
    from detector.training.config import absolute_paths, load_train_config
    from detector.training.multibox import validation_set
    from eval.datasets import load_dataset

    data = tiny_yolo(tmp_path)
    config_file = tmp_path / "mb.yaml"
    config_file.write_text(f"task: multibox\ndata: {{gt: {data}, train_split: train, "
                           f"val_split: val}}\noutput: {tmp_path / 'run'}\n")
    config = absolute_paths(load_train_config(config_file))
    assert (config.data.train_split, config.data.val_split) == ("train", "val")
    train = load_dataset(config.data.gt, images=config.data.images, classes=config.data.classes,
                         split=config.data.train_split)
    assert [r.image_id for r in train.images] == ["train0", "train1", "train2"]
    assert train.classes == ("red", "blue")
    np.testing.assert_allclose(train.images[2].boxes, [[20, 20, 70, 60], [80, 60, 120, 90]],
                               atol=1e-4)
    val = validation_set(config.data)  # what training reads (each image decoded)
    assert [r.image_id for r in val.images] == ["val0", "val1"]
