"""Training orchestration for both tasks: the loop, its solver, resumption, logs, checkpoints.

    from detector.training.config import load_train_config
    from detector.training.loop import train
    train(load_train_config("configs/raccoon_cpu.yaml", ["solver.epochs=1"]))

SGD with a step schedule, bf16 autocast on CUDA, DDP under torchrun, per-epoch checkpoints with
everything needed to resume exactly (``epoch_NNN.pt``, ``last.pt``), the resolved config
(``config.yaml``), ``metrics.csv`` and, where tensorboard is installed, its event files, all
under the config's ``output`` folder. A resumed run may change only ``RESUMABLE`` keys, e.g.
more epochs to extend a finished run.
"""
from __future__ import annotations

import dataclasses
import os
import textwrap
from pathlib import Path

import torch
from tqdm import tqdm

from proposals.checkpoint import load_checkpoint
from eval.outputs import check_output_dir
from proposals import devices
from proposals.workers import data_loader
from eval.config import to_dict
from eval.errors import DetectionError
from eval.outputs import write_atomic
from detector.training.run_files import MetricsLog, check_fresh_output, clear_run
from detector.training.classifier import classifier_run
from detector.training.config import (AnyTrainConfig, Solver, absolute_paths, check_resumable,
                                      config_from_dict, config_yaml)
from detector.training.core import capture_rng, restore_rng, train_one_epoch
from proposals.networks import WeightsUnavailable


def train(config: AnyTrainConfig, *, device: str = "auto",
          resume: str | os.PathLike | None = None, overwrite: bool = False) -> Path:
    """Train ``config``'s network (``task``: classifier or multibox); returns ``last.pt``.

    ``device``: auto, cpu, cuda, cuda:N (under torchrun, ``cuda`` is the rank's GPU).
    ``resume``: a checkpoint of this run; ``config`` must equal its stored config except for
    `RESUMABLE` keys. A run already at ``solver.epochs`` prints so and returns without work.
    Without ``resume``, an output folder that holds a run is refused unless ``overwrite``
    (its files are then deleted before the first step).
    Everything a user can get wrong is checked before the first step.
    """
    # Stored in every checkpoint and config.yaml: paths that mean the same from any folder.
    config, payload, start = absolute_paths(config), None, 0
    if resume is not None:
        payload = load_checkpoint(resume, kind=None)  # either task
        start = resume_start(payload, config, str(resume))
        if start >= config.solver.epochs:
            print(f"{resume}: the run already finished its {start} epochs; to extend it, resume "
                  f"with --set solver.epochs=N (N > {start})")
            return Path(config.output) / "last.pt"
    old_run = [] if resume is not None else check_fresh_output(Path(config.output), overwrite)
    dev = devices.pick_device(device)
    rank, world = devices.world()
    devices.join_process_group(dev)
    out = check_output_dir(config.output, "output")
    amp = devices.default_autocast(dev)
    run = build_run(config, rank, world, dev, amp, payload)
    optimizer, schedule = build_solver(run.model, config.solver)
    if payload is not None:
        restore(payload, run.model, optimizer, schedule, str(resume))
    net = run.model if world == 1 else torch.nn.parallel.DistributedDataParallel(run.model)
    if rank == 0:
        print(start_summary(config, run, dev, amp, world, start))
        clear_run(old_run)  # --overwrite: only now that everything is checked
        write_atomic(out / "config.yaml", config_yaml(config))
    log = MetricsLog(out, run.columns, enabled=rank == 0, fresh=start == 0)
    try:
        for epoch in range(start, config.solver.epochs):
            metrics = run_epoch(run, net, optimizer, config, epoch, rank)
            schedule.step()
            metrics["lr"] = optimizer.param_groups[0]["lr"]
            if rank == 0:
                run.save(run.model, dict(config=to_dict(config), epoch=epoch + 1,
                                         optimizer=optimizer.state_dict(),
                                         scheduler=schedule.state_dict(), rng=capture_rng()))
                metrics.update(run.validate(run.model, epoch + 1))
                log.write(epoch + 1, metrics)
                print(f"epoch {epoch + 1}: " + ", ".join(f"{k} {v:.4g}"
                                                         for k, v in metrics.items()))
            if world > 1:
                torch.distributed.barrier()
    finally:
        log.close()
    if rank == 0:
        print(end_summary(out, run, config))
    return out / "last.pt"


def start_summary(config: AnyTrainConfig, run, device: torch.device, amp: torch.dtype | None,
                  world: int, start: int) -> str:
    """The paragraph a run begins with: what it trains on, where, how, for how long, and
    where it writes."""
    data, solver = config.data, config.solver
    skipped = f", {run.skipped_images} skipped (above)" if run.skipped_images else ""
    if run.validation:
        val = (f"{_images(run.val_images)} to validate on (data.val_split {data.val_split}, "
               f"every {solver.eval_every} epoch(s))")
    else:
        val = "no validation (" + ("solver.eval_every is 0" if data.val_split else
                                   "no data.val_split") + ")"
    where = f"{device}" + (f" x {world} ranks" if world > 1 else "")
    precision = "bf16 autocast" if amp == torch.bfloat16 else "fp32"
    epochs = f"epochs {start + 1} to {solver.epochs}" if start else f"{solver.epochs} epoch(s)"
    return textwrap.fill(
        f"training a {config.task} on {data.gt}: {_images(run.train_images)} to train on "
        f"(data.train_split {data.train_split or 'unset: every image'}{skipped}), {val}; on "
        f"{where} in {precision}; {epochs}; writing config.yaml, metrics.csv, epoch_NNN.pt and "
        f"last.pt to {config.output}/", width=100, break_long_words=False,
        break_on_hyphens=False)  # a path is never cut inside


