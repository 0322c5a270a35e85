"""Proposal extraction for many images into a cache: jobs, worker processes, summaries.

    from proposals.extract import folder_jobs, propose_to_cache
    jobs, skipped = folder_jobs("photos/")
    outcomes = propose_to_cache(jobs, "cache/ss_x2", ProposalConfig(), workers=2)

What the propose command does, as library functions with its defaults. An image that cannot be
read or proposed on is recorded in the cache's ``failed/`` folder with its reason and the run
goes on (its `Outcome` has ``error`` set). Under torchrun each rank takes every WORLD_SIZE-th
job (`shard`) and all ranks fill one cache.
"""
from __future__ import annotations

import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from tqdm import tqdm

from eval.datasets import Dataset, ImageRecord, read_image
from eval.datasets.images import TruncatedImageWarning, list_image_files
from eval.errors import DetectionError
from eval.recall import evaluate_proposals
from proposals.cache import ProposalCache
from proposals.combined import Proposer, build_proposer
from proposals.config import ProposalConfig
from proposals.workers import imap


@dataclass(frozen=True)
class Job:
    """One image to propose on: its id (the cache key) and its file."""

    image_id: int | str
    path: str


@dataclass(frozen=True)
class Outcome:
    """What became of a `Job`: its box count and CPU seconds, or the reason it failed; and
    the warning its image was read with (a truncated file), if any."""

    image_id: int | str
    num_boxes: int
    cpu_seconds: float
    error: str | None = None
    warning: str | None = None


def dataset_jobs(dataset: Dataset) -> list[Job]:
    """One job per image of ``dataset``, in its order."""
    return [Job(r.image_id, r.file_name) for r in dataset.images]


def folder_jobs(root: str | os.PathLike) -> tuple[list[Job], list[tuple[Path, str]]]:
    """Every image file below ``root`` (`list_image_files`: sorted, skipped entries with their
    reason) as jobs; an image's id is its path relative to ``root`` without the suffix.

    Returns ``(jobs, skipped)``. No image at all, or two files that would share an id
    (``a.jpg`` and ``a.png``), is a DetectionError naming them.
    """
    root = Path(root)
    files, skipped = list_image_files(root)
    if not files:
        raise DetectionError(f"{root}: no image files below it ({len(skipped)} other entries "
                             "skipped); give the folder that holds the images")
    jobs, seen = [], {}
    for path in files:
        image_id = path.relative_to(root).with_suffix("").as_posix()
        if image_id in seen:
            raise DetectionError(f"{path} and {seen[image_id]} would share the id {image_id!r}; "
                                 "rename one of them")
        seen[image_id] = path
        jobs.append(Job(image_id, str(path)))
    return jobs, skipped


def open_cache(out: str | os.PathLike, proposer: Proposer) -> ProposalCache:
    """The cache at ``out`` for ``proposer``'s proposals (made if new; an existing one must
    hold the same method, parameters and version)."""
    return ProposalCache.create(out, proposer.method, proposer.params, proposer.version)


def propose_to_cache(jobs: list[Job], out: str | os.PathLike, config: ProposalConfig,
                     workers: int = 1, progress: bool = True) -> list[Outcome]:
    """Compute the proposals of every job not yet in the cache at ``out``; one `Outcome` per
    job computed (failures included), in completion order."""
    proposer = build_proposer(config)
    cache = open_cache(out, proposer)
    todo = [job for job in jobs if job.image_id not in cache]
    return compute_proposals(todo, cache, proposer, workers, progress=progress)


def compute_proposals(jobs: list[Job], cache: ProposalCache, proposer: Proposer,
                      workers: int = 1, rank: int = 0, progress: bool = True) -> list[Outcome]:
    """Run ``proposer`` on ``jobs`` in ``workers`` processes (`proposals.workers`; 1: in this
    process) and store each result; a failure is recorded in the cache and printed, and the
    run goes on. A worker that dies, or an interrupt, stops the run (what is stored stays)."""
    if workers < 1:
        raise DetectionError(f"workers {workers}: must be at least 1")
    in_workers = min(workers, len(jobs)) if workers > 1 and len(jobs) > 1 else 0
    results = imap(partial(propose_one, cache=cache, proposer=proposer), jobs, in_workers,
                   ordered=False, name="proposal worker")
    bar = tqdm(total=len(jobs), desc=f"proposals[{rank}]", unit="img", position=rank,
               leave=True, disable=not progress)
    outcomes = []
    try:
        for outcome in results:
            outcomes.append(outcome)
            bar.update()
            if outcome.warning:
                tqdm.write(f"warning: {outcome.warning}")
            if outcome.error:
                tqdm.write(f"failed: {outcome.image_id}: {outcome.error}")
    finally:
        bar.close()
        results.close()  # stops the workers at once on an error or an interrupt
    return outcomes


