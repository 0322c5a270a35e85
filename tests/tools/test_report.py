"""The error report (--report) of the evaluate and test commands: the page parses, holds every
class's AP equal to evaluation.json's, escapes hostile class names, references thumbnails that
exist, needs nothing from outside, and the output folder is checked before the work."""
import json
from html.parser import HTMLParser
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image

from detector.cli.evaluate import main as evaluate_main

HOSTILE = "<script>alert(1)</script>"
OTHER = 'cat & "dog" \u00e9\u6f22'
# Continuous (x1, y1, x2, y2) boxes of the three 120 x 100 images.
OBJECTS = {"a": [(HOSTILE, (10, 10, 60, 60)), (OTHER, (70, 20, 110, 80))],
           "b": [(HOSTILE, (20, 20, 50, 50)), (OTHER, (60, 10, 100, 90))],
           "c": [(HOSTILE, (5, 5, 40, 40))]}
DETECTIONS = [("a", HOSTILE, 0.9, (10, 10, 60, 60)),    # TP
              ("a", HOSTILE, 0.8, (12, 10, 60, 60)),    # duplicate
              ("a", HOSTILE, 0.7, (70, 20, 110, 80)),   # confusion
              ("b", HOSTILE, 0.6, (20, 20, 50, 32)),    # localisation
              ("b", HOSTILE, 0.5, (2, 70, 12, 80)),     # background
              ("a", OTHER, 0.95, (70, 20, 110, 80))]    # TP; the other in b is missed


def write_voc(root: Path) -> Path:
    """A VOC root: JPEG images with a coloured block per object, XMLs (1-based inclusive)."""
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    rng = np.random.default_rng(0)
    for stem, objects in OBJECTS.items():
        pixels = rng.integers(80, 120, (100, 120, 3), dtype=np.uint8)
        xml = ""
        for k, (name, (x1, y1, x2, y2)) in enumerate(objects):
            pixels[y1:y2, x1:x2] = (200, 40, 40) if k == 0 else (40, 40, 200)
            xml += (f"<object><name>{escape(name)}</name><difficult>0</difficult><bndbox>"
                    f"<xmin>{x1 + 1}</xmin><ymin>{y1 + 1}</ymin><xmax>{x2}</xmax>"
                    f"<ymax>{y2}</ymax></bndbox></object>")
        Image.fromarray(pixels).save(root / "JPEGImages" / f"{stem}.jpg")
        (root / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><filename>{stem}.jpg</filename><size><width>120</width>"
            f"<height>100</height><depth>3</depth></size>{xml}</annotation>", encoding="utf-8")
    return root


def write_detections(path: Path, image_id=lambda stem: stem) -> Path:
    path.write_text(json.dumps([
        {"image_id": image_id(stem), "category_name": name, "score": score,
         "bbox": [x1, y1, x2 - x1, y2 - y1]}
        for stem, name, score, (x1, y1, x2, y2) in DETECTIONS]))
    return path


class Page(HTMLParser):
    """What a test reads from the page: every start tag, the text, the images, and the rows
    of the per-class table as (class name, the AP cell's data-value)."""

    def __init__(self, text: str):
        super().__init__()
        self.tags, self.text, self.images, self.rows, self.mAP = [], [], [], {}, None
        self._table, self._row, self._link = False, None, None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "table" and attrs.get("class") == "classes":
            self._table = True
        if self._table and tag == "tr":
            self._row = {}
        if self._row is not None and tag == "a":
            self._link = ""
        if "data-value" in attrs:
            if self._row is not None:
                self._row["ap"] = float(attrs["data-value"])
            else:
                self.mAP = float(attrs["data-value"])

    def handle_endtag(self, tag):
        if tag == "a" and self._link is not None:
            self._row["name"], self._link = self._link, None
        if tag == "tr" and self._row is not None:
            if "name" in self._row:
                self.rows[self._row["name"]] = self._row.get("ap")
            self._row = None
        if tag == "table":
            self._table = False

    def handle_data(self, data):
        self.text.append(data)
        if self._link is not None:
            self._link += data