def _images(count: int) -> str:
    return f"{count} image" + ("" if count == 1 else "s")


def end_summary(out: Path, run, config: AnyTrainConfig) -> str:
    """The closing lines: the model to use, and what the validation metrics mean."""
    use = ("propose --multibox" if config.task == "multibox" else "detect/test --checkpoint")
    lines = [f"done: {config.solver.epochs} epoch(s); the trained model is {out / 'last.pt'} "
             f"({use}); each epoch's metrics are in {out / 'metrics.csv'}"]
    if run.validation:
        lines.append(run.validation)
    return "\n".join(lines)


def build_run(config: AnyTrainConfig, rank: int, world: int, device: torch.device,
              amp: torch.dtype | None, payload: dict | None):
    """The task's `TrainingRun`; weights that cannot be had name the config's ways out. A
    resumed run's weights come from its checkpoint: ``model.weights`` is not read again (an
    ImageNet-initialised run resumes offline, or after its weights file is gone)."""
    if payload is not None and config.model.weights is not None:
        config = dataclasses.replace(config, model=dataclasses.replace(config.model,
                                                                       weights=None))
    try:
        if config.task == "multibox":
            from detector.training.multibox import multibox_run
            return multibox_run(config, rank, world, device, amp, payload)
        return classifier_run(config, rank, world, device, amp)
    except WeightsUnavailable as e:
        if config.model.weights == "imagenet":
            ways = "or name the file: model.weights=FILE"
        else:
            ways = "set model.weights to an existing file, to imagenet (downloaded)"
        raise WeightsUnavailable(f"{e}; {ways}, or train from random weights: model.weights=null "
                                 "(in the config, or --set model.weights=...)") from None


def run_epoch(run, net, optimizer, config: AnyTrainConfig, epoch: int, rank: int) -> dict:
    """One epoch of ``run``'s batches; the epoch's mean loss parts."""
    run.batches.set_epoch(epoch)
    # Loader workers start as every worker does (proposals.workers: spawn, main module checked).
    loader = data_loader(run.batches, config.loader_workers, batch_size=1, shuffle=False,
                         collate_fn=run.collate)
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.solver.epochs}", disable=rank != 0)
    return train_one_epoch(net, bar, optimizer, run.step, epoch=epoch + 1,
                           on_step=lambda _, parts: (
                               bar.set_postfix({k: f"{parts[k]:.3f}" for k in run.shown})))


def resume_config(path: str | os.PathLike, overrides: list[str] = ()) -> AnyTrainConfig:
    """The config stored in checkpoint ``path`` with ``overrides`` (``key=value``) applied;
    only `detector.training.config.RESUMABLE` keys may change."""
    from detector.training.config import resumed_config

    payload = load_checkpoint(path, kind=None)
    if "config" not in payload or "epoch" not in payload:
        raise DetectionError(f"{path}: not a training checkpoint (no config/epoch); resume "
                             "from an epoch_NNN.pt or last.pt of a training run")
    return resumed_config(payload["config"], list(overrides), str(path))


def resume_start(payload: dict, config: AnyTrainConfig, where: str) -> int:
    """The epoch a resumed run continues after, once ``config`` is checked against the one
    stored in the checkpoint ``payload``."""
    if "config" not in payload or "epoch" not in payload:
        raise DetectionError(f"{where}: not a training checkpoint (no config/epoch); resume "
                             "from an epoch_NNN.pt or last.pt of a training run")
    stored = absolute_paths(config_from_dict(payload["config"], where))
    check_resumable(stored, absolute_paths(config), where)
    return int(payload["epoch"])


def build_solver(model: torch.nn.Module, s: Solver):
    """SGD with momentum and a multi-step schedule (lr times gamma at each of ``s.steps``)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=s.lr, momentum=s.momentum,
                                weight_decay=s.weight_decay)
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(s.steps),
                                                    gamma=s.gamma)
    return optimizer, schedule


def restore(payload: dict, model, optimizer, schedule, path: str) -> None:
    """Weights, optimizer, schedule and RNG states of a resumed checkpoint."""
    try:
        model.load_state_dict(payload["state_dict"])
        optimizer.load_state_dict(payload["optimizer"])
        schedule.load_state_dict(payload["scheduler"])
    except (KeyError, RuntimeError, ValueError) as e:
        raise DetectionError(f"{path}: cannot resume from it ({e}); is it a training checkpoint "
                             "of this config?") from None
    restore_rng(payload.get("rng"), path)
    print(f"resuming after epoch {payload['epoch']} from {path}")
