"""Is the main script safe for spawned workers? A spawned worker imports the main script again;
one that starts workers at its top level, outside ``if __name__ == "__main__":``, would start
workers from every worker, for ever. `check_main_module` finds the line of the main script that
led to a pool and refuses it unless it is under that guard (`proposals.workers` calls it before
starting any process).
"""
from __future__ import annotations

import ast
import multiprocessing
import os
import sys
import warnings

from eval.errors import DetectionError
from eval.inputs import read_bytes

GUARD_EXIT = 87  # a worker whose import of the main script tried to start workers


def check_main_module() -> bool:
    """Whether workers may start: False for a program read from standard input (the work
    then runs in this process, with a warning). A DetectionError where the main script's top
    level, outside ``if __name__ == "__main__":``, led here; in a worker importing such a
    script, ends the worker with `GUARD_EXIT` (its parent reports it)."""
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        os._exit(GUARD_EXIT)  # silently: one line, from the parent
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if path is None:  # python -c, an interactive session: a worker does not import it
        return True
    if getattr(main, "__spec__", None) is None and not os.path.isfile(path):
        warnings.warn(f"{path}: worker processes cannot import a program read from standard "
                      "input; running its work in this process (save it as a file, with the "
                      "code under `if __name__ == \"__main__\":`, to use workers)",
                      RuntimeWarning, stacklevel=3)
        return False
    line = _main_line(main)
    if line is not None and not _guarded(path, line):
        raise DetectionError(guard_message())
    return True


def guard_message() -> str:
    script = getattr(sys.modules.get("__main__"), "__file__", None) or "the main program"
    return (f"{script}: starts worker processes at import; put the code under "
            "`if __name__ == \"__main__\":` (see README)")


def _main_line(main) -> int | None:
    """The line of the main script's top level that led here (None: not on this stack)."""
    frame = sys._getframe(1)
    while frame is not None:
        if (frame.f_code.co_name == "<module>" and frame.f_globals is vars(main)
                and os.path.abspath(frame.f_code.co_filename) == os.path.abspath(main.__file__)):
            return frame.f_lineno
        frame = frame.f_back
    return None


def _guarded(path: str, line: int) -> bool:
    """Whether ``line`` of ``path`` is under ``if __name__ == "__main__":`` (True when the
    script cannot be read: the workers check again)."""
    try:
        tree = ast.parse(read_bytes(path, "script"), path)
    except (DetectionError, SyntaxError, ValueError):
        return True
    return any(isinstance(node, ast.If) and _is_main_test(node.test)
               and node.body[0].lineno <= line <= node.body[-1].end_lineno
               for node in ast.walk(tree))


def _is_main_test(test: ast.expr) -> bool:
    """``__name__ == "__main__"`` (either way round)."""
    sides = [test.left, *test.comparators] if isinstance(test, ast.Compare) else []
    return (len(sides) == 2 and isinstance(test.ops[0], ast.Eq)
            and {ast.dump(s) for s in sides} == {ast.dump(ast.Name("__name__", ast.Load())),
                                                 ast.dump(ast.Constant("__main__"))})
