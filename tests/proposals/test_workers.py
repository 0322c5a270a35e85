"""proposals.workers: results in order or as they come, a worker's death as one error, the main
guard checked before any worker starts, and Ctrl-C / SIGTERM as one `interrupted` line.

The subprocess timeouts are safety nets against a hang; every verdict is an exit status or a
message. A signal is sent once the run has stored its first result (a wait, not a verdict)."""
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from detector.cli.common import run_main
from eval.errors import DetectionError
from proposals.interrupts import Interrupted, deferred, raise_if_interrupted, stop_on_signals
from proposals.workers import WorkerDied, data_loader, imap

REPO = Path(__file__).resolve().parents[2]
GUARD = 'if __name__ == "__main__":'


def square(x: int) -> int:
    if x == "bad":
        raise DetectionError("item bad: refused")
    return x * x


def kill_self_at_3(x: int) -> int:
    if x == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def exit_at_2(x: int) -> int:
    if x == 2:
        os._exit(3)
    return x


def test_results_in_order_or_as_they_come_and_no_worker_left():
    assert list(imap(square, range(7), 2, ahead=1)) == [x * x for x in range(7)]
    assert sorted(imap(square, iter(range(7)), 2, ordered=False)) == [x * x for x in range(7)]
    assert list(imap(square, range(3), 0)) == [0, 1, 4]  # 0 workers: in this process
    assert not multiprocessing.active_children()


def test_an_error_of_fn_is_raised_at_its_item():
    results = imap(square, [1, 2, "bad", 4], 2)
    assert [next(results), next(results)] == [1, 4]
    with pytest.raises(DetectionError, match="item bad: refused"):
        next(results)
    assert not multiprocessing.active_children()


@pytest.mark.parametrize("fn, how", [(kill_self_at_3, "was killed by SIGKILL"),
                                     (exit_at_2, "exited with status 3")])
def test_a_worker_that_dies_is_one_error_line_naming_it(capfd, fn, how):
    status = run_main(lambda args: list(imap(fn, range(8), 2, name="test worker")), None)
    err = capfd.readouterr().err  # the workers' stderr too: they write to the same fd
    assert status == 2
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: test worker process ") and how in err and "Traceback" not in err
    assert not multiprocessing.active_children()


def test_an_interrupt_in_the_parent_stops_every_worker():
    results = imap(square, range(100), 2, ahead=4)
    next(results)
    assert len(multiprocessing.active_children()) == 2
    with pytest.raises(KeyboardInterrupt):
        results.throw(KeyboardInterrupt)
    assert not multiprocessing.active_children()


def test_sigterm_under_run_main_is_one_interrupted_line_and_143(capfd):
    def run(args):
        signal.raise_signal(signal.SIGTERM)
        for _ in range(10_000):  # the handler runs at the latest at a loop's jump
            pass
        return 0

    before = signal.getsignal(signal.SIGTERM)
    assert run_main(run, None) == 143
    assert capfd.readouterr().err == "interrupted\n"
    assert signal.getsignal(signal.SIGTERM) == before  # restored


def test_an_interrupt_swallowed_inside_the_run_still_ends_it(capfd):
    """As a training run once did: the interrupt raised inside a finaliser and dropped there."""
    def run(args):
        try:
            signal.raise_signal(signal.SIGINT)
            for _ in range(10_000):
                pass
        except KeyboardInterrupt:
            pass  # swallowed
        return 0

    assert run_main(run, None) == 130
    assert capfd.readouterr().err == "interrupted\n"


def test_a_deferred_step_finishes_before_the_interrupt_is_raised():
    steps = []
    with stop_on_signals(), pytest.raises(Interrupted) as raised:
        with deferred():  # e.g. a process start: the child spawned, not yet held
            signal.raise_signal(signal.SIGTERM)
            for _ in range(10_000):
                pass
            steps.append("finished")
    assert steps == ["finished"] and raised.value.signum == signal.SIGTERM


