"""Compute proposals (selective search, optionally + MultiBox) for a dataset or folder into a cache.

    gdet-propose --images photos/ --out cache/ss_x2
    gdet-propose --gt coco/val.json --images coco/val2017 --preset coco --out cache/coco_ss
    gdet-propose --gt VOC2007 --split test --out cache/voc07_test --workers 8
    gdet-propose --gt VOC2007 --out cache/voc07_mb --multibox runs/voc_mb/last.pt
    gdet-propose --config configs/raccoon_combined_cpu.yaml     # as a training config says
    gdet-propose --config configs/raccoon_cpu.yaml --set proposals.selective_search.mode=quality

Proposals: GoogLeNet's selective search (superpixel size x2) by default, or a --preset (below;
a proposal flag given as well replaces that one value of the preset); with --multibox, the
top --multibox-top boxes of that MultiBox network (after NMS) come first, then the selective
search boxes that are not near-duplicates of them. --config takes the dataset, the output
folder and the proposal settings from a training config (its ``data`` and ``proposals``), so
that one file says which proposals a detector is trained and tested with; the dataset and
proposal flags are then refused (change the config, or use --set key=value); --split, --out and
--workers still apply.

Resumable: a re-run computes only what is missing. Under torchrun each rank takes every
WORLD_SIZE-th image and all ranks fill one cache. An image that cannot be decoded is recorded
in the cache's failed/ folder and the run goes on, ending with exit status 1; folder entries
that are not image files are listed as skipped. With ground truth, the proposal recall is
printed at the end. The library: `proposals.extract` (``propose_to_cache``, ``folder_jobs``).
"""
from __future__ import annotations

import argparse
import datetime
import math
import sys

from dataclasses import asdict

from detector.cli.common import HelpFormatter, check_images_given, run_main
from eval.errors import DetectionError
from proposals.config import (DEFAULT_PRESET, MODES, PRESETS, ProposalConfig,
                              SelectiveSearchConfig, preset_settings)


def _as_flags(settings: dict) -> dict:
    """Selective search settings as flag values: 0 stands for None (no limit)."""
    return {key: 0 if value is None else value for key, value in settings.items()}


# The flags' defaults are the library's (proposals.config, free of OpenCV and torch, so --help
# needs neither).
SS_DEFAULTS = _as_flags(asdict(SelectiveSearchConfig()))
MB_DEFAULTS = {"multibox_top": ProposalConfig().multibox_top,
               "multibox_nms": ProposalConfig().multibox_nms}
# How long the ranks that finished wait for the others before rank 0 reports: a shard can take
# hours longer than another (a resumed run whose rank 0 has nothing left, unequal machines), and
# torch's default 30 minutes would end the whole job with a traceback there.
WAIT_FOR_RANKS = datetime.timedelta(days=7)
# Flags that --config decides: refused with it, by name.
_CONFIG_DECIDES = ("gt", "images", "classes", "preset", *SS_DEFAULTS, "multibox", *MB_DEFAULTS,
                   "no_selective_search")


def presets_help() -> str:
    """The --help text of the presets: one paragraph each, its settings as flags."""
    def flags(settings: dict) -> str:
        return " ".join(f"--{key.replace('_', '-')} {value:g}" if isinstance(value, float)
                        else f"--{key.replace('_', '-')} {value}"
                        for key, value in _as_flags(settings).items())

    return "\n".join(f"  {name}: {preset.about}\n      = {flags(preset.settings)}"
                     for name, preset in PRESETS.items())


