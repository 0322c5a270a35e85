"""The classifier task of `detector.training.loop.train`: its dataset, cache, network and validation.

`classifier_run` is where the training config stops: it reads the config's sections and hands
plain values to everything it builds.

Images whose proposals the cache records as failed (a damaged photo the propose command could
not decode) are left out of training and validation, with their count and the cache's
``failed/`` folder printed at the start; an image neither cached nor failed stops the run before
any work, with the command that fills the cache.
"""
from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path

import torch

from proposals.checkpoint import ModelSpec, save_checkpoint
from detector.classifier import build_classifier
from eval.datasets import Dataset, load_dataset
from eval.errors import DetectionError
from detector.evaluation import evaluate_model
from detector.training.run_files import write_checkpoint
from detector.training.config import DataConfig, TrainConfig
from detector.training.core import RegionBatches, TrainingRun, collate, due, region_step
from proposals.cache import ProposalCache
from proposals.combined import check_cache_matches, proposal_record


def classifier_run(config: TrainConfig, rank: int, world: int, device: torch.device,
                   amp: torch.dtype | None) -> TrainingRun:
    """The region classifier's model, batches, step, checkpoint and validation."""
    data = config.data
    if not data.gt:
        raise DetectionError("the config has no data.gt: name the dataset to train on")
    dataset = load_dataset(data.gt, images=data.images, classes=data.classes,
                           split=data.train_split)
    cache = open_cache(data.proposals)
    if config.proposals is not None:
        check_cache_matches(cache, config.proposals, data.proposals)
    # Read (and the MultiBox network checked) once, before any work: every checkpoint carries it.
    record = proposal_record(cache, config.proposals.multibox if config.proposals else None)
    listed = len(dataset.images)
    dataset = usable_images(dataset, cache, data.proposals, "training")
    val = validation_set(data, cache) if config.solver.eval_every else None
    spec = ModelSpec(len(dataset.classes), config.model.input_size, config.model.context_pad,
                     config.model.box_regression)
    model = build_model(spec, config.model.weights, config.model.init_seed, config.seed, device)
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
                         proposals=record, **state)

    return TrainingRun(model, batches, collate, step, save,
                       lambda model, epoch: validate(model, spec, device, val, cache,
                                                     due(epoch, config.solver)),
                       shown=("loss", "accuracy"),
                       columns=("loss", "loss_cls", "loss_box", "accuracy", "lr", "val_mAP"),
                       train_images=len(dataset.images), val_images=len(val.images) if val else 0,
                       skipped_images=listed - len(dataset.images),
                       validation="val_mAP is VOC all-point AP@0.5 (the test command's "
                                  "--protocol voc) on the validation split" if val else "")


def open_cache(root: str) -> ProposalCache:
    """The proposal cache ``data.proposals`` names."""
    if not root:
        raise DetectionError("the config has no data.proposals: compute proposals with the "
                             "propose command and name its --out folder there")
    return ProposalCache.open(root)


def usable_images(dataset: Dataset, cache: ProposalCache, root: str, what: str,
                  drop: bool = True) -> Dataset:
    """``dataset`` without (``drop``) the images whose proposals failed, their count printed;
    any other image without proposals is an error naming the command that computes them."""
    ids = [r.image_id for r in dataset.images]
    failed, missing = cache.partition(ids)
    failed = set(failed)
    if missing:
        raise DetectionError(f"{root}: no proposals for {len(missing)} {what} images of "
                             f"{dataset.source} (e.g. {missing[0]!r}); run the propose command: "
                             f"propose --gt {dataset.source} --out {root}")
    if not failed:
        return dataset
    if len(failed) == len(ids) and drop:
        raise DetectionError(f"{root}: the proposals of every {what} image failed (reasons in "
                             f"{cache.root / 'failed'}); fix or replace the images and run the "
                             "propose command again")
    counted = "" if drop else ", their objects counted as missed"
    print(f"skipping {len(failed)} of {len(ids)} {what} images whose proposals failed (damaged "
          f"files{counted}; reasons in {cache.root / 'failed'})")
    if not drop:
        return dataset
    return replace(dataset, images=tuple(r for r in dataset.images if r.image_id not in failed))


def build_model(spec: ModelSpec, weights: str | None, init_seed: int, seed: int,
                device: torch.device):
    """The classifier network: the same initialisation (``init_seed``) for every member, then
    the member's own ``seed`` for dropout and the rest."""
    torch.manual_seed(init_seed)
    model = build_classifier(spec.num_classes, weights=weights,
                             box_regression=spec.box_regression,
                             input_size=spec.input_size).to(device)
    torch.manual_seed(seed)
    return model


def validation_set(data: DataConfig, cache: ProposalCache) -> Dataset | None:
    """The validation split of the ``data`` section (None without one), read once and checked
    against the cache before training starts."""
    if not data.val_split:
        return None
    val = load_dataset(data.gt, images=data.images, classes=data.classes, split=data.val_split)
    # Kept whole: `evaluate_model` skips failed images and counts their objects as missed, as
    # the test command does, so the validation mAP is the number the test command reports.
    usable_images(val, cache, data.proposals, "validation", drop=False)
    return val


def validate(model, spec: ModelSpec, device: torch.device, val: Dataset | None,
             cache: ProposalCache, now: bool) -> dict:
    """VOC all-point mAP@0.5 on the validation split when ``now`` (see `due`)."""
    if val is None or not now:
        return {}
    return {"val_mAP": evaluate_model([model], val, cache, spec, device, protocol="voc").mAP}
