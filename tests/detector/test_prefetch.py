"""prefetch_inputs: load_input's output through a worker pool, errors at their image, a bounded
window, a worker's death as one error, and a pool that is gone once the consumer stops."""
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from eval.errors import DetectionError
from detector.records import DetectionResult, load_input
from detector.prefetch import prefetch_inputs
from proposals.combined import Proposer
from proposals.config import SelectiveSearchConfig
from proposals.workers import WorkerDied

SMALL_SEARCH = Proposer(SelectiveSearchConfig(max_boxes=20, min_box_side=4))


@dataclass(frozen=True)
class MarkingProposer:
    """One fixed box per image, and a file per call in ``folder``: the calls can be counted
    from the test process although they run in workers."""

    folder: str

    def __call__(self, image: np.ndarray) -> np.ndarray:
        Path(self.folder, f"{time.perf_counter_ns()}").touch()
        return np.array([[0, 0, 8, 8]], np.float32)


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    """Four 64 x 48 PNGs: a coloured rectangle on noise, placed differently in each."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    found = []
    for i in range(4):
        image = rng.integers(80, 120, (48, 64, 3), dtype=np.uint8)
        x, y = 4 + 8 * i, 3 + 5 * i
        image[y:y + 20, x:x + 24] = (200, 40 * i, 30)
        Image.fromarray(image).save(root / f"im{i}.png")
        found.append((f"im{i}", str(root / f"im{i}.png")))
    return found


def in_process(items):
    """What the pool must yield: `load_input` of each item in turn, here."""
    for item in items:
        yield load_input(item, proposer=SMALL_SEARCH)


@pytest.mark.parametrize("workers", [0, 2])  # 1 worker: the tests below
def test_yields_exactly_what_load_input_yields(items, workers):
    expected = list(in_process(items))
    got = list(prefetch_inputs(items, proposer=SMALL_SEARCH, workers=workers, ahead=1))
    assert [g[:2] for g in got] == [e[:2] for e in expected] == items  # same ids, same order
    for (_, _, image, boxes), (_, _, image_ref, boxes_ref) in zip(got, expected):
        assert np.array_equal(image, image_ref)
        assert boxes.dtype == np.float32 and np.array_equal(boxes, boxes_ref)
    assert 1 <= min(len(e[3]) for e in expected) and max(len(e[3]) for e in expected) <= 20


def test_an_unreadable_image_raises_its_error_at_that_image(items, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    listed = [items[0], ("broken", str(broken)), items[1]]
    with pytest.raises(DetectionError) as direct:
        list(in_process(listed))
    inputs = prefetch_inputs(listed, proposer=SMALL_SEARCH, workers=1)
    assert next(inputs)[0] == "im0"
    with pytest.raises(DetectionError) as through_pool:
        next(inputs)
    assert str(through_pool.value) == str(direct.value) and str(broken) in str(direct.value)
    assert not multiprocessing.active_children()  # the pool went down with the error


def test_reads_a_bounded_window_ahead_and_closing_stops_the_pool(items, tmp_path):
    marks = tmp_path / "calls"
    marks.mkdir()
    taken = []

    def listed():  # the pairs, counting how many the pool has taken
        for i in range(40):
            taken.append(i)
            yield f"{i}", items[i % len(items)][1]

    inputs = prefetch_inputs(listed(), proposer=MarkingProposer(str(marks)), workers=1, ahead=2)
    assert next(inputs)[0] == "0"
    assert len(taken) == 1 + 2  # the held image and 2 ahead, however fast the worker is
    assert 1 <= len(list(marks.iterdir())) <= 1 + 2
    closing = threading.Thread(target=inputs.close)
    closing.start()
    closing.join(timeout=60)
    assert not closing.is_alive() and not multiprocessing.active_children()


@dataclass(frozen=True)
class DyingProposer:
    """Kills the worker process it runs in: a crash in native code, as far as the pool sees."""

    def __call__(self, image: np.ndarray) -> np.ndarray:
        os.kill(os.getpid(), signal.SIGKILL)


def test_a_worker_that_dies_is_one_error_naming_it_and_its_image(items):
    with pytest.raises(WorkerDied, match=r"proposal worker process \d+ was killed by SIGKILL "
                                         r"\(.*\) while working on \('im0'"):
        list(prefetch_inputs(items, proposer=DyingProposer(), workers=1))
    assert not multiprocessing.active_children()


def test_rejects_negative_workers(items):
    with pytest.raises(DetectionError, match="workers -1"):
        next(prefetch_inputs(items, workers=-1))


def test_keep_going_yields_a_failure_in_the_image_s_place(items, tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG not really")
    listed = [items[0], ("bad", str(tmp_path / "bad.png")), items[1]]
    got = list(prefetch_inputs(listed, proposer=SMALL_SEARCH, workers=1, keep_going=True))
    failed = got[1]
    assert isinstance(failed, DetectionResult) and (failed.image_id, failed.path) == listed[1]
    assert "bad.png" in failed.error and len(failed.boxes) == 0
    expected = list(in_process([items[0], items[1]]))
    for want, have in zip(expected, (got[0], got[2])):
        assert want[:2] == have[:2] and np.array_equal(want[2], have[2])
        assert np.array_equal(want[3], have[3])