def check_page(report: Path, evaluation: dict) -> Page:
    """The page's APs are evaluation.json's, nothing is loaded from outside, no script runs,
    and every thumbnail it shows is a file of the report."""
    text = (report / "index.html").read_text(encoding="utf-8")
    page = Page(text)
    assert page.rows == evaluation["per_class"]
    assert page.mAP == evaluation["mAP"]
    assert not {tag for tag, _ in page.tags} & {"script", "link", "iframe", "object", "embed"}
    for _, attrs in page.tags:
        for key, value in attrs.items():
            assert not key.startswith("on"), key  # no event handler
            assert "://" not in (value or "") and not (value or "").startswith("//"), value
    assert "url(" not in text and "@import" not in text
    assert page.images and all((report / src).is_file() for src in page.images)
    assert all(not Path(src).is_absolute() for src in page.images)
    return page


def test_evaluate_report_voc(tmp_path, capsys):
    voc = write_voc(tmp_path / "voc")
    dets = write_detections(tmp_path / "d.json")
    report, out = tmp_path / "rep", tmp_path / "e.json"
    assert evaluate_main(["--gt", str(voc), "--detections", str(dets), "--json", str(out),
                          "--report", str(report)]) == 0
    assert f"wrote {report / 'index.html'}" in capsys.readouterr().out
    evaluation = json.loads(out.read_text())
    page = check_page(report, evaluation)
    assert set(page.rows) == {HOSTILE, OTHER}  # the names read back as they are
    text = "".join(page.text)
    for kind in ("duplicate", "confusion", "localisation", "background", "missed"):
        assert f"{kind} (1)" in text, kind
    assert "IoU 1.00 with a " + OTHER in text  # the confusion's caption names the other class
    # Thumbnails: the worst false positive of each kind and the missed objects, as JPEGs.
    assert len(page.images) == 4 + 3
    with Image.open(report / page.images[0]) as im:
        assert im.format == "JPEG" and max(im.size) <= 200


def test_an_unreadable_image_leaves_its_thumbnails_out(tmp_path):
    voc = write_voc(tmp_path / "voc")
    (voc / "JPEGImages" / "c.jpg").write_bytes(b"not a jpeg")
    report = tmp_path / "rep"
    assert evaluate_main(["--gt", str(voc), "--detections",
                          str(write_detections(tmp_path / "d.json")), "--report", str(report)]) == 0
    text = "".join(Page((report / "index.html").read_text(encoding="utf-8")).text)
    assert "image not read:" in text and "c.jpg" in text


