"""The promise every command keeps on bad input, as one check for the bad-input suite.

A command given bad input exits non-zero with exactly one ``error: ...`` line on stderr that
names the offending file or flag (and says how to fix it), prints no traceback, and leaves no
partial output file behind (no ``*.tmp``, no half-written result).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path


def assert_one_line_error(capsys, main: Callable[[list[str]], int], argv: list[str],
                          *names: object, code: int = 2) -> str:
    """Run ``main(argv)`` in this process; assert the promise above and that the error line
    contains every one of ``names`` (a path, a flag, an entry). Returns the error line."""
    capsys.readouterr()  # drop what earlier steps printed
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err + out, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert status == code, f"exit status {status}, expected {code}; stderr: {err}"
    assert len(errors) == 1, f"expected one error line, got: {err!r}"
    for name in names:
        assert str(name) in errors[0], f"{name!r} not named in {errors[0]!r}"
    return errors[0]


def files_below(*folders: Path) -> set[Path]:
    """Every file below ``folders`` (to compare before and after a failed run)."""
    return {p for folder in folders if folder.exists() for p in folder.rglob("*") if p.is_file()}


def assert_no_partial_files(before: Iterable[Path], *folders: Path) -> None:
    """No file appeared below ``folders`` since ``before`` (from `files_below`), and no
    temporary file is left."""
    after = files_below(*folders)
    assert not [p for p in after if p.name.endswith(".tmp")], after
    assert after <= set(before), f"new files after a failed run: {sorted(after - set(before))}"
