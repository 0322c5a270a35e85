"""Atomic file writes: a reader, or a run resumed after ``kill -9``, sees a whole file or none.

Files are written with the permissions a plain ``open(path, "w")`` would give (0666 minus the
umask, and the folder's default ACL), not ``mkstemp``'s 0600: caches and checkpoints on a shared
disk must stay readable by the team. Replacing a file keeps its mode. Temporary names are short
(``.<start of the name>.<random>.tmp``), so any name that fits the file system fits its temp.
"""
from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

from eval.errors import DetectionError
from eval.inputs import check_name
# How much of the target's name a temporary name repeats (bytes): enough to recognise it.
_TEMP_PREFIX_BYTES = 60


def write_atomic(path: str | os.PathLike, data: bytes | str, durable: bool = False) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it into place.

    The rename is atomic on POSIX file systems, so ``path`` never holds a partial file. With
    ``durable`` the data is flushed to disk before the rename (survives a power cut, costs a
    sync per file). A name longer than `eval.inputs.NAME_MAX` bytes is refused with a DetectionError.
    """
    path = Path(path)
    check_name(path)
    fd, tmp = _open_temp(path)
    try:
        _write_all(fd, data, durable, _existing_mode(path))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def create_exclusive(path: str | os.PathLike, data: bytes | str) -> bool:
    """Create ``path`` holding ``data`` unless it already exists; True if this call created it.

    Of several processes creating one path at once exactly one succeeds, and no reader ever
    sees a partial file: the data is written under a temporary name first and then hard-linked
    to ``path`` (a link never replaces an existing file). On a file system without hard links
    the file is created with O_EXCL and then written (exclusive, but briefly partial).
    """
    path = Path(path)
    check_name(path)
    fd, tmp = _open_temp(path)
    try:
        _write_all(fd, data, durable=False, mode=None)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:  # no hard links here (some network or FUSE file systems)
            return _create_excl_direct(path, data)
        return True
    finally:
        tmp.unlink(missing_ok=True)


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


def check_output_file(path: str | os.PathLike, flag: str) -> Path:
    """An output file ``flag`` will write, checked before any work: a name the file system
    can hold, not a folder, and its folder (created if missing) writable. Returns it as a Path."""
    path = Path(path)
    check_name(path, f"{flag} {str(path)[:80]}")
    if path.is_dir():
        raise DetectionError(f"{flag} {path}: is a folder; give the name of a file to write")
    _writable_folder(path.parent, flag, path)
    return path


def check_output_dir(path: str | os.PathLike, flag: str) -> Path:
    """An output folder, created if missing, checked writable before any work."""
    path = Path(path)
    check_name(path, f"{flag} {str(path)[:80]}")
    if path.exists() and not path.is_dir():
        raise DetectionError(f"{flag} {path}: is a file, not a folder; give a folder name")
    _writable_folder(path, flag, path)
    return path


def _writable_folder(folder: Path, flag: str, target: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise DetectionError(f"{flag} {target}: cannot write there ({e.strerror or e}); choose "
                             "another path") from None
