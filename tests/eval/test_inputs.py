"""The input door: every kind of non-file is one error at once (never a hang), sizes are
bounded, text and JSON failures name the file."""
import os
import socket

import pytest

from eval import inputs
from eval.errors import DetectionError


def test_a_regular_file_is_read(tmp_path):
    path = tmp_path / "a.json"
    path.write_bytes(b'\xef\xbb\xbf{"a": [1, 2]}')  # a byte-order mark is allowed
    assert inputs.read_json(path, "ground truth") == {"a": [1, 2]}
    assert inputs.read_bytes(path, "list").endswith(b"]}")


@pytest.mark.parametrize("make, said", [
    (lambda p: os.mkfifo(p), "FIFO"),
    (lambda p: p.mkdir(), "is a folder"),
    (lambda p: None, "not found"),
])
def test_what_is_not_a_regular_file_is_one_error(tmp_path, make, said):
    path = tmp_path / "x"
    make(path)
    with pytest.raises(DetectionError, match=said) as e:
        inputs.read_text(path, "config", fix="give a YAML file")
    assert str(e.value).startswith(str(path)) and "give a YAML file" in str(e.value)


def test_devices_and_sockets_are_refused_unread(tmp_path):
    with pytest.raises(DetectionError, match="a device"):
        inputs.read_bytes("/dev/zero", "list")
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(tmp_path / "s"))
        with pytest.raises(DetectionError, match="a socket"):
            inputs.open_input(tmp_path / "s", "checkpoint")
    finally:
        sock.close()


def test_a_symlink_to_a_regular_file_is_a_regular_file(tmp_path):
    (tmp_path / "real.txt").write_text("cat\n")
    (tmp_path / "link.txt").symlink_to(tmp_path / "real.txt")
    assert inputs.read_text(tmp_path / "link.txt", "list") == "cat\n"


def test_a_file_over_its_kind_s_limit_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "big.yaml"
    path.write_bytes(b"a: 1\n" * 100)
    monkeypatch.setitem(inputs.LIMITS, "config", 499)
    with pytest.raises(DetectionError, match="big.yaml: over"):
        inputs.read_text(path, "config")
    monkeypatch.setitem(inputs.LIMITS, "config", 500)
    assert inputs.read_text(path, "config").count("a: 1") == 100


@pytest.mark.parametrize("data, said", [
    (b"\xff\xfe{}", "not UTF-8 text \\(byte 0\\)"),
    (b'{"a": }', "invalid JSON .* line 1, column 7"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b"[" + b"9" * 5000 + b"]", "more than 4300 digits"),
])
def test_text_and_json_failures_name_the_file(tmp_path, data, said):
    path = tmp_path / "d.json"
    path.write_bytes(data)
    with pytest.raises(DetectionError, match=said) as e:
        inputs.read_json(path, "detections", fix="write a COCO results list")
    assert str(e.value).startswith(str(path)) and str(e.value).endswith("results list")


def test_over_long_names_are_one_error_before_any_look_up(tmp_path):
    path = tmp_path / ("n" * 300) / "gt.json"
    with pytest.raises(DetectionError, match="300 bytes, over the file system's 255"):
        inputs.check_input_file(path, "ground truth")
    assert inputs.over_long_part(tmp_path / ("é" * 128)) == "é" * 128  # 256 bytes
    assert inputs.over_long_part(tmp_path / ("é" * 127)) is None


@pytest.mark.parametrize("value, expected", [
    (1, True), (-2.5, True), (0.0, True), (10 ** 300, True),
    (True, False), (False, False),  # True == 1 in Python: a boolean is not a number
    (float("nan"), False), (float("inf"), False), (-float("inf"), False),  # JSON's NaN, Infinity
    (10 ** 400, False),  # beyond a float64
    ("1", False), (None, False), ([1], False),
])
def test_is_number_is_a_finite_number_and_never_a_boolean(value, expected):
    assert inputs.is_number(value) is expected


def test_input_names_are_checked_by_their_option(tmp_path):
    inputs.check_input_names(gt=tmp_path / "ok.json", split=None, detections=[{"a": 1}])
    with pytest.raises(DetectionError, match=r"^--split .*: the name 'sss*'... is 300 bytes"):
        inputs.check_input_names(gt=tmp_path / "ok.json", split=tmp_path / ("s" * 300) / "s.txt")


def test_a_small_file_is_read_without_reserving_its_kind_s_limit(tmp_path):
    """Under an address-space limit of 1 GiB a 5-byte checkpoint (limit 16 GiB) still reads:
    the buffer is sized by the file, not the limit (``read(limit + 1)`` reserved it all)."""
    import subprocess
    import sys

    (tmp_path / "c.pt").write_bytes(b"hello")
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30)); "
            "from eval import inputs; "
            "assert inputs.read_bytes(sys.argv[1], 'checkpoint') == b'hello'; "
            "assert inputs.read_text(sys.argv[1], 'ground truth') == 'hello'")
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path / "c.pt")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr


def test_bytes_beyond_what_fstat_said_are_read_up_to_the_limit():
    """A file that grew after ``fstat`` (here a pipe, whose size reads 0) is read on in parts,
    and one byte past the limit is enough to refuse it."""
    for limit, expected in ((100, 20), (12, 13)):
        reader, writer = os.pipe()
        os.write(writer, b"x" * 20)
        os.close(writer)
        with os.fdopen(reader, "rb") as f:
            assert len(inputs._read_at_most(f, limit)) == expected
