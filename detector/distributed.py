"""Inference under torchrun: the images shared among the ranks, the detections gathered on rank 0.

``torchrun --nproc-per-node N tools/test.py ...`` starts N processes with RANK, WORLD_SIZE and
LOCAL_RANK set. Each rank takes every N-th image (``items[rank::N]``), detects it on its own
device (GPU LOCAL_RANK, or the CPU), and rank 0 gathers every rank's results and puts them back
in the single-process order, so what it writes is what one process would have written.
Backend: nccl when the ranks run on CUDA, gloo on CPU. Without torchrun (no WORLD_SIZE) every
function here is the single-process identity, and imports no torch.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import replace
from typing import TypeVar

from tqdm import tqdm

from detector.api import DetectionResult, Detector
from proposals.devices import world

T = TypeVar("T")


def shard(items: Sequence[T]) -> list[tuple[int, T]]:
    """This rank's share of ``items``, each with its index in the whole list."""
    rank, size = world()
    return [(i, items[i]) for i in range(rank, len(items), size)]


def gather_in_order(indexed: list[tuple[int, T]]) -> list[T] | None:
    """Every rank's ``(index, value)`` pairs -> on rank 0 the values sorted by index (the
    single-process order); None on the other ranks."""
    rank, size = world()
    if size == 1:
        return [value for _, value in sorted(indexed, key=lambda pair: pair[0])]
    import torch.distributed as dist  # more than one rank: torchrun, and torch, are there

    gathered: list[list[tuple[int, T]]] = [[] for _ in range(size)]
    # all_gather_object works on gloo and nccl alike (gather_object needs nccl >= 2.7 tricks).
    dist.all_gather_object(gathered, indexed)
    if rank != 0:
        return None
    pairs = [pair for part in gathered for pair in part]
    return [value for _, value in sorted(pairs, key=lambda pair: pair[0])]


def detect_sharded(detector: Detector, items: Sequence[tuple[int | str, str]], *,
                   workers: int = 0, keep_going: bool = False,
                   each: Callable[[DetectionResult], None] | None = None,
                   progress: str | None = None) -> list[DetectionResult] | None:
    """`Detector.detect_many` over this rank's share of ``items``; ``each`` sees every local
    result (with its pixels) as it comes; ``progress``: a progress bar's label (rank 0 only).
    Returns on rank 0 the results of all images in ``items``' order (without pixels), None on
    the other ranks."""
    mine = shard(items)
    local: list[tuple[int, DetectionResult]] = []
    results = detector.detect_many([item for _, item in mine], workers=workers,
                                   keep_going=keep_going)
    # The bar counts an image once it is handled and is closed on every way out, so it ends at
    # N/N (a bar wrapped around the generator counts an item only when the next is asked for,
    # and zip asks `mine` first: the last image was never counted, the bar never closed).
    with closing(results), tqdm(total=len(mine), desc=progress, unit="img",
                                disable=progress is None or world()[0] != 0) as bar:
        for (index, _), result in zip(mine, results, strict=True):
            if each is not None:
                each(result)
            local.append((index, replace(result, image=None)))  # pixels stay on their rank
            bar.update()
    return gather_in_order(local)
