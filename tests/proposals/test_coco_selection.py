"""The coco mode: boxes chosen by objectness (`proposals.objectness`) with non-maximum suppression
that stops at a cap; its features on a hand-checkable image; and the other modes' boxes unchanged
by its arrival."""
from __future__ import annotations

import dataclasses
import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

from eval.boxes import box_iou
from proposals import objectness as objectness_module
from proposals import selective_search as ss
from proposals.config import SelectiveSearchConfig, preset_config
from proposals.objectness import (FEATURES, HIERARCHY_SLOTS, MEASURES, box_features,
                                  image_measures, objectness)
from test_selective_search import assert_valid_boxes, natural_image

COCO = preset_config("coco")


def _digest(boxes: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(boxes).tobytes()).hexdigest()


# --- the other modes are untouched ---------------------------------------------------------------

# Measured with the code of git HEAD before the coco mode existed (2f8195f), on
# natural_image(240, 320, seed=11): (box count, sha256 of the float32 boxes).
BEFORE = {
    "googlenet": (256, "a3a581f10d09c2353f00df4ff96ff79e9ea22978b1ad69a7ae6c4831a895cfd4"),
    "rcnn": (626, "342391aae25ccd897aa56fa2ceafc8ec7dea2cef173108fa145368cba888cb02"),
    "fast_scale1_min4": (1029,
                         "d1cbe0444ca9770234249900b62169efe24899333f8185f30764a99a9704f838"),
    "quality": (254, "03f6de9ab1fca0127fd56b66daca63af2e041ab0f5d96b6e25b44377d16b8864"),
}
CONFIGS = {"googlenet": preset_config("googlenet"), "rcnn": preset_config("rcnn"),
           # the coco preset's settings before it got its own mode
           "fast_scale1_min4": SelectiveSearchConfig(superpixel_scale=1.0, min_box_side=4.0),
           "quality": SelectiveSearchConfig(mode="quality", max_side=160)}


@pytest.mark.parametrize("name", list(BEFORE))
def test_the_other_modes_give_the_boxes_they_gave_before(name: str) -> None:
    boxes = ss.selective_search(natural_image(240, 320, seed=11), CONFIGS[name])
    assert (len(boxes), _digest(boxes)) == BEFORE[name]


def test_default_config_and_algorithm_version_are_unchanged() -> None:
    assert SelectiveSearchConfig() == preset_config("googlenet")
    assert SelectiveSearchConfig().mode == "fast"
    assert ss.ALGORITHM_VERSION == 1


# --- the coco mode's boxes -----------------------------------------------------------------------


def coco_boxes(image: np.ndarray, config: SelectiveSearchConfig = COCO) -> np.ndarray:
    return ss.selective_search(image, config)


@pytest.mark.parametrize("seed", [0, 5])
def test_boxes_are_valid_capped_and_non_overlapping(seed: int) -> None:
    image = natural_image(180, 240, seed=seed)
    boxes = coco_boxes(image)
    assert_valid_boxes(boxes, 180, 240)
    assert len(boxes) <= ss.OBJECTNESS_MAX_BOXES
    iou = box_iou(boxes, boxes)
    np.fill_diagonal(iou, 0)
    assert iou.max() < ss.OBJECTNESS_NMS_IOU
    sides = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    assert sides.min() >= COCO.min_box_side - 1e-3


def test_boxes_come_best_first() -> None:
    image = natural_image(180, 240, seed=1)
    boxes = coco_boxes(image)
    pool, features = ss.objectness_pool(image, COCO)
    score = objectness(features)
    rows = [np.flatnonzero((pool == box).all(axis=1)) for box in boxes]
    assert all(len(r) == 1 for r in rows)  # every box comes from the pool, once
    ranked = score[np.concatenate(rows)]
    assert (np.diff(ranked) <= 0).all()
    assert ranked[0] == score.max()  # the best box is never suppressed


def test_a_cap_below_the_pool_is_reached_exactly(monkeypatch) -> None:
    image = natural_image(180, 240, seed=2)
    full = coco_boxes(image)
    assert len(full) > 40
    capped = dataclasses.replace(ss.MODES["coco"], scored=(ss.OBJECTNESS_NMS_IOU, 40))
    monkeypatch.setitem(ss.MODES, "coco", capped)
    np.testing.assert_array_equal(coco_boxes(image), full[:40])
    np.testing.assert_array_equal(coco_boxes(image, preset_config("coco", max_boxes=7)),
                                  full[:7])


