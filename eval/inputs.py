"""Reading an input file: the one door every file from outside comes in by.

Ground truth, detections, splits, class lists, configs, cache manifests and checkpoints are all
opened here, and each is checked the same way before a byte is read:

- a name the file system can hold (every component within `NAME_MAX` bytes);
- a regular file: a folder, FIFO, device or socket is one error at once, never a hang (the file
  is opened non-blocking and checked again on the open descriptor, so a FIFO swapped in after
  the check cannot block either);
- a size within the limit for its kind (`LIMITS`): ``/dev/zero`` or a 40 GB file given as a
  class list is refused before it fills memory;
- text is UTF-8 (a byte-order mark is allowed), JSON is parsed with its depth bounded (Python's
  recursion limit) and integers within Python's 4,300 digits.

Every failure is one `DetectionError` whose message starts with the file's name and ends with
what to do. Readers of a format take the bytes, text or JSON from here and parse the rest
themselves (XML, CSV, ``.npy``); `is_number` is the one rule for a number read from a file, and
`check_name` the one 255-byte name check (outputs use it too). Torch-free; NumPy is not needed
either.
"""
from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import IO, Any

from eval.errors import DetectionError

# The longest file name (in bytes) that POSIX file systems in use take (ext4, xfs, btrfs, tmpfs).
NAME_MAX = 255

_MiB, _GiB = 1 << 20, 1 << 30
# The largest file of each kind read whole, in bytes: a few times the largest real one (COCO
# train2017 instances: 448 MB; LVIS v1 train: 1.1 GB; an ILSVRC DET split list: 2 MB).
LIMITS = {
    "ground truth": 4 * _GiB,
    "detections": 4 * _GiB,
    "annotation": 16 * _MiB,   # one VOC / ILSVRC XML file
    "list": 256 * _MiB,        # splits, class lists, blacklists, id lists
    "config": 1 * _MiB,
    "manifest": 1 * _MiB,      # a proposal cache's manifest.json and its small records
    "boxes": 1 * _GiB,         # one image's cached proposals (.npy)
    "checkpoint": 16 * _GiB,
    "image": 2 * _GiB,
    # Another toolkit's proposal file (a whole data set's boxes). A MATLAB v5 file (Fast
    # R-CNN's) stores each variable's size in 32 bits: boxes and images under 4 GiB each.
    "proposals": 8 * _GiB,
    # A pickle from outside (eval.pickles), read whole: detectron2's or mmdetection's COCO
    # train2017 proposals at 2,000 float32 boxes and scores an image are about 4.7 GB.
    "pickle": 16 * _GiB,
    "script": 16 * _MiB,       # a user's main script, read to find its __main__ guard
    # An exported model (tools/export.py): protobuf's limit for one file, weights inside
    # (GoogLeNet is 27 MB a member).
    "onnx": 2 * _GiB,
}


def over_long_part(path: str | os.PathLike) -> str | None:
    """The first component of ``path`` longer than a file name can be, or None.

    Checked before any look-up: on Python 3.11 ``Path.is_dir``/``exists`` raise ENAMETOOLONG
    instead of answering.
    """
    return next((part for part in Path(path).parts if len(os.fsencode(part)) > NAME_MAX), None)


def check_name(path: str | os.PathLike, label: str | None = None) -> None:
    """Refuse a path with a component over `NAME_MAX` bytes (inputs and outputs alike);
    ``label`` names it in the error (a flag with its value; by default the path itself)."""
    long = over_long_part(path)
    if long is not None:
        label = _short(Path(path)) if label is None else label
        raise DetectionError(f"{label}: the name {long[:40]!r}... is {len(os.fsencode(long))} "
                             f"bytes, over the file system's {NAME_MAX}-byte limit; check the "
                             "path or choose a shorter name")


def check_input_names(**paths: str | os.PathLike | None) -> None:
    """`check_name` for each input a command was given, named by its option (the keyword,
    shown as ``--key``); None and non-path values are skipped."""
    for key, path in paths.items():
        if isinstance(path, (str, os.PathLike)):
            check_name(path, f"--{key} {_short(Path(path))}")


def check_input_file(path: str | os.PathLike, kind: str, fix: str = "check the path") -> Path:
    """``path`` as a Path once it is known to be a readable regular file within the size limit
    of ``kind`` (a key of `LIMITS`); otherwise one error naming it and ``fix``."""
    path = Path(path)
    check_name(path, _short(path))
    try:
        info = path.stat()
    except FileNotFoundError:
        raise DetectionError(f"{_short(path)}: {kind} file not found; {fix}") from None
    except OSError as e:
        raise DetectionError(f"{_short(path)}: cannot read ({e.strerror or e}); {fix}") from None
    _check_stat(path, info, kind, fix)
    return path


