"""The bad-image corpus as a dataset, through propose, train and test: the good images are
used, the undecodable ones are recorded once (in the cache's failed/ folder) and then skipped
with a count, and nothing crashes. (tests/bad_input/test_bad_images.py holds each image to
read_image and selective search; test_bad_propose.py and test_bad_detect.py take the corpus as
a folder.)"""
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from corpus import EXPECTED, write_corpus
from detector.cli.propose import main as propose
from detector.cli.test import main as run_test_command
from detector.cli.train import main as train
from proposals.cache import ProposalCache

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def annotate(images: Path) -> list[str]:
    """A VOC XML per corpus image file (one 'thing' over the whole picture); the ids of the
    images that cannot be decoded, which get a made-up 32 x 32 size."""
    bad = []
    for path in sorted(p for p in images.iterdir() if p.is_file() and not p.is_symlink()):
        try:
            with Image.open(path) as im:
                im.load()
                width, height = im.size
        except Exception:
            width = height = 32
        if EXPECTED.get(_name(path)) == "error":
            bad.append(path.stem)
        (images / f"{path.stem}.xml").write_text(
            f"<annotation><filename>{path.name}</filename><size><width>{width}</width>"
            f"<height>{height}</height></size><object><name>thing</name><bndbox><xmin>1</xmin>"
            f"<ymin>1</ymin><xmax>{width}</xmax><ymax>{height}</ymax></bndbox></object>"
            "</annotation>")
    return bad


def _name(path: Path) -> str:
    return next((n for n, p in CORPUS.items() if p.name == path.name), "")


CORPUS: dict[str, Path] = {}


def test_corpus_dataset_through_propose_train_and_test(tmp_path, capsys):
    CORPUS.update(write_corpus(tmp_path / "images"))
    images = tmp_path / "images"
    for path in list(images.iterdir()):   # a dataset holds files: drop the folder and link
        if path.is_symlink():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)
    bad = annotate(images)
    cache = tmp_path / "cache"
    assert propose(["--gt", str(images), "--out", str(cache), "--min-box-side", "1"]) == 1
    failed = ProposalCache.open(cache).failed_ids()
    assert set(bad) <= set(failed), (bad, failed)
    out = capsys.readouterr()
    assert "Traceback" not in out.err

    (tmp_path / "train.yaml").write_text(json.dumps({
        "data": {"gt": str(images), "proposals": str(cache)},
        "model": {"input_size": 32, "context_pad": 2, "weights": None},
        "solver": {"epochs": 1, "steps": [1], "images_per_batch": 2, "regions_per_batch": 16},
        "loader_workers": 0, "output": str(tmp_path / "run")}))
    assert train(["--config", str(tmp_path / "train.yaml"), "--device", "cpu"]) == 0
    out = capsys.readouterr()
    assert f"skipping {len(failed)} of {len(failed) + 12} training images" in out.out
    assert str(cache / "failed") in out.out
    assert "Traceback" not in out.err

    status = run_test_command(["--gt", str(images), "--checkpoint", str(tmp_path / "run" / "last.pt"),
                   "--proposals", str(cache), "--protocol", "voc", "--out", str(tmp_path / "t"),
                   "--device", "cpu"])
    out = capsys.readouterr()
    assert status == 0 and "Traceback" not in out.err
    evaluation = json.loads((tmp_path / "t" / "evaluation.json").read_text())
    assert 0 <= evaluation["mAP"] <= 1
    detected = {d["image_id"] for d in json.loads((tmp_path / "t" / "detections.json").read_text())}
    assert not detected & set(failed)  # skipped images have no detections: their object is missed
