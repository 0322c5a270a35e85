"""R-CNN box-regression targets: hand-computed values, round trip, clamping."""
import math

import pytest
import torch

from detector.box_coder import FAST_RCNN_STDS, SCALE_CLAMP, decode, encode
from eval.errors import DetectionError

# P: centre (20, 40), 20 x 40 px.  G: centre (30, 50), 30 x 80 px.
P = torch.tensor([[10.0, 20.0, 30.0, 60.0]])
G = torch.tensor([[15.0, 10.0, 45.0, 90.0]])
TARGETS = [10 / 20, 10 / 40, math.log(30 / 20), math.log(80 / 40)]


def random_boxes(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 400
    wh = torch.rand(n, 2, generator=g) * 300 + 1
    return torch.cat([xy, xy + wh], dim=1)


def test_hand_computed_targets():
    torch.testing.assert_close(encode(P, G), torch.tensor([TARGETS]))
    normalised = [t / s for t, s in zip(TARGETS, FAST_RCNN_STDS)]
    torch.testing.assert_close(encode(P, G, FAST_RCNN_STDS), torch.tensor([normalised]))
    torch.testing.assert_close(decode(torch.tensor([TARGETS]), P), G)
    torch.testing.assert_close(decode(torch.zeros(1, 4), P), P)


@pytest.mark.parametrize("stds", [None, FAST_RCNN_STDS])
def test_decode_inverts_encode(stds):
    # ground truth within the clamp: up to 2x larger or smaller and shifted by up to a side
    proposals = random_boxes(500, 0)
    g = torch.Generator().manual_seed(1)
    size = (proposals[:, 2:] - proposals[:, :2]) * 2 ** (torch.rand(500, 2, generator=g) * 2 - 1)
    corner = proposals[:, :2] + (torch.rand(500, 2, generator=g) - 0.5) * 2 * size
    gt = torch.cat([corner, corner + size], dim=1)
    deltas = encode(proposals, gt, stds)
    torch.testing.assert_close(decode(deltas, proposals, stds), gt, atol=1e-3, rtol=1e-5)


def test_class_specific_deltas_decode_per_class():
    proposals = random_boxes(6, 2)
    deltas = torch.randn(6, 3, 4, generator=torch.Generator().manual_seed(3)) * 0.3
    boxes = decode(deltas, proposals, FAST_RCNN_STDS)
    assert boxes.shape == (6, 3, 4)
    for c in range(3):
        torch.testing.assert_close(boxes[:, c], decode(deltas[:, c], proposals, FAST_RCNN_STDS))


def test_scale_is_clamped():
    assert SCALE_CLAMP == pytest.approx(math.log(1000 / 16))
    proposal = torch.tensor([[0.0, 0.0, 16.0, 16.0]])
    huge = decode(torch.tensor([[0.0, 0.0, 100.0, 100.0]]), proposal)
    torch.testing.assert_close(huge, torch.tensor([[-492.0, -492.0, 508.0, 508.0]]))
    # the clamp acts on the un-normalised value: 100 * 0.2 = 20 > log(62.5)
    assert torch.equal(decode(torch.tensor([[0.0, 0.0, 100.0, 100.0]]), proposal, FAST_RCNN_STDS),
                       huge)
    # shrinking is not clamped
    tiny = decode(torch.tensor([[0.0, 0.0, -math.log(16), -math.log(16)]]), proposal)
    torch.testing.assert_close(tiny, torch.tensor([[7.5, 7.5, 8.5, 8.5]]))


def test_half_precision_inputs_give_float32():
    deltas = torch.tensor([TARGETS], dtype=torch.bfloat16)
    out = decode(deltas, torch.tensor([[1000.0, 2000.0, 1020.0, 2040.0]]))
    assert out.dtype == torch.float32
    assert encode(P.half(), G.half()).dtype == torch.float32


def test_bad_inputs():
    with pytest.raises(DetectionError, match="remove_small_boxes"):
        encode(torch.tensor([[5.0, 5.0, 5.0, 9.0]]), G)
    with pytest.raises(DetectionError, match=r"\[N, 4\]"):
        encode(P, torch.cat([G, G]))
    with pytest.raises(DetectionError, match=r"\[N, C, 4\]"):
        decode(torch.zeros(2, 4), P)
    with pytest.raises(DetectionError, match="positive"):
        encode(P, G, stds=(0.1, 0.1, 0.0, 0.2))
