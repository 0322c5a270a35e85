"""Compute proposals (selective search, optionally + MultiBox) for a dataset or folder into a cache.

    python tools/propose.py --images photos/ --out cache/ss_x2
    python tools/propose.py --gt VOC2007 --split test --out cache/voc07_test --workers 8
    python tools/propose.py --gt VOC2007 --out cache/voc07_mb --multibox runs/voc_mb/last.pt
    python tools/propose.py --config configs/raccoon_combined_cpu.yaml     # as a config says
    torchrun --nproc-per-node 4 tools/propose.py --gt instances_train2017.json \\
        --images train2017/ --out cache/coco_train --workers 4

Proposals: GoogLeNet's selective search (superpixel size x2) by default; with --multibox, the
top --multibox-top boxes of that MultiBox network (after NMS) come first, then the selective
search boxes that are not near-duplicates of them. --config takes all of that, the dataset and
the output folder from a training config (its ``proposals`` section and ``data``), so that one
file says which proposals a detector is trained and tested with.

Resumable: a re-run computes only what is missing (files are written atomically, so a run
killed at any moment leaves no half-written file). Under torchrun each rank takes every
WORLD_SIZE-th image and all ranks fill one cache. An image that cannot be decoded is recorded
with its reason and skipped; the run then ends with exit status 1. With ground truth, the
proposal recall is printed at the end.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from detector.datasets import Dataset, load_dataset, read_image
from detector.datasets.images import IMAGE_SUFFIXES
from detector.errors import DetectionError
from detector.prefetch import one_thread_worker
from eval.recall import proposal_recall
from proposals.cache import ProposalCache
from proposals.combined import ProposalConfig, Proposer, build_proposer
from proposals.selective_search import SelectiveSearchConfig



@dataclass(frozen=True)
class Job:
    image_id: int | str
    path: str


@dataclass(frozen=True)
class Outcome:
    image_id: int | str
    num_boxes: int
    cpu_seconds: float
    error: str | None = None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="cache folder (created; an existing one is resumed); "
                                 "with --config, default: its data.proposals")
    p.add_argument("--config", help="a training config: its data (all images, or --split) and "
                                    "proposals section replace the flags below")
    p.add_argument("--gt", help="a dataset: COCO instances JSON, VOC folder or VOC/ILSVRC XML folder")
    p.add_argument("--images", help="image folder: the dataset's images, or, without --gt, "
                                    "every image below it (id = path without suffix)")
    p.add_argument("--classes", help="class list file for VOC/ILSVRC folders")
    p.add_argument("--split", help="VOC ImageSets/Main split name, or a file of image ids")
    p.add_argument("--workers", type=int, default=1, help="local worker processes (default 1)")
    p.add_argument("--mode", choices=("fast", "quality"), default="fast",
                   help="selective search diversification (R-CNN used fast)")
    p.add_argument("--superpixel-scale", type=float, default=2.0,
                   help="multiplies graph segmentation k and min size (2 = GoogLeNet, 1 = R-CNN)")
    p.add_argument("--max-side", type=int, default=500,
                   help="work on a copy whose longer side is at most this (0 = full size)")
    p.add_argument("--min-box-side", type=float, default=20.0, help="drop boxes with a shorter side (px)")
    p.add_argument("--max-boxes", type=int, default=0, help="keep the top N per image (0 = all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the ranking's random factor")
    p.add_argument("--multibox", metavar="CKPT",
                   help="add the boxes of this MultiBox network (tools/train.py, task: multibox)")
    p.add_argument("--multibox-top", type=int, default=200,
                   help="MultiBox boxes added per image, after NMS (default 200, GoogLeNet's)")
    p.add_argument("--multibox-nms", type=float, default=0.7,
                   help="IoU of the NMS among MultiBox boxes (default 0.7)")
    p.add_argument("--no-selective-search", action="store_true",
                   help="MultiBox boxes alone (needs --multibox; for comparisons)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except DetectionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    if args.config:
        args = from_training_config(args)
    if not args.out:
        raise DetectionError("give --out CACHE_FOLDER (or --config with data.proposals)")
    proposer = build_proposer(config_from_args(args))
    dataset, jobs = list_jobs(args)
    cache = ProposalCache.create(args.out, proposer.method, proposer.params, proposer.version)
    rank, world = shard()
    mine = jobs[rank::world]
    todo = [job for job in mine if job.image_id not in cache]
    print(f"{len(mine)} images in this shard ({rank + 1}/{world}): {len(mine) - len(todo)} "
          f"already cached, {len(todo)} to compute with {args.workers} worker(s)")
    start = time.perf_counter()
    outcomes = compute(todo, cache, proposer, args.workers, rank)
    print_summary(outcomes, time.perf_counter() - start, args.workers)
    failed = [o for o in outcomes if o.error]
    if world > 1:
        barrier()
    if rank == 0:
        print_cache_summary(cache, jobs, dataset)
    return 1 if failed else 0


def config_from_args(args: argparse.Namespace) -> ProposalConfig:
    if args.workers < 1:
        raise DetectionError("--workers must be at least 1")
    if args.no_selective_search and not args.multibox:
        raise DetectionError("--no-selective-search needs --multibox CKPT (else: no proposals)")
    ss = SelectiveSearchConfig(mode=args.mode, superpixel_scale=args.superpixel_scale,
                               max_side=args.max_side or None, min_box_side=args.min_box_side,
                               max_boxes=args.max_boxes or None, seed=args.seed)
    return ProposalConfig(ss, args.multibox, args.multibox_top, args.multibox_nms,
                          selective_search_on=not args.no_selective_search)


def from_training_config(args: argparse.Namespace) -> argparse.Namespace:
    """``args`` with the dataset, output and proposal settings of a training config."""
    from detector.config import load_config
    from tools.train import TrainConfig

    config = load_config(TrainConfig, args.config)
    p = config.proposals or ProposalConfig()
    ss = p.selective_search
    return argparse.Namespace(**{
        **vars(args), "config": None, "gt": config.data.gt, "images": config.data.images,
        "classes": config.data.classes, "out": args.out or config.data.proposals,
        "mode": ss.mode, "superpixel_scale": ss.superpixel_scale, "max_side": ss.max_side or 0,
        "min_box_side": ss.min_box_side, "max_boxes": ss.max_boxes or 0, "seed": ss.seed,
        "multibox": p.multibox, "multibox_top": p.multibox_top, "multibox_nms": p.multibox_nms,
        "no_selective_search": not p.selective_search_on})


def list_jobs(args: argparse.Namespace) -> tuple[Dataset | None, list[Job]]:
    """The images to do, in a fixed order (every rank must see the same list)."""
    if args.gt:
        dataset = load_dataset(args.gt, images=args.images, classes=args.classes, split=args.split)
        return dataset, [Job(r.image_id, r.file_name) for r in dataset.images]
    if not args.images:
        raise DetectionError("give --gt (a dataset) or --images (a folder of images)")
    return None, folder_jobs(Path(args.images))


def folder_jobs(root: Path) -> list[Job]:
    """Every image file below ``root``; its id is its path relative to root, without suffix."""
    if not root.is_dir():
        raise DetectionError(f"{root}: not a folder of images; check --images")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DetectionError(f"{root}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    jobs, seen = [], {}
    for path in files:
        image_id = path.relative_to(root).with_suffix("").as_posix()
        if image_id in seen:
            raise DetectionError(f"{path} and {seen[image_id]} would share the id {image_id!r}; "
                                 "rename one of them")
        seen[image_id] = path
        jobs.append(Job(image_id, str(path)))
    return jobs


def shard() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) when run directly."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if not 0 <= rank < world:
        raise DetectionError(f"RANK={rank} is outside WORLD_SIZE={world}")
    return rank, world


def barrier() -> None:
    """Wait for every torchrun rank (torch.distributed, gloo) so rank 0 reports the whole cache.

    Without torchrun's rendezvous (MASTER_ADDR) or without torch there is nothing to wait
    with: each rank then reports what is cached when it finishes.
    """
    try:
        import torch.distributed as dist
    except ImportError:
        dist = None
    if dist is None or "MASTER_ADDR" not in os.environ:
        print("not started by torchrun (or no torch): not waiting for the other ranks")
        return
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    dist.barrier()
    dist.destroy_process_group()


def compute(jobs: list[Job], cache: ProposalCache, proposer: Proposer, workers: int,
            rank: int = 0) -> list[Outcome]:
    """Run ``proposer`` on ``jobs`` (``workers`` processes) and store each result."""
    tasks = [(job, cache, proposer) for job in jobs]
    bar = tqdm(total=len(jobs), desc=f"proposals[{rank}]", unit="img", position=rank, leave=True)
    outcomes = []
    if workers == 1 or len(jobs) <= 1:
        results = map(propose_one, tasks)
        pool = None
    else:
        # spawn: a fresh interpreter per worker, no state copied from this process.
        pool = multiprocessing.get_context("spawn").Pool(workers, initializer=one_thread_worker)
        results = pool.imap_unordered(propose_one, tasks, chunksize=1)
    try:
        for outcome in results:
            outcomes.append(outcome)
            bar.update()
            if outcome.error:
                tqdm.write(f"failed: {outcome.image_id}: {outcome.error}")
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
    return outcomes


def propose_one(task: tuple[Job, ProposalCache, Proposer]) -> Outcome:
    """One image: read, propose, store (or record why it failed). Runs in a worker process."""
    job, cache, proposer = task
    start = time.process_time()
    try:
        boxes = proposer(read_image(job.path))
    except DetectionError as e:
        reason = str(e)
    except Exception as e:  # a bug must not end a day-long run: record it, report it, go on
        reason = f"proposals failed: {type(e).__name__}: {e}"
    else:
        cache.save(job.image_id, boxes)
        return Outcome(job.image_id, len(boxes), time.process_time() - start)
    cache.record_failure(job.image_id, job.path, reason)
    return Outcome(job.image_id, 0, time.process_time() - start, reason)


def print_summary(outcomes: list[Outcome], wall_seconds: float, workers: int) -> None:
    done = [o for o in outcomes if not o.error]
    failed = [o for o in outcomes if o.error]
    print(f"computed {len(done)} images, {len(failed)} failed")
    if done:
        boxes = np.array([o.num_boxes for o in done])
        cpu = np.mean([o.cpu_seconds for o in done])
        print(f"boxes per image: mean {boxes.mean():.0f}, min {boxes.min()}, max {boxes.max()}")
        print(f"time: {cpu:.3f} CPU s per image; {len(outcomes) / wall_seconds:.2f} images/s "
              f"wall with {workers} worker(s)")
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
    gt = [r.boxes[~r.iscrowd] for r in records]
    proposals = [cache.load(r.image_id) for r in records]
    result = proposal_recall(gt, proposals)
    print(result.format_table())
    print(f"recall@0.5 {result.recall_at(0.5):.3f}  recall@0.7 {result.recall_at(0.7):.3f}  "
          f"average recall {result.average_recall[-1]:.3f}  ({result.num_gt} objects)")


if __name__ == "__main__":
    sys.exit(main())
