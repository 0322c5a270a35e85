"""Worker processes: the one way the toolkit runs work in other processes.

    for outcome in imap(partial(propose_one, cache=cache, proposer=proposer), jobs, 2): ...

Proposals (`proposals.extract`), detect and test (`detector.prefetch`) and training's loaders
(`data_loader`) start their workers here and nowhere else, so one set of rules holds:

- **Spawn**, never fork: the parent holds torch's and OpenMP's thread pools (on a GPU a CUDA
  context too), and a forked child inherits their locks without the threads that hold them.
  forkserver starts faster, but its server imports the main script once more and is shared,
  long-lived state that one broken pool breaks for every later one. Spawn costs a worker its
  imports (about a second per pool, or per epoch for a loader), small against its work.
- **The main module is checked first.** A spawned worker imports the main script again; one that
  starts workers at its top level, outside ``if __name__ == "__main__":``, would start them in
  every worker, without end. `check_main_module` refuses the script's calling line unless it is
  under that guard; a worker whose import of the script reaches a pool anyway exits with
  `GUARD_EXIT`, which the parent reports: one error naming the script and the guard. A program
  read from standard input cannot be imported again: its work runs in this process (a warning).
- **A worker that dies** (killed, a native crash, ``os._exit``) ends the run with one `WorkerDied`
  line naming it, how it ended and its item: the parent waits on the workers' sentinels too.
- **Ctrl-C / SIGTERM**: workers start with SIGINT blocked and then ignore it; the parent alone is
  interrupted and terminates (then kills) every worker before the exception leaves. An
  interrupt dropped on its way up (`proposals.interrupts`) is raised again at the next item.
"""
from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.connection import Connection, wait
from multiprocessing.context import SpawnContext, SpawnProcess
from typing import Any

from eval.errors import DetectionError
from proposals.interrupts import deferred, raise_if_interrupted, signal_name
from proposals.main_guard import GUARD_EXIT, check_main_module, guard_message

START_METHOD = "spawn"
STOP_GRACE, KILL_GRACE = 5.0, 2.0  # seconds to leave after the last item / after SIGTERM
_END = object()


class WorkerDied(DetectionError):
    """A worker process ended without being asked to (the message: which, how, doing what)."""


def imap(fn: Callable[[Any], Any], items: Iterable, workers: int, *, ordered: bool = True,
         ahead: int | None = None, name: str = "worker") -> Iterator:
    """``fn(item)`` for each of ``items``, in ``workers`` processes (0: in this one); in the
    order of ``items`` or, not ``ordered``, as they finish. At most ``ahead`` items (default
    ``2 * workers``) are taken beyond the one last yielded. ``fn`` must be picklable (each
    worker receives it once); its exception is raised here, at its item; a worker that dies
    raises `WorkerDied` (``name``: what the workers are). Checked at the call (arguments,
    `check_main_module`); the workers start at the first item and stop when the generator
    ends, raises or is closed."""
    if workers < 0 or (ahead is not None and ahead < 1):
        raise DetectionError(f"workers {workers} and ahead {ahead}: use workers >= 0 (0 = no "
                             "worker processes) and ahead >= 1")
    if workers == 0 or not check_main_module():
        return _in_process(fn, items)
    return _in_pool(fn, items, workers, ordered, ahead or 2 * workers, name)


def _in_process(fn: Callable[[Any], Any], items: Iterable) -> Iterator:
    for item in items:
        raise_if_interrupted()
        yield fn(item)


def _in_pool(fn, items: Iterable, workers: int, ordered: bool, ahead: int, name: str) -> Iterator:
    pool, graceful = _Pool(workers, fn, name), False
    try:
        yield from pool.results(iter(items), ordered, ahead)
        graceful = True
    except Exception:
        # An item's error (e.g. a full disk): the other workers finish the item they hold, so
        # that a file they were writing is whole or removed, not cut off by SIGTERM.
        graceful = True
        raise
    finally:
        pool.stop(graceful=graceful)


