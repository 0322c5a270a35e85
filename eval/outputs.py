"""Writing an output: the one door every file the toolkit writes goes out by.

Before any work, `check_output_file` / `check_output_dir` check an output path: a name the file
system can hold, a file where a file belongs and a folder where a folder belongs, a writable
folder, enough free space where the size is known, and not the same file as any input of the
command (``evaluate --json s.txt --split s.txt`` must not overwrite its split). Then
`write_atomic` writes it: a reader, or a run resumed after ``kill -9``, sees a whole file or
none, and a write that fails (a full disk, a vanished folder, any ``OSError``) is one
`DetectionError` naming the file, the previous file intact.

Files are written with the permissions a plain ``open(path, "w")`` would give (0666 minus the
umask, and the folder's default ACL), not ``mkstemp``'s 0600: caches and checkpoints on a shared
disk must stay readable by the team. Replacing a file keeps its mode. Temporary names are short
(``.<start of the name>.<random>.tmp``), so any name that fits the file system fits its temp.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from eval.errors import DetectionError
from eval.inputs import check_name
# An input of a command as `check_not_an_input` takes it: a path (None: not given), or a
# (flag, path) pair so that the message names the flag.
Input = "str | os.PathLike | None | tuple[str, str | os.PathLike | None]"
# How much of the target's name a temporary name repeats (bytes): enough to recognise it.
_TEMP_PREFIX_BYTES = 60


def write_atomic(path: str | os.PathLike, data: bytes | str, durable: bool = False) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it into place.

    The rename is atomic on POSIX file systems, so ``path`` never holds a partial file. With
    ``durable`` the data is flushed to disk before the rename (survives a power cut, costs a
    sync per file). A name longer than `eval.inputs.NAME_MAX` bytes is refused with a DetectionError.
    """
    path, fd, tmp = _temp_beside(path)
    try:
        _write_all(fd, data, durable, _existing_mode(path))
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise write_error(path, e) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def append_text(path: str | os.PathLike, text: str) -> None:
    """Append ``text`` (whole lines) to ``path``, created if missing: a log a stopped run keeps
    up to its last line. A failed write is one error naming the file."""
    path = Path(path)
    check_name(path)
    try:
        with open(path, "a", encoding="utf-8", newline="") as f:
            f.write(text)
    except OSError as e:
        raise write_error(path, e) from None


def write_error(path: str | os.PathLike, error: OSError) -> DetectionError:
    """The one-line error of a failed write of ``path`` (what was there before is intact)."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        why = "the disk is full (or the quota reached); free some space"
    elif error.errno == errno.EFBIG:
        why = "the file would pass this system's file size limit (ulimit -f); raise the limit"
    else:
        why = f"{error.strerror or error}; check the folder"
    return DetectionError(f"{path}: cannot write it: {why}, or write elsewhere (any previous "
                          "file there is intact)")


def create_exclusive(path: str | os.PathLike, data: bytes | str) -> bool:
    """Create ``path`` holding ``data`` unless it already exists; True if this call created it.

    Of several processes creating one path at once exactly one succeeds, and no reader ever
    sees a partial file: the data is written under a temporary name first and then hard-linked
    to ``path`` (a link never replaces an existing file). On a file system without hard links
    the file is created with O_EXCL and then written (exclusive, but briefly partial).
    """
    path, fd, tmp = _temp_beside(path)
    try:
        _write_all(fd, data, durable=False, mode=None)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:  # no hard links here (some network or FUSE file systems)
            return _create_excl_direct(path, data)
        return True
    except OSError as e:
        raise write_error(path, e) from None
    finally:
        tmp.unlink(missing_ok=True)


def _temp_beside(path: str | os.PathLike) -> tuple[Path, int, Path]:
    """(``path`` as a Path, fd, name) of a new temporary file beside ``path``, whose name is
    checked first; failing to create it is `write_error`."""
    path = Path(path)
    check_name(path)
    try:
        fd, tmp = _open_temp(path)
    except OSError as e:
        raise write_error(path, e) from None
    return path, fd, tmp


def _open_temp(path: Path) -> tuple[int, Path]:
    """A new temporary file beside ``path``, opened for writing with mode 0666 & ~umask (the
    kernel applies the umask, as for a plain open()). Returns (fd, its path)."""
    start = os.fsencode(path.name)[:_TEMP_PREFIX_BYTES].decode("utf-8", "ignore")
    while True:
        tmp = path.parent / f".{start}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


def _write_all(fd: int, data: bytes | str, durable: bool, mode: int | None) -> None:
    """Write ``data`` to ``fd`` and close it; ``mode`` (if not None) is applied first."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    with os.fdopen(fd, "wb") as f:
        if mode is not None:
            os.fchmod(f.fileno(), mode)
        f.write(data)
        if durable:
            f.flush()
            os.fsync(f.fileno())


def _existing_mode(path: Path) -> int | None:
    """The permission bits of the file ``path`` replaces, or None for a new file."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        return None


def _create_excl_direct(path: Path, data: bytes | str) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        return False
    _write_all(fd, data, durable=False, mode=None)
    return True


def check_output_file(path: str | os.PathLike, flag: str,
                      inputs: Iterable[Input] = (), need_bytes: int = 0
                      ) -> Path:
    """An output file ``flag`` will write, checked before any work: a name the file system
    can hold, not a folder, its folder (created if missing) writable with ``need_bytes`` free,
    and not one of the command's ``inputs`` (None entries are skipped). Returns it as a Path."""
    path = Path(path)
    check_name(path, f"{flag} {str(path)[:80]}")
    if path.is_dir():
        raise DetectionError(f"{flag} {path}: is a folder; give the name of a file to write")
    check_not_an_input(path, flag, inputs)
    _writable_folder(path.parent, flag, path)
    check_free_space(path.parent, need_bytes, flag)
    return path