def test_deterministic_in_process_and_across_processes() -> None:
    image = natural_image(150, 200, seed=4)
    first = _digest(coco_boxes(image))
    assert _digest(coco_boxes(image)) == first
    code = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_coco_selection import COCO, _digest, natural_image
        from proposals.selective_search import selective_search
        print(_digest(selective_search(natural_image(150, 200, seed=4), COCO)))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == first


def test_measures_do_not_depend_on_the_image_address() -> None:
    # SIMD code paths can change with an array's alignment (cv2.magnitude's last bit did).
    image = natural_image(97, 131, seed=8)
    boxes = np.array([[0, 0, 130, 96], [5, 7, 60, 40], [50, 20, 51, 90]])
    expected = image_measures(image, boxes)
    for offset in range(1, 16):
        buffer = np.empty(image.size + 16, np.uint8)[offset:offset + image.size]
        moved = buffer.reshape(image.shape)
        moved[:] = image
        np.testing.assert_array_equal(image_measures(moved, boxes), expected)


def test_tiny_and_grayscale_images() -> None:
    assert_valid_boxes(coco_boxes(np.full((1, 1, 3), 90, np.uint8)), 1, 1)
    gray = natural_image(60, 80, seed=6)[:, :, 0]
    boxes = coco_boxes(gray)
    assert_valid_boxes(boxes, 60, 80)
    np.testing.assert_array_equal(boxes, coco_boxes(np.repeat(gray[:, :, None], 3, axis=2)))


# --- the capped non-maximum suppression ----------------------------------------------------------


def reference_nms(boxes: np.ndarray, threshold: float) -> np.ndarray:
    """Plain greedy NMS in rank order, one box at a time."""
    kept = boxes[:0]
    for box in boxes:
        if box_iou(box[None], kept).max(initial=0.0) < threshold:
            kept = np.concatenate([kept, box[None]])
    return kept


@pytest.mark.parametrize("limit", [None, 1, 13, 300, 10_000])
def test_capped_suppression_is_greedy_nms_cut_at_the_limit(limit: int | None) -> None:
    rng = np.random.default_rng(0)
    corner = rng.uniform(0, 90, (700, 2))
    boxes = np.concatenate([corner, corner + rng.uniform(2, 30, (700, 2))], 1).astype(np.float32)
    got = ss._drop_near_duplicates(boxes, 0.7, limit)
    np.testing.assert_array_equal(got, reference_nms(boxes, 0.7)[:limit])