class _Pool:
    """``workers`` spawned processes, each with its own pipe; items go only to idle workers."""

    def __init__(self, workers: int, fn: Callable[[Any], Any], name: str):
        self.name, self.context, self.conns = name, _Context(), []
        try:
            for _ in range(workers):
                ours, theirs = self.context.Pipe(duplex=True)
                self.context.Process(target=_serve, args=(theirs,), daemon=True).start()
                theirs.close()  # so that a worker's death closes the pipe
                self.conns.append(ours)
            for worker in range(workers):
                self._send(worker, fn)
        except BaseException:
            self.stop(graceful=False)
            raise

    def results(self, items: Iterator, ordered: bool, ahead: int) -> Iterator:
        idle, waiting = deque(range(len(self.conns))), deque()
        doing: dict[int, tuple[int, Any]] = {}  # worker -> (index, item)
        done: dict[int, tuple[bool, Any]] = {}  # index -> (ok, result or exception)
        taken = given = 0
        while True:
            raise_if_interrupted()
            while taken < given + 1 + ahead and (item := next(items, _END)) is not _END:
                waiting.append((taken, item))
                taken += 1
            while idle and waiting:
                worker, (index, item) = idle.popleft(), waiting.popleft()
                doing[worker] = (index, item)
                self._send(worker, (index, item))
            ready = given if ordered else next(iter(done), None)
            if ready in done:
                ok, value = done.pop(ready)
                given += 1
                if not ok:
                    raise value
                yield value
            elif not (doing or waiting):
                return
            else:
                for worker, reply in self._collect(doing):
                    idle.append(worker)
                    done[doing.pop(worker)[0]] = reply

    def _collect(self, doing: dict[int, tuple[int, Any]]) -> list[tuple[int, tuple[bool, Any]]]:
        """Wait for replies of busy workers or the end of any worker (`WorkerDied`)."""
        sentinels = {p.sentinel: worker for worker, p in enumerate(self.context.started)}
        ready = set(wait([self.conns[w] for w in doing] + list(sentinels)))
        replies = []
        for worker, (_, item) in doing.items():
            if self.conns[worker] in ready:
                try:
                    _, ok, value, remote = self.conns[worker].recv()
                except (EOFError, OSError):
                    raise death(self.context.started[worker], self.name, item) from None
                if not ok and remote and not isinstance(value, DetectionError):
                    value.__cause__ = _RemoteTraceback(remote)
                replies.append((worker, (ok, value)))
        for sentinel in ready & set(sentinels):
            worker = sentinels[sentinel]
            raise death(self.context.started[worker], self.name, doing.get(worker, (0, None))[1])
        return replies

    def _send(self, worker: int, message: Any) -> None:
        try:
            self.conns[worker].send(message)
        except (BrokenPipeError, ConnectionResetError):
            item = message[1] if isinstance(message, tuple) else None
            raise death(self.context.started[worker], self.name, item) from None

    def stop(self, graceful: bool) -> None:
        """Returns when every worker is gone (asked to leave first if ``graceful``)."""
        for conn in self.conns if graceful else ():
            try:
                conn.send(None)
            except OSError:
                pass
        stop_processes(self.context.started, STOP_GRACE if graceful else 0.0)
        for conn in self.conns:
            conn.close()


def stop_processes(processes: list, grace: float) -> None:
    """Wait up to ``grace`` s for ``processes`` to end, then terminate, then kill them."""
    processes = [p for p in processes if p.pid is not None]  # started ones
    deadline = time.monotonic() + grace
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(KILL_GRACE)
        if process.is_alive():
            process.kill()
            process.join()


def death(process, name: str, item: Any = None) -> DetectionError:
    """The error saying that ``process`` (a ``name`` process, ending) ended, how, on what."""
    process.join(KILL_GRACE)  # reaps it: its exit status comes a moment after its sentinel
    code = process.exitcode
    if code == GUARD_EXIT:
        return DetectionError(guard_message())
    if code is None:
        how = "closed its connection"
    elif code < 0:
        how = f"was killed by {signal_name(-code)}"
        if -code == signal.SIGKILL:
            how += " (from outside, e.g. by the out-of-memory killer)"
    else:
        how = f"exited with status {code}"
    text = repr(item)
    doing = "" if item is None else f" while working on {text[:160]}{'...' * (len(text) > 160)}"
    return WorkerDied(f"{name} process {process.pid} {how}{doing}; the run stopped")


class _RemoteTraceback(Exception):
    """A worker's traceback, the cause of the exception it sent back."""

    __str__ = lambda self: "\n" + self.args[0]  # noqa: E731


