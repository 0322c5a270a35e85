"""The evaluate command (detector.cli.evaluate) end to end: tables, --json, --plot, errors, and no torch on this path."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from detector.cli.evaluate import main

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} not present")
REPO = Path(__file__).resolve().parents[2]


def write_voc_fixture(root: Path) -> None:
    """Two images, classes cat/dog; VOC 1-based inclusive pixel coordinates."""
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    objects = {"a": [("cat", 11, 11, 50, 50, 0)], "b": [("dog", 1, 1, 20, 20, 0), ("cat", 30, 30, 60, 60, 1)]}
    for stem, objs in objects.items():
        xml = "".join(f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{x1}</xmin>"
                      f"<ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
                      for n, x1, y1, x2, y2, d in objs)
        (root / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><filename>{stem}.jpg</filename><size><width>100</width><height>80</height>"
            f"<depth>3</depth></size>{xml}</annotation>")


def test_voc_folder_all_point(tmp_path, capsys):
    write_voc_fixture(tmp_path / "voc")
    # cat in "a" is found exactly (VOC 11..50 is continuous 10..50, i.e. xywh 10,10,40,40);
    # the cat in "b" is difficult and the detection on it is ignored; the dog is missed,
    # a false dog detection sits elsewhere.
    dets = [{"image_id": "a", "category_name": "cat", "bbox": [10, 10, 40, 40], "score": 0.9},
            {"image_id": "b", "category_name": "cat", "bbox": [29, 29, 31, 31], "score": 0.8},
            {"image_id": "b", "category_name": "dog", "bbox": [70, 50, 10, 10], "score": 0.7}]
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    out = tmp_path / "out" / "res.json"
    out.parent.mkdir()
    code = main(["--gt", str(tmp_path / "voc"), "--detections", str(tmp_path / "dets.json"),
                 "--protocol", "voc", "--json", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert result == {"protocol": "voc", "mAP": 0.5, "per_class": {"cat": 1.0, "dog": 0.0}}
    assert "cat" in capsys.readouterr().out
    assert list(out.parent.iterdir()) == [out]  # no temporary file left behind


@needs_shared
def test_coco_vector_json_and_plot(tmp_path, capsys):
    expected = json.loads((SHARED / "EXPECTED.json").read_text())["coco_eval"]
    out, plot = tmp_path / "res.json", tmp_path / "pr.png"
    code = main(["--gt", str(SHARED / expected["gt"]), "--detections", str(SHARED / expected["dt"]),
                 "--json", str(out), "--plot", str(plot)])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["protocol"] == "coco"
    np.testing.assert_allclose(result["stats"], expected["stats"], rtol=0, atol=1e-9)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = capsys.readouterr().out
    assert "Average Precision  (AP) @[IoU=0.50:0.95 | area=   all | maxDets=100] = 0.505" in text


@needs_shared
def test_voc100_real_detections(tmp_path):
    """The real detector outputs of voc100 (COCO form) evaluate with every protocol."""
    dets_coco = json.loads((SHARED / "voc100/dets/coco_format/coco_dets.json").read_text())
    names = (SHARED / "voc100/voc.names").read_text().split()
    stems = {im["id"]: Path(im["file_name"]).stem for im in dets_coco["images"]}
    cats = {c["id"]: c["name"] for c in dets_coco["categories"]}
    dets = [{"image_id": stems[d["image_id"]], "category_name": cats[d["category_id"]],
             "bbox": d["bbox"], "score": d["score"]} for d in dets_coco["annotations"]]
    (tmp_path / "d.json").write_text(json.dumps(dets))
    (tmp_path / "classes.txt").write_text("\n".join(names))
    for protocol in ("voc", "voc07", "coco"):
        out = tmp_path / f"{protocol}.json"
        assert main(["--gt", str(SHARED / "voc100/gts/pascalvoc_format"), "--images", str(SHARED / "voc100/images"),
                     "--classes", str(tmp_path / "classes.txt"), "--detections", str(tmp_path / "d.json"),
                     "--protocol", protocol, "--json", str(out)]) == 0
        result = json.loads(out.read_text())
        assert 0.1 < result["mAP"] < 0.9 and list(result["per_class"]) == names


def test_errors_are_one_line(tmp_path, capsys):
    write_voc_fixture(tmp_path / "voc")
    code = main(["--gt", str(tmp_path / "voc"), "--detections", str(tmp_path / "nope.json")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nope.json" in err and err.count("\n") == 1
    (tmp_path / "d.json").write_text(json.dumps([{"image_id": "zzz", "category_name": "cat",
                                                  "bbox": [0, 0, 1, 1], "score": 1}]))
    assert main(["--gt", str(tmp_path / "voc"), "--detections", str(tmp_path / "d.json")]) == 2
    assert "'zzz'" in capsys.readouterr().err


def test_evaluation_path_never_imports_torch(tmp_path):
    """Run the tool in a fresh interpreter where importing torch is an error."""
    write_voc_fixture(tmp_path / "voc")
    (tmp_path / "d.json").write_text("[]")
    script = f"""
import sys
class BlockTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch imported on the evaluation path")
sys.meta_path.insert(0, BlockTorch())
from detector.cli.evaluate import main
import eval, eval.voc, eval.ilsvrc, eval.recall, eval.datasets
code = main(["--gt", {str(tmp_path / 'voc')!r}, "--detections", {str(tmp_path / 'd.json')!r}])
assert code == 0, code
assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules)
"""
    run = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