def open_input(path: str | os.PathLike, kind: str, fix: str = "check the path") -> IO[bytes]:
    """`check_input_file`, then the file opened for reading in binary (the caller closes it).

    Opened non-blocking and checked again on the descriptor: nothing swapped in between the
    check and the open can make the read hang.
    """
    path = check_input_file(path, kind, fix)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise DetectionError(f"{_short(path)}: cannot read ({e.strerror or e}); {fix}") from None
    try:
        _check_stat(path, os.fstat(fd), kind, fix)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bytes(path: str | os.PathLike, kind: str, fix: str = "check the path") -> bytes:
    """The whole file, at most `LIMITS[kind]` bytes (a file that grew past it while being
    read is refused too)."""
    limit = LIMITS[kind]
    with open_input(path, kind, fix) as f:
        try:
            data = _read_at_most(f, limit)
        except OSError as e:
            raise DetectionError(f"{_short(path)}: cannot read ({e.strerror or e}); "
                                 f"{fix}") from None
    if len(data) > limit:
        raise DetectionError(_too_large(Path(path), kind, fix))
    return data


def _read_at_most(f: IO[bytes], limit: int) -> bytes:
    """The file's bytes, or the first ``limit + 1`` of them. Sized by the file, not the limit:
    ``read(n)`` reserves n bytes at once (4 GiB for ground truth, under a memory limit a
    MemoryError for a 1 KB file); what the file grew by since ``fstat`` comes in 1 MiB parts."""
    parts = [f.read(min(os.fstat(f.fileno()).st_size, limit) + 1)]
    total = len(parts[0])
    while total <= limit and parts[-1]:
        parts.append(f.read(min(_MiB, limit + 1 - total)))
        total += len(parts[-1])
    return b"".join(parts)


def read_text(path: str | os.PathLike, kind: str, fix: str = "check the path") -> str:
    """The file as UTF-8 text (a leading byte-order mark dropped)."""
    return decode_text(read_bytes(path, kind, fix), _short(Path(path)), fix)


def decode_text(data: bytes, where: str, fix: str) -> str:
    """UTF-8 bytes (a leading byte-order mark dropped) as text; otherwise one error."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DetectionError(f"{where}: not UTF-8 text (byte {e.start}); {fix}") from None


def read_json(path: str | os.PathLike, kind: str, fix: str = "check the path") -> Any:
    """The file's JSON value (see `parse_json`)."""
    return parse_json(read_text(path, kind, fix), _short(Path(path)), fix)


def parse_json(text: str, where: str, fix: str) -> Any:
    """Parsed JSON; malformed, too deeply nested, or holding an integer Python will not convert
    (over 4,300 digits) is one error naming ``where``."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DetectionError(f"{where}: invalid JSON ({e.msg} at line {e.lineno}, column "
                             f"{e.colno}); {fix}") from None
    except RecursionError:
        raise DetectionError(f"{where}: JSON nested too deeply; {fix}") from None
    except ValueError as e:  # an integer of more digits than Python converts
        why = ("it holds an integer of more than 4300 digits"
               if "integer string conversion" in str(e) else str(e)[:100])
        raise DetectionError(f"{where}: unreadable JSON ({why}); {fix}") from None


def is_number(value: object) -> bool:
    """A finite number as JSON gives them: an int or float, not a boolean (``True == 1``), not
    NaN or infinite (JSON's ``NaN``/``Infinity``), not an integer too large for a float64."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def shown(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters: a value read from a file, in an error line
    (a hostile file's value can be megabytes long)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _check_stat(path: Path, info: os.stat_result, kind: str, fix: str) -> None:
    mode = info.st_mode
    if stat.S_ISDIR(mode):
        raise DetectionError(f"{_short(path)}: is a folder, not a {kind} file; {fix}")
    if not stat.S_ISREG(mode):
        what = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a file")
        raise DetectionError(f"{_short(path)}: is {what}, not a regular {kind} file; give a "
                             f"file ({fix})")
    if info.st_size > LIMITS[kind]:
        raise DetectionError(_too_large(path, kind, fix))


def _too_large(path: Path, kind: str, fix: str) -> str:
    return (f"{_short(path)}: over {LIMITS[kind] / _MiB:,.0f} MiB, larger than any {kind} file "
            f"this toolkit reads; is it the right file? ({fix})")


def _short(path: Path) -> str:
    """The path for a message, cut to a readable length (names can be 4,000 bytes long)."""
    text = str(path)
    return text if len(text) <= 200 else text[:120] + "..." + text[-60:]