def propose_one(job: Job, cache: ProposalCache, proposer: Proposer) -> Outcome:
    """One image: read, propose, store (or record why it failed). Runs in a worker process."""
    start = time.process_time()
    warning = None
    try:
        with warnings.catch_warnings(record=True) as caught:  # reported once, in the summary
            warnings.simplefilter("always", TruncatedImageWarning)
            image = read_image(job.path)
        warning = next((str(w.message) for w in caught
                        if issubclass(w.category, TruncatedImageWarning)), None)
        boxes = proposer(image)
    except DetectionError as e:
        reason = str(e)
    except Exception as e:  # a bug must not end a day-long run: record it, report it, go on
        reason = f"proposals failed for {job.path}: {type(e).__name__}: {e}"
    else:
        cache.save(job.image_id, boxes)
        return Outcome(job.image_id, len(boxes), time.process_time() - start, warning=warning)
    cache.record_failure(job.image_id, job.path, reason)
    return Outcome(job.image_id, 0, time.process_time() - start, reason, warning)


def print_skipped(skipped: list[tuple[Path, str]], shown: int = 10) -> None:
    """One line per entry a folder listing skipped (the first ``shown``), then the count."""
    if not skipped:
        return
    print(f"skipped {len(skipped)} entries that are not image files:")
    for path, reason in skipped[:shown]:
        print(f"  skipped {path}: {reason}")
    if len(skipped) > shown:
        print(f"  ... and {len(skipped) - shown} more")


def print_summary(outcomes: list[Outcome], wall_seconds: float, workers: int) -> None:
    """Counts, boxes per image and speed of one run, and its failures (the first 10)."""
    done = [o for o in outcomes if not o.error]
    failed = [o for o in outcomes if o.error]
    warned = [o for o in outcomes if o.warning]
    print(f"computed {len(done)} images, {len(failed)} failed")
    if warned:
        print(f"{len(warned)} images were read with a warning (truncated files); e.g. "
              f"{warned[0].warning}")
    if done:
        boxes = np.array([o.num_boxes for o in done])
        cpu = np.mean([o.cpu_seconds for o in done])
        print(f"boxes per image: mean {boxes.mean():.0f}, min {boxes.min()}, max {boxes.max()}")
        print(f"time: {cpu:.3f} CPU s per image; {len(outcomes) / max(wall_seconds, 1e-9):.2f} "
              f"images/s wall with {workers} worker(s)")
    for o in failed[:10]:
        print(f"  failed {o.image_id}: {o.error}")
    if len(failed) > 10:
        print(f"  ... and {len(failed) - 10} more (reasons in the cache's failed/ folder)")


def print_cache_summary(cache: ProposalCache, jobs: list[Job], dataset: Dataset | None) -> None:
    """What the whole cache holds for this image list, and its recall against the ground truth."""
    have = [i for i, job in enumerate(jobs) if job.image_id in cache]
    print(f"cache {cache.root}: {len(have)}/{len(jobs)} images have proposals")
    if dataset is None or not have:
        return
    records = [dataset.images[i] for i in have]
    result = evaluate_proposals(records, CachedBoxes(cache, records))
    print(result.format_table())
    print(f"recall@0.5 {result.recall_at(0.5):.3f}  recall@0.7 {result.recall_at(0.7):.3f}  "
          f"average recall {result.average_recall[-1]:.3f}  ({result.num_gt} objects)")


class CachedBoxes(Sequence):
    """The cached boxes of ``records``, read from ``cache`` one image at a time, as the recall
    walks them: a list of them all would hold every image's boxes at once (about 15 kB an
    image with the default preset: 1.8 GB for COCO train2017's 118,287). Each walk reads the
    files again (`eval.recall.proposal_recall` walks twice)."""

    def __init__(self, cache: ProposalCache, records: Sequence[ImageRecord]):
        self.cache, self.records = cache, records

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> np.ndarray:
        # No size check here: this summary decodes no image, and an annotation's size may be
        # wrong (training and detection check each image's boxes against its decoded size).
        return self.cache.load(self.records[index].image_id)
