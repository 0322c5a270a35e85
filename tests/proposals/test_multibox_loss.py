"""MultiBox matching and loss: hand-computed cases, a brute-force reference, and overfitting."""
import itertools
import math

import numpy as np
import pytest
import torch

from proposals.multibox import MultiBox, decode, encode
from detector.training.multibox_loss import (match_best_prior, match_bipartite, match_predicted,
                                             multibox_loss)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PRIORS = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
GT = torch.tensor([[0.5, 0.5, 1.0, 1.0], [0.1, 0.1, 0.6, 0.6]])


def pairs(match) -> list[tuple[int, int]]:
    slots, boxes = match
    return sorted(zip(boxes.tolist(), slots.tolist()))


def test_prior_matchers_on_a_hand_case():
    zeros = torch.zeros(3, 4), torch.zeros(3)
    # gt 0 is prior 1 exactly; gt 1 overlaps prior 0 (IoU 0.16/0.34) more than prior 2 (0.25).
    assert pairs(match_bipartite(*zeros, PRIORS, GT)) == [(0, 1), (1, 0)]
    assert pairs(match_best_prior(*zeros, PRIORS, GT)) == [(0, 1), (1, 0)]


def test_greedy_best_prior_and_optimal_bipartite_differ_where_boxes_compete():
    # Boxes spanning the image's height, so IoU is that of the x intervals:
    # IoU(p0, g0) = 0.25 / 0.55, IoU(p1, g0) = 0.5 / 0.55, IoU(p0, g1) = 0, IoU(p1, g1) = 0.6.
    priors = torch.tensor([[0.2, 0.0, 0.7, 1.0], [0.5, 0.0, 1.0, 1.0]])
    gt = torch.tensor([[0.45, 0.0, 1.0, 1.0], [0.7, 0.0, 1.0, 1.0]])
    zeros = torch.zeros(2, 4), torch.zeros(2)
    # Greedy takes the best pair (p1, g0) first and leaves g1 the useless p0: total 0.909.
    assert pairs(match_best_prior(*zeros, priors, gt)) == [(0, 1), (1, 0)]
    # The optimum gives up 0.45 on g0 to gain 0.6 on g1: total 1.055.
    assert pairs(match_bipartite(*zeros, priors, gt)) == [(0, 0), (1, 1)]


def brute_force(cost: np.ndarray) -> float:
    """Smallest total cost of assigning every row (box) to a distinct column (slot)."""
    rows, cols = cost.shape
    return min(sum(cost[r, c] for r, c in zip(range(rows), perm))
               for perm in itertools.permutations(range(cols), rows))


@pytest.mark.parametrize("seed", range(5))
def test_bipartite_matchers_are_optimal_against_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    corners = torch.rand(6, 2, 2, generator=g).sort(dim=1).values
    priors = torch.stack([corners[:, 0, 0], corners[:, 0, 1], corners[:, 1, 0] + 0.05,
                          corners[:, 1, 1] + 0.05], dim=1)
    gt = priors[:3] + 0.05 * torch.rand(3, 4, generator=g)
    gt[:, 2:] = torch.maximum(gt[:, 2:], gt[:, :2] + 0.02)
    residuals, logits = torch.randn(6, 4, generator=g) * 0.3, torch.randn(6, generator=g)
    from torchvision.ops import box_iou
    iou = box_iou(priors, gt).T.numpy()
    slots, boxes = match_bipartite(residuals, logits, priors, gt)
    assert -iou[boxes, slots].sum() == pytest.approx(brute_force(-iou), abs=1e-6)
    targets = encode(gt[None], priors[:, None])
    cost = (0.3 / 2 * ((residuals[:, None] - targets) ** 2).sum(-1) - logits[:, None]).T.numpy()
    slots, boxes = match_predicted(residuals, logits, priors, gt)
    assert cost[boxes, slots].sum() == pytest.approx(brute_force(cost), abs=1e-5)
    assert len(set(slots.tolist())) == 3


def test_predicted_matching_follows_the_network_not_the_priors():
    # Slot 2 (the whole-image prior) predicts gt 1 exactly and is confident: Erhan's matching
    # takes it; the prior matchers take prior 0.
    residuals = torch.zeros(3, 4)
    residuals[2] = encode(GT[1], PRIORS[2])
    logits = torch.tensor([-3.0, 0.0, 3.0])
    assert pairs(match_predicted(residuals, logits, PRIORS, GT)) == [(0, 1), (1, 2)]
    assert pairs(match_bipartite(residuals, logits, PRIORS, GT)) == [(0, 1), (1, 0)]


def test_loss_value_by_hand():
    residuals, logits = torch.zeros(1, 3, 4), torch.zeros(1, 3)
    loss, parts = multibox_loss(residuals, logits, PRIORS, [GT], alpha=0.3)
    # gt 0 -> prior 1 exactly (residual 0); gt 1 -> prior 0: residuals (0.1 / 0.5) = 0.2 per
    # coordinate, F_loc = 1/2 * 4 * 0.04 = 0.08. F_conf: three logits 0, each -log 0.5.
    assert parts["loss_loc"] == pytest.approx(0.08)
    assert parts["loss_conf"] == pytest.approx(3 * math.log(2))
    assert loss.item() == pytest.approx(0.3 * 0.08 + 3 * math.log(2))
    # A second image without objects: all three slots negative, log(1 + e^z) each; the batch
    # loss is the mean of the two images'.
    logits2 = torch.tensor([[0.0, 0.0, 0.0], [1.0, -1.0, 2.0]])
    loss, parts = multibox_loss(torch.zeros(2, 3, 4), logits2, PRIORS, [GT, torch.zeros(0, 4)])
    empty = sum(math.log1p(math.exp(z)) for z in (1.0, -1.0, 2.0))
    assert loss.item() == pytest.approx((0.3 * 0.08 + 3 * math.log(2) + empty) / 2)


def test_matched_slots_get_location_gradient_and_the_rest_only_confidence():
    residuals = torch.zeros(1, 3, 4, requires_grad=True)
    logits = torch.zeros(1, 3, requires_grad=True)
    loss, _ = multibox_loss(residuals, logits, PRIORS, [GT[1:]])
    loss.backward()
    assert residuals.grad[0, 0].abs().sum() > 0 and residuals.grad[0, 1:].abs().sum() == 0
    # d/dz of the logistic loss: sigmoid(z) - label = -0.5 for the matched slot, +0.5 otherwise.
    assert logits.grad[0].tolist() == pytest.approx([-0.5, 0.5, 0.5])


def test_a_few_hundred_steps_on_one_image_put_its_boxes_on_the_ground_truth():
    torch.manual_seed(0)
    priors = torch.tensor([[x, y, x + w, y + w] for x in (0.0, 0.5) for y in (0.0, 0.5)
                           for w in (0.3, 0.5)])
    # Batch norm in eval mode (fixed statistics): one image has no batch statistics to speak of.
    model = MultiBox(priors, input_size=32).eval()
    gt = torch.tensor([[0.1, 0.15, 0.45, 0.4], [0.55, 0.5, 0.95, 0.9]])
    image = torch.rand(1, 3, 32, 32)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(200):
        residuals, logits = model(image)
        loss, parts = multibox_loss(residuals, logits, model.priors, [gt])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        residuals, logits = model(image)
    boxes = decode(residuals[0], model.priors)
    top = logits[0].argsort(descending=True)[:2]
    from torchvision.ops import box_iou
    assert box_iou(boxes[top], gt).max(dim=0).values.min() > 0.9
    assert logits[0, top].sigmoid().min() > 0.9 and logits[0].sigmoid().sort().values[-3] < 0.1
