"""The MultiBox task of tools/train.py: its config and its `TrainingRun`.

    python tools/train.py --config configs/raccoon_multibox_cpu.yaml

Priors: before the first epoch, ``model.num_priors`` k-means clusters (IoU distance) of
``model.prior_samples`` boxes per prior drawn as training shows them (crops, flips); they are
stored in every checkpoint, and a resumed run takes them from there. Validation: proposal recall
of the top ``validation.top_n`` boxes (after NMS) on the validation split.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from detector.classifier import load_trunk_weights
from detector.datasets import Dataset, load_dataset, read_image
from detector.training import TrainingRun
from eval.recall import proposal_recall
from proposals.multibox import MultiBox, predict, save_multibox
from proposals.multibox_loss import ALPHA, multibox_loss
from proposals.multibox_training import (MultiBoxBatches, collate_multibox,
                                         sample_training_boxes)
from proposals.priors import cluster_priors, mean_best_iou
from tools.train import Solver, write_checkpoint


@dataclass(frozen=True)
class MultiBoxDataConfig:
    gt: str = ""                       # dataset: COCO JSON, VOC folder or VOC/ILSVRC XML folder
    images: str | None = None
    classes: str | None = None         # (classes are ignored: MultiBox is class-agnostic)
    train_split: str | None = None
    val_split: str | None = None


@dataclass(frozen=True)
class MultiBoxModelConfig:
    num_priors: int = 800              # K output slots (the paper's 800)
    input_size: int = 224
    weights: str | None = "imagenet"   # trunk: "imagenet", a GoogLeNet/checkpoint file, or null
    init_seed: int = 0
    prior_samples: int = 20            # augmented training boxes per prior for the k-means


@dataclass(frozen=True)
class MultiBoxLossConfig:
    alpha: float = ALPHA               # weight of the location term
    matching: Literal["bipartite", "best_prior", "predicted"] = "bipartite"


@dataclass(frozen=True)
class MultiBoxAugmentConfig:
    crop: bool = True
    flip: bool = True
    photometric: bool = True


@dataclass(frozen=True)
class MultiBoxValidation:
    top_n: int = 200
    nms_iou: float = 0.7


@dataclass(frozen=True)
class MultiBoxTrainConfig:
    task: Literal["multibox"] = "multibox"
    data: MultiBoxDataConfig = field(default_factory=MultiBoxDataConfig)
    model: MultiBoxModelConfig = field(default_factory=MultiBoxModelConfig)
    loss: MultiBoxLossConfig = field(default_factory=MultiBoxLossConfig)
    solver: Solver = field(default_factory=Solver)
    augment: MultiBoxAugmentConfig = field(default_factory=MultiBoxAugmentConfig)
    validation: MultiBoxValidation = field(default_factory=MultiBoxValidation)
    seed: int = 0
    output: str = "runs/multibox"
    loader_workers: int = 2


def multibox_run(config: MultiBoxTrainConfig, rank: int, world: int, device: torch.device,
                 amp: torch.dtype | None, resumed: dict | None) -> TrainingRun:
    """MultiBox network (priors clustered, or from the resumed checkpoint), batches, step."""
    data = config.data
    dataset = load_dataset(data.gt, images=data.images, classes=data.classes, split=data.train_split)
    records = list(dataset.images)
    if resumed is not None:
        priors = torch.as_tensor(resumed["priors"])
    else:
        priors = torch.from_numpy(make_priors(records, config))
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
    val = validation_set(config)
    return TrainingRun(model, batches, collate_multibox, step,
                       lambda model, state: write_checkpoint(Path(config.output), save_multibox,
                                                             model=model, **state),
                       lambda model, epoch: validate(config, model, val, epoch),
                       shown=("loss", "matched_iou"),
                       columns=("loss", "loss_loc", "loss_conf", "matched_iou", "lr",
                                "val_recall50", "val_recall70", "val_AR"))


def make_priors(records: list, config: MultiBoxTrainConfig) -> np.ndarray:
    """k-means priors of boxes sampled as training shows them; prints how well they cover."""
    k = config.model.num_priors
    boxes = sample_training_boxes(records, k * config.model.prior_samples, seed=config.seed,
                                  crop=config.augment.crop, flip=config.augment.flip)
    priors = cluster_priors(boxes, k, seed=config.seed)
    print(f"{k} priors from {len(boxes)} sampled training boxes: mean best IoU "
          f"{mean_best_iou(boxes, priors):.3f}")
    return priors


def multibox_step(model: torch.nn.Module, batch, *, priors: torch.Tensor, device: torch.device,
                  amp_dtype: torch.dtype | None, alpha: float, matching: str):
    inputs, boxes = batch
    with torch.autocast(device.type, dtype=amp_dtype or torch.bfloat16,
                        enabled=amp_dtype is not None):
        residuals, logits = model(inputs.to(device))
    return multibox_loss(residuals, logits, priors, boxes, alpha, matching)


def validation_set(config: MultiBoxTrainConfig) -> Dataset | None:
    if not config.solver.eval_every or not config.data.val_split:
        return None
    return load_dataset(config.data.gt, images=config.data.images, classes=config.data.classes,
                        split=config.data.val_split)


def validate(config: MultiBoxTrainConfig, model: MultiBox, val: Dataset | None, epoch: int) -> dict:
    """Recall at IoU 0.5 / 0.7 and average recall of the top-N boxes on the validation split."""
    if val is None or (epoch % config.solver.eval_every and epoch != config.solver.epochs):
        return {}
    model.eval()
    proposals = [predict(model, read_image(r.file_name), config.validation.top_n,
                         config.validation.nms_iou)[0].cpu().numpy() for r in val.images]
    result = proposal_recall([r.boxes[~r.iscrowd] for r in val.images], proposals)
    return {"val_recall50": result.recall_at(0.5), "val_recall70": result.recall_at(0.7),
            "val_AR": float(result.average_recall[-1])}
