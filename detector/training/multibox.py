"""The MultiBox task of `detector.training.loop.train` (``task: multibox``): its `TrainingRun`.

    python tools/train.py --config configs/raccoon_multibox_cpu.yaml

Priors: before the first epoch, ``model.num_priors`` k-means clusters (IoU distance) of
``model.prior_samples`` boxes per prior drawn as training shows them (crops, flips); they are
stored in every checkpoint, and a resumed run takes them from there. Validation: proposal recall
of the top ``validation.top_n`` boxes (after NMS) on the validation split.

Damaged photos: MultiBox has no proposal cache to record them, so before the first step every
training (and validation) image is decoded once; the ones that cannot be are left out, their
count and the first reason printed (one decode per image, a small cost beside an epoch).
"""
from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from proposals.devices import autocast
from proposals.networks import load_trunk_weights
from eval.datasets import Dataset, load_dataset, read_image
from eval.datasets.common import with_image_sizes
from eval.errors import DetectionError
from detector.training.run_files import write_checkpoint
from detector.training.config import MultiBoxDataConfig, MultiBoxTrainConfig, MultiBoxValidation
from detector.training.core import TrainingRun, due
from eval.recall import evaluate_proposals
from proposals.multibox import MultiBox, predict, save_multibox
from detector.training.multibox_loss import multibox_loss
from detector.training.multibox_data import (MultiBoxBatches, collate_multibox,
                                             sample_training_boxes)
from proposals.priors import cluster_priors, mean_best_iou

# Below this input side GoogLeNet's last stage is 1x1, and batch norm cannot train on a batch
# of one image there ("expected more than 1 value per channel"); a test holds the boundary.
ONE_IMAGE_MIN_SIZE = 47


def multibox_run(config: MultiBoxTrainConfig, rank: int, world: int, device: torch.device,
                 amp: torch.dtype | None, resumed: dict | None) -> TrainingRun:
    """MultiBox network (priors clustered, or from the resumed checkpoint), batches, step."""
    data = config.data
    if not data.gt:
        raise DetectionError("the config has no data.gt: name the dataset to train on")
    listed = load_dataset(data.gt, images=data.images, classes=data.classes,
                          split=data.train_split)
    dataset = decodable_images(listed, "training")
    records = list(dataset.images)
    check_batch_sizes(len(records), config.solver.images_per_batch, config.model.input_size)
    val = validation_set(data) if config.solver.eval_every else None
    if resumed is not None:
        priors = torch.as_tensor(resumed["priors"])
    else:
        priors = torch.from_numpy(make_priors(
            records, config.model.num_priors, config.model.prior_samples, seed=config.seed,
            crop=config.augment.crop, flip=config.augment.flip))
    torch.manual_seed(config.model.init_seed)
    model = MultiBox(priors, config.model.input_size)
    if config.model.weights is not None and resumed is None:
        load_trunk_weights(model.trunk, config.model.weights)
    model.to(device)
    torch.manual_seed(config.seed)
    batches = MultiBoxBatches(records, seed=config.seed, input_size=config.model.input_size,
                              images_per_batch=config.solver.images_per_batch,
                              crop=config.augment.crop, flip=config.augment.flip,
                              photometric=config.augment.photometric, rank=rank, world=world)
    step = functools.partial(multibox_step, priors=model.priors, device=device, amp_dtype=amp,
                             alpha=config.loss.alpha, matching=config.loss.matching)
    return TrainingRun(model, batches, collate_multibox, step,
                       lambda model, state: write_checkpoint(Path(config.output), save_multibox,
                                                             model=model, **state),
                       lambda model, epoch: validate(model, val, config.validation,
                                                     due(epoch, config.solver)),
                       shown=("loss", "matched_iou"),
                       columns=("loss", "loss_loc", "loss_conf", "matched_iou", "lr",
                                "val_recall50", "val_recall70", "val_AR"),
                       train_images=len(records), val_images=len(val.images) if val else 0,
                       skipped_images=len(listed.images) - len(records),
                       validation=(f"val_recall50 and val_recall70 are the recall of the top "
                                   f"{config.validation.top_n} boxes (after NMS at "
                                   f"{config.validation.nms_iou}) at IoU 0.5 and 0.7, val_AR "
                                   "their recall averaged over IoU 0.5:0.05:0.95, on the "
                                   "validation split") if val else "")