def _serve(conn: Connection) -> None:
    """A worker: receives ``fn``, then ``(index, item)`` until None or the parent is gone;
    answers ``(index, ok, result or exception, traceback)``. The parent's SIGTERM (`stop`)
    unwinds ``fn`` first, so that a file it was writing is not left half-written beside its
    target (`eval.outputs.write_atomic` removes its temporary file), then ends the worker by
    SIGTERM as before."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    one_thread()
    try:
        signal.signal(signal.SIGTERM, _unwind)
        fn = conn.recv()
        while (message := conn.recv()) is not None:
            index, item = message
            try:
                reply = (index, True, fn(item), None)
            except Exception as e:
                reply = (index, False, e, traceback.format_exc())
            try:
                conn.send(reply)
            except (pickle.PicklingError, TypeError, AttributeError) as e:  # nothing was sent
                conn.send((index, False, RuntimeError(f"unpicklable answer: {e}"), reply[3]))
    except (EOFError, OSError):  # the parent is gone: nobody to answer
        return
    except _Terminated:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)


class _Terminated(BaseException):
    """SIGTERM in a worker, raised to unwind what it was doing (not an Exception of ``fn``)."""


def _unwind(signum: int, frame) -> None:
    raise _Terminated


def one_thread() -> None:
    """One compute thread (OpenCV, torch now or imported later): workers are the parallelism,
    and threads inside each would oversubscribe the cores."""
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = "1"
    try:
        import cv2
    except ImportError:
        pass
    else:
        cv2.setNumThreads(1)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


class _Process(SpawnProcess):
    """Started with SIGINT blocked (the mask survives exec: a Ctrl-C while the worker imports
    reaches only the parent), and the parent's interrupt deferred until it holds the child."""

    def start(self) -> None:
        with deferred():
            if not hasattr(signal, "pthread_sigmask"):
                return super().start()
            previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
            try:
                super().start()
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class _Context(SpawnContext):
    """The spawn context whose processes are `_Process`es, each kept in ``started``."""

    def __init__(self):
        self.started: list[_Process] = []

    def Process(self, *args, **kwargs) -> _Process:  # noqa: N802 (multiprocessing's name)
        process = _Process(*args, **kwargs)
        self.started.append(process)
        return process


def data_loader(dataset, workers: int, **options) -> Iterable:
    """A ``torch.utils.data.DataLoader`` (``options``: its keywords) whose ``workers`` start as
    all workers here; a worker's death is one `WorkerDied`, a dropped interrupt is raised
    again at the next batch. Torch's SIGCHLD handler is taken off once the workers run (it
    raises a death as a bare RuntimeError wherever the main thread is, mid-step); the next
    batch finds it instead, within torch's 5 s status check."""
    import torch

    if workers < 0:
        raise DetectionError(f"loader workers {workers}: must be 0 or more")
    if workers and not check_main_module():
        workers = 0
    context = _Context() if workers else None
    loader = torch.utils.data.DataLoader(
        dataset, num_workers=workers, multiprocessing_context=context,
        worker_init_fn=_start_loader_worker if workers else None, **options)
    return _Loader(loader, context)


def _start_loader_worker(worker_id: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    one_thread()


class _Loader:
    """A DataLoader's batches, its workers' deaths as `WorkerDied` (see `data_loader`)."""

    def __init__(self, loader, context: _Context | None):
        self.loader, self.context = loader, context

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator:
        main = threading.current_thread() is threading.main_thread()
        previous = signal.getsignal(signal.SIGCHLD) if main and self.context else None
        batches = None
        try:
            # Cut in half by an interrupt, the iterator's __del__ raises ("_workers_status").
            with deferred():
                batches = iter(self.loader)
                if previous is not None:
                    signal.signal(signal.SIGCHLD, previous)
            while True:
                raise_if_interrupted()
                try:
                    batch = next(batches)
                except StopIteration:
                    return
                except (RuntimeError, OSError, EOFError) as e:  # torch's, or a broken pipe
                    died = self._death(e) if self.context is not None else None
                    if died is None:
                        raise
                    raise died from None
                yield batch
        finally:
            shutdown = getattr(batches, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()

    def _death(self, error: Exception) -> DetectionError | None:
        """The error for a worker that ended; None if all are well and torch said no death."""
        started = [p for p in self.context.started if p.pid is not None]
        ready = wait([p.sentinel for p in started], timeout=KILL_GRACE)
        for p in started:
            if p.sentinel in ready:
                p.join(KILL_GRACE)  # its exit status comes a moment after its sentinel
        ended = sorted((p for p in started if p.exitcode), key=lambda p: p.exitcode != GUARD_EXIT)
        if ended:  # the guard's exit first: it explains the others
            return death(ended[0], "data loader worker")
        if "DataLoader worker (pid" in str(error):  # torch's words for a death
            return WorkerDied(f"a data loader worker process ended ({error}); the run stopped")
        return None