def check_output_dir(path: str | os.PathLike, flag: str,
                     inputs: Iterable[Input] = (), need_bytes: int = 0
                     ) -> Path:
    """An output folder, created if missing, checked writable (with ``need_bytes`` free)
    before any work; neither it nor anything in it may be one of ``inputs`` that the command
    would write over (the command checks each file it writes there with
    `check_not_an_input`)."""
    path = Path(path)
    check_name(path, f"{flag} {str(path)[:80]}")
    if path.exists() and not path.is_dir():
        raise DetectionError(f"{flag} {path}: is a file, not a folder; give a folder name")
    check_not_an_input(path, flag, inputs)
    _writable_folder(path, flag, path)
    check_free_space(path, need_bytes, flag)
    return path


def check_not_an_input(path: str | os.PathLike, flag: str,
                       inputs: Iterable[Input] | Mapping[tuple, str]) -> None:
    """Refuse an output ``path`` that is one of the command's ``inputs`` (the same file by any
    name: a link, a relative path, ``./x``), naming both. For many outputs against many inputs,
    pass ``inputs`` as `identities` made once."""
    known = inputs if isinstance(inputs, Mapping) else identities(inputs)
    target = _identity(Path(path))
    if target is not None and target in known:
        raise DetectionError(f"{flag} {path}: is also an input of this command "
                             f"({known[target]}); writing it would destroy the input: choose "
                             "another output")


def identities(inputs: Iterable[Input]) -> dict[tuple, str]:
    """What makes each input the file it is (see `check_not_an_input`), to how a message names
    it: its path, or ``"--flag path"`` for a ``(flag, path)`` pair."""
    known = {}
    for entry in inputs:
        label, name = entry if isinstance(entry, tuple) else (None, entry)
        identity = None if name is None else _identity(Path(name))
        if identity is not None:
            known.setdefault(identity, f"{label} {name}" if label else str(name))
    return known


def check_free_space(folder: str | os.PathLike, need_bytes: int, flag: str) -> None:
    """Refuse, before the work, an output folder whose file system has less than
    ``need_bytes`` free (0: nothing known to check)."""
    if need_bytes <= 0:
        return
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return  # not knowable here; the write itself still fails cleanly
    if free < need_bytes:
        raise DetectionError(f"{flag} {folder}: {free / 2**20:,.1f} MiB free, about "
                             f"{need_bytes / 2**20:,.1f} MiB needed; free some space or write "
                             "elsewhere")


def _identity(path: Path) -> tuple | None:
    """What makes two paths the same file: (device, inode) of an existing one, else its
    absolute normalised path (two outputs-to-be with the same name are the same file too)."""
    try:
        info = path.stat()
        return ("inode", info.st_dev, info.st_ino)
    except OSError:
        try:
            return ("path", os.path.realpath(path))
        except (OSError, ValueError):
            return None


# The folders `check_output_file` / `check_output_dir` created during each open
# `created_folders_removed_on_failure` block (innermost last).
_watches: list[list[Path]] = []


@contextlib.contextmanager
def created_folders_removed_on_failure() -> Iterator[None]:
    """A command's run: the output folders its checks create are noted, and if the block
    raises (an error, Ctrl-C) those still empty are removed again, deepest first, so that a
    failed command leaves no empty output folder behind (one that holds anything is kept)."""
    created: list[Path] = []
    _watches.append(created)
    try:
        yield
    except BaseException:
        for folder in reversed(created):
            try:
                folder.rmdir()  # only if empty: a folder that holds anything stays
            except OSError:
                pass
        raise
    finally:
        _watches.pop()


def _make_folder(folder: Path) -> None:
    """``folder`` with its missing parents; the ones this call creates noted for the open
    `created_folders_removed_on_failure` block, if any."""
    missing = []
    for path in (folder, *folder.parents):
        if path.exists():
            break
        missing.append(path)
    folder.mkdir(parents=True, exist_ok=True)
    if _watches:
        _watches[-1].extend(reversed(missing))  # outermost first


def _writable_folder(folder: Path, flag: str, target: Path) -> None:
    try:
        _make_folder(folder)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise DetectionError(f"{flag} {target}: cannot write there ({e.strerror or e}); choose "
                             "another path") from None


class JsonLines:
    """Records written as they are finished, one JSON line each (`append_text`): a run stopped
    at any point keeps every record it finished, and `read` gives them back in the order
    written (a last line cut short by the stop is left out)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def append(self, record: dict) -> None:
        append_text(self.path, json.dumps(record) + "\n")

    def read(self) -> list[dict]:
        """The finished records; none when the file does not exist."""
        from eval.inputs import parse_json, read_text

        if not self.path.exists():
            return []
        lines = read_text(self.path, "detections", "delete it to start afresh").splitlines()
        records = []
        for number, line in enumerate(lines, 1):
            try:
                records.append(parse_json(line, f"{self.path} line {number}",
                                          "delete the file to start afresh"))
            except DetectionError:
                if number < len(lines):  # only the last line can have been cut short
                    raise
        return records

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
