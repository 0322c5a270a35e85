"""One line, never a traceback, for what goes wrong during a run rather than in its input: a
loss that diverges, a file name that the output's encoding cannot write, and Ctrl-C or SIGTERM
while worker processes run.

The signal tests run the command in its own process group and send the signal once the run
shows it is under way (a line it printed, a file it wrote): a wait with a generous deadline,
never a verdict; every verdict is an exit status, a message, or a process that is gone.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from _check import assert_one_line_error
from _tiny import CLASSES, save_voc_image
from detector.classifier import build_classifier
from detector.cli.detect import main as detect
from detector.cli.propose import main as propose
from detector.cli.train import main as train
from proposals.checkpoint import ModelSpec, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[2]
SIZE = 32
# A name whose bytes are not UTF-8 (Latin-1 "café"), as Python holds it on Linux: a lone
# surrogate that a strict UTF-8 stream cannot write.
CAFE = os.fsdecode(b"caf\xe9")


def write_dataset(folder: Path, count: int) -> Path:
    """``count`` images of the tiny dataset's kind (a red and a blue rectangle) with their VOC
    XMLs in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        image = rng.integers(100, 130, size=(72, 96, 3), dtype=np.uint8)
        r, b = (4 + i % 10, 6, 34 + i % 10, 40), (50, 30 + i % 4, 90, 66)
        image[r[1]:r[3], r[0]:r[2]] = (210, 40, 40)
        image[b[1]:b[3], b[0]:b[2]] = (30, 40, 200)
        save_voc_image(folder, f"im{i:03d}", image, dict(zip(CLASSES, (r, b))))
    return folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """An untrained classifier of the tiny dataset's classes at input size 32, proposing with
    few selective-search boxes (fast)."""
    path = tmp_path_factory.mktemp("robust") / "model.pt"
    torch.manual_seed(0)
    save_checkpoint(path, classes=list(CLASSES), spec=ModelSpec(len(CLASSES), SIZE, 2),
                    state_dict=build_classifier(len(CLASSES), weights=None,
                                                input_size=SIZE).state_dict(),
                    proposals={"method": "selective_search",
                               "params": {"max_boxes": 5, "min_box_side": 6}})
    return path


# --- a loss that diverges ---------------------------------------------------------------------

def test_a_diverging_loss_is_one_line_naming_the_step_and_the_fix(tiny, tmp_path, capsys):
    """solver.lr 1e30: the first step's update leaves NaN weights, the second step's loss is
    NaN (a FloatingPointError traceback before)."""
    line = assert_one_line_error(capsys, train, [
        "--config", tiny / "tiny.yaml", "--set", f"output={tmp_path / 'run'}",
        "--set", "solver.lr=1.0e+30", "--device", "cpu"],
        "training diverged", "at step 2 of epoch 1", "lower solver.lr", "check the data")
    assert "loss is nan" in line or "loss is inf" in line


# --- file names that are not UTF-8 -------------------------------------------------------------

def test_detect_prints_a_name_that_is_not_utf8_escaped(checkpoint, tmp_path, capsys):
    """capsys's stdout is strict UTF-8, as a terminal's: the name prints as its bytes
    (caf\\xe9.png), the run ends as any run does."""
    folder = write_dataset(tmp_path / "images", 2)
    (folder / "im000.png").rename(folder / f"{CAFE}.png")
    capsys.readouterr()
    status = detect([str(folder), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out"),
                     "--device", "cpu"])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert "Traceback" not in out + err
    assert f"{folder}/caf\\xe9.png:" in out and f"{folder}/im001.png:" in out
    assert (tmp_path / "out" / f"{CAFE}.png").is_file()  # its annotated copy, under its name
    assert sys.stdout.errors == "strict"  # the stream is as it was after the command


def test_an_error_naming_a_file_that_is_not_utf8_is_one_line(tmp_path, capsys):
    folder = write_dataset(tmp_path / "images", 1)
    line = assert_one_line_error(capsys, detect, [
        folder, "--checkpoint", tmp_path / f"{CAFE}.pt", "--out", tmp_path / "out",
        "--device", "cpu"], "caf\\xe9.pt")
    assert "not found" in line


def test_propose_prints_a_failed_image_whose_name_is_not_utf8_escaped(tmp_path, capsys):
    """A damaged image under such a name: the failure lines name it escaped; the run ends with
    the status of a run with failed images (1), no traceback."""
    folder = write_dataset(tmp_path / "images", 2)
    (folder / f"{CAFE}.png").write_bytes(b"not an image")
    capsys.readouterr()
    status = propose(["--images", str(folder), "--out", str(tmp_path / "cache"),
                      "--min-box-side", "6"])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert status == 1, err
    assert "caf\\xe9" in out + err and f"cannot decode image {folder}/caf\\xe9.png" in out + err


# --- Ctrl-C and SIGTERM with workers ----------------------------------------------------------

