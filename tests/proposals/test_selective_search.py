"""Selective search: box format and frame, known rectangles, determinism, the resize path,
odd images (1 px, 1 x 2000, grayscale, flat, 8000 x 6000) and bad input."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import pytest

from eval.errors import DetectionError
from proposals.grouping import Regions, Strategy, group
from eval.boxes import box_iou
from proposals.selective_search import (
                                        NEAR_DUPLICATE_IOU, SelectiveSearchConfig, _drop_near_duplicates, selective_search,
                                        )

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"real data folder {DATA} is absent")

# (x1, y1, x2, y2) continuous pixel boxes of flat rectangles, and their RGB colours.
RECTANGLES = [((10, 12, 60, 50), (220, 40, 40)), ((80, 20, 150, 70), (40, 200, 60)),
              ((30, 75, 110, 112), (50, 60, 230)), ((125, 85, 152, 115), (240, 230, 40))]


def rectangles_image(noise: float = 6.0, seed: int = 0) -> np.ndarray:
    """RGB uint8 [120, 160, 3]: the RECTANGLES, flat, on a noisy grey background."""
    rng = np.random.default_rng(seed)
    image = 128 + rng.normal(0, noise, (120, 160, 3))
    for (x1, y1, x2, y2), colour in RECTANGLES:
        image[y1:y2, x1:x2] = colour
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def natural_image(height: int = 150, width: int = 200, seed: int = 0) -> np.ndarray:
    """RGB uint8: smooth random blobs at several scales, a stand-in for a photo's clutter."""
    rng = np.random.default_rng(seed)
    image = np.zeros((height, width, 3), np.float32)
    for cells in (4, 9, 25):
        coarse = rng.uniform(0, 255, (cells, cells, 3)).astype(np.float32)
        image += cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC) / 3
    return np.clip(image + rng.normal(0, 4, image.shape), 0, 255).astype(np.uint8)