def build_parser() -> argparse.ArgumentParser:
    epilog = f"{__doc__.split(chr(10) * 2, 1)[1]}\npresets (--preset):\n{presets_help()}"
    p = argparse.ArgumentParser(prog="gdet-propose", description=__doc__.split("\n\n")[0],
                                epilog=epilog, formatter_class=HelpFormatter)
    p.add_argument("--out", help="cache folder (created; an existing one is resumed); with "
                                 "--config, default: its data.proposals")
    p.add_argument("--config", help="a training config: its data and proposals sections decide "
                                    "the dataset and the proposals")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="with --config: override a config value, e.g. "
                        "proposals.selective_search.max_side=300 (repeatable)")
    g = p.add_argument_group("dataset (not with --config, except --split)")
    g.add_argument("--gt", help="a dataset: COCO instances JSON, VOC folder, VOC/ILSVRC XML "
                                "folder, YOLO data.yaml or YOLO labels folder")
    g.add_argument("--images", help="image folder: the dataset's images, or, without --gt, "
                                    "every image below it (id = path without suffix)")
    g.add_argument("--classes", help="class list file for VOC/ILSVRC folders (needs --gt)")
    g.add_argument("--split", help="VOC ImageSets/Main split name, or a file of image ids "
                                   "(needs --gt or --config)")
    p.add_argument("--workers", type=int, default=1, help="local worker processes")
    s = p.add_argument_group("proposals (not with --config; default values shown are the "
                             f"{DEFAULT_PRESET} preset's)")
    s.add_argument("--preset", choices=tuple(PRESETS),
                   help="named selective search settings (listed below); a flag given with it "
                        f"replaces that value (default: {DEFAULT_PRESET})")
    s.add_argument("--mode", choices=MODES,
                   help=f"selective search diversification (R-CNN used fast) "
                        f"(default: {SS_DEFAULTS['mode']})")
    s.add_argument("--superpixel-scale", type=float,
                   help="> 0: multiplies graph segmentation k and min size (2 = GoogLeNet, "
                        f"1 = R-CNN) (default: {SS_DEFAULTS['superpixel_scale']})")
    s.add_argument("--max-side", type=int,
                   help="work on a copy whose longer side is at most this (0 = full size) "
                        f"(default: {SS_DEFAULTS['max_side']})")
    s.add_argument("--min-box-side", type=float,
                   help=f"drop boxes with a shorter side, pixels (default: "
                        f"{SS_DEFAULTS['min_box_side']})")
    s.add_argument("--max-boxes", type=int,
                   help=f"keep the top N per image, 0 = all (default: {SS_DEFAULTS['max_boxes']})")
    s.add_argument("--seed", type=int,
                   help=f"seed of the ranking's random factor (default: {SS_DEFAULTS['seed']})")
    s.add_argument("--multibox", metavar="CKPT",
                   help="add the boxes of this MultiBox network (gdet-train, task: multibox)")
    s.add_argument("--multibox-top", type=int,
                   help="MultiBox boxes added per image, after NMS (needs --multibox) "
                        f"(default: {MB_DEFAULTS['multibox_top']}, GoogLeNet's)")
    s.add_argument("--multibox-nms", type=float,
                   help="IoU in (0, 1] of the NMS among MultiBox boxes (needs --multibox) "
                        f"(default: {MB_DEFAULTS['multibox_nms']})")
    s.add_argument("--no-selective-search", action="store_true", default=None,
                   help="MultiBox boxes alone (needs --multibox; for comparisons)")
    return p


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse, by name, every flag that does not apply or whose value cannot work; before any
    work. Then fill the proposal defaults of the flags not given (without --config)."""
    given = lambda name: getattr(args, name) is not None  # noqa: E731
    flag = lambda name: "--" + name.replace("_", "-")  # noqa: E731
    if args.config:
        for name in _CONFIG_DECIDES:
            if given(name):
                raise DetectionError(f"{flag(name)} with --config {args.config}: the config "
                                     "decides; drop the flag, or change the config (or --set "
                                     "its key, e.g. proposals.multibox_top=100)")
    else:
        if args.set:
            raise DetectionError(f"--set {args.set[0]}: only applies with --config; give the "
                                 "proposal flags instead")
        for name in ("classes", "split"):
            if given(name) and not args.gt:
                raise DetectionError(f"{flag(name)} needs --gt (a dataset); a plain --images "
                                     "folder takes every image below it")
        if not args.multibox:
            for name in (*MB_DEFAULTS, "no_selective_search"):
                if given(name):
                    raise DetectionError(f"{flag(name)} needs --multibox CKPT (it applies to "
                                         "MultiBox boxes)")
        if not (args.gt or args.images):
            raise DetectionError("give --gt (a dataset), --images (a folder of images) or "
                                 "--config (a training config)")
        check_images_given(args.gt, args.images)
        if not args.out:
            raise DetectionError("give --out CACHE_FOLDER (or --config with data.proposals)")
    _check_ranges(args)
    if not args.config:
        preset = _as_flags(preset_settings(args.preset or DEFAULT_PRESET, "--preset"))
        defaults = {**SS_DEFAULTS, **preset, **MB_DEFAULTS, "no_selective_search": False}
        for name, value in defaults.items():
            if not given(name):
                setattr(args, name, value)


def _check_ranges(args: argparse.Namespace) -> None:
    """Each given number in its range, refused by flag name."""
    rules = {"workers": (1, "at least 1"), "max_side": (0, "0 (full size) or more"),
             "max_boxes": (0, "0 (all) or more"), "seed": (0, "0 or more"),
             "multibox_top": (1, "at least 1"), "min_box_side": (0, "0 or more")}
    for name, (least, text) in rules.items():
        value = getattr(args, name)
        if value is not None and not (math.isfinite(value) and value >= least):
            raise DetectionError(f"--{name.replace('_', '-')} {value}: must be {text}")
    scale, nms = args.superpixel_scale, args.multibox_nms
    if scale is not None and not (math.isfinite(scale) and scale > 0):
        raise DetectionError(f"--superpixel-scale {scale}: must be above 0 (2 = GoogLeNet's)")
    if nms is not None and not 0 < nms <= 1:
        raise DetectionError(f"--multibox-nms {nms}: must be an IoU in (0, 1]")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_main(run, args)


def run(args: argparse.Namespace) -> int:
    """The command: check everything, list the jobs, fill the cache, summarise. Exit status 1
    if an image failed (recorded in the cache), else 0."""
    import time

    from eval.outputs import check_output_dir
    from proposals import devices, extract
    from proposals.combined import build_proposer

    check_arguments(args)
    config, data = read_config(args) if args.config else (proposal_config(args), args)
    out = args.out or data.proposals
    if not out:
        raise DetectionError(f"{args.config}: data.proposals is empty; give --out CACHE_FOLDER "
                             "or set data.proposals in the config")
    check_output_dir(out, "--out", [data.gt, data.images, data.classes, args.split, args.config])
    rank, world = devices.world()
    grouped = devices.join_process_group(required=False)
    dataset, jobs = list_jobs(data.gt, data.images, data.classes, args.split, rank)
    proposer = build_proposer(config)
    cache = extract.open_cache(out, proposer)
    mine = jobs[rank::world]
    todo = [job for job in mine if job.image_id not in cache]
    print(f"{len(mine)} images in this shard ({rank + 1}/{world}): {len(mine) - len(todo)} "
          f"already cached, {len(todo)} to compute with {args.workers} worker(s)")
    start = time.perf_counter()
    outcomes = extract.compute_proposals(todo, cache, proposer, args.workers, rank)
    extract.print_summary(outcomes, time.perf_counter() - start, args.workers)
    if grouped:
        devices.barrier(WAIT_FOR_RANKS)  # so that rank 0 reports the whole cache
    elif world > 1:
        print("not started by torchrun: not waiting for the other ranks")
    if rank == 0:
        extract.print_cache_summary(cache, jobs, dataset)
    devices.leave_process_group()
    return 1 if any(o.error for o in outcomes) else 0


def proposal_config(args: argparse.Namespace):
    """The `proposals.config.ProposalConfig` of the proposal flags (checked, defaults
    filled by `check_arguments`)."""
    ss = SelectiveSearchConfig(mode=args.mode, superpixel_scale=args.superpixel_scale,
                               max_side=args.max_side or None, min_box_side=args.min_box_side,
                               max_boxes=args.max_boxes or None, seed=args.seed)
    return ProposalConfig(ss, args.multibox, args.multibox_top, args.multibox_nms,
                          selective_search_on=not args.no_selective_search)


def read_config(args: argparse.Namespace):
    """(ProposalConfig, data section) of the training config ``--config`` with ``--set``."""
    from detector.training.config import TrainConfig, load_train_config

    config = load_train_config(args.config, args.set)
    if not isinstance(config, TrainConfig):
        raise DetectionError(f"--config {args.config}: a {config.task} training config has no "
                             "proposals to compute; give the config of the detector "
                             "(task: classifier) that uses them")
    if not config.data.gt:
        raise DetectionError(f"{args.config}: data.gt is empty; set the dataset there")
    return config.proposals or ProposalConfig(), config.data


def list_jobs(gt: str | None, images: str | None, classes: str | None, split: str | None,
              rank: int = 0):
    """(dataset or None, jobs) in a fixed order (every rank sees the same list); a folder's
    skipped entries are printed (by rank 0)."""
    from eval.datasets import load_dataset
    from proposals import devices, extract

    if gt:
        dataset = load_dataset(gt, images=images, classes=classes, split=split)
        return dataset, extract.dataset_jobs(dataset)
    jobs, skipped = extract.folder_jobs(images)
    if rank == 0:
        extract.print_skipped(skipped)
    return None, jobs


if __name__ == "__main__":
    sys.exit(main())
