"""benchmarks/bench_presets.py on two tiny generated COCO images: every method's row, the recall
columns by object size, and the goals against OpenCV fast (figures, not timings, checked)."""
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_presets",
                                                  ROOT / "benchmarks" / "bench_presets.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def write_coco(folder: Path) -> Path:
    """Two 128 x 160 photos, each a small (12 x 12), a medium (40 x 40) and a large (100 x 100)
    flat square on grey."""
    folder.mkdir()
    squares = [((130, 5), 12, (250, 250, 0)), ((115, 70), 40, (200, 30, 30)),
               ((5, 15), 100, (30, 30, 200))]
    images, annotations = [], []
    for i in range(2):
        image = np.full((128, 160, 3), 120, np.uint8)
        for (x, y), side, colour in squares:
            image[y:y + side, x:x + side] = colour
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1,
                                "category_id": 1, "bbox": [x, y, side, side],
                                "area": side * side, "iscrowd": 0})
        Image.fromarray(image).save(folder / f"{i}.png")
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": 160, "height": 128})
    gt = folder / "gt.json"
    gt.write_text(json.dumps({"images": images, "annotations": annotations,
                              "categories": [{"id": 1, "name": "square"}]}))
    return gt


def test_small_run_prints_every_row_and_writes_the_figures(tmp_path, capsys):
    bench = load_bench()
    gt = write_coco(tmp_path / "coco")
    out = tmp_path / "figures.json"
    assert bench.main(["--gt", str(gt), "--images", str(tmp_path / "coco"), "--json",
                       str(out)]) == 0
    text = capsys.readouterr().out
    for method in ("preset rcnn", "preset googlenet", "preset coco", "opencv fast k=150+150",
                   "opencv fast k=300+300"):
        assert f"| {method} " in text
    assert text.count("MET ") == 3  # each goal printed, met or not
    figures = json.loads(out.read_text())
    rows = {(r["method"], r["images"]): r for r in figures["rows"]}
    assert len(rows) == 5 * 3  # all, even, odd
    cv = rows[("opencv fast k=150+150", "all")]
    assert cv["cpu_ratio"] == 1.0
    # Flat squares: the coco preset finds all three sizes; rcnn misses the 12 px one (it drops
    # boxes under 20 px, and a 20 px box around it has IoU 144 / 400 = 0.36).
    coco = rows[("preset coco", "all")]
    assert [coco[f"recall_50{s}"] for s in ("", "_small", "_medium", "_large")] == [1.0] * 4
    rcnn = rows[("preset rcnn", "even")]
    assert [rcnn[f"recall_50{s}"] for s in ("", "_small", "_medium", "_large")] == \
        [2 / 3, 0.0, 1.0, 1.0]
    assert figures["presets"]["googlenet"]["superpixel_scale"] == 2.0
