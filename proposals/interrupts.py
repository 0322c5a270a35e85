"""How the main process hears Ctrl-C and SIGTERM: one `Interrupted` exception for both.

    with stop_on_signals() as signals:      # the commands' run_main
        ...                                 # SIGINT or SIGTERM raise Interrupted here
    signals.received                        # the first signal, even if its exception was lost

A KeyboardInterrupt can be lost on its way up: raised inside a ``__del__`` or a weakref
callback, Python prints it and goes on (an interrupted training run once ended with exit
status 0). So the signal is also kept: `raise_if_interrupted` raises it again (the pools and
loaders of `proposals.workers` call it at every item), and ``run_main`` ends with it whatever
happened in between. Torch-free, like the commands' start-up.
"""
from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM under `stop_on_signals`; ``signum`` says which."""

    def __init__(self, signum: int):
        super().__init__(signal_name(signum))
        self.signum = signum


def signal_name(signum: int) -> str:
    """E.g. ``"SIGTERM"``."""
    return signal.Signals(signum).name if signum in signal.valid_signals() else f"signal {signum}"


class _Signals:
    """SIGINT/SIGTERM handler: keeps the first signal; raises `Interrupted` until disarmed
    (then the caller is reporting it), and not inside `deferred` blocks."""

    def __init__(self):
        self.received: int | None = None
        self.armed = True
        self.deferred = 0

    def disarm(self) -> None:
        self.armed = False

    def __call__(self, signum: int, frame) -> None:
        if self.received is None:
            self.received = signum
        if self.armed and not self.deferred:
            raise Interrupted(signum)


_active: list[_Signals] = []


@contextmanager
def stop_on_signals() -> Iterator[_Signals]:
    """In the block SIGINT and SIGTERM raise `Interrupted` (a KeyboardInterrupt), and the
    first is kept in ``received`` even if something catches and drops it. Off the main
    thread (no signal handlers there) nothing changes."""
    signals = _Signals()
    if threading.current_thread() is not threading.main_thread():
        yield signals
        return
    previous = {s: signal.signal(s, signals) for s in (signal.SIGINT, signal.SIGTERM)}
    _active.append(signals)
    try:
        yield signals
    finally:
        _active.remove(signals)
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)


def raise_if_interrupted() -> None:
    """`Interrupted` again for a signal under `stop_on_signals` whose exception was dropped on
    its way up (e.g. raised inside a ``__del__``), unless the handler is disarmed."""
    if _active and _active[-1].received is not None and _active[-1].armed:
        raise Interrupted(_active[-1].received)


@contextmanager
def deferred() -> Iterator[None]:
    """A signal under `stop_on_signals` raises only once the (outermost) block is done: for
    steps that must not be cut in half (starting a process: the child spawned, the parent not
    yet holding it; building a DataLoader's iterator, which starts its workers)."""
    signals = _active[-1] if _active else None
    if signals is None:
        yield
        return
    signals.deferred += 1
    try:
        yield
    finally:
        signals.deferred -= 1
    if not signals.deferred:  # nested: the outermost block raises
        raise_if_interrupted()
