"""eval.outputs: modes of written files, long names, exclusive creation."""
import os
import stat

import pytest

from eval.errors import DetectionError
from eval.outputs import create_exclusive, write_atomic


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
