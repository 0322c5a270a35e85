"""Bad checkpoints through every command that reads one: a pickle that would run code, and
damaged, foreign, swapped or too-new files. Each is one error line naming the file, with no
traceback, no partial output, and nothing of the file run (the marker file is never created).

Entry points: detect --checkpoint, test --checkpoint, train --resume, propose --multibox, and
train with model.weights: FILE (classifier and MultiBox tasks).

A reference bomb (a 1 KB file whose lists reference one another, 9**9 leaves once walked) is
refused without building anything: those runs happen in a child process whose address space
is capped at 1 GiB above what it holds after importing torch, so a walk that expanded the bomb
would end in MemoryError there, never take this machine's memory.
"""
from __future__ import annotations

import io
import json
import os
import pickletools
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from _check import assert_no_partial_files, assert_one_line_error, files_below
from eval.errors import DetectionError
from proposals.checkpoint import (FORMAT_VERSION, MAX_DEPTH, ModelSpec, load_checkpoint,
                                  save_checkpoint)
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


# --- reference bombs --------------------------------------------------------------------------

def reference_bomb(levels: int = 9) -> list:
    """A list holding one list 9 times, ``levels`` deep: ~1 KB pickled (the pickle stores each
    list once), 9**levels leaves for any walk that follows every reference."""
    bomb = [0]
    for _ in range(levels):
        bomb = [bomb] * 9
    return bomb


def with_bomb(source: Path, path: Path, key: str) -> Path:
    """The checkpoint ``source`` with `reference_bomb` stored under ``key`` (a field of its own
    or an unknown one), saved to ``path``."""
    payload = torch.load(source, weights_only=True)
    payload[key] = reference_bomb()
    torch.save(payload, path)
    assert path.stat().st_size < source.stat().st_size + 4096  # small on disk
    return path


# The child: imports everything, then caps its address space 1 GiB above what it holds, then
# runs one command (argv[1] names it, argv[2] its JSON arguments) and exits with its status.
# "load" is load_checkpoint itself: status 2 and the error on stderr, as a command does.
CAPPED_CHILD = """
import json, resource, sys
from detector.cli.detect import main as detect
from detector.cli.propose import main as propose
from detector.cli.test import main as test
from detector.cli.train import main as train
from eval.errors import DetectionError
from proposals.checkpoint import load_checkpoint

def load(argv):
    try:
        load_checkpoint(argv[0], kind=None)
    except DetectionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0

held = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (held + 2**30, held + 2**30))
command = {"load": load, "detect": detect, "propose": propose, "test": test, "train": train}
sys.exit(command[sys.argv[1]](json.loads(sys.argv[2])))
"""


def run_capped(command: str, argv: list) -> subprocess.CompletedProcess:
    """``command`` (a key of `CAPPED_CHILD`'s table) with ``argv`` in a child whose memory is
    capped; the timeout only stops a hang, no verdict depends on time."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", CAPPED_CHILD, command,
                           json.dumps([str(a) for a in argv])],
                          env=env, capture_output=True, text=True, timeout=300)


def assert_one_line(done: subprocess.CompletedProcess, *names: object) -> str:
    """The promise of `assert_one_line_error`, for a child's exit status and stderr."""
    assert "Traceback" not in done.stderr + done.stdout, done.stderr[-3000:]
    assert "MemoryError" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2, f"exit status {done.returncode}; stderr: {done.stderr[-3000:]}"
    assert len(errors) == 1, done.stderr
    for name in names:
        assert str(name) in errors[0], f"{name!r} not named in {errors[0]!r}"
    return errors[0]


# What from_plain did to the bomb before it was bounded: build every leaf.
EXPAND_BOMB = """
bomb = [0]
for _ in range(9):
    bomb = [bomb] * 9
flat = lambda v: [flat(i) for i in v] if isinstance(v, list) else v
flat(bomb)
"""


