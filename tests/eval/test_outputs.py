"""eval.outputs: modes of written files, long names, exclusive creation, failed writes as one
error with the previous file intact, outputs that are inputs, free space."""
import errno
import os
import shutil
import subprocess
import sys
import stat

import pytest

from eval.errors import DetectionError
from eval.outputs import (check_output_dir, check_output_file, create_exclusive, write_atomic,
                          write_error)


def mode_of(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask():
    """Set the process umask for one test, restoring it afterwards."""
    saved = os.umask(0o022)
    yield lambda value: os.umask(value)
    os.umask(saved)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_new_file_gets_open_mode(tmp_path, umask, mask, expected):
    umask(mask)
    write_atomic(tmp_path / "a.json", "{}")
    assert mode_of(tmp_path / "a.json") == expected
    assert create_exclusive(tmp_path / "b.json", "{}")
    assert mode_of(tmp_path / "b.json") == expected


def test_replacing_keeps_the_mode(tmp_path, umask):
    umask(0o022)
    path = tmp_path / "a.bin"
    path.write_bytes(b"old")
    os.chmod(path, 0o640)
    write_atomic(path, b"new")
    assert path.read_bytes() == b"new" and mode_of(path) == 0o640


@pytest.mark.parametrize("name", ["a" * 251 + ".npy", "猫" * 83 + ".jpg"])  # 255 and 253 bytes
def test_longest_names_write_and_leave_no_temp(tmp_path, name):
    write_atomic(tmp_path / name, b"x", durable=True)
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_name_over_the_limit_is_refused_by_name(tmp_path):
    path = tmp_path / ("b" * 256)
    with pytest.raises(DetectionError, match="256 bytes.*255-byte limit"):
        write_atomic(path, b"x")
    assert list(tmp_path.iterdir()) == []


def test_create_exclusive_only_once(tmp_path):
    assert create_exclusive(tmp_path / "m.json", "first")
    assert not create_exclusive(tmp_path / "m.json", "second")
    assert (tmp_path / "m.json").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(TypeError):
        write_atomic(tmp_path / "a.json", 5)  # not bytes or str
    assert list(tmp_path.iterdir()) == []


# A child process whose files may not grow past 100 bytes (RLIMIT_FSIZE; SIGXFSZ ignored so
# the write fails with EFBIG instead of killing it): a real OSError from the file system.
_SMALL_FILES = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (100, 100))
from eval.errors import DetectionError
from eval.outputs import append_text, write_atomic
try:
    getattr(sys.modules[__name__], sys.argv[1])(sys.argv[2], "x" * 1000)
except DetectionError as e:
    print(e)
"""


@pytest.mark.parametrize("function", ["write_atomic", "append_text"])
def test_a_failed_write_is_one_error_and_the_previous_file_stays(tmp_path, function):
    target = tmp_path / "result.json"
    target.write_text("previous")
    out = subprocess.run([sys.executable, "-c", _SMALL_FILES, function, str(target)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    assert out.stdout.startswith(f"{target}: cannot write it: ") and "intact" in out.stdout
    if function == "write_atomic":
        assert target.read_text() == "previous"
        assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # no temp file left


def test_a_full_disk_is_named():
    message = str(write_error("out/detections.json", OSError(errno.ENOSPC, "No space left")))
    assert message.startswith("out/detections.json: cannot write it: the disk is full")


def test_an_output_that_is_an_input_is_refused_by_any_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "split.txt").write_text("a\n")
    (tmp_path / "link.txt").symlink_to(tmp_path / "split.txt")
    for name in ("split.txt", "./split.txt", str(tmp_path / "split.txt"), "link.txt"):
        with pytest.raises(DetectionError, match="is also an input of this command"):
            check_output_file(name, "--json", [None, "split.txt"])
    assert (tmp_path / "split.txt").read_text() == "a\n"
    check_output_file("other.json", "--json", ["split.txt"])  # a new file is fine
    with pytest.raises(DetectionError, match="--out photos: is also an input"):
        check_output_dir("photos", "--out", ["photos"])


def test_too_little_free_space_is_refused_before_the_work(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    check_output_dir(tmp_path / "out", "--out", need_bytes=1)
    with pytest.raises(DetectionError, match="MiB free, about .* MiB needed"):
        check_output_dir(tmp_path / "out", "--out", need_bytes=free * 2)


def test_a_folder_where_a_file_belongs_and_a_file_where_a_folder_belongs(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "f").write_text("")
    with pytest.raises(DetectionError, match="is a folder"):
        check_output_file(tmp_path / "d", "--json")
    with pytest.raises(DetectionError, match="is a file, not a folder"):
        check_output_dir(tmp_path / "f", "--out")
