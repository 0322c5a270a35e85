"""detector.onnx_warp against detector.regions: the hand-written ONNX model against onnx.helper's,
and ONNX Runtime's warp bit for bit against torchvision's roi_align."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from detector import onnx_warp  # noqa: E402
from detector.onnx_warp import Warper, context_boxes, warp_model  # noqa: E402
from eval.errors import DetectionError  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
PHOTO = REPO.parent / "shared" / "data" / "raccoon" / "images" / "raccoon-3.jpg"
# (output_size, context_pad): GoogLeNet's input with R-CNN's padding, and the small test size.
SIZES = [(224, 16), (64, 4)]


@pytest.fixture(scope="module")
def regions():
    torch = pytest.importorskip("torch")
    from detector import regions

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield regions
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def photo():
    """The raccoon-3 photo normalised (float32 [3, 480, 720]) and its selective-search boxes."""
    if not PHOTO.exists():
        pytest.skip(f"{PHOTO} is missing")
    from eval.datasets.images import read_image
    from proposals.combined import proposer_for
    from proposals.networks import normalize_image

    image = read_image(PHOTO)
    boxes = proposer_for("selective_search", {}, "test")(image)
    return normalize_image(image).numpy(), boxes


@pytest.fixture(scope="module", params=SIZES, ids=lambda s: f"S{s[0]}_pad{s[1]}")
def warper(request):
    size, pad = request.param
    return Warper(size, pad, threads=1)


def torch_warp(regions, pixels, boxes, size, pad):
    import torch

    return regions.warp_regions(torch.from_numpy(pixels), torch.from_numpy(boxes), size,
                                pad).numpy()


def random_boxes(rng, height, width, count):
    """``count`` (a multiple of 4) boxes of every kind relative to a height x width image:
    inside, across an edge, wholly outside, sub-pixel (< 1 px, one of zero size) and larger
    than the image."""
    centres = rng.uniform(-0.5, 1.5, (count, 2)) * [width, height]
    sides = np.concatenate([
        rng.uniform(0.02, 0.8, (count - count // 2, 2)) * [width, height],  # ordinary
        rng.uniform(0, 1, (count // 4, 2)),                                 # sub-pixel
        # huge (the warp's cost grows with box area: up to 3x the image keeps the test short)
        rng.uniform(1.5, 3, (count // 4, 2)) * [width, height],
    ])
    sides[count - count // 2] = 0  # a point: zero width and height
    rng.shuffle(sides)
    boxes = np.concatenate([centres - sides / 2, centres + sides / 2], axis=1)
    return boxes.astype(np.float32)


def test_model_is_what_onnx_helper_builds_and_passes_the_checker():
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    size = 224
    node = helper.make_node("RoiAlign", ["image", "rois", "batch_indices"], ["regions"],
                            name="roi_align", coordinate_transformation_mode="half_pixel",
                            mode="avg", output_height=size, output_width=size, sampling_ratio=0,
                            spatial_scale=1.0)
    graph = helper.make_graph(
        [node], "warp_regions",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, "h", "w"]),
         helper.make_tensor_value_info("rois", TensorProto.FLOAT, ["n", 4]),
         helper.make_tensor_value_info("batch_indices", TensorProto.INT64, ["n"])],
        [helper.make_tensor_value_info("regions", TensorProto.FLOAT, ["n", 3, size, size])])
    expected = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)],
                                 ir_version=8, producer_name="detector.onnx_warp")
    written = warp_model(size)
    model = onnx.load_from_string(written)
    onnx.checker.check_model(model, full_check=True)
    assert model == expected
    assert written == expected.SerializeToString()


def test_varint_matches_hand_computed_bytes():
    # protobuf's documentation example: 150 is 0x96 0x01; 300 is 0xAC 0x02.
    assert onnx_warp._varint(0) == b"\x00"
    assert onnx_warp._varint(150) == b"\x96\x01"
    assert onnx_warp._varint(300) == b"\xac\x02"
    assert onnx_warp._varint(2 ** 63 - 1) == b"\xff" * 8 + b"\x7f"
    with pytest.raises(ValueError):
        onnx_warp._varint(-1)


def test_both_warps_refuse_sizes_without_room_for_the_box(regions):
    import torch

    image = np.zeros((3, 8, 8), np.float32)
    boxes = np.array([[1, 1, 5, 5]], np.float32)
    for size, pad in [(32, 16), (0, 0), (64, -1)]:
        with pytest.raises(DetectionError, match=f"output_size {size} with context_pad {pad}"):
            regions.warp_regions(torch.from_numpy(image), torch.from_numpy(boxes), size, pad)
        with pytest.raises(DetectionError, match=f"output_size {size} with context_pad {pad}"):
            onnx_warp.Warper(size, pad, threads=1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_context_boxes_bit_identical_to_regions(regions, dtype):
    import torch

    boxes = random_boxes(np.random.default_rng(1), 480, 720, 400).astype(dtype)
    for size, pad in SIZES + [(227, 16), (100, 7)]:
        expected = regions.context_boxes(torch.from_numpy(boxes), size, pad).numpy()
        found = context_boxes(boxes, size, pad)
        assert found.dtype == np.float32
        assert np.array_equal(found, expected), (size, pad)


def test_photo_proposals_bit_identical_to_regions(regions, photo, warper):
    pixels, boxes = photo
    size, pad = warper.output_size, warper.context_pad
    assert len(boxes) > 500
    # Every proposal at 64 px; a spread third of them at 224 px (30 MB a hundred boxes).
    boxes = boxes if size <= 64 else boxes[::3]
    found = warper(pixels, boxes)
    assert found.shape == (len(boxes), 3, size, size) and found.dtype == np.float32
    assert np.array_equal(found, torch_warp(regions, pixels, boxes, size, pad))


def test_random_boxes_bit_identical_to_regions(regions, photo, warper):
    pixels, _ = photo
    size, pad = warper.output_size, warper.context_pad
    boxes = random_boxes(np.random.default_rng(size), *pixels.shape[1:], 64)
    found = warper(pixels, boxes)
    expected = torch_warp(regions, pixels, boxes, size, pad)
    assert np.array_equal(found, expected)
    # The boxes reach every case: some warps are all mean (outside), some touch the image.
    outside = (found == 0).all(axis=(1, 2, 3))
    assert outside.any() and not outside.all()


def test_small_image_and_float64_pixels_bit_identical(regions):
    rng = np.random.default_rng(7)
    pixels = rng.normal(size=(3, 5, 9))  # float64: both cast to float32 first
    boxes = random_boxes(rng, 5, 9, 32)
    warp = Warper(64, 4, threads=2)
    expected = torch_warp(regions, pixels, boxes.astype(np.float64), 64, 4)
    assert np.array_equal(warp(pixels, boxes.astype(np.float64)), expected)


def test_edge_ramps_to_the_mean_across_the_border():
    # A constant image of 1: a box straddling the left edge warps to 0 far left, 1 well inside,
    # and values strictly between in the half-pixel band (the ramp the zero border makes).
    pixels = np.ones((3, 20, 20), np.float32)
    out = Warper(16, 0, threads=1)(pixels, np.array([[-4.0, 5.0, 4.0, 13.0]]))[0, 0]
    row = out[8]
    assert row[0] == 0 and row[-1] == pytest.approx(1.0)
    assert ((row > 0) & (row < 1)).any()
    assert np.all(np.diff(row) >= 0)


def test_no_boxes_give_an_empty_batch(photo):
    pixels, _ = photo
    for boxes in (np.zeros((0, 4), np.float32), np.zeros((0, 4), np.int64)):
        out = Warper(64, 4, threads=1)(pixels, boxes)
        assert out.shape == (0, 3, 64, 64) and out.dtype == np.float32


@pytest.mark.parametrize("shape", [(480, 720), (1, 3, 480, 720), (480, 720, 3), (4, 8, 8)])
def test_bad_image_shape_is_a_detection_error(shape):
    with pytest.raises(DetectionError, match=r"image has shape .*\[3, H, W\]"):
        Warper(64, 4, threads=1)(np.zeros(shape, np.float32), np.zeros((1, 4), np.float32))


@pytest.mark.parametrize("shape", [(4,), (3, 5), (1, 2, 4)])
def test_bad_boxes_shape_is_a_detection_error(shape):
    with pytest.raises(DetectionError, match=r"boxes have shape .*\[N, 4\]"):
        Warper(64, 4, threads=1)(np.zeros((3, 8, 8), np.float32), np.zeros(shape, np.float32))


@pytest.mark.parametrize("size, pad", [(32, 16), (0, 0), (64, -1)])
def test_bad_sizes_are_a_detection_error(size, pad):
    with pytest.raises(DetectionError, match="leaves no room for the box"):
        Warper(size, pad, threads=1)
    with pytest.raises(DetectionError, match="leaves no room for the box"):
        context_boxes(np.zeros((0, 4)), size, pad)


def test_zero_threads_is_a_detection_error():
    with pytest.raises(DetectionError, match="threads is 0"):
        Warper(64, 4, threads=0)


def test_warping_imports_neither_torch_nor_onnx():
    code = ("import sys\n"
            "import numpy as np\n"
            "from detector.onnx_warp import Warper\n"
            "out = Warper(64, 4, threads=1)(np.ones((3, 10, 10), np.float32),"
            " np.array([[1.0, 2.0, 8.0, 9.0]]))\n"
            "assert out.shape == (1, 3, 64, 64), out.shape\n"
            "print(sorted(m for m in ('torch', 'torchvision', 'onnx') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