def check_batch_sizes(count: int, per_batch: int, input_size: int) -> None:
    """Refuse, before any work, a run whose epochs would have a batch of one image at an input
    size where batch norm cannot train on one (it would stop at the end of the first epoch)."""
    if input_size >= ONE_IMAGE_MIN_SIZE or (per_batch > 1 and count % per_batch != 1):
        return
    raise DetectionError(f"{count} training images in batches of solver.images_per_batch="
                         f"{per_batch} leave a batch of 1 image, which batch norm cannot train "
                         f"on at model.input_size {input_size} (< "
                         f"{ONE_IMAGE_MIN_SIZE}); change solver.images_per_batch or raise "
                         "model.input_size")


def decodable_images(dataset: Dataset, what: str) -> Dataset:
    """``dataset`` without the images that cannot be decoded (printed; none left: an error),
    each record with its image's real size (`with_image_sizes`: a wrong annotated size warns)."""
    reasons, sizes = {}, {}
    for record in dataset.images:
        try:
            height, width = read_image(record.file_name).shape[:2]
            sizes[record.image_id] = (width, height)
        except DetectionError as e:
            reasons[record.image_id] = str(e)
    kept = [r for r in dataset.images if r.image_id not in reasons]
    dataset = replace(dataset, images=tuple(with_image_sizes(kept, [sizes[r.image_id]
                                                                    for r in kept])))
    if not reasons:
        return dataset
    if not kept:
        raise DetectionError(f"{dataset.source}: none of the {what} images can be decoded "
                             f"({next(iter(reasons.values()))})")
    print(f"skipping {len(reasons)} of {len(reasons) + len(kept)} {what} images that cannot be "
          f"decoded (e.g. {next(iter(reasons.values()))})")
    return dataset


def make_priors(records: list, k: int, samples_per_prior: int, *, seed: int, crop: bool,
                flip: bool) -> np.ndarray:
    """``k`` k-means priors of ``k * samples_per_prior`` boxes sampled as training shows them
    (``crop``, ``flip``); prints how well they cover."""
    boxes = sample_training_boxes(records, k * samples_per_prior, seed=seed, crop=crop, flip=flip)
    priors = cluster_priors(boxes, k, seed=seed)
    print(f"{k} priors from {len(boxes)} sampled training boxes: mean best IoU "
          f"{mean_best_iou(boxes, priors):.3f}")
    return priors


def multibox_step(model: torch.nn.Module, batch, *, priors: torch.Tensor, device: torch.device,
                  amp_dtype: torch.dtype | None, alpha: float, matching: str):
    """The MultiBox training step: forward (bf16 autocast where given), `multibox_loss`."""
    inputs, boxes = batch
    with autocast(device, amp_dtype):
        residuals, logits = model(inputs.to(device))
    return multibox_loss(residuals, logits, priors, boxes, alpha, matching)


def validation_set(data: MultiBoxDataConfig) -> Dataset | None:
    """The validation split of the ``data`` section (decodable images only; None without
    one), read before training starts."""
    if not data.val_split:
        return None
    return decodable_images(load_dataset(data.gt, images=data.images, classes=data.classes,
                                         split=data.val_split), "validation")


def validate(model: MultiBox, val: Dataset | None, boxes: MultiBoxValidation,
             now: bool) -> dict:
    """Recall at IoU 0.5 / 0.7 and average recall of the top ``boxes.top_n`` boxes (after NMS
    at ``boxes.nms_iou``) on the validation split, when ``now`` (see `due`)."""
    if val is None or not now:
        return {}
    model.eval()
    proposals = [predict(model, read_image(r.file_name), boxes.top_n,
                         boxes.nms_iou)[0].cpu().numpy() for r in val.images]
    result = evaluate_proposals(val.images, proposals)
    return {"val_recall50": result.recall_at(0.5), "val_recall70": result.recall_at(0.7),
            "val_AR": float(result.average_recall[-1])}