def test_capped_suppression_stops_once_it_has_the_limit(monkeypatch) -> None:
    boxes = np.array([[i, 0, i + 1, 1] for i in range(600)], np.float32)  # all disjoint
    calls = []
    real = ss.box_iou

    def counting(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        calls.append(len(a))
        return real(a, b)

    monkeypatch.setattr(ss, "box_iou", counting)
    np.testing.assert_array_equal(ss._drop_near_duplicates(boxes, 0.7, 10), boxes[:10])
    assert len(calls) == 2  # the first block only: against the kept boxes, then within itself
    calls.clear()
    assert len(ss._drop_near_duplicates(boxes, 0.7)) == 600
    assert len(calls) == 2 * 3  # without a limit, all three blocks


# --- the features --------------------------------------------------------------------------------

GREY, RED = (128, 128, 128), (200, 40, 40)


def square_image() -> np.ndarray:
    """100 x 100 flat grey with a flat red 40 x 40 square at x, y in 30..69."""
    image = np.full((100, 100, 3), GREY, np.uint8)
    image[30:70, 30:70] = RED
    return image


def measures(image: np.ndarray, box: tuple[int, int, int, int]) -> dict[str, float]:
    row = image_measures(image, np.array([box]))[0]
    return dict(zip(MEASURES, row.tolist()))


def test_measures_of_a_flat_square_by_hand() -> None:
    image = square_image()
    lab = cv2.cvtColor(np.array([[GREY, RED]], np.uint8), cv2.COLOR_RGB2Lab).astype(float)[0]
    m = measures(image, (30, 30, 69, 69))  # the square itself; its ring (8 px) is all grey
    assert m["contrast"] == pytest.approx(np.linalg.norm(lab[1] - lab[0]), abs=1e-6)
    assert m["inner_std"] == pytest.approx(0, abs=1e-3)
    assert m["edge_core"] == pytest.approx(0, abs=1e-9)  # the core (x, y in 40..59) is flat
    # The edge runs along the border: the border is the box's strongest part, the core its
    # weakest. Canny marks the step on one of its two sides: every mark inside the box is on
    # its border (corners count twice there: 4 sides of 40 px = 160 border pixels).
    assert m["edge_border"] > m["edge_ring_in"] > m["edge_core"]
    assert m["edge_border"] > m["edge_in"] > 0
    inside = round(m["canny_in"] * 40 * 40)
    assert 0 < inside <= round(m["canny_border"] * 160) <= inside + 4
    flat = measures(image, (0, 0, 9, 9))  # a grey corner far from the square
    assert flat == pytest.approx({name: 0.0 for name in MEASURES}, abs=1e-9)


def test_the_whole_image_has_no_ring_and_no_contrast() -> None:
    m = measures(square_image(), (0, 0, 99, 99))
    assert m["contrast"] == 0 and m["edge_ring_out"] == pytest.approx(0, abs=1e-9)
    assert m["inner_std"] > 0


def test_box_features_geometry_and_hierarchy_columns() -> None:
    image = square_image()
    boxes = np.array([[30, 30, 69, 69], [0, 0, 99, 49]])
    original = np.array([[60, 60, 140, 140], [0, 0, 200, 100]], np.float32)  # a 2x image
    membership = np.zeros((2, HIERARCHY_SLOTS), bool)
    membership[0, [1, 4]] = True
    membership[1, 6] = True
    got = dict(zip(FEATURES, box_features(image, boxes, original, membership,
                                          np.array([1.0, 0.25]), np.array([True, False])).T))
    np.testing.assert_allclose(got["log_side"], [np.log(80), np.log(np.sqrt(200 * 100))])
    np.testing.assert_allclose(got["abs_log_aspect"], [0, np.log(2)])
    np.testing.assert_allclose(got["n_hierarchies"], [2, 1])
    np.testing.assert_allclose(got["log_min_rel_position"], [0, np.log(0.25)])
    np.testing.assert_allclose(got["is_initial_region"], [1, 0])
    np.testing.assert_allclose(got["in_hierarchy_4"], [1, 0])
    np.testing.assert_allclose(got["in_hierarchy_6"], [0, 1])
    contrast = measures(image, (30, 30, 69, 69))["contrast"]
    assert got["log1p_contrast"][0] == pytest.approx(np.log1p(contrast))
    assert got["log1p_contrast*log_side"][0] == pytest.approx(np.log1p(contrast) * np.log(80))


def test_pool_bookkeeping_of_shared_boxes() -> None:
    first = np.array([[0, 0, 1, 1], [2, 2, 3, 3], [0, 0, 3, 3]])  # n = 2 regions, one merge
    second = np.array([[2, 2, 3, 3], [0, 0, 1, 2], [0, 0, 3, 3]])
    boxes, membership, position, initial = ss._pool_hierarchies([first, second])
    expected = {(0, 0, 1, 1): ([1, 0], 1.0, True), (0, 0, 1, 2): ([0, 1], 2 / 3, True),
                (0, 0, 3, 3): ([1, 1], 1 / 3, False), (2, 2, 3, 3): ([1, 1], 2 / 3, True)}
    assert [tuple(b) for b in boxes.tolist()] == sorted(expected)
    for row, box in enumerate(boxes.tolist()):
        hierarchies, best, was_initial = expected[tuple(box)]
        assert membership[row].tolist() == [bool(h) for h in hierarchies]
        assert position[row] == pytest.approx(best)
        assert initial[row] == was_initial


def test_objectness_is_the_logit_of_the_standardised_features() -> None:
    mean, std = np.asarray(objectness_module.MEAN), np.asarray(objectness_module.STD)
    assert len(mean) == len(std) == len(objectness_module.WEIGHTS) == len(FEATURES)
    rows = mean + np.diag(std)  # feature j one standard deviation above its mean
    np.testing.assert_allclose(objectness(mean[None]), [objectness_module.BIAS])
    np.testing.assert_allclose(objectness(rows),
                               objectness_module.BIAS + np.asarray(objectness_module.WEIGHTS))