def write_coco(root: Path) -> Path:
    """The same three images as COCO JSON with its images folder."""
    voc = write_voc(root / "voc")
    names = [HOSTILE, OTHER]
    images = [{"id": i + 1, "file_name": f"{stem}.jpg", "width": 120, "height": 100}
              for i, stem in enumerate(OBJECTS)]
    annotations = [{"id": len(images) * 10 + k * 3 + i, "image_id": i + 1,
                    "category_id": names.index(name) + 1, "iscrowd": 0,
                    "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)}
                   for i, objects in enumerate(OBJECTS.values())
                   for k, (name, (x1, y1, x2, y2)) in enumerate(objects)]
    gt = root / "gt.json"
    gt.write_text(json.dumps({"images": images, "annotations": annotations, "categories": [
        {"id": k + 1, "name": name} for k, name in enumerate(names)]}))
    return voc / "JPEGImages"


def test_evaluate_report_coco_json_needs_the_images(tmp_path, capsys):
    images = write_coco(tmp_path)
    dets = write_detections(tmp_path / "d.json", lambda stem: list(OBJECTS).index(stem) + 1)
    base = ["--gt", str(tmp_path / "gt.json"), "--detections", str(dets)]
    assert evaluate_main(base + ["--report", str(tmp_path / "rep")]) == 2
    assert "--images" in capsys.readouterr().err
    assert not (tmp_path / "rep").exists()  # refused before any folder was made
    assert evaluate_main(base + ["--images", str(images)]) == 2  # still refused without --report
    out = tmp_path / "e.json"
    assert evaluate_main(base + ["--images", str(images), "--report", str(tmp_path / "rep"),
                                 "--json", str(out)]) == 0
    evaluation = json.loads(out.read_text())
    assert evaluation["protocol"] == "coco"
    check_page(tmp_path / "rep", evaluation)
    text = (tmp_path / "rep" / "index.html").read_text(encoding="utf-8")
    assert "AP50" in text


def test_report_folder_checked_before_the_work(tmp_path, capsys):
    voc = write_voc(tmp_path / "voc")
    dets = write_detections(tmp_path / "d.json")
    base = ["--gt", str(voc), "--detections", str(dets)]
    # The images' folder, the ground truth's, and a report page that would be the --json file.
    assert evaluate_main(base + ["--images", str(voc / "JPEGImages"),
                                 "--report", str(voc / "JPEGImages")]) == 2
    assert "holds images ('a.jpg'...), a data set's folder" in capsys.readouterr().err
    # The VOC root's images, found by the reader, not named: the same.
    assert evaluate_main(base + ["--report", str(voc / "JPEGImages")]) == 2
    assert "holds images" in capsys.readouterr().err
    assert evaluate_main(base + ["--report", str(voc)]) == 2
    assert "is also an input" in capsys.readouterr().err
    assert evaluate_main(base + ["--json", str(tmp_path / "r" / "index.html"),
                                 "--report", str(tmp_path / "r")]) == 2
    assert "is also an input" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert evaluate_main(base + ["--report", str(tmp_path / "file")]) == 2
    assert "is a file" in capsys.readouterr().err
    assert sorted(p.name for p in (voc / "JPEGImages").iterdir()) == ["a.jpg", "b.jpg", "c.jpg"]


def test_test_command_report(tmp_path, monkeypatch, one_torch_thread):
    """tools/test.py --report: OUT/report/index.html beside detections.json and
    evaluation.json, from the same evaluation (an oracle classifier on given proposals)."""
    import torch

    import detector.pipeline
    from detector.classifier import build_classifier
    from detector.cli.test import main
    from proposals.cache import ProposalCache
    from proposals.checkpoint import ModelSpec, save_checkpoint

    voc = write_voc(tmp_path / "voc")
    checkpoint = tmp_path / "model.pt"
    torch.manual_seed(0)
    save_checkpoint(checkpoint, classes=[HOSTILE, OTHER], spec=ModelSpec(2, 64, 4),
                    state_dict=build_classifier(2, weights=None, input_size=64).state_dict(),
                    proposals={"method": "selective_search", "params": {}})
    cache = ProposalCache.create(tmp_path / "cache", "selective_search", {})
    for stem, objects in OBJECTS.items():  # each object, and a box beside the first
        boxes = [box for _, box in objects] + [(0, 80, 30, 100)]
        cache.save(stem, np.array(boxes, np.float32))

    def oracle(pixels, boxes, members, **_):
        # The first box hostile, the others the other class, the box beside them scored best.
        probs = torch.zeros(len(boxes), 3)
        probs[0, 1] = 0.9
        probs[1:, 2] = torch.linspace(0.8, 0.95, len(boxes) - 1)
        return probs, None

    monkeypatch.setattr(detector.pipeline, "classify_regions", oracle)
    out = tmp_path / "out"
    assert main(["--gt", str(voc), "--checkpoint", str(checkpoint), "--proposals",
                 str(tmp_path / "cache"), "--out", str(out), "--report", "--backend", "torch"]) == 0
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert 0 < evaluation["mAP"] < 1
    check_page(out / "report", evaluation)
