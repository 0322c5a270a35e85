"""`iter_inputs` with the images read and proposed ahead, in CPU worker processes.

Selective search costs about 0.5 s of CPU per image; a GPU classifies an image's proposals in a
fraction of that. `prefetch_inputs` keeps ``ahead`` images in flight in a pool of ``workers``
processes while the caller classifies the current one, so the two overlap and the pipeline
runs at the pace of the slower of them instead of their sum. Output and order are exactly
`detector.pipeline.iter_inputs`'s.
"""
from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from multiprocessing.pool import AsyncResult

import numpy as np
import torch

from detector.errors import DetectionError
from detector.pipeline import iter_inputs, load_input
from proposals.cache import ProposalCache

Input = tuple[int | str, str, np.ndarray, np.ndarray]


def prefetch_inputs(items: Iterable[tuple[int | str, str]], *,
                    cache: ProposalCache | None = None,
                    proposer: Callable[[np.ndarray], np.ndarray] | None = None,
                    apply_exif: bool = False, workers: int = 0,
                    ahead: int | None = None) -> Iterator[Input]:
    """``(image_id, path)`` pairs -> ``(image_id, path, image [H, W, 3] uint8, proposals [N, 4])``.

    The yields of `detector.pipeline.iter_inputs` (same arguments), in the same order. With
    ``workers >= 1`` a spawn pool of that many single-threaded processes reads and proposes up
    to ``ahead`` images (default ``2 * workers``) beyond the one the caller holds; ``proposer``
    and ``cache`` must then be picklable (`proposals.combined.Proposer` and `ProposalCache`
    are). ``workers=0``: everything in this process, one image at a time.

    A worker's DetectionError (an unreadable image, no proposals) is raised here, at that
    image, with its message. The pool is shut down at the end, on an error, and when the
    generator is closed early (use ``contextlib.closing`` to close it at a known point).
    """
    if workers < 0 or (ahead is not None and ahead < 1):
        raise DetectionError(f"workers {workers} and ahead {ahead}: use workers >= 0 (0 = no "
                             "worker processes) and ahead >= 1")
    if workers == 0:
        yield from iter_inputs(items, cache=cache, proposer=proposer, apply_exif=apply_exif)
        return
    load = partial(load_input, cache=cache, proposer=proposer, apply_exif=apply_exif)
    pending: deque[AsyncResult] = deque()
    # Leaving the with block (end, error, GeneratorExit on close) terminates the workers.
    with multiprocessing.get_context("spawn").Pool(workers, initializer=one_thread_worker) as pool:
        for item in items:
            pending.append(pool.apply_async(load, (item,)))
            if len(pending) > (ahead or 2 * workers):
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def one_thread_worker() -> None:
    """Pool initializer of proposal workers (here and tools/propose.py): the workers are the
    parallelism, and threads inside each would oversubscribe the cores; OpenCV for selective
    search, torch for a MultiBox proposer's network."""
    os.environ["OMP_NUM_THREADS"] = "1"
    import cv2

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
