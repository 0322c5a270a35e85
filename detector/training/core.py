"""Fine-tuning the region classifier as R-CNN did: warped proposals, 32 fg / 96 bg per batch.

The data side (`RegionBatches`) decides everything random about a batch (which images, which
regions, flips, photometric factors) from ``(seed, epoch, batch index)`` alone, so a run is
reproducible with any number of loader workers, and a run resumed at an epoch boundary
continues exactly as the uninterrupted one. Ensemble members share the initialisation and
learning rate and differ by ``seed``: sampling and input order, as in the GoogLeNet paper.
"""
from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from detector.box_coder import encode
from eval.datasets import ImageRecord, read_image
from eval.errors import DetectionError
from detector.regions import warp_regions
from proposals.devices import autocast
from proposals.networks import standardize
from detector.training.config import Solver
from detector.training.sampling import label_regions, sample_regions, with_ground_truth
from proposals.cache import ProposalCache

# R-CNN: box regression learns only from regions that overlap their object well (IoU > 0.6).
REGRESSION_IOU = 0.6
# Photometric distortion: brightness, contrast and saturation each scaled by a factor drawn
# uniformly from [1 - d, 1 + d] (the colour jitter of common ImageNet training recipes).
PHOTOMETRIC_RANGE = 0.2


@dataclass
class ImageSample:
    """One image's share of a batch. Boxes are in the (possibly flipped) image's pixels."""

    image: torch.Tensor        # uint8 [3, H, W]
    boxes: torch.Tensor        # float32 [R, 4]
    labels: torch.Tensor       # int64 [R], 0 = background
    targets: torch.Tensor      # float32 [R, 4] R-CNN regression targets
    regress: torch.Tensor      # bool [R]: a target to learn from
    photometric: torch.Tensor  # float32 [3]: brightness, contrast, saturation factors


