"""Fine-tune an Inception (GoogLeNet) region classifier on a dataset and its proposal cache.

    python tools/propose.py --gt ../shared/data/raccoon/annotations \\
        --images ../shared/data/raccoon/images --out cache/raccoon_ss_x2
    python tools/train.py --config configs/raccoon_cpu.yaml
    python tools/train.py --config configs/raccoon_cpu.yaml --seed 1 --set output=runs/raccoon_s1
    python tools/train.py --resume runs/raccoon_cpu/last.pt
    torchrun --nproc-per-node 8 tools/train.py --config configs/X.yaml      # DDP
    python tools/train.py --config configs/raccoon_multibox_cpu.yaml       # task: multibox

A config's ``task`` picks the network: ``classifier`` (default; `TrainConfig`) or ``multibox``
(the MultiBox proposal network, `tools.train_multibox.MultiBoxTrainConfig`). Both go through
the same loop here: SGD with a step schedule, bf16 autocast on CUDA, DDP under torchrun,
per-epoch checkpoints with everything needed to resume exactly, metrics and progress bars.

Writes ``epoch_NNN.pt`` and ``last.pt`` checkpoints (model, optimizer, schedule, RNG states,
config, classes), ``metrics.csv`` (and TensorBoard logs when tensorboard is installed) under the
config's ``output`` folder. Ensemble members: the same config with different ``--seed``.
"""
from __future__ import annotations

import argparse
import csv
import functools
import os
import sys
from dataclasses import dataclass, field, replace
from typing import Literal
from pathlib import Path

import torch
from tqdm import tqdm

from detector.checkpoint import ModelSpec, load_checkpoint, save_checkpoint
from detector.classifier import build_classifier
from detector.config import from_dict, load_config, read_yaml, to_dict
from detector.datasets import Dataset, load_dataset
from detector.errors import DetectionError
from detector.evaluation import evaluate_model
from detector.training import (RegionBatches, TrainingRun, capture_rng, collate, region_step,
                               restore_rng, train_one_epoch)
from proposals.cache import ProposalCache
from proposals.combined import ProposalConfig, check_cache_matches, proposal_record
from detector.cli.common import pick_device


@dataclass(frozen=True)
class DataConfig:
    gt: str = ""                       # dataset: COCO JSON, VOC folder or VOC/ILSVRC XML folder
    images: str | None = None          # image folder, where the ground truth needs one
    classes: str | None = None         # class list file (default: sorted names found)
    train_split: str | None = None     # split name or file of ids (csv with 'filename' too)
    val_split: str | None = None       # evaluated every solver.eval_every epochs
    proposals: str = ""                # proposal cache from tools/propose.py


@dataclass(frozen=True)
class ModelConfig:
    input_size: int = 224              # GoogLeNet's; smaller for CPU configs
    context_pad: int = 16              # R-CNN: 16 px of context at 224
    weights: str | None = "imagenet"   # "imagenet", a state-dict file, or null (random)
    init_seed: int = 0                 # same initialisation for every ensemble member
    box_regression: bool = False       # GoogLeNet's entry used none; R-CNN did


@dataclass(frozen=True)
class Solver:
    """SGD with momentum and a step schedule, for every task."""

    epochs: int = 10
    lr: float = 0.001                  # R-CNN fine-tuning
    momentum: float = 0.9
    weight_decay: float = 0.0005
    steps: tuple[int, ...] = (7,)      # epochs at which lr is multiplied by gamma
    gamma: float = 0.1
    images_per_batch: int = 2
    eval_every: int = 0                # validate every N epochs (0 = never)


@dataclass(frozen=True)
class SolverConfig(Solver):
    regions_per_batch: int = 128       # R-CNN: 32 foreground + 96 background
    fg_fraction: float = 0.25


@dataclass(frozen=True)
class AugmentConfig:
    flip: bool = True
    photometric: bool = True