def assert_valid_boxes(boxes: np.ndarray, height: int, width: int) -> None:
    """float32 [N, 4] xyxy, non-empty, inside the image, no duplicates."""
    assert boxes.dtype == np.float32 and boxes.ndim == 2 and boxes.shape[1] == 4
    assert len(boxes) >= 1
    assert (boxes[:, 0] < boxes[:, 2]).all() and (boxes[:, 1] < boxes[:, 3]).all()
    assert (boxes[:, :2] >= 0).all()
    assert (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
    assert len(np.unique(boxes, axis=0)) == len(boxes)


def has_box(boxes: np.ndarray, target: tuple[float, ...], tol: float = 1.0) -> bool:
    return bool((np.abs(boxes - np.asarray(target, np.float32)).max(axis=1) <= tol).any())


# --- box format and frame ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["fast", "quality"])
def test_every_flat_rectangle_is_proposed(mode: str) -> None:
    image = rectangles_image()
    boxes = selective_search(image, SelectiveSearchConfig(mode=mode, max_side=None))
    assert_valid_boxes(boxes, 120, 160)
    for box, _ in RECTANGLES:
        assert has_box(boxes, box), f"rectangle {box} not among {len(boxes)} proposals"
    assert has_box(boxes, (0, 0, 160, 120), tol=0)  # the last merge covers the whole image


def test_boxes_map_back_to_original_pixels_through_the_resize() -> None:
    # Nearest-neighbour 2x upscaling, area-resized back by 1/2, is the small image exactly: the
    # same segmentation, so every box must be exactly twice the small image's.
    small = natural_image(100, 150)
    big = np.repeat(np.repeat(small, 2, axis=0), 2, axis=1)
    ref = selective_search(small, SelectiveSearchConfig(max_side=None, min_box_side=10))
    got = selective_search(big, SelectiveSearchConfig(max_side=150, min_box_side=20))
    np.testing.assert_array_equal(got, 2 * ref)


def test_resize_by_an_odd_factor_stays_inside_the_image() -> None:
    image = natural_image(251, 333)
    boxes = selective_search(image, SelectiveSearchConfig(max_side=128))
    assert_valid_boxes(boxes, 251, 333)
    assert has_box(boxes, (0, 0, 333, 251), tol=0)
    # A working-image pixel is 333 / 128 original pixels wide: coordinates are multiples of it.
    x = boxes[:, 0::2] * 128 / 333
    np.testing.assert_allclose(x, np.round(x), atol=1e-3)


def test_rectangles_are_found_after_downscaling() -> None:
    big = cv2.resize(rectangles_image(noise=3.0), (640, 480), interpolation=cv2.INTER_NEAREST)
    boxes = selective_search(big, SelectiveSearchConfig(max_side=160))
    for box, _ in RECTANGLES:  # one working pixel is 4 original pixels
        assert has_box(boxes, tuple(4 * v for v in box), tol=4.0)


# --- options ----------------------------------------------------------------------------------


def test_doubling_superpixels_gives_fewer_boxes() -> None:
    image = natural_image(300, 400)
    one = selective_search(image, SelectiveSearchConfig(superpixel_scale=1.0, min_box_side=0))
    two = selective_search(image, SelectiveSearchConfig(superpixel_scale=2.0, min_box_side=0))
    assert len(two) < 0.75 * len(one)


def test_max_boxes_keeps_the_top_ranked() -> None:
    image = natural_image()
    every = selective_search(image)
    top = selective_search(image, SelectiveSearchConfig(max_boxes=7))
    np.testing.assert_array_equal(top, every[:7])
    assert len(selective_search(image, SelectiveSearchConfig(max_boxes=10**6))) == len(every)


def test_min_box_side_drops_small_boxes_only() -> None:
    image = natural_image()
    every = selective_search(image, SelectiveSearchConfig(min_box_side=0))
    big = selective_search(image, SelectiveSearchConfig(min_box_side=40))
    sides = np.minimum(every[:, 2] - every[:, 0], every[:, 3] - every[:, 1])
    np.testing.assert_array_equal(big, every[sides >= 40])  # same order, the rest kept
    assert 0 < len(big) < len(every)


def test_seed_changes_the_ranking() -> None:
    # The seed only draws the ranking's random factors; near-duplicates depend on the order,
    # so the sets differ a little too.
    image = natural_image()
    a = selective_search(image, SelectiveSearchConfig(seed=0, min_box_side=0))
    b = selective_search(image, SelectiveSearchConfig(seed=1, min_box_side=0))
    assert not np.array_equal(a, b)
    common = len(set(map(tuple, a.tolist())) & set(map(tuple, b.tolist())))
    assert common >= 0.8 * max(len(a), len(b))


def reference_near_duplicates(boxes: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy suppression written out: keep a box unless it overlaps a kept one by >= t."""
    def iou(p, q) -> float:
        iw = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
        ih = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
        union = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - iw * ih
        return iw * ih / union
    kept: list = []
    for box in boxes.astype(np.float64):
        if all(iou(box, k) < threshold for k in kept):
            kept.append(box)
    return np.array(kept, np.float32).reshape(-1, 4)


def test_near_duplicate_filter_matches_a_reference() -> None:
    # 600 boxes (over two blocks), jittered copies of 60, so that many overlap by > 0.9.
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 100, (60, 2))
    base = np.concatenate([base, base + rng.uniform(10, 60, (60, 2))], axis=1)
    boxes = np.round(base[rng.integers(0, 60, 600)] + rng.normal(0, 0.5, (600, 4)), 1)
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
    boxes = boxes.astype(np.float32)
    got = _drop_near_duplicates(boxes, 0.9)
    np.testing.assert_array_equal(got, reference_near_duplicates(boxes, 0.9))
    assert 60 <= len(got) < 200  # many suppressed, yet at least one per original box


def test_no_two_proposals_are_near_duplicates() -> None:
    boxes = selective_search(natural_image(), SelectiveSearchConfig(min_box_side=0))
    iou = box_iou(boxes, boxes)
    np.fill_diagonal(iou, 0)
    assert iou.max() < NEAR_DUPLICATE_IOU


def test_config_is_json_serialisable() -> None:
    config = SelectiveSearchConfig(mode="quality", max_side=None, max_boxes=100)
    assert SelectiveSearchConfig(**json.loads(json.dumps(asdict(config)))) == config


# --- determinism -------------------------------------------------------------------------------


def _digest(boxes: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(boxes).tobytes()).hexdigest()


def test_deterministic_in_process_and_across_processes() -> None:
    image = natural_image(seed=3)
    first = _digest(selective_search(image))
    assert _digest(selective_search(image)) == first
    code = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_selective_search import _digest, natural_image
        from proposals.selective_search import selective_search
        print(_digest(selective_search(natural_image(seed=3))))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == first


def test_runs_single_threaded_and_restores_opencv_threads(monkeypatch) -> None:
    # OpenCV's own setting, read where the work happens: each OpenCV call of the run (colour
    # conversions, the texture filters) sees one thread, and the caller's setting is back after.
    seen = []
    for name in ("cvtColor", "sepFilter2D"):
        def spy(*args, _call=getattr(cv2, name), **kwargs):
            seen.append(cv2.getNumThreads())
            return _call(*args, **kwargs)
        monkeypatch.setattr(cv2, name, spy)
    threads = cv2.getNumThreads()
    cv2.setNumThreads(3)
    try:
        selective_search(natural_image(60, 80))
        after = cv2.getNumThreads()
    finally:
        cv2.setNumThreads(threads)
    assert seen and set(seen) == {1} and after == 3


def test_grouping_ties_break_by_region_id() -> None:
    # Four identical 1-pixel regions in a row: every pair is equally similar, so the merge
    # order is by ids alone: (0, 1) -> 4; (1, 2) is stale; (2, 3) before (2, 4) -> 5; 4 + 5.
    hist = np.full((4, 1), 1.0, np.float32)
    regions = Regions(colour=hist, texture=hist, size=np.ones(4),
                      boxes=np.array([[x, 0, x, 0] for x in range(4)]),
                      pairs=np.array([[0, 1], [1, 2], [2, 3]]), image_size=4)
    boxes = group(regions, Strategy(colour=True, texture=False, size=False, fill=False))
    assert boxes[4:].tolist() == [[0, 0, 1, 0], [2, 0, 3, 0], [0, 0, 3, 0]]


# --- odd images -------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 2000, 3), (2000, 1, 3), (2, 3, 3), (1, 1)])
def test_degenerate_sizes_give_the_full_image_box(shape: tuple[int, ...]) -> None:
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    boxes = selective_search(image)
    height, width = shape[:2]
    assert_valid_boxes(boxes, height, width)
    assert has_box(boxes, (0, 0, width, height), tol=0)


def test_flat_image_gives_exactly_the_full_image_box() -> None:
    boxes = selective_search(np.full((90, 120, 3), 77, np.uint8))
    np.testing.assert_array_equal(boxes, [[0, 0, 120, 90]])


def test_grayscale_is_the_grey_rgb_image() -> None:
    gray = cv2.cvtColor(natural_image(), cv2.COLOR_RGB2GRAY)
    expected = selective_search(np.repeat(gray[:, :, None], 3, axis=2))
    assert_valid_boxes(expected, *gray.shape)
    np.testing.assert_array_equal(selective_search(gray), expected)
    np.testing.assert_array_equal(selective_search(gray[:, :, None]), expected)


def test_huge_image_is_resized_first_with_bounded_memory() -> None:
    # In a fresh process, peak RSS above what the 144 MB input already holds (~40 MB measured):
    # the pipeline sees only a 500 x 375 copy; the resize costs ~0.1 s on top. Half the input
    # as the bound: any full-size copy or full-size intermediate would exceed it.
    code = textwrap.dedent("""
        import resource, time
        import numpy as np
        from proposals.selective_search import selective_search
        image = np.empty((6000, 8000, 3), np.uint8)
        image[:] = (np.arange(8000, dtype=np.uint8) // 64 * 37)[None, :, None]  # touch pages
        image[1500:4500, 2000:6000] = (200, 30, 30)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        boxes = selective_search(image)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        found = bool((np.abs(boxes - [2000, 1500, 6000, 4500]).max(axis=1) <= 16).any())
        print((peak - base) // 1024, len(boxes), found)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    extra_mb, count, found = out.stdout.split()
    assert int(extra_mb) < 72, f"{extra_mb} MB above the input: a full-size copy was made?"
    assert int(count) >= 1 and found == "True"


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("image", [
    np.zeros((10, 10, 3), np.float32), np.zeros((10, 10, 4), np.uint8),
    np.zeros((10, 10, 3), np.int16), np.zeros((0, 10, 3), np.uint8),
    np.zeros((2, 10, 10, 3), np.uint8), np.zeros(10, np.uint8), [[0, 1], [2, 3]]])
def test_bad_images_raise_detection_error(image: object) -> None:
    with pytest.raises(DetectionError):
        selective_search(image)


@pytest.mark.parametrize("fields", [
    {"mode": "slow"}, {"superpixel_scale": 0.0}, {"max_side": 0}, {"max_side": 2.5},
    {"max_boxes": 0}, {"min_box_side": -1.0}, {"max_boxes": True}])
def test_bad_configs_raise_detection_error(fields: dict) -> None:
    with pytest.raises(DetectionError):
        SelectiveSearchConfig(**fields)


# --- real photos -------------------------------------------------------------------------------


@pytest.mark.slow
@needs_data
def test_real_photos_are_covered() -> None:
    from eval.datasets import load_voc_folder, read_image
    from eval.recall import evaluate_proposals

    root = DATA / "voc100"
    dataset = load_voc_folder(root / "gts" / "pascalvoc_format", root / "images")
    images = dataset.images[:6]
    proposals = [selective_search(read_image(root / "images" / im.file_name)) for im in images]
    for im, boxes in zip(images, proposals):
        assert_valid_boxes(boxes, im.height, im.width)
    subset = type(dataset)(dataset.classes, images, dataset.category_ids)
    assert evaluate_proposals(subset.images, proposals, counts=(None,)).recall_at(0.5) >= 0.85
