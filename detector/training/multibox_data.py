"""Training data for MultiBox: whole images and random crops, resized to the network input.

Like `detector.training.core.RegionBatches`, everything random about a batch (images, crops, flips,
photometric factors) follows from ``(seed, epoch, batch index)`` alone, so runs are reproducible
with any number of loader workers and resume exactly at epoch boundaries.

Augmentation: half of the samples are the whole image (what inference sees), the rest a random
crop whose sides are 40-100% of the image's (objects appear larger and at new places; MultiBox
was trained on crops too). A box stays an object of the crop if at least half of its area is
inside; it is clipped to the crop. Then a horizontal flip (p = 0.5) and photometric distortion.
`sample_training_boxes` draws boxes from the same distribution for clustering the priors.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from eval.datasets import ImageRecord, read_image
from detector.training.core import (PHOTOMETRIC_RANGE, EpochBatches, distort, flip_boxes,
                                    seeded_generator)
from proposals.multibox import prepare_image

FULL_IMAGE_SHARE = 0.5      # samples that are the whole image
MIN_CROP_SIDE = 0.4         # crop sides: this to 1.0 of the image's, drawn independently
MIN_VISIBLE = 0.5           # a box keeps its object if this share of its area is in the crop


def random_crop(width: int, height: int, generator: torch.Generator) -> tuple[float, ...]:
    """A crop window ``(x1, y1, x2, y2)`` in pixels: the whole image or a random part of it."""
    draws = torch.rand(5, generator=generator).tolist()
    if draws[0] < FULL_IMAGE_SHARE:
        return 0.0, 0.0, float(width), float(height)
    w = width * (MIN_CROP_SIDE + (1 - MIN_CROP_SIDE) * draws[1])
    h = height * (MIN_CROP_SIDE + (1 - MIN_CROP_SIDE) * draws[2])
    x1, y1 = (width - w) * draws[3], (height - h) * draws[4]
    return x1, y1, x1 + w, y1 + h


def crop_boxes(boxes: Tensor, crop: tuple[float, ...]) -> Tensor:
    """Boxes ``[N, 4]`` (pixels) that stay objects of ``crop``, normalised to the crop's frame."""
    x1, y1, x2, y2 = crop
    clipped = torch.stack([boxes[:, 0].clamp(x1, x2), boxes[:, 1].clamp(y1, y2),
                           boxes[:, 2].clamp(x1, x2), boxes[:, 3].clamp(y1, y2)], dim=1)
    area = lambda b: (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)  # noqa: E731
    keep = (area(clipped) >= MIN_VISIBLE * area(boxes)) & (area(clipped) > 0)
    scale = torch.tensor([x2 - x1, y2 - y1, x2 - x1, y2 - y1], dtype=torch.float32)
    return (clipped[keep] - torch.tensor([x1, y1, x1, y1], dtype=torch.float32)) / scale


class MultiBoxBatches(EpochBatches):
    """Item i of an epoch: ``(inputs [B, 3, S, S], [gt boxes [G_b, 4] normalised])`` for batch i.

    Each epoch visits every image once in a seeded order; under DDP, rank r takes batches
    r, r + world, ... (the last round wrapped so that every rank runs as many steps).
    """

    def __init__(self, records: list[ImageRecord], *, seed: int, input_size: int,
                 images_per_batch: int = 8, crop: bool = True, flip: bool = True,
                 photometric: bool = True, rank: int = 0, world: int = 1):
        self.input_size = input_size
        self.crop, self.flip, self.photometric = crop, flip, photometric
        super().__init__(records, seed, images_per_batch, rank, world)

    def __getitem__(self, index: int) -> tuple[Tensor, list[Tensor]]:
        generator = seeded_generator(self.seed, self.epoch, index)
        samples = [self._sample(self.records[i], generator) for i in self.batches[index]]
        return torch.stack([s[0] for s in samples]), [s[1] for s in samples]

    def _sample(self, record: ImageRecord, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        pixels = torch.from_numpy(read_image(record.file_name)).permute(2, 0, 1).float() / 255
        height, width = pixels.shape[1:]
        crop = random_crop(width, height, generator) if self.crop else (0, 0, width, height)
        x1, y1, x2, y2 = (round(v) for v in crop)  # whole pixels, the boxes' frame too
        x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)
        boxes = crop_boxes(torch.from_numpy(record.boxes[~record.iscrowd]), (x1, y1, x2, y2))
        pixels = pixels[:, y1:y2, x1:x2]
        if self.flip and bool(torch.rand(1, generator=generator) < 0.5):
            pixels, boxes = pixels.flip(-1), flip_boxes(boxes, 1)
        factors = 1 + PHOTOMETRIC_RANGE * (2 * torch.rand(3, generator=generator) - 1)
        if self.photometric:
            pixels = distort(pixels, factors)
        return prepare_image(pixels, self.input_size), boxes


def collate_multibox(batch: list[tuple[Tensor, list[Tensor]]]) -> tuple[Tensor, list[Tensor]]:
    """The loader's batch size is 1: a `MultiBoxBatches` item already is a whole batch."""
    return batch[0]


def sample_training_boxes(records: list[ImageRecord], count: int, *, seed: int,
                          crop: bool = True, flip: bool = True) -> np.ndarray:
    """``count`` normalised boxes ``[count, 4]`` as training shows them (crops and flips).

    Images are visited round-robin (each crop of an image drawn from its own seeded stream),
    until ``count`` boxes are collected: the sample for `proposals.priors.cluster_priors`.
    """
    gts = [(torch.from_numpy(r.boxes[~r.iscrowd]), r.width, r.height) for r in records]
    if not any(len(b) for b, _, _ in gts):
        return np.zeros((0, 4), np.float32)
    found, draw = [], 0
    while sum(len(b) for b in found) < count:
        for i, (boxes, width, height) in enumerate(gts):
            generator = seeded_generator(seed, draw, i)
            window = random_crop(width, height, generator) if crop else (0, 0, width, height)
            kept = crop_boxes(boxes, window)
            if flip and bool(torch.rand(1, generator=generator) < 0.5):
                kept = flip_boxes(kept, 1)
            found.append(kept)
        draw += 1
    return torch.cat(found)[:count].numpy()
