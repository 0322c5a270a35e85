"""warp_regions against a plain per-box crop, pad and resize reference."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from eval.errors import DetectionError
from detector.regions import context_boxes, iter_warped_regions, warp_regions
from proposals.networks import IMAGENET_MEAN, IMAGENET_STD, normalize_image

H, W = 90, 120
# 64 px regions with context 4 (R-CNN's 16 at 224, scaled): boxes are enlarged by 64/56 = 8/7, so
# a box whose sides are multiples of 14 px around an integer centre has whole-pixel padded edges.
S, P = 64, 4


def smooth_image(seed: int = 0) -> torch.Tensor:
    """A normalised [3, H, W] image: 9 x 12 Gaussian noise upsampled (std ~0.8, ~0.1 per px)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, 3, 9, 12, generator=g)
    return F.interpolate(coarse, size=(H, W), mode="bicubic", align_corners=False)[0]


def reference_warp(image: torch.Tensor, box: list[float], size: int, pad: int) -> torch.Tensor:
    """R-CNN's warp done plainly for one box: enlarge, crop whole pixels of a mean-filled
    (zero, as the image is normalised) canvas, resize bilinearly (antialiased: it only acts when
    downscaling, upscaling is plain bilinear)."""
    scale = size / (size - 2 * pad)
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    hw, hh = (box[2] - box[0]) * scale / 2, (box[3] - box[1]) * scale / 2
    x1, y1, x2, y2 = (round(v) for v in (cx - hw, cy - hh, cx + hw, cy + hh))
    x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)
    h, w = image.shape[1:]
    margin = max(0, -x1, -y1, x2 - w, y2 - h)
    canvas = F.pad(image, (margin,) * 4)
    crop = canvas[:, y1 + margin:y2 + margin, x1 + margin:x2 + margin]
    return F.interpolate(crop[None], size=(size, size), mode="bilinear", align_corners=False,
                         antialias=True)[0]


def max_and_mean_diff(image, boxes, size=S, pad=P):
    out = warp_regions(image, torch.tensor(boxes, dtype=torch.float32), size, pad)
    diffs = [(o - reference_warp(image, b, size, pad)).abs() for o, b in zip(out, boxes)]
    return [(d.mean().item(), d.max().item()) for d in diffs]


# Stated tolerances, in normalised units (image std ~0.8):
# 1. Whole-pixel crops: the two differ only where the reference clamps at its crop edge while
#    roi_align reads the neighbouring pixel, and in the downscaling filter (box vs triangle).
EXACT_MEAN, EXACT_MAX = 0.01, 0.15  # measured: mean <= 0.006, max <= 0.111
# 2. Boxes crossing the image border while downscaling: both filters smooth the step from image
#    to mean, over different widths.
BORDER_MEAN, BORDER_MAX = 0.02, 0.6  # measured: mean <= 0.011, max <= 0.52
# 3. Sub-pixel boxes inside the image: the reference rounds each edge to a whole pixel (up to
#    0.5 px shift, ~0.05 on this image). (At the image edge a whole-pixel crop cannot show the
#    half-pixel ramp to the mean: test_border_is_a_ramp_to_the_mean_not_a_step covers that.)
SUBPIXEL_MEAN, SUBPIXEL_MAX = 0.05, 0.2  # measured: mean <= 0.040, max <= 0.182


@pytest.mark.parametrize("box", [
    [31, 21, 73, 63],     # inside, upscaled 48 -> 64
    [17, 11, 101, 81],    # inside, downscaled 96 x 80 -> 64
    [40, 40, 54, 54],     # small, upscaled 4x
    [-17, 40, 25, 82],    # partly outside on the left: the border band matters here
    [90, -12, 132, 58],   # partly outside at the top and right
    [200, 200, 242, 256],  # entirely outside
])
def test_whole_pixel_boxes_match_reference(box):
    (mean, max_), = max_and_mean_diff(smooth_image(), [box])
    assert mean < EXACT_MEAN and max_ < EXACT_MAX, (mean, max_)


@pytest.mark.parametrize("box", [
    [-301, -241, 419, 360],  # huge: the image is a small part of it, downscaled ~13x
    [4, 30, 116, 44],        # wide, reaching past both sides, downscaled 2x in x
])
def test_downscaled_boxes_across_border_match_reference(box):
    (mean, max_), = max_and_mean_diff(smooth_image(), [box])
    assert mean < BORDER_MEAN and max_ < BORDER_MAX, (mean, max_)


@pytest.mark.parametrize("box", [[50, 40, 51, 41], [30.3, 20.7, 77.2, 61.9],
                                 [80.5, 60.25, 81.0, 61.75]])
def test_subpixel_and_one_pixel_boxes_match_reference(box):
    (mean, max_), = max_and_mean_diff(smooth_image(), [box])
    assert mean < SUBPIXEL_MEAN and max_ < SUBPIXEL_MAX, (mean, max_)


