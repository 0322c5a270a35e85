"""A full disk under every command that writes: detect, propose with worker processes, train,
evaluate and test. Each is one ``error:`` line naming the file it could not write, exit status
2, no traceback (from the parent or from a worker), no temporary file left, and the file a
previous run left there intact.

The full disk is simulated without root: the command runs in a child whose files may not grow
past a few bytes (``RLIMIT_FSIZE``, with SIGXFSZ ignored so that the write fails with EFBIG
instead of killing the process) -- a real OSError from the file system, through the same path
as ENOSPC. The limit sits between the sizes of the files a run writes first (a config, a
manifest) and the one that fails, as a disk that fills during the run.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Sets the file-size limit (argv[1] bytes) and SIGXFSZ's disposition (both survive exec), then
# becomes the tool (argv[2:]).
SMALL_FILES = """
import os, resource, signal, sys
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
"""


def run_on_full_disk(limit: int, tool: str, *argv: object) -> subprocess.CompletedProcess:
    """``tools/TOOL.py ARGV`` in a child whose files cannot grow past ``limit`` bytes. The
    timeout only stops a hang; no verdict depends on time."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8"}
    return subprocess.run([sys.executable, "-c", SMALL_FILES, str(limit), f"tools/{tool}.py",
                           *map(str, argv)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)


def assert_write_refused(done: subprocess.CompletedProcess, written: Path | str,
                         *folders: Path) -> str:
    """Exit status 2, exactly one ``error:`` line, naming ``written`` and saying it could not be
    written; no traceback from any process; no temporary file below ``folders``."""
    err = done.stderr
    assert "Traceback" not in err + done.stdout, err[-4000:]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert done.returncode == 2, f"exit status {done.returncode}; stderr: {err[-4000:]}"
    assert len(errors) == 1, err[-4000:]
    assert str(written) in errors[0] and "cannot write it" in errors[0], errors[0]
    temps = [p for folder in folders for p in folder.rglob("*.tmp")]
    assert not temps, (temps, done.stdout, err)
    return errors[0]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def images(tiny, tmp_path) -> Path:
    """The tiny dataset's images and XMLs alone (no cache, no config) in a folder of the test's."""
    folder = tmp_path / "data"
    folder.mkdir()
    for path in tiny.glob("im*"):
        shutil.copy(path, folder)
    return folder


def test_detect_on_a_full_disk(images, tiny_run, tmp_path):
    """The annotated copy of the first image (~10 KB) does not fit; the detections.json of a
    run before stays as it was."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "detections.json").write_text("[]\n")  # a previous run's
    before = digest(out / "detections.json")
    done = run_on_full_disk(2000, "detect", images, "--checkpoint", tiny_run / "last.pt",
                            "--out", out, "--device", "cpu")
    line = assert_write_refused(done, out, out)
    assert ".png" in line or "detections" in line, line
    assert digest(out / "detections.json") == before


def test_propose_with_workers_on_a_full_disk(images, tmp_path):
    """The workers write the cache: the first worker's failed write is the one line (not a
    traceback per process); the boxes an earlier run stored stay as they were."""
    out = tmp_path / "cache"
    first = tmp_path / "first"
    first.mkdir()
    shutil.copy(images / "im0.png", first)
    done = subprocess.run([sys.executable, "tools/propose.py", "--images", str(first),
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    stored = {p: digest(p) for p in (out / "boxes").iterdir()}
    assert len(stored) == 1
    shutil.copy(images / "im0.png", images / "im0_again.png")  # more work than one worker
    done = run_on_full_disk(300, "propose", "--images", images, "--out", out, "--workers", 2)
    assert_write_refused(done, out / "boxes", out)
    assert {p: digest(p) for p in stored} == stored


def test_train_on_a_full_disk(tiny_run, tmp_path):
    """A resumed run whose next checkpoint (~45 MB) does not fit: the run's previous
    checkpoints (last.pt and the epoch_002.pt it would replace) stay as they were."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = {name: digest(run / name) for name in ("last.pt", "epoch_002.pt")}
    done = run_on_full_disk(1_000_000, "train", "--resume", run / "epoch_001.pt", "--set",
                            f"output={run}", "--device", "cpu")
    assert_write_refused(done, run / "epoch_002.pt", run)
    assert {name: digest(run / name) for name in before} == before


def test_evaluate_on_a_full_disk(tiny, tmp_path):
    detections = tmp_path / "detections.json"
    detections.write_text('[{"image_id": "im0", "category_name": "red", "bbox": [4, 6, 30, 34], '
                          '"score": 0.9}]\n')
    report = tmp_path / "out" / "evaluation.json"
    report.parent.mkdir()
    report.write_text("{}\n")  # a previous run's
    done = run_on_full_disk(10, "evaluate", "--gt", tiny, "--detections", detections,
                            "--json", report)
    assert_write_refused(done, report, report.parent)
    assert report.read_text() == "{}\n"


def test_test_on_a_full_disk(tiny, tiny_run, tmp_path):
    """Its detections.json does not fit: the previous one stays as it was."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "detections.json").write_text("[]\n")  # a previous run's
    done = run_on_full_disk(1000, "test", "--gt", tiny, "--checkpoint", tiny_run / "last.pt",
                            "--proposals", tiny / "cache", "--out", out, "--device", "cpu")
    assert_write_refused(done, out / "detections.json", out)
    assert (out / "detections.json").read_text() == "[]\n"
