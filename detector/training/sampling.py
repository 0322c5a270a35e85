"""R-CNN fine-tuning regions: label each proposal by its best ground truth, sample fg/bg batches.

R-CNN (Girshick et al. 2014): a region is foreground for class c when its IoU with a
ground-truth box of class c is >= 0.5, background below; batches hold 32 foreground and 96
background regions; box regression learns from regions with IoU > 0.6. Ground-truth boxes join
the regions as (perfect) positives.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.ops import box_iou


@dataclass(frozen=True)
class RegionLabels:
    """Per region: class label (0 = background), best IoU, index of that ground truth (-1: none)."""

    labels: torch.Tensor      # int64 [N]
    max_iou: torch.Tensor     # float32 [N]
    matched_gt: torch.Tensor  # int64 [N]


def label_regions(regions: torch.Tensor, gt_boxes: torch.Tensor, gt_labels: torch.Tensor,
                  fg_iou: float = 0.5) -> RegionLabels:
    """Label ``regions`` [N, 4] xyxy by their best-overlapping ground truth [G, 4] / labels [G].

    A region with IoU >= ``fg_iou`` with its best ground truth takes that box's class; others
    are background (0). With no ground truth every region is background.
    """
    n = len(regions)
    if len(gt_boxes) == 0 or n == 0:
        return RegionLabels(torch.zeros(n, dtype=torch.int64, device=regions.device),
                            torch.zeros(n, device=regions.device),
                            torch.full((n,), -1, dtype=torch.int64, device=regions.device))
    iou = box_iou(regions.float(), gt_boxes.float())
    max_iou, matched = iou.max(dim=1)
    labels = torch.where(max_iou >= fg_iou, gt_labels[matched], torch.zeros_like(matched))
    return RegionLabels(labels, max_iou, matched)


def with_ground_truth(proposals: torch.Tensor, gt_boxes: torch.Tensor) -> torch.Tensor:
    """Ground-truth boxes first, then the proposals: training regions [G + N, 4]."""
    return torch.cat([gt_boxes.to(proposals.dtype), proposals], dim=0)


def sample_regions(labels: torch.Tensor, num_fg: int, num_bg: int,
                   generator: torch.Generator) -> torch.Tensor:
    """Indices of up to ``num_fg`` foreground and ``num_bg`` background regions, drawn without
    replacement. Where foreground is short, background fills the batch (as R-CNN's window
    sampler does) so batches keep their size. Deterministic given ``generator``.
    """
    fg = torch.nonzero(labels > 0).flatten()
    bg = torch.nonzero(labels == 0).flatten()
    take_fg = min(num_fg, len(fg))
    take_bg = min(num_bg + num_fg - take_fg, len(bg))
    fg = fg[torch.randperm(len(fg), generator=generator)[:take_fg].to(fg.device)]
    bg = bg[torch.randperm(len(bg), generator=generator)[:take_bg].to(bg.device)]
    return torch.cat([fg, bg])