def test_nested_deferred_steps_raise_once_the_outermost_is_done():
    steps = []
    with stop_on_signals(), pytest.raises(Interrupted):
        with deferred():  # e.g. building a loader's iterator, which starts its workers
            with deferred():  # one worker's start
                signal.raise_signal(signal.SIGTERM)
                for _ in range(10_000):
                    pass
            steps.append("the other workers started")
        steps.append("never")
    assert steps == ["the other workers started"]


class Numbers:
    """A map-style dataset of 0..5 (no torch here: the workers import this module); item
    ``die_at`` kills the loader worker that reads it."""

    def __init__(self, die_at: int | None = None):
        self.die_at = die_at

    def __len__(self) -> int:
        return 6

    def __getitem__(self, index: int) -> int:
        if index == self.die_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return index


def test_data_loader_workers_give_the_in_process_batches():
    expected = list(data_loader(Numbers(), 0, batch_size=None))
    assert list(data_loader(Numbers(), 1, batch_size=None)) == expected == list(range(6))
    assert not multiprocessing.active_children()


def test_a_loader_worker_that_dies_is_one_error():
    with pytest.raises(WorkerDied, match="data loader worker process .* was killed by SIGKILL"):
        list(data_loader(Numbers(die_at=2), 1, batch_size=None))
    assert not multiprocessing.active_children()


def test_a_swallowed_interrupt_is_raised_again_at_the_next_batch():
    with stop_on_signals():
        batches = iter(data_loader(Numbers(), 0, batch_size=None))
        next(batches)
        try:
            signal.raise_signal(signal.SIGINT)
            for _ in range(10_000):
                pass
        except KeyboardInterrupt:
            pass
        with pytest.raises(Interrupted):
            next(batches)
        with pytest.raises(Interrupted):
            raise_if_interrupted()


def test_an_interrupt_while_the_loader_starts_its_workers_stops_it_whole(monkeypatch):
    """A signal while the iterator starts its workers is raised once all have started:
    never in the middle of torch's iterator, whose __del__ then fails ("Exception ignored
    ... '_workers_status'", a flaky traceback of an interrupted training run)."""
    import gc

    from proposals import workers

    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    start, started = workers._Process.start, []

    def signalled_start(self):
        started.append(self)
        if len(started) == 2:
            signal.raise_signal(signal.SIGTERM)  # arrives while the second worker starts
        start(self)

    monkeypatch.setattr(workers._Process, "start", signalled_start)
    with stop_on_signals(), pytest.raises(Interrupted):
        next(iter(data_loader(Numbers(), 2, batch_size=None)))
    gc.collect()
    assert [str(u.exc_value) for u in unraisable] == []
    assert not multiprocessing.active_children()