class EpochBatches(torch.utils.data.Dataset):
    """What both tasks' batches share: item i of an epoch is batch i of ``images_per_batch``
    records, visited in a seeded order per epoch (`epoch_batches`); under DDP rank r takes
    batches r, r + world, ... . Subclasses build a batch in ``__getitem__``."""

    def __init__(self, records: list[ImageRecord], seed: int, images_per_batch: int,
                 rank: int, world: int) -> None:
        self.records, self.seed, self.images_per_batch = records, seed, images_per_batch
        self.rank, self.world = rank, world
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Fix the image order of ``epoch`` (call before iterating a new loader)."""
        self.epoch = epoch
        self.batches = epoch_batches(len(self.records), self.images_per_batch,
                                     seeded_generator(self.seed, epoch, -1), self.rank, self.world)

    def __len__(self) -> int:
        return len(self.batches)


class RegionBatches(EpochBatches):
    """Batches of regions for one epoch: item i is batch i, a list of `ImageSample`.

    Each epoch visits every image once in a seeded order, ``images_per_batch`` images per
    batch; each image contributes ``regions_per_batch / images_per_batch`` regions, a quarter
    foreground (R-CNN's 32 of 128). Under DDP, rank r takes batches r, r + world, ...
    """

    def __init__(self, records: list[ImageRecord], cache: ProposalCache, *, seed: int,
                 images_per_batch: int = 2, regions_per_batch: int = 128, fg_fraction: float = 0.25,
                 flip: bool = True, photometric: bool = True, rank: int = 0, world: int = 1):
        if regions_per_batch % images_per_batch:
            raise ValueError("regions_per_batch must be a multiple of images_per_batch")
        self.cache = cache
        self.regions_per_image = regions_per_batch // images_per_batch
        self.fg_per_image = round(self.regions_per_image * fg_fraction)
        self.flip, self.photometric = flip, photometric
        super().__init__(records, seed, images_per_batch, rank, world)

    def __getitem__(self, index: int) -> list[ImageSample]:
        generator = seeded_generator(self.seed, self.epoch, index)
        return [self._sample(self.records[i], generator) for i in self.batches[index]]

    def _sample(self, record: ImageRecord, generator: torch.Generator) -> ImageSample:
        image = torch.from_numpy(read_image(record.file_name)).permute(2, 0, 1).contiguous()
        gt_boxes = torch.from_numpy(record.boxes[~record.iscrowd])
        gt_labels = torch.from_numpy(record.labels[~record.iscrowd])
        boxes = self.cache.load(record.image_id, (image.shape[2], image.shape[1]))  # real size
        regions = with_ground_truth(torch.from_numpy(boxes), gt_boxes)
        assigned = label_regions(regions, gt_boxes, gt_labels)
        keep = sample_regions(assigned.labels, self.fg_per_image,
                              self.regions_per_image - self.fg_per_image, generator)
        boxes, labels = regions[keep], assigned.labels[keep]
        matched = assigned.matched_gt[keep]
        regress = (assigned.max_iou[keep] > REGRESSION_IOU) & (labels > 0)
        targets = torch.zeros_like(boxes)
        if regress.any():
            targets[regress] = encode(boxes[regress], gt_boxes[matched[regress]])
        flip = self.flip and bool(torch.rand(1, generator=generator) < 0.5)
        if flip:  # targets: dx changes sign, the rest is symmetric
            image, boxes = image.flip(-1), flip_boxes(boxes, image.shape[-1])
            targets[:, 0] = -targets[:, 0]
        factors = 1 + PHOTOMETRIC_RANGE * (2 * torch.rand(3, generator=generator) - 1)
        if not self.photometric:
            factors = torch.ones(3)
        return ImageSample(image, boxes, labels, targets, regress, factors)


def epoch_batches(count: int, per_batch: int, generator: torch.Generator, rank: int = 0,
                  world: int = 1) -> list[list[int]]:
    """This rank's batches of one epoch: indices 0..count-1 in ``generator``'s order, in groups
    of ``per_batch``; under DDP rank r takes batches r, r + world, ...

    Every rank gets the same number of batches, at least one when ``count`` >= 1 (none when
    it is 0): DDP synchronises each step, so a rank with fewer steps would hang the others.
    The last round is filled by going round the epoch's batches again, as many times as
    needed (6 images in batches of 2 on 8 ranks: batches 0 1 2 0 1 2 0 1, one per rank).
    """
    if per_batch < 1 or world < 1 or not 0 <= rank < world:
        raise ValueError(f"need per_batch >= 1 and 0 <= rank < world, got {per_batch}, "
                         f"{rank}, {world}")
    order = torch.randperm(count, generator=generator)
    batches = [b.tolist() for b in order.split(per_batch)] if count else []
    rounds = -(-len(batches) // world)
    filled = [batches[i % len(batches)] for i in range(rounds * world)]
    return filled[rank::world]


def seeded_generator(*parts: int) -> torch.Generator:
    """A torch generator seeded from integers, e.g. (seed, epoch, batch): one stream per batch,
    independent of loader workers and of resumption."""
    return torch.Generator().manual_seed(hash_seed(*parts))


def hash_seed(*parts: int) -> int:
    """A 63-bit seed from integers (stable across processes, unlike Python's hash())."""
    return int(np.random.SeedSequence([p + 2**31 for p in parts]).generate_state(1, np.uint64)[0] >> 1)


def flip_boxes(boxes: torch.Tensor, width: int) -> torch.Tensor:
    """Mirror xyxy boxes [N, 4] in an image ``width`` pixels wide."""
    return torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)


def collate(batch: list[list[ImageSample]]) -> list[ImageSample]:
    """The loader's batch size is 1: a `RegionBatches` item already is a whole batch."""
    return batch[0]


def distort(image: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast, saturation scaling of a float image [3, H, W] in [0, 1]."""
    brightness, contrast, saturation = factors.tolist()
    image = image * brightness
    gray = (0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2]).unsqueeze(0)
    image = (image - gray.mean()) * contrast + gray.mean()
    gray = (0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2]).unsqueeze(0)
    return ((image - gray) * saturation + gray).clamp(0, 1)


def warp_batch(samples: list[ImageSample], device: torch.device, input_size: int,
               context_pad: int) -> tuple[torch.Tensor, ...]:
    """Regions of all images warped on ``device``: inputs [R, 3, S, S], labels, targets, mask."""
    inputs = []
    for s in samples:
        image = distort(s.image.to(device).float() / 255, s.photometric.to(device))
        image = standardize(image)
        inputs.append(warp_regions(image, s.boxes.to(device), input_size, context_pad))
    cat = lambda name: torch.cat([getattr(s, name) for s in samples]).to(device)  # noqa: E731
    return torch.cat(inputs), cat("labels"), cat("targets"), cat("regress")


def region_loss(logits: torch.Tensor, deltas: torch.Tensor | None, labels: torch.Tensor,
                targets: torch.Tensor, regress: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Cross-entropy over K+1 classes, plus smooth-L1 on the true class's box deltas.

    ``logits`` [R, K+1]; ``deltas`` [R, K, 4] or None; ``labels`` [R]; ``targets`` [R, 4];
    ``regress`` bool [R]. Background rows never enter the box term (they have no true class's
    deltas), and it is summed over the regressed rows and divided by R, as Fast R-CNN does.
    Computed in float32 whatever the autocast dtype.
    """
    loss_cls = F.cross_entropy(logits.float(), labels)
    parts = {"loss_cls": loss_cls.item()}
    loss = loss_cls
    if deltas is not None:
        rows = torch.nonzero(regress & (labels > 0)).flatten()
        picked = deltas.float()[rows, labels[rows] - 1]
        loss_box = F.smooth_l1_loss(picked, targets[rows], beta=1 / 9, reduction="sum")
        loss_box = loss_box / max(len(labels), 1)
        parts["loss_box"] = loss_box.item()
        loss = loss + loss_box
    parts["accuracy"] = (logits.argmax(1) == labels).float().mean().item()
    parts["loss"] = loss.item()
    return loss, parts


def region_step(model: nn.Module, samples: list[ImageSample], *, device: torch.device,
                input_size: int, context_pad: int, amp_dtype: torch.dtype | None = None
                ) -> tuple[torch.Tensor, dict]:
    """The classifier's training step: warp the batch's regions, forward, `region_loss`."""
    inputs, labels, targets, regress = warp_batch(samples, device, input_size, context_pad)
    with autocast(device, amp_dtype):
        logits, deltas = model(inputs)
    return region_loss(logits, deltas, labels, targets, regress)


Step = Callable[[nn.Module, Any], tuple[torch.Tensor, dict]]


@dataclass
class TrainingRun:
    """What differs between the networks `detector.training.loop.train` trains (classifier, MultiBox).

    ``batches`` has ``set_epoch(epoch)`` and yields whole batches (loader batch size 1,
    ``collate``); ``step(model, batch)`` returns the loss and its float parts (``"loss"`` among
    them); ``save(model, state)`` writes a checkpoint with the training ``state`` added;
    ``validate(model, epoch)`` returns validation metrics ({} when none are due); ``shown``
    names the parts on the progress bar. The rest is for the summaries `train` prints: the
    image counts (training images after ``skipped_images`` were left out, validation images)
    and what the validation metrics measure.
    """

    model: nn.Module
    batches: torch.utils.data.Dataset
    collate: Callable
    step: Step
    save: Callable[[nn.Module, dict], None]
    validate: Callable[[nn.Module, int], dict]
    shown: tuple[str, ...] = ("loss",)
    columns: tuple[str, ...] = ("loss", "lr")
    train_images: int = 0
    val_images: int = 0
    skipped_images: int = 0
    validation: str = ""


def train_one_epoch(model: nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer,
                    step: Step, on_step: Callable[[int, dict], None] | None = None,
                    epoch: int | None = None) -> dict:
    """One pass over ``loader`` with ``step``; returns the epoch's mean of each loss part.
    A loss that is not finite (training diverged) is a DetectionError naming the step and
    ``epoch`` (1-based, for the message), before it reaches the weights."""
    model.train()
    totals: dict[str, float] = {}
    steps = 0
    for index, batch in enumerate(loader):
        loss, parts = step(model, batch)
        if not math.isfinite(parts["loss"]):
            raise DetectionError(_diverged(parts["loss"], index + 1, epoch))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for key, value in parts.items():
            totals[key] = totals.get(key, 0.0) + value
        steps += 1
        if on_step is not None:
            on_step(index, parts)
    return {key: value / max(steps, 1) for key, value in totals.items()}


def _diverged(loss: float, step: int, epoch: int | None) -> str:
    where = f"step {step}" + (f" of epoch {epoch}" if epoch is not None else "")
    return (f"training diverged: the loss is {loss} at {where}; lower solver.lr (in the config, "
            "or --set solver.lr=...), or check the data for wrong boxes or labels")


def due(epoch: int, solver: Solver) -> bool:
    """Whether validation runs after ``epoch`` (1-based): every ``solver.eval_every`` epochs
    and after the last one."""
    return bool(solver.eval_every) and (epoch % solver.eval_every == 0
                                        or epoch == solver.epochs)


def capture_rng() -> dict:
    """Global RNG states a training process may consume: torch's (dropout, loader base seeds),
    CUDA's, Python's and NumPy's (nothing of ours draws from the last two, but a model or a
    library may). Plain values and tensors: a checkpoint stores them and ``weights_only``
    loading reads them back bitwise."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: object, where: str = "the checkpoint") -> None:
    """Set the global RNG states of `capture_rng` (Python's and NumPy's only where ``state``
    has them); a malformed ``state`` is one DetectionError naming ``where`` (the checkpoint
    file)."""
    torch_state = state.get("torch") if isinstance(state, dict) else None
    cuda = state.get("cuda", []) if isinstance(state, dict) else []
    if not (_is_rng_state(torch_state) and isinstance(cuda, (list, tuple))
            and all(_is_rng_state(s) for s in cuda)):
        raise DetectionError(f"{where}: no usable RNG state (rng); resume from a training "
                             "checkpoint written by tools/train.py")
    setters = [("torch", torch.set_rng_state, torch_state)]
    if "python" in state:
        setters.append(("python", random.setstate, state["python"]))
    if "numpy" in state:
        setters.append(("numpy", np.random.set_state, state["numpy"]))
    if cuda and torch.cuda.is_available():
        setters.append(("cuda", torch.cuda.set_rng_state_all, cuda))
    for name, setter, value in setters:
        try:
            setter(value)
        except (RuntimeError, TypeError, ValueError, KeyError, IndexError, OverflowError) as e:
            # e.g. a state of the wrong length or type
            reason = " ".join(str(e).split())[:120]
            raise DetectionError(f"{where}: unusable RNG state rng.{name} ({reason}); "
                                 "resume from a training checkpoint written by tools/train.py"
                                 ) from None


def _is_rng_state(value: object) -> bool:
    """A generator state as torch returns it: a 1-D uint8 tensor."""
    return isinstance(value, torch.Tensor) and value.dtype == torch.uint8 and value.ndim == 1