@dataclass(frozen=True)
class TrainConfig:
    task: Literal["classifier"] = "classifier"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    seed: int = 0                      # sampling and input order (ensemble members differ here)
    output: str = "runs/train"
    loader_workers: int = 2
    # How data.proposals was made (tools/propose.py --config fills it from here); when given,
    # training refuses a cache made otherwise. null: take the cache as it is.
    proposals: ProposalConfig | None = None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML config (see configs/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set solver.lr=0.01 (repeatable)")
    p.add_argument("--seed", type=int, help="shortcut for --set seed=N")
    p.add_argument("--resume", metavar="CKPT",
                   help="continue from a checkpoint with its own config (--set output=DIR may move it)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        train(args)
    except DetectionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def read_config(args: argparse.Namespace):
    """The run's config (`TrainConfig` or `MultiBoxTrainConfig`) and the checkpoint resumed, if any."""
    overrides = list(args.set) + ([f"seed={args.seed}"] if args.seed is not None else [])
    if not args.resume:
        if not args.config:
            raise DetectionError("give --config FILE (see configs/) or --resume CKPT")
        return load_config(config_class(read_task(args.config, overrides)), args.config,
                           overrides), None
    payload = load_checkpoint(args.resume, kind=None)  # either task
    if args.config or any(not o.startswith("output=") for o in overrides):
        raise DetectionError(f"{args.resume}: --resume continues with the checkpoint's own config; "
                             "drop --config/--set/--seed (only --set output=DIR may change)")
    config = from_dict(config_class(payload["config"].get("task", "classifier")),
                       payload["config"], args.resume)
    for item in overrides:
        config = replace(config, output=item.partition("=")[2])
    return config, payload


def read_task(path: str, overrides: list[str]) -> str:
    """The ``task`` a config file (or a ``--set task=...``) names; "classifier" by default."""
    task = read_yaml(path).get("task", "classifier")
    for item in overrides:
        key, _, value = item.partition("=")
        task = value.strip() if key.strip() == "task" else task
    return task


def config_class(task: str) -> type:
    from tools.train_multibox import MultiBoxTrainConfig  # imports this module: not at the top

    tasks = {"classifier": TrainConfig, "multibox": MultiBoxTrainConfig}
    if task not in tasks:
        raise DetectionError(f"task {task!r} is unknown; use one of {', '.join(tasks)}")
    return tasks[task]


def train(args: argparse.Namespace) -> None:
    config, resumed = read_config(args)
    rank, world, device = setup_distributed(args.device)
    amp = torch.bfloat16 if device.type == "cuda" else None
    if config.task == "multibox":
        from tools.train_multibox import multibox_run
        run = multibox_run(config, rank, world, device, amp, resumed)
    else:
        run = classifier_run(config, rank, world, device, amp)
    optimizer, schedule = build_solver(run.model, config.solver)
    start_epoch = 0
    if resumed is not None:
        start_epoch = resume(resumed, run.model, optimizer, schedule, args.resume)
    net = run.model if world == 1 else torch.nn.parallel.DistributedDataParallel(run.model)
    log = MetricsLog(Path(config.output), run.columns, enabled=rank == 0, fresh=start_epoch == 0)
    for epoch in range(start_epoch, config.solver.epochs):
        run.batches.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(run.batches, batch_size=1, shuffle=False,
                                             num_workers=config.loader_workers,
                                             collate_fn=run.collate)
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.solver.epochs}", disable=rank != 0)
        metrics = train_one_epoch(net, bar, optimizer, run.step, on_step=lambda _, parts: (
            bar.set_postfix({k: f"{parts[k]:.3f}" for k in run.shown})))
        schedule.step()
        metrics["lr"] = optimizer.param_groups[0]["lr"]
        if rank == 0:
            run.save(run.model, dict(config=to_dict(config), epoch=epoch + 1,
                                     optimizer=optimizer.state_dict(),
                                     scheduler=schedule.state_dict(), rng=capture_rng()))
            metrics.update(run.validate(run.model, epoch + 1))
            log.write(epoch + 1, metrics)
            print(f"epoch {epoch + 1}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
        if world > 1:
            torch.distributed.barrier()
    log.close()


def classifier_run(config: TrainConfig, rank: int, world: int, device: torch.device,
                   amp: torch.dtype | None) -> TrainingRun:
    """The region classifier's model, batches, step, checkpoint and validation."""
    dataset = load_dataset(config.data.gt, images=config.data.images, classes=config.data.classes,
                           split=config.data.train_split)
    cache = open_cache(config.data.proposals, dataset)
    if config.proposals is not None:
        check_cache_matches(cache, config.proposals, config.data.proposals)
    val = validation_set(config, cache)
    spec = ModelSpec(len(dataset.classes), config.model.input_size, config.model.context_pad,
                     config.model.box_regression)
    model = build_model(config, spec, device)
    batches = RegionBatches(list(dataset.images), cache, seed=config.seed,
                            images_per_batch=config.solver.images_per_batch,
                            regions_per_batch=config.solver.regions_per_batch,
                            fg_fraction=config.solver.fg_fraction, flip=config.augment.flip,
                            photometric=config.augment.photometric, rank=rank, world=world)
    step = functools.partial(region_step, device=device, input_size=spec.input_size,
                             context_pad=spec.context_pad, amp_dtype=amp)

    def save(model: torch.nn.Module, state: dict) -> None:
        write_checkpoint(Path(config.output), save_checkpoint, classes=list(dataset.classes),
                         spec=spec, state_dict=model.state_dict(),
                         proposals=proposal_record(cache), **state)

    return TrainingRun(model, batches, collate, step, save,
                       lambda model, epoch: validate(config, model, spec, device, epoch, val, cache),
                       shown=("loss", "accuracy"),
                       columns=("loss", "loss_cls", "loss_box", "accuracy", "lr", "val_mAP"))


def setup_distributed(device_arg: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device); under torchrun, joins the process group (NCCL on GPUs)."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    rank = int(os.environ.get("RANK", 0))
    device = pick_device(device_arg, int(os.environ.get("LOCAL_RANK", 0)))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def open_cache(root: str, dataset: Dataset) -> ProposalCache:
    """The proposal cache, with every training image in it (else: the command that fills it)."""
    if not root:
        raise DetectionError("the config has no data.proposals: compute proposals with "
                             "tools/propose.py and name its --out folder there")
    cache = ProposalCache.open(root)
    check_cached(cache, dataset, root)
    return cache


def check_cached(cache: ProposalCache, dataset: Dataset, root: str) -> None:
    missing = [r.image_id for r in dataset.images if r.image_id not in cache]
    if missing:
        raise DetectionError(f"{root}: no proposals for {len(missing)} images of {dataset.source} "
                             f"(e.g. {missing[0]!r}); run tools/propose.py --gt {dataset.source} "
                             f"--out {root}")


def build_model(config: TrainConfig, spec: ModelSpec, device: torch.device):
    """The classifier network (same init for every seed)."""
    torch.manual_seed(config.model.init_seed)
    model = build_classifier(spec.num_classes, weights=config.model.weights,
                             box_regression=spec.box_regression, input_size=spec.input_size).to(device)
    torch.manual_seed(config.seed)  # dropout etc. follow the member's own seed
    return model


def build_solver(model: torch.nn.Module, s: Solver):
    """SGD with momentum, multi-step schedule."""
    optimizer = torch.optim.SGD(model.parameters(), lr=s.lr, momentum=s.momentum,
                                weight_decay=s.weight_decay)
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(s.steps), gamma=s.gamma)
    return optimizer, schedule


def resume(payload: dict, model, optimizer, schedule, path: str) -> int:
    try:
        model.load_state_dict(payload["state_dict"])
        optimizer.load_state_dict(payload["optimizer"])
        schedule.load_state_dict(payload["scheduler"])
    except (KeyError, RuntimeError, ValueError) as e:
        raise DetectionError(f"{path}: cannot resume from it ({e}); is it a training checkpoint "
                             "of this config?") from None
    restore_rng(payload["rng"])
    print(f"resuming after epoch {payload['epoch']} from {path}")
    return payload["epoch"]


def write_checkpoint(out: Path, save, **payload) -> None:
    """``epoch_NNN.pt`` and ``last.pt`` under ``out``; ``save(path, **payload)`` writes one."""
    save(out / f"epoch_{payload['epoch']:03d}.pt", **payload)
    save(out / "last.pt", **payload)


def validation_set(config: TrainConfig, cache: ProposalCache) -> Dataset | None:
    """The validation split, read once and checked against the cache before training starts."""
    if not config.solver.eval_every or not config.data.val_split:
        return None
    val = load_dataset(config.data.gt, images=config.data.images, classes=config.data.classes,
                       split=config.data.val_split)
    check_cached(cache, val, config.data.proposals)
    return val


def validate(config: TrainConfig, model, spec: ModelSpec, device: torch.device, epoch: int,
             val: Dataset | None, cache: ProposalCache) -> dict:
    """VOC all-point mAP@0.5 on the validation split, every ``solver.eval_every`` epochs."""
    every = config.solver.eval_every
    if val is None or (epoch % every and epoch != config.solver.epochs):
        return {}
    return {"val_mAP": evaluate_model([model], val, cache, spec, device, protocol="voc").mAP}


class MetricsLog:
    """metrics.csv (one row per epoch) and, where tensorboard is installed, its event files."""

    def __init__(self, folder: Path, columns: tuple[str, ...], enabled: bool, fresh: bool):
        self.enabled, self.path, self.writer = enabled, folder / "metrics.csv", None
        self.columns = ("epoch",) + columns
        if not enabled:
            return
        folder.mkdir(parents=True, exist_ok=True)
        if fresh:  # a new run in an old folder: its rows must not follow the old run's
            self.path.unlink(missing_ok=True)
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(folder / "tensorboard"))
        except ImportError:
            pass


    def write(self, epoch: int, metrics: dict) -> None:
        if not self.enabled:
            return
        new = not self.path.exists()
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow({"epoch": epoch, **{k: f"{v:.6g}" for k, v in metrics.items()}})
        if self.writer is not None:
            for key, value in metrics.items():
                self.writer.add_scalar(key, value, epoch)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


if __name__ == "__main__":
    sys.exit(main())