def write_images(folder: Path, count: int, size=(96, 128)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        image = rng.integers(90, 110, size=size + (3,), dtype=np.uint8)
        image[10 + i % 20:50 + i % 20, 20:70] = (200, 30, 30)
        Image.fromarray(image).save(folder / f"img{i:03d}.png")


PROPOSE = """\
from proposals.config import ProposalConfig
from proposals.extract import folder_jobs, propose_to_cache
jobs, skipped = folder_jobs({images!r})
"""
PREFETCH = """\
from detector.prefetch import prefetch_inputs
from proposals.combined import Proposer
items = [(p.stem, str(p)) for p in sorted(__import__("pathlib").Path({images!r}).iterdir())]
"""
LOADER = """\
from proposals.workers import data_loader
"""
CALLS = {LOADER: "print(list(data_loader(list(range(4)), 2, batch_size=None)))",
         PROPOSE: "propose_to_cache(jobs, {out!r}, ProposalConfig(), workers=2, progress=False)",
         PREFETCH: "print(len(list(prefetch_inputs(items, proposer=Proposer(), workers=2))))"}


def run_script(tmp_path: Path, head: str, body: str, stdin: bool = False, **names):
    script = tmp_path / "snippet.py"
    script.write_text(head.format(**names) + body.format(**names))
    command = [sys.executable, "-" if stdin else str(script)]
    return subprocess.run(command, input=script.read_text() if stdin else None, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("head", [PROPOSE, PREFETCH, LOADER],
                         ids=["propose_to_cache", "prefetch", "data_loader"])
def test_a_script_without_the_main_guard_is_one_error_naming_it(tmp_path, head):
    write_images(tmp_path / "imgs", 2)
    names = dict(images=str(tmp_path / "imgs"), out=str(tmp_path / "cache"))
    run = run_script(tmp_path, head, CALLS[head], **names)
    assert run.returncode != 0
    named = [ln for ln in run.stderr.splitlines() if "starts worker processes at import" in ln]
    assert len(named) == 1 and GUARD in named[0] and "snippet.py" in named[0], run.stderr
    assert not list(tmp_path.glob("cache/boxes/*.npy"))  # no worker ever ran


def test_the_same_script_with_the_guard_works(tmp_path):
    write_images(tmp_path / "imgs", 3)
    body = f"{GUARD}\n    " + CALLS[PROPOSE]
    run = run_script(tmp_path, PROPOSE, body, images=str(tmp_path / "imgs"),
                     out=str(tmp_path / "cache"))
    assert run.returncode == 0, run.stderr
    assert len(list((tmp_path / "cache" / "boxes").glob("*.npy"))) == 3


def test_a_script_the_parent_cannot_check_is_stopped_by_its_workers(tmp_path):
    """The workers' own check: with the parent's disabled, each worker's import of the script
    reaches the pool and ends that worker; the parent still reports one error."""
    write_images(tmp_path / "imgs", 2)
    head = "import proposals.main_guard\nproposals.main_guard._guarded = lambda path, line: True\n"
    run = run_script(tmp_path, head + PROPOSE, CALLS[PROPOSE], images=str(tmp_path / "imgs"),
                     out=str(tmp_path / "cache"))
    assert run.returncode != 0
    named = [ln for ln in run.stderr.splitlines() if "starts worker processes at import" in ln]
    assert len(named) == 1 and GUARD in named[0], run.stderr


def test_a_program_read_from_stdin_runs_in_this_process_with_a_warning(tmp_path):
    write_images(tmp_path / "imgs", 2)
    run = run_script(tmp_path, PROPOSE, CALLS[PROPOSE], stdin=True,
                     images=str(tmp_path / "imgs"), out=str(tmp_path / "cache"))
    assert run.returncode == 0, run.stderr
    assert "standard input" in run.stderr and run.stderr.count("Traceback") == 0
    assert len(list((tmp_path / "cache" / "boxes").glob("*.npy"))) == 2


def worker_pids(pid: int) -> list[int]:
    """The spawned workers among ``pid``'s children (not multiprocessing's resource tracker)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children
            if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("signum, to_group, status", [(signal.SIGINT, True, 130),
                                                      (signal.SIGTERM, False, 143)],
                         ids=["ctrl-c", "sigterm"])
def test_a_signal_stops_propose_with_workers(tmp_path, signum, to_group, status):
    """Ctrl-C reaches every process of the terminal's group; SIGTERM (kill PID) the parent."""
    write_images(tmp_path / "imgs", 40, size=(240, 320))
    boxes = tmp_path / "c" / "boxes"
    proc = subprocess.Popen([sys.executable, "tools/propose.py", "--images", str(tmp_path / "imgs"),
                             "--out", str(tmp_path / "c"), "--workers", "2"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any(boxes.glob("*.npy")):
            time.sleep(0.01)
        workers = worker_pids(proc.pid)
        if to_group:
            os.killpg(proc.pid, signum)
        else:
            os.kill(proc.pid, signum)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert len(workers) == 2
    assert proc.returncode == status, err
    assert "Traceback" not in err and err.splitlines()[-1] == "interrupted", err
    assert err.count("interrupted") == 1
    for pid in workers:  # the parent stopped and reaped them before it left
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
