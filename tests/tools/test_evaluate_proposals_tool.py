"""The evaluate command with --proposals (detector.cli.evaluate, proposals.report): the report of
two caches on a small COCO dataset, --json and --plot, a failed image, and the refusals."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from detector.cli.evaluate import main
from eval.datasets import load_dataset
from eval.proposal_report import REPORT_COUNTS, proposal_report
from proposals.cache import ProposalCache

REPO = Path(__file__).resolve().parents[2]
# Three 200 x 100 images. Image 1: a small box (area 400) and a large one (area from the file,
# 10000, not its w * h); image 2: a medium box and a crowd box; image 3: no object.
IMAGES = [{"id": i, "width": 200, "height": 100, "file_name": f"{i}.jpg"} for i in (1, 2, 3)]
ANNOTATIONS = [
    {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0},
    {"id": 2, "image_id": 1, "category_id": 2, "bbox": [50, 0, 140, 90], "area": 10000,
     "iscrowd": 0},
    {"id": 3, "image_id": 2, "category_id": 1, "bbox": [100, 40, 50, 40], "area": 2000,
     "iscrowd": 0},
    {"id": 4, "image_id": 2, "category_id": 1, "bbox": [0, 0, 90, 90], "area": 8100, "iscrowd": 1},
]
# Proposals (xyxy), best first, of two methods.
GOOD = {1: [[10, 10, 30, 30], [50, 0, 190, 90], [0, 0, 5, 5]], 2: [[100, 40, 150, 80]],
        3: [[0, 0, 10, 10]] * 4}
POOR = {1: [[0, 0, 5, 5], [10, 10, 30, 40]], 2: [[100, 40, 150, 100]], 3: []}


@pytest.fixture
def data(tmp_path) -> Path:
    """gt.json and the caches good/ and runs/poor/ (boxes written with ProposalCache)."""
    (tmp_path / "gt.json").write_text(json.dumps({
        "images": IMAGES, "annotations": ANNOTATIONS,
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}))
    for folder, boxes in (("good", GOOD), ("runs/poor", POOR)):
        cache = ProposalCache.create(tmp_path / folder, "test", {"which": folder})
        for image_id, rows in boxes.items():
            cache.save(image_id, np.array(rows, np.float32).reshape(-1, 4))
    return tmp_path


def run(data: Path, *argv) -> int:
    return main(["--gt", str(data / "gt.json"), *[str(a) for a in argv]])


def one_error(capsys, code: int, *names) -> str:
    """The command exited with status 2 and printed one ``error:`` line naming ``names``."""
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    for name in names:
        assert str(name) in lines[0], lines[0]
    return lines[0]


def test_two_caches_json_and_plot(data, capsys, monkeypatch):
    import eval.proposal_report as module

    figures = []
    plot = module.plot_proposal_report
    monkeypatch.setattr(module, "plot_proposal_report",
                        lambda *a, **k: figures.append(plot(*a, **k)) or figures[-1])
    good, poor = str(data / "good"), str(data / "runs" / "poor")
    out, png = data / "out" / "report.json", data / "out" / "report.png"
    assert run(data, "--proposals", good, "--proposals", poor, "--json", out, "--plot", png) == 0
    text = capsys.readouterr().out
    assert f"{good}: 3 images (0 failed), 3 gt boxes (small 1, medium 1, large 1)" in text
    tables = json.loads(out.read_text())
    assert list(tables) == [good, poor]  # keyed by the paths as given
    # Good finds every object exactly, within its first 10 boxes.
    assert tables[good]["counts"] == [*REPORT_COUNTS[:-1], None]
    assert tables[good]["AR"] == [1.0] * len(REPORT_COUNTS)
    assert tables[good]["boxes_per_image"] == pytest.approx(8 / 3)
    assert tables[good]["num_gt_by_size"] == {"small": 1, "medium": 1, "large": 1}
    # Poor: the small box at IoU 400/600, the medium one at 2000/3000, the large one missed.
    assert tables[poor]["recall"]["0.65"][-1] == pytest.approx(2 / 3)
    assert tables[poor]["recall"]["0.7"][-1] == 0.0
    assert tables[poor]["AR_by_size"]["large"][-1] == 0.0
    assert tables[poor]["AR_by_size"]["small"][-1] == pytest.approx(0.4)  # 0.5..0.65: 4 of 10
    # The same numbers as the library's report of the same boxes in memory.
    records = load_dataset(data / "gt.json").images
    expected = proposal_report(records, [np.array(POOR[r.image_id]) for r in records])
    assert tables[poor] == json.loads(json.dumps(expected.to_json()))
    assert png.stat().st_size > 0 and png.read_bytes()[:4] == b"\x89PNG"
    (fig,) = figures
    assert all(len(ax.lines) == 2 for ax in fig.axes if ax.get_visible() and ax.axison)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["good", "poor"]


def test_a_failed_image_counts_as_no_proposals(data, capsys):
    cache = ProposalCache.open(data / "runs" / "poor")
    (data / "runs" / "poor" / "boxes" / "2.npy").unlink()
    cache.record_failure(2, "2.jpg", "cannot decode")
    out = data / "r.json"
    assert run(data, "--proposals", data / "runs" / "poor", "--json", out) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "1 of the 3 images are recorded as failed" in err
    table = json.loads(out.read_text())[str(data / "runs" / "poor")]
    assert table["failed_images"] == 1 and table["recall"]["0.5"][-1] == pytest.approx(1 / 3)


def test_an_image_missing_from_a_cache_is_one_error(data, capsys):
    (data / "good" / "boxes" / "3.npy").unlink()
    (data / "good" / "boxes" / "1.npy").unlink()
    line = one_error(capsys, run(data, "--proposals", data / "runs" / "poor", "--proposals",
                                 data / "good", "--json", data / "r.json"),
                     data / "good", "2 of the 3 images", "1, 3", "tools/propose.py --gt")
    assert "--out " + str(data / "good") in line
    assert not (data / "r.json").exists()


@pytest.mark.parametrize("argv, names", [
    (["--protocol", "coco"], ["--protocol coco", "--proposals"]),
    (["--blacklist", "b.txt"], ["--blacklist", "--proposals"]),
    (["--classes", "c.txt"], ["--classes", "COCO JSON"]),
    (["--proposals", "good"], ["good", "given twice"]),
    (["--json", "good/report.json"], ["--json", "in the proposal cache --proposals good"]),
    (["--plot", "good/new/9.png"], ["--plot", "in the proposal cache"]),  # no folder made
    (["--json", "./good"], ["--json", "in the proposal cache"]),
    (["--json", "gt.json"], ["--json", "--gt"]),
    (["--json", "runs"], ["--json", "is a folder"]),
])
def test_refusals(data, capsys, monkeypatch, argv, names):
    monkeypatch.chdir(data)
    (data / "c.txt").write_text("cat\n")
    (data / "b.txt").write_text("1 1\n")
    before = sorted(p for p in data.rglob("*"))
    one_error(capsys, main(["--gt", "gt.json", "--proposals", "good", *argv]), *names)
    assert sorted(p for p in data.rglob("*")) == before


def test_detections_and_proposals_exclude_each_other(data, capsys):
    (data / "d.json").write_text("[]")
    with pytest.raises(SystemExit) as done:
        run(data, "--detections", data / "d.json", "--proposals", data / "good")
    assert done.value.code == 2 and "not allowed with" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:
        run(data)
    err = capsys.readouterr().err
    assert done.value.code == 2 and "--detections" in err and "--proposals" in err


def test_boxes_past_the_annotated_size_are_one_warning_and_no_cache_one_error(data, capsys):
    cache = ProposalCache.open(data / "good")
    cache.save(1, np.array([[0, 0, 400, 50]], np.float32))  # past the 200 x 100 image
    assert run(data, "--proposals", data / "good") == 0
    assert "warning:" in capsys.readouterr().err.split("boxes of 1 images reach past")[0]
    one_error(capsys, run(data, "--proposals", data / "nope"), "nope", "not a proposal cache")


def test_proposal_report_never_imports_torch(data):
    script = f"""
import sys
class BlockTorch:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("torch", "torchvision", "cv2"):
            raise ImportError("torch imported on the evaluation path")
sys.meta_path.insert(0, BlockTorch())
from detector.cli.evaluate import main
code = main(["--gt", {str(data / 'gt.json')!r}, "--proposals", {str(data / 'good')!r}])
assert code == 0, code
assert not any(m.partition(".")[0] in ("torch", "cv2") for m in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "3 images (0 failed)" in done.stdout
