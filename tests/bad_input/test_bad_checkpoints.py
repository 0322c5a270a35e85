"""Bad checkpoints through every command that reads one: a pickle that would run code, and
damaged, foreign, swapped or too-new files. Each is one error line naming the file, with no
traceback, no partial output, and nothing of the file run (the marker file is never created).

Entry points: detect --checkpoint, test --checkpoint, train --resume, propose --multibox, and
train with model.weights: FILE (classifier and MultiBox tasks).
"""
from __future__ import annotations

import io
import pickletools
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from _check import assert_no_partial_files, assert_one_line_error, files_below
from proposals.checkpoint import FORMAT_VERSION, ModelSpec, save_checkpoint
from detector.cli.detect import main as detect
from detector.cli.propose import main as propose
from detector.cli.test import main as cli_test
from detector.cli.train import main as train
from detector.classifier import RegionClassifier
from proposals.cache import ProposalCache
from proposals.multibox import MultiBox, save_multibox

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = 32


class OpensMarker:
    """Unpickled without ``weights_only``, this calls ``open(marker, "w")``: the file appears."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def write_hostile(path: Path, marker: Path) -> Path:
    """A checkpoint-shaped ``.pt`` whose pickle would run code (create ``marker``) if loaded
    without ``weights_only``."""
    torch.save({"format": FORMAT_VERSION, "classes": ["red"], "model": {"num_classes": 1},
                "state_dict": {}, "kind": "classifier", "hook": OpensMarker(marker)}, path)
    return path


def calls_in_pickle(path: Path) -> list[str]:
    """The globals the pickle inside a torch.save archive references (read, never run)."""
    with zipfile.ZipFile(path) as archive:
        name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
        data = archive.read(name)
    found, strings = [], []
    for opcode, arg, _ in pickletools.genops(data):
        if opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(arg)
        elif opcode.name == "GLOBAL":
            found.append(arg.replace(" ", "."))
        elif opcode.name == "STACK_GLOBAL":
            found.append(".".join(strings[-2:]))
    return found


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """A one-class VOC dataset of 2 images, a proposal cache, and real checkpoints: a classifier
    (``cls.pt``) and a MultiBox network (``mb.pt``), at input size 32."""
    root = tmp_path_factory.mktemp("ckpt_world")
    rng = np.random.default_rng(0)
    for stem in ("a", "b"):
        image = rng.integers(90, 140, size=(48, 64, 3), dtype=np.uint8)
        image[8:40, 10:50] = (220, 30, 30)
        Image.fromarray(image).save(root / f"{stem}.png")
        (root / f"{stem}.xml").write_text(
            f"<annotation><filename>{stem}.png</filename><size><width>64</width><height>48"
            "</height></size><object><name>red</name><bndbox><xmin>11</xmin><ymin>9</ymin>"
            "<xmax>50</xmax><ymax>40</ymax></bndbox></object></annotation>")
    cache = ProposalCache.create(root / "cache", "selective_search", {})
    for stem in ("a", "b"):
        cache.save(stem, np.array([[10, 8, 50, 40], [0, 0, 30, 30]], np.float32))
    torch.manual_seed(0)
    save_checkpoint(root / "cls.pt", classes=["red"], spec=ModelSpec(1, SIZE, 2),
                    state_dict=RegionClassifier(1, SIZE).state_dict(),
                    proposals={"method": "selective_search", "params": {}})
    save_multibox(root / "mb.pt", MultiBox(torch.tensor([[0.1, 0.1, 0.6, 0.7],
                                                         [0.3, 0.2, 0.9, 0.9]]), SIZE))
    return root


def train_config(world: Path, folder: Path, weights: Path, task: str) -> Path:
    """A training config (classifier or MultiBox task) whose model.weights is ``weights``."""
    if task == "multibox":
        body = (f"task: multibox\ndata: {{gt: {world}}}\nmodel: {{num_priors: 2, input_size: "
                f"{SIZE}, weights: {weights}, prior_samples: 2}}\n")
    else:
        body = (f"data: {{gt: {world}, proposals: {world / 'cache'}}}\nmodel: {{input_size: "
                f"{SIZE}, context_pad: 2, weights: {weights}}}\n"
                "solver: {regions_per_batch: 4, images_per_batch: 2}\n")
    config = folder / f"{task}.yaml"
    config.write_text(body + f"loader_workers: 0\noutput: {folder / 'run'}\n")
    return config


# Each entry point and the command (its main) that it runs.
ENTRY_POINTS = {"detect --checkpoint": detect, "test --checkpoint": cli_test,
                "train --resume": train, "propose --multibox": propose,
                "train model.weights": train, "train task multibox model.weights": train}


def argv_for(entry: str, file: Path, world: Path, folder: Path) -> list:
    """The command line of ``entry`` with ``file`` in its checkpoint's place."""
    out = folder / "out"
    if entry == "detect --checkpoint":
        return [world / "a.png", "--checkpoint", file, "--out", out, "--device", "cpu"]
    if entry == "test --checkpoint":
        return ["--gt", world, "--checkpoint", file, "--proposals", world / "cache",
                "--out", out, "--device", "cpu"]
    if entry == "train --resume":
        return ["--resume", file, "--set", f"output={out}", "--device", "cpu"]
    if entry == "propose --multibox":
        return ["--gt", world, "--out", out, "--multibox", file]
    task = "multibox" if "multibox" in entry else "classifier"
    return ["--config", train_config(world, folder, file, task), "--device", "cpu"]