def test_the_cap_lets_a_real_checkpoint_load_and_stops_an_expanded_bomb(world):
    """The cap is no verdict by itself: a real checkpoint loads under it, and a walk that
    expands the bomb runs out of memory under it."""
    assert run_capped("load", [world / "cls.pt"]).returncode == 0
    child = CAPPED_CHILD.split("command = ")[0] + EXPAND_BOMB
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True,
                          timeout=300)
    assert "MemoryError" in done.stderr, done.stderr[-2000:]


@pytest.mark.parametrize("key", ["junk", "config", "rng", "proposals"])
def test_a_reference_bomb_is_refused_without_expanding_it(key, world, tmp_path):
    """Under an unknown field or a field of the format: one error naming the file, and the
    child's capped memory never ran out."""
    bomb = with_bomb(world / "cls.pt", tmp_path / "bomb.pt", key)
    assert_one_line(run_capped("load", [bomb]), bomb, "refused unread", "1,000,000 values")


def test_the_detect_command_refuses_a_reference_bomb_in_one_line(world, tmp_path):
    bomb = with_bomb(world / "cls.pt", tmp_path / "bomb.pt", "junk")
    before = files_below(tmp_path, world)
    done = run_capped("detect", [world / "a.png", "--checkpoint", bomb, "--out", tmp_path / "out",
                                 "--device", "cpu"])
    assert_one_line(done, bomb, "refused unread")
    assert_no_partial_files(before, tmp_path, world)


@pytest.mark.parametrize("entry", ["test --checkpoint", "train --resume", "propose --multibox",
                                   "train model.weights"])
def test_every_entry_point_refuses_a_reference_bomb(entry, world, tmp_path):
    source = world / ("mb.pt" if "multibox" in entry else "cls.pt")
    bomb = with_bomb(source, tmp_path / "bomb.pt", "config")
    command = entry.split()[0]
    assert_one_line(run_capped(command, argv_for(entry, bomb, world, tmp_path)), bomb,
                    "refused unread")


def test_an_unknown_field_is_refused_by_name(world, tmp_path):
    path = tmp_path / "extra.pt"
    payload = torch.load(world / "cls.pt", weights_only=True)
    torch.save({**payload, "hook": 1}, path)
    with pytest.raises(DetectionError, match=r"extra.pt: unknown field 'hook' in a classifier "
                                             r"checkpoint \(the fields are format, kind, "):
        load_checkpoint(path)
    payload = torch.load(world / "mb.pt", weights_only=True)
    torch.save({**payload, "classes": ["red"]}, path)  # a classifier's field, not MultiBox's
    with pytest.raises(DetectionError, match="unknown field 'classes' in a multibox"):
        load_checkpoint(path, kind="multibox")


def test_containers_nested_too_deep_are_refused(world, tmp_path):
    nested: list = []
    for _ in range(MAX_DEPTH + 5):
        nested = [nested]
    path = tmp_path / "deep.pt"
    torch.save({**torch.load(world / "cls.pt", weights_only=True), "config": nested}, path)
    with pytest.raises(DetectionError, match=f"deep.pt: refused unread: it holds containers "
                                             f"nested more than {MAX_DEPTH} deep"):
        load_checkpoint(path)


def test_a_tensor_larger_than_its_storage_is_refused(world, tmp_path):
    """A stride-0 view claims 10**9 elements over one: copying it would allocate 4 GB."""
    payload = torch.load(world / "cls.pt", weights_only=True)
    payload["state_dict"]["huge"] = torch.zeros(1).as_strided((10 ** 9,), (0,))
    torch.save(payload, tmp_path / "view.pt")
    with pytest.raises(DetectionError, match=r"view.pt: refused unread: it holds a tensor of "
                                             r"shape \(1000000000,\) over a storage of 1 "):
        load_checkpoint(tmp_path / "view.pt")


def test_a_real_training_checkpoint_has_only_known_fields(tiny_run):
    """Every field training writes (optimizer, scheduler, RNG, config) is one the reader knows."""
    payload = load_checkpoint(tiny_run / "last.pt", kind=None)
    assert {"optimizer", "scheduler", "rng", "config", "epoch"} <= set(payload)
