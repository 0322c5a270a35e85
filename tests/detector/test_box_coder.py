"""R-CNN box-regression targets: hand-computed values, round trip (encode in torch, decode in
numpy), clamping, and decode bit for bit against the torch decode it replaced."""
import math

import numpy as np
import pytest
import torch

from detector.box_coder import FAST_RCNN_STDS, SCALE_CLAMP, decode, encode
from eval.errors import DetectionError
from _torch_reference import rounded_exp, torch_decode

# P: centre (20, 40), 20 x 40 px.  G: centre (30, 50), 30 x 80 px.
P = torch.tensor([[10.0, 20.0, 30.0, 60.0]])
G = torch.tensor([[15.0, 10.0, 45.0, 90.0]])
TARGETS = [10 / 20, 10 / 40, math.log(30 / 20), math.log(80 / 40)]


def random_boxes(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 400
    wh = torch.rand(n, 2, generator=g) * 300 + 1
    return torch.cat([xy, xy + wh], dim=1)


def random_deltas(shape: tuple[int, ...], seed: int, dtype=np.float32) -> np.ndarray:
    """Deltas of every size: small, large, huge (tw, th past the clamp), and -inf/inf/NaN."""
    rng = np.random.default_rng(seed)
    deltas = rng.normal(0, 1, size=shape) * 10.0 ** rng.integers(-3, 3, size=shape)
    odd = rng.random(shape)
    deltas[odd < 0.02] = 1e4
    deltas[(odd > 0.5) & (odd < 0.505)] = -1e4
    deltas[(odd > 0.6) & (odd < 0.602)] = np.inf
    deltas[(odd > 0.7) & (odd < 0.702)] = -np.inf
    deltas[(odd > 0.8) & (odd < 0.802)] = np.nan
    return deltas.astype(dtype)


def test_hand_computed_targets():
    torch.testing.assert_close(encode(P, G), torch.tensor([TARGETS]))
    normalised = [t / s for t, s in zip(TARGETS, FAST_RCNN_STDS)]
    torch.testing.assert_close(encode(P, G, FAST_RCNN_STDS), torch.tensor([normalised]))
    np.testing.assert_allclose(decode(np.array([TARGETS], np.float32), P.numpy()), G.numpy(),
                               rtol=1e-6)
    assert np.array_equal(decode(np.zeros((1, 4), np.float32), P.numpy()), P.numpy())


@pytest.mark.parametrize("stds", [None, FAST_RCNN_STDS])
def test_decode_inverts_encode(stds):
    # ground truth within the clamp: up to 2x larger or smaller and shifted by up to a side
    proposals = random_boxes(500, 0)
    g = torch.Generator().manual_seed(1)
    size = (proposals[:, 2:] - proposals[:, :2]) * 2 ** (torch.rand(500, 2, generator=g) * 2 - 1)
    corner = proposals[:, :2] + (torch.rand(500, 2, generator=g) - 0.5) * 2 * size
    gt = torch.cat([corner, corner + size], dim=1)
    deltas = encode(proposals, gt, stds)
    decoded = decode(deltas.numpy(), proposals.numpy(), stds)
    assert decoded.dtype == np.float32
    np.testing.assert_allclose(decoded, gt.numpy(), atol=1e-3, rtol=1e-5)


@pytest.mark.parametrize("stds", [None, FAST_RCNN_STDS])
@pytest.mark.parametrize("shape", [(1000, 4), (300, 7, 4), (5, 4)])
def test_decode_bit_identical_to_torch_version(shape, stds):
    """The same arithmetic in the same order as the torch decode, so equal to the last bit when
    both take the same exp: the correctly rounded one (the numpy decode's). With torch's own
    float32 exp (an ulp off on ~1% of inputs) the boxes differ by float32 rounding only."""
    deltas = random_deltas(shape, seed=len(shape))
    proposals = random_boxes(shape[0], 4).numpy()
    got = decode(deltas, proposals, stds)
    assert got.dtype == np.float32 and got.shape == shape
    old = torch_decode(torch.from_numpy(deltas), torch.from_numpy(proposals), stds,
                       exp=rounded_exp).numpy()
    assert np.array_equal(got, old, equal_nan=True)
    if got.size > 1000:  # the odd values did reach the output
        assert np.isnan(got).any() and np.isinf(got).any()
    assert_close_to_torch_exp(got, deltas, proposals, stds)


@pytest.mark.parametrize("stds", [None, FAST_RCNN_STDS])
def test_decode_float64_stays_float64(stds):
    """float64 in, float64 out, with torch's float64 arithmetic (numpy's and torch's float64 exp
    differ in the last bit on a few % of inputs: equal to double rounding)."""
    deltas = random_deltas((400, 3, 4), seed=5, dtype=np.float64)
    proposals = random_boxes(400, 6).numpy().astype(np.float64)
    got = decode(deltas, proposals, stds)
    assert got.dtype == np.float64
    assert_close_to_torch_exp(got, deltas, proposals, stds)
    # float32 deltas on float64 proposals: float64 boxes, as torch promotes
    assert decode(deltas.astype(np.float32), proposals, stds).dtype == np.float64


def assert_close_to_torch_exp(got, deltas, proposals, stds):
    """`got` equals the torch decode as it was (with torch.exp) up to rounding: non-finite in
    the same places, and within a few ulps of the box's largest coordinate elsewhere."""
    old = torch_decode(torch.from_numpy(deltas), torch.from_numpy(proposals), stds).numpy()
    finite = np.isfinite(old)
    assert np.array_equal(finite, np.isfinite(got))
    assert np.array_equal(np.isnan(old), np.isnan(got))
    scale = np.abs(np.where(finite, old, 0)).max(axis=-1, keepdims=True)
    ulps = np.abs(got[finite] - old[finite]) / np.spacing(np.broadcast_to(scale, old.shape)[finite])
    assert ulps.max() <= 2


def test_class_specific_deltas_decode_per_class():
    proposals = random_boxes(6, 2).numpy()
    deltas = torch.randn(6, 3, 4, generator=torch.Generator().manual_seed(3)).numpy() * 0.3
    boxes = decode(deltas, proposals, FAST_RCNN_STDS)
    assert boxes.shape == (6, 3, 4)
    for c in range(3):
        assert np.array_equal(boxes[:, c], decode(deltas[:, c], proposals, FAST_RCNN_STDS))


def test_scale_is_clamped():
    assert SCALE_CLAMP == pytest.approx(math.log(1000 / 16))
    proposal = np.array([[0.0, 0.0, 16.0, 16.0]], np.float32)
    huge = decode(np.array([[0.0, 0.0, 100.0, 100.0]], np.float32), proposal)
    np.testing.assert_allclose(huge, [[-492.0, -492.0, 508.0, 508.0]], rtol=1e-6)
    # the clamp acts on the un-normalised value: 100 * 0.2 = 20 > log(62.5)
    assert np.array_equal(decode(np.array([[0.0, 0.0, 100.0, 100.0]], np.float32), proposal,
                                 FAST_RCNN_STDS), huge)
    # shrinking is not clamped
    tiny = decode(np.array([[0.0, 0.0, -math.log(16), -math.log(16)]], np.float32), proposal)
    np.testing.assert_allclose(tiny, [[7.5, 7.5, 8.5, 8.5]], rtol=1e-6)


def test_half_precision_inputs_give_float32():
    deltas = np.array([TARGETS], dtype=np.float16)
    out = decode(deltas, np.array([[1000.0, 2000.0, 1020.0, 2040.0]], np.float16))
    assert out.dtype == np.float32
    assert encode(P.half(), G.half()).dtype == torch.float32


def test_bad_inputs():
    with pytest.raises(DetectionError, match="remove_small_boxes"):
        encode(torch.tensor([[5.0, 5.0, 5.0, 9.0]]), G)
    with pytest.raises(DetectionError, match=r"\[N, 4\]"):
        encode(P, torch.cat([G, G]))
    with pytest.raises(DetectionError, match=r"\[N, C, 4\]"):
        decode(np.zeros((2, 4), np.float32), P.numpy())
    with pytest.raises(DetectionError, match="positive"):
        encode(P, G, stds=(0.1, 0.1, 0.0, 0.2))
    with pytest.raises(DetectionError, match="positive"):
        decode(np.zeros((1, 4), np.float32), P.numpy(), stds=(0.1, 0.1, 0.2))