def assert_refused(capsys, entry: str, file: Path, world: Path, folder: Path, *names) -> str:
    """``entry`` with ``file``: one error line naming it (and ``names``), nothing written."""
    argv = argv_for(entry, file, world, folder)
    before = files_below(folder, world)
    line = assert_one_line_error(capsys, ENTRY_POINTS[entry], argv, file, *names)
    assert_no_partial_files(before, folder, world)
    return line


def test_the_hostile_file_would_run_code(tmp_path):
    """The fixture is what it claims: its pickle calls open (shown without running it)."""
    hostile = write_hostile(tmp_path / "evil.pt", tmp_path / "marker")
    assert {"io.open", "builtins.open"} & set(calls_in_pickle(hostile))
    assert not (tmp_path / "marker").exists()


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_a_pickle_that_runs_code_is_refused_unread(entry, world, tmp_path, capsys):
    marker = tmp_path / "marker"
    hostile = write_hostile(tmp_path / "evil.pt", marker)
    line = assert_refused(capsys, entry, hostile, world, tmp_path)
    assert "could run code" in line
    assert not marker.exists(), "loading the checkpoint ran code from it"


def truncated(world: Path, folder: Path) -> Path:
    data = (world / "cls.pt").read_bytes()
    (folder / "cut.pt").write_bytes(data[:len(data) // 2])
    return folder / "cut.pt"


def random_bytes(world: Path, folder: Path) -> Path:
    (folder / "noise.pt").write_bytes(np.random.default_rng(1).bytes(5000))
    return folder / "noise.pt"


def foreign_zip(world: Path, folder: Path) -> Path:
    with zipfile.ZipFile(folder / "photos.pt", "w") as archive:
        archive.writestr("photos/readme.txt", "holiday pictures")
    return folder / "photos.pt"


def newer_format(world: Path, folder: Path) -> Path:
    buffer = io.BytesIO()
    torch.save({"format": FORMAT_VERSION + 1, "classes": ["red"], "model": {"num_classes": 1},
                "state_dict": {}, "kind": "classifier"}, buffer)
    (folder / "future.pt").write_bytes(buffer.getvalue())
    return folder / "future.pt"


def empty_file(world: Path, folder: Path) -> Path:
    (folder / "empty.pt").write_bytes(b"")
    return folder / "empty.pt"


MALFORMED = {"truncated": (truncated, "truncated"), "random bytes": (random_bytes, "torch.save"),
             "zip, not a checkpoint": (foreign_zip, "not a readable torch.save file"),
             "newer format": (newer_format, f"format {FORMAT_VERSION + 1} is newer"),
             "empty": (empty_file, "torch.save")}


@pytest.mark.parametrize("case", list(MALFORMED))
@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_a_malformed_checkpoint_is_one_line(case, entry, world, tmp_path, capsys):
    make, says = MALFORMED[case]
    assert_refused(capsys, entry, make(world, tmp_path), world, tmp_path, says)


@pytest.mark.parametrize("entry, given, flag", [
    ("detect --checkpoint", "mb.pt", "--multibox"),
    ("test --checkpoint", "mb.pt", "--multibox"),
    ("propose --multibox", "cls.pt", "--checkpoint")])
def test_a_checkpoint_of_the_other_kind_names_its_flag(entry, given, flag, world, tmp_path,
                                                       capsys):
    """A MultiBox network where a classifier goes, and the other way round: refused before any
    image, naming the flag the file belongs to."""
    assert_refused(capsys, entry, world / given, world, tmp_path, "where a", flag)
