"""`detector.records.load_input` over many images, read and proposed ahead in CPU workers.

Selective search costs about 0.5 s of CPU per image; a GPU classifies an image's proposals in a
fraction of that. `prefetch_inputs` keeps ``ahead`` images in flight in a pool of ``workers``
processes while the caller classifies the current one, so the two overlap and the pipeline
runs at the pace of the slower of them instead of their sum. Output and order are exactly
those of `load_input` called on each item in turn.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from functools import partial
import numpy as np

from eval.errors import DetectionError
from detector.records import DetectionResult, load_input
from proposals.cache import ProposalCache
from proposals.workers import imap

Input = tuple[int | str, str, np.ndarray, np.ndarray]


def prefetch_inputs(items: Iterable[tuple[int | str, str]], *,
                    cache: ProposalCache | None = None,
                    proposer: Callable[[np.ndarray], np.ndarray] | None = None,
                    workers: int = 0, ahead: int | None = None,
                    keep_going: bool = False) -> Iterator[Input | DetectionResult]:
    """``(image_id, path)`` pairs -> ``(image_id, path, image [H, W, 3] uint8, proposals [N, 4])``.

    `load_input` of each item (same arguments), in the same order. With
    ``workers >= 1`` a pool of that many single-threaded processes (`proposals.workers.imap`)
    reads and proposes up to ``ahead`` images (default ``2 * workers``) beyond the one the
    caller holds; ``proposer`` and ``cache`` must then be picklable (`proposals.combined.Proposer`
    and `ProposalCache` are). ``workers=0``: everything in this process, one image at a time.

    An image's DetectionError (unreadable, no proposals) is raised here, at that image, with
    its message; with ``keep_going`` the image's failed `DetectionResult` (``error`` set) is
    yielded in its place and the
    rest go on. A worker that dies is one `proposals.workers.WorkerDied` error. The pool is shut
    down at the end, on an error, and when the generator is closed early (use
    ``contextlib.closing`` to close it at a known point).
    """
    load = partial(_load, cache=cache, proposer=proposer, keep_going=keep_going)
    yield from imap(load, items, workers, ahead=ahead, name="proposal worker")


def _load(item: tuple[int | str, str], *, cache: ProposalCache | None,
          proposer: Callable[[np.ndarray], np.ndarray] | None,
          keep_going: bool) -> Input | DetectionResult:
    """`load_input`, with an image's DetectionError turned into its failed `DetectionResult`
    if ``keep_going``."""
    try:
        return load_input(item, cache=cache, proposer=proposer)
    except DetectionError as e:
        if not keep_going:
            raise
        return DetectionResult.failed(item[0], item[1], str(e))
