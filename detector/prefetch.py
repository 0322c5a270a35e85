"""`iter_inputs` with the images read and proposed ahead, in CPU worker processes.

Selective search costs about 0.5 s of CPU per image; a GPU classifies an image's proposals in a
fraction of that. `prefetch_inputs` keeps ``ahead`` images in flight in a pool of ``workers``
processes while the caller classifies the current one, so the two overlap and the pipeline
runs at the pace of the slower of them instead of their sum. Output and order are exactly
`detector.pipeline.iter_inputs`'s.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import NamedTuple

import numpy as np

from eval.errors import DetectionError
from detector.pipeline import load_input
from proposals.cache import ProposalCache
from proposals.workers import imap

Input = tuple[int | str, str, np.ndarray, np.ndarray]


class Failure(NamedTuple):
    """An image that could not be read or proposed (``keep_going=True``), and why."""

    image_id: int | str
    path: str
    reason: str


def prefetch_inputs(items: Iterable[tuple[int | str, str]], *,
                    cache: ProposalCache | None = None,
                    proposer: Callable[[np.ndarray], np.ndarray] | None = None,
                    workers: int = 0, ahead: int | None = None,
                    keep_going: bool = False) -> Iterator[Input | Failure]:
    """``(image_id, path)`` pairs -> ``(image_id, path, image [H, W, 3] uint8, proposals [N, 4])``.

    The yields of `detector.pipeline.iter_inputs` (same arguments), in the same order. With
    ``workers >= 1`` a pool of that many single-threaded processes (`proposals.workers.imap`)
    reads and proposes up to ``ahead`` images (default ``2 * workers``) beyond the one the
    caller holds; ``proposer`` and ``cache`` must then be picklable (`proposals.combined.Proposer`
    and `ProposalCache` are). ``workers=0``: everything in this process, one image at a time.

    An image's DetectionError (unreadable, no proposals) is raised here, at that image, with
    its message; with ``keep_going`` it is yielded as a `Failure` in that image's place and the
    rest go on. A worker that dies is one `proposals.workers.WorkerDied` error. The pool is shut
    down at the end, on an error, and when the generator is closed early (use
    ``contextlib.closing`` to close it at a known point).
    """
    load = partial(_load, cache=cache, proposer=proposer, keep_going=keep_going)
    yield from imap(load, items, workers, ahead=ahead, name="proposal worker")


def _load(item: tuple[int | str, str], *, cache: ProposalCache | None,
          proposer: Callable[[np.ndarray], np.ndarray] | None,
          keep_going: bool) -> Input | Failure:
    """`load_input`, with an image's DetectionError turned into a `Failure` if ``keep_going``."""
    try:
        return load_input(item, cache=cache, proposer=proposer)
    except DetectionError as e:
        if not keep_going:
            raise
        return Failure(item[0], item[1], str(e))
