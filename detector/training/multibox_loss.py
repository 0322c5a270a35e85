"""MultiBox training objective: match ground-truth boxes to output slots, then score the match.

For one image with slots i (prior p_i, predicted residuals r_i, confidence logit z_i) and
ground-truth boxes j, with ``t_ij = encode(g_j, p_i)`` the residuals that would be exact and
``x_ij`` = 1 where box j is matched to slot i (each box to one slot, each slot at most one box)::

    F(x) = alpha * F_loc + F_conf
    F_loc  = 1/2 * sum_ij x_ij * ||r_i - t_ij||^2                      (L2, matched slots only)
    F_conf = -sum_i [ m_i log sigmoid(z_i) + (1 - m_i) log(1 - sigmoid(z_i)) ],  m_i = sum_j x_ij

Matching (``MATCHERS``), each box to one slot and each slot to at most one box:
- ``"bipartite"``: the one-to-one assignment of boxes to priors with the largest total IoU,
  solved exactly with scipy's ``linear_sum_assignment`` (Szegedy et al. 2014 match ground truth
  to the priors, not to the predictions).
- ``"best_prior"``: each box to the prior it overlaps most, greedily (best pair first), so that
  no slot gets two boxes; differs from ``"bipartite"`` only where boxes compete for a prior.
- ``"predicted"`` (Erhan et al. 2014, before priors): the x minimising F for the current
  predictions. Matching box j to slot i changes F by ``alpha/2 * ||r_i - t_ij||^2 - z_i`` (the
  slot's -log(1 - c) turns into -log c: their difference is -z), the cost matrix of the
  assignment. From random weights the confidence term dominates and a few confident slots take
  every box (BENCHMARKS.md, MultiBox): use it to fine-tune, not to start.

The batch loss is the mean over images of F. Everything is computed in float32.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor
from torchvision.ops import box_iou

from proposals.defaults import MULTIBOX_ALPHA
from proposals.multibox import decode, encode

ALPHA = MULTIBOX_ALPHA  # the papers' weight of the location term


def match_bipartite(residuals: Tensor, logits: Tensor, priors: Tensor, gt_boxes: Tensor,
                    alpha: float = ALPHA) -> tuple[Tensor, Tensor]:
    """The assignment of boxes to priors with the largest total IoU (predictions unused).

    ``residuals [K, 4]``, ``logits [K]``, ``priors [K, 4]``, ``gt_boxes [G, 4]`` normalised.
    Returns ``(slots [M], boxes [M])`` int64 index pairs, M = min(G, K), sorted by box.
    """
    iou = box_iou(priors.float(), gt_boxes.float())                          # [K, G]
    boxes, slots = linear_sum_assignment(-iou.T.cpu().numpy())              # rows: boxes
    return _pairs(slots, boxes, priors.device)


def match_predicted(residuals: Tensor, logits: Tensor, priors: Tensor, gt_boxes: Tensor,
                    alpha: float = ALPHA) -> tuple[Tensor, Tensor]:
    """The assignment minimising F for the current predictions (Erhan et al.); see the module
    docstring. Same arguments and result as `match_bipartite`."""
    targets = encode(gt_boxes[None, :, :], priors[:, None, :])               # [K, G, 4]
    distance = ((residuals.detach().float()[:, None, :] - targets) ** 2).sum(-1)
    cost = alpha / 2 * distance - logits.detach().float()[:, None]          # [K, G]
    boxes, slots = linear_sum_assignment(cost.T.cpu().numpy())
    return _pairs(slots, boxes, priors.device)


def match_best_prior(residuals: Tensor, logits: Tensor, priors: Tensor, gt_boxes: Tensor,
                     alpha: float = ALPHA) -> tuple[Tensor, Tensor]:
    """Each box to its highest-IoU prior, greedily (best pair first) so slots stay distinct.

    Same arguments and result as `match_bipartite`; the predictions are not used. IoU ties go
    to the lower slot index, then to the lower box index.
    """
    iou = box_iou(priors.float(), gt_boxes.float()).cpu().numpy()            # [K, G]
    order = np.argsort(-iou, axis=None, kind="stable")  # row-major: ties -> lower slot, box
    slot_used, box_used = np.zeros(iou.shape[0], bool), np.zeros(iou.shape[1], bool)
    slots, boxes = [], []
    for flat in order:
        slot, box = divmod(int(flat), iou.shape[1])
        if slot_used[slot] or box_used[box]:
            continue
        slot_used[slot] = box_used[box] = True
        slots.append(slot)
        boxes.append(box)
        if len(boxes) == min(iou.shape):
            break
    by_box = np.argsort(boxes, kind="stable")
    return _pairs(np.asarray(slots, np.int64)[by_box], np.asarray(boxes, np.int64)[by_box],
                  priors.device)


def _pairs(slots: np.ndarray, boxes: np.ndarray, device: torch.device) -> tuple[Tensor, Tensor]:
    as_index = lambda a: torch.as_tensor(np.asarray(a, np.int64), device=device)  # noqa: E731
    return as_index(slots), as_index(boxes)


Matcher = Callable[[Tensor, Tensor, Tensor, Tensor, float], tuple[Tensor, Tensor]]
MATCHERS: dict[str, Matcher] = {"bipartite": match_bipartite, "best_prior": match_best_prior,
                                "predicted": match_predicted}


def multibox_loss(residuals: Tensor, logits: Tensor, priors: Tensor, gt_boxes: Sequence[Tensor],
                  alpha: float = ALPHA, matching: str = "bipartite") -> tuple[Tensor, dict]:
    """The batch's mean F and its parts.

    Args:
        residuals: ``[B, K, 4]``; logits: ``[B, K]``; priors: ``[K, 4]`` normalised xyxy.
        gt_boxes: per image ``[G_b, 4]`` normalised xyxy (G_b may be 0: every slot negative).
        alpha: weight of the location term; matching: a key of ``MATCHERS``.
    Returns:
        ``(loss, parts)``: loss a scalar tensor; parts floats ``loss``, ``loss_loc``,
        ``loss_conf`` (batch means of alpha-free F_loc and of F_conf) and ``matched_iou``, the
        mean IoU of the matched slots' predicted boxes with their ground truth.
    """
    match = MATCHERS[matching]
    residuals, logits, priors = residuals.float(), logits.float(), priors.float()
    loc_total, conf_total = residuals.new_zeros(()), residuals.new_zeros(())
    ious = []
    for b, gt in enumerate(gt_boxes):
        gt = gt.to(residuals.device, torch.float32)
        matched = torch.zeros_like(logits[b])
        if len(gt):
            slots, boxes = match(residuals[b], logits[b], priors, gt, alpha)
            targets = encode(gt[boxes], priors[slots])
            loc_total = loc_total + 0.5 * ((residuals[b, slots] - targets) ** 2).sum()
            matched[slots] = 1.0
            predicted = decode_boxes(residuals[b, slots].detach(), priors[slots])
            ious.append(box_iou(predicted, gt[boxes]).diagonal())
        conf_total = conf_total + F.binary_cross_entropy_with_logits(logits[b], matched,
                                                                     reduction="sum")
    count = max(len(gt_boxes), 1)
    loss = (alpha * loc_total + conf_total) / count
    parts = {"loss": loss.item(), "loss_loc": loc_total.item() / count,
             "loss_conf": conf_total.item() / count,
             "matched_iou": torch.cat(ious).mean().item() if ious else 0.0}
    return loss, parts


def decode_boxes(residuals: Tensor, priors: Tensor) -> Tensor:
    """`proposals.multibox.decode` with corners put in order (x1 <= x2) for IoU."""
    boxes = decode(residuals, priors)
    return torch.cat([torch.minimum(boxes[:, :2], boxes[:, 2:]),
                      torch.maximum(boxes[:, :2], boxes[:, 2:])], dim=1)