def test_default_size_224_matches_reference():
    (mean, max_), = max_and_mean_diff(smooth_image(), [[-13, 12, 71, 96]], size=224, pad=16)
    assert mean < EXACT_MEAN and max_ < EXACT_MAX, (mean, max_)


def test_border_is_a_ramp_to_the_mean_not_a_step():
    """A constant image, a box half outside, upscaled: the row across the image edge must go
    from the image value to 0 linearly over one image pixel, as bilinear interpolation of a
    mean-filled canvas does (roi_align alone holds the edge value for half a pixel, then drops)."""
    image = torch.full((3, 8, 8), 2.0)
    row = warp_regions(image, torch.tensor([[-4.0, 0.0, 4.0, 8.0]]), 16, 0)[0, 0, 8]
    # output pixel i samples x = (i + 0.5) / 2 - 4 (image pixels); value = 2 * clamp(x + 0.5, 0, 1)
    x = (torch.arange(16) + 0.5) / 2 - 4
    torch.testing.assert_close(row, 2 * (x + 0.5).clamp(0, 1))


def test_batch_equals_one_box_at_a_time_and_chunks():
    image = smooth_image(1)
    boxes = torch.tensor([[31, 21, 73, 63], [-17, 40, 25, 82], [50, 40, 51, 41], [0, 0, 120, 90],
                          [200, 200, 242, 256]], dtype=torch.float32)
    together = warp_regions(image, boxes, S, P)
    alone = torch.cat([warp_regions(image, b[None], S, P) for b in boxes])
    torch.testing.assert_close(together, alone)
    chunks = list(iter_warped_regions(image, boxes, S, P, batch_size=2))
    assert [c.shape[0] for c in chunks] == [2, 2, 1]
    torch.testing.assert_close(torch.cat(chunks), together)


def test_shapes_dtype_device_and_empty():
    image = smooth_image()
    out = warp_regions(image, torch.tensor([[0, 0, 10, 10], [5, 5, 50, 20]]), 96, 7)
    assert out.shape == (2, 3, 96, 96) and out.dtype == torch.float32 and out.device == image.device
    empty = warp_regions(image, torch.zeros(0, 4), 96, 7)
    assert empty.shape == (0, 3, 96, 96) and empty.dtype == torch.float32
    assert list(iter_warped_regions(image, torch.zeros(0, 4))) == []
    with pytest.raises(DetectionError, match=r"\[N, 4\]"):
        warp_regions(image, torch.zeros(3, 5))
    with pytest.raises(DetectionError, match="normalize_image"):
        warp_regions(image[0], torch.zeros(1, 4))


def test_context_boxes_hand_computed():
    # 224 / (224 - 32) = 7/6: a 60 x 30 box centred at (50, 25) becomes 70 x 35 about the centre.
    out = context_boxes(torch.tensor([[20.0, 10.0, 80.0, 40.0]]))
    torch.testing.assert_close(out, torch.tensor([[15.0, 7.5, 85.0, 42.5]]))
    torch.testing.assert_close(context_boxes(torch.tensor([[1.0, 2.0, 3.0, 4.0]]), 64, 0),
                               torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
    with pytest.raises(DetectionError, match="context_pad"):
        context_boxes(torch.zeros(1, 4), output_size=32, context_pad=16)


def test_normalize_image_numpy_and_tensor():
    pixels = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    from_numpy = normalize_image(pixels)
    from_tensor = normalize_image(torch.from_numpy(pixels).permute(2, 0, 1).contiguous())
    assert from_numpy.shape == (3, 5, 7) and from_numpy.dtype == torch.float32
    torch.testing.assert_close(from_numpy, from_tensor)
    expected = (pixels[2, 3, 1] / 255 - IMAGENET_MEAN[1]) / IMAGENET_STD[1]
    assert from_numpy[1, 2, 3].item() == pytest.approx(expected, abs=1e-6)
    # the mean colour maps to zero: R-CNN's mean fill is roi_align's zero fill
    mean_pixel = torch.tensor(IMAGENET_MEAN).view(3, 1, 1) * 255
    assert normalize_image(mean_pixel.round().to(torch.uint8)).abs().max() < 0.01
    with pytest.raises(DetectionError, match="RGB"):
        normalize_image(pixels[:, :, :1])
    with pytest.raises(DetectionError, match="uint8"):
        normalize_image(torch.zeros(3, 4, 4))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_follows_cuda_device():
    image = smooth_image()
    boxes = torch.tensor([[31, 21, 73, 63], [-17, 40, 25, 82]], dtype=torch.float32)
    out = warp_regions(image.cuda(), boxes.cuda(), S, P)
    assert out.device.type == "cuda"
    torch.testing.assert_close(out.cpu(), warp_regions(image, boxes, S, P), atol=1e-5, rtol=1e-5)
    assert normalize_image(torch.zeros(3, 2, 2, dtype=torch.uint8, device="cuda")).is_cuda