def worker_pids(pid: int) -> list[int]:
    """The spawned worker processes among ``pid``'s children (pool or loader workers, not
    multiprocessing's resource tracker)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    found = []
    for child in children:
        try:
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(int(child))
        except OSError:
            pass  # it just ended
    return found


def run_and_signal(argv: list, ready: Callable[[Path, Path], bool], workers: int, signum: int,
                   to_group: bool, folder: Path) -> tuple[int, str]:
    """``python ARGV`` in the repository, in a process group of its own, stdout and stderr to
    files in ``folder``; once ``ready(stdout file, stderr file)`` holds and ``workers`` worker
    processes run, ``signum`` goes to the whole group (Ctrl-C in a terminal) or to the
    command's process only (``kill PID``). Returns its exit status and stderr once every
    process of the group is gone."""
    out, err = folder / "stdout.txt", folder / "stderr.txt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8"}
    with open(out, "w") as stdout, open(err, "w") as stderr:
        proc = subprocess.Popen([sys.executable, *map(str, argv)], cwd=REPO, env=env,
                                stdout=stdout, stderr=stderr, start_new_session=True)
    try:
        deadline = time.monotonic() + 600  # a safety net against a hang, not a verdict
        while (not (ready(out, err) and len(worker_pids(proc.pid)) == workers)
               and proc.poll() is None and time.monotonic() < deadline):
            time.sleep(0.02)
        assert proc.poll() is None, f"the run ended before the signal: {err.read_text()[-3000:]}"
        assert ready(out, err) and len(worker_pids(proc.pid)) == workers, "never under way"
        (os.killpg if to_group else os.kill)(proc.pid, signum)
        proc.wait(timeout=300)
        assert_group_gone(proc.pid)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, err.read_text()


def assert_group_gone(group: int) -> None:
    """No process of the command's group is left: its workers ended with it. (A worker the
    command stopped may take a moment to be reaped; the deadline only ends the wait.)"""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.killpg(group, signal.SIGKILL)
    raise AssertionError("a worker outlived the command")


def assert_interrupted(status: int, err: str, expected: int) -> None:
    assert "Traceback" not in err, err[-4000:]
    assert status == expected, f"exit status {status}; stderr: {err[-4000:]}"
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip()]
    assert lines[-1] == "interrupted", err[-4000:]
    assert err.count("interrupted") == 1, err[-4000:]
    assert "error:" not in err, err[-4000:]


LINUX_PROC = pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
SIGNALS = pytest.mark.parametrize("signum, to_group, status",
                                  [(signal.SIGINT, True, 130), (signal.SIGTERM, False, 143)],
                                  ids=["ctrl-c", "sigterm"])


def shows(pattern: str, stream: str = "stdout") -> Callable[[Path, Path], bool]:
    """`run_and_signal`'s ready: ``pattern`` found in what the run printed to ``stream``."""
    return lambda out, err: re.search(pattern, (out if stream == "stdout" else err)
                                      .read_text(errors="replace")) is not None


@LINUX_PROC
@SIGNALS
def test_a_signal_stops_detect_with_workers(signum, to_group, status, checkpoint, tmp_path):
    """Sent once the first image's line is printed (40 images: the run is far from done)."""
    folder = write_dataset(tmp_path / "images", 40)
    code, err = run_and_signal(["tools/detect.py", folder, "--checkpoint", checkpoint,
                                "--out", tmp_path / "out", "--workers", 2, "--device", "cpu"],
                               shows(r"detection\(s\) shown"), 2, signum, to_group, tmp_path)
    assert_interrupted(code, err, status)


@LINUX_PROC
@SIGNALS
def test_a_signal_stops_test_with_a_worker(signum, to_group, status, checkpoint, tmp_path):
    """Sent once the progress bar has counted an image (of 40)."""
    folder = write_dataset(tmp_path / "data", 40)
    code, err = run_and_signal(["tools/test.py", "--gt", folder, "--checkpoint", checkpoint,
                                "--out", tmp_path / "out", "--workers", 1, "--device", "cpu"],
                               shows(r"\b[1-9]\d*/40\b", "stderr"), 1, signum, to_group,
                               tmp_path)
    assert_interrupted(code, err, status)


@LINUX_PROC
@SIGNALS
def test_a_signal_stops_training_with_loader_workers(signum, to_group, status, tiny, tmp_path):
    """Sent once the first epoch's checkpoint is written, while the next epochs' loader
    workers run (an interrupt once got lost there and the run finished with status 0)."""
    run = tmp_path / "run"
    code, err = run_and_signal(["tools/train.py", "--config", tiny / "tiny.yaml",
                                "--set", f"output={run}", "--set", "loader_workers=2",
                                "--set", "solver.epochs=50", "--set", "solver.steps=[]",
                                "--device", "cpu"],
                               lambda out, err: (run / "epoch_001.pt").exists(), 2, signum,
                               to_group, tmp_path)
    assert_interrupted(code, err, status)
    assert not (run / "epoch_050.pt").exists()
    assert not list(run.glob("*.tmp")) and not list(run.glob(".*.tmp"))
