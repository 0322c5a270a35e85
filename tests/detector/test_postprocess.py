"""postprocess against a pure-Python per-class greedy NMS reference, and bit for bit against the
torch/torchvision version it replaced (copied below as the reference)."""
import subprocess
import sys

import numpy as np
import pytest
import torch
from torchvision.ops import batched_nms, clip_boxes_to_image, remove_small_boxes

import detector.postprocess as postprocess_module
from detector.box_coder import FAST_RCNN_STDS, decode
from detector.postprocess import MIN_SIDE, PostProcess, postprocess
from eval.errors import DetectionError
from _torch_reference import rounded_exp, torch_decode

IMAGE = (200, 300)  # height, width


def reference_nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Greedy NMS as torchvision computes it: IoU in float32, compared as a double, suppress
    when strictly greater. Ties in score keep input order."""
    b = boxes.astype(np.float32)
    areas = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    order = sorted(range(len(b)), key=lambda i: -scores[i])
    kept: list[int] = []
    for i in order:
        for j in kept:
            w = max(np.float32(0), min(b[i, 2], b[j, 2]) - max(b[i, 0], b[j, 0]))
            h = max(np.float32(0), min(b[i, 3], b[j, 3]) - max(b[i, 1], b[j, 1]))
            inter = w * h
            if float(inter / (areas[i] + areas[j] - inter)) > iou:
                break
        else:
            kept.append(i)
    return kept


def reference_postprocess(boxes, scores, threshold, iou, top_k):
    """Clip; per class (columns 1..C): threshold, NMS; then sort by (-score, label, proposal)."""
    boxes = np.clip(boxes, 0, [IMAGE[1], IMAGE[0], IMAGE[1], IMAGE[0]]).astype(np.float32)
    found = []
    for c in range(1, scores.shape[1]):
        idx = [i for i in range(len(boxes)) if scores[i, c] > threshold]
        for k in reference_nms(boxes[idx], scores[idx, c], iou):
            found.append((-scores[idx[k], c], c, idx[k]))
    return sorted(found)[:top_k]


# --- The torch version this module replaced (detector/postprocess.py and the decode of
# detector/box_coder.py before numpy), verbatim but for `exp`, which its decode takes as an
# argument: torch's float32 exp is off by an ulp on ~1% of inputs and the numpy decode uses the
# correctly rounded one (see detector.box_coder._exp), so the exact comparisons pass that one.

def torch_postprocess(boxes, scores, box_deltas, image_size, score_threshold, nms_iou,
                      max_per_image, background=True, box_stds=None, exp=rounded_exp):
    class_scores = scores[:, 1:] if background else scores
    labels, index = torch.nonzero(class_scores.T > score_threshold, as_tuple=True)
    cand_scores = class_scores[index, labels].float()
    if box_deltas is None:
        cand_boxes = boxes[index].float()
    else:
        cand_boxes = torch_decode(box_deltas[index, labels], boxes[index], box_stds, exp=exp)
    cand_boxes = clip_boxes_to_image(cand_boxes, image_size)
    keep = remove_small_boxes(cand_boxes, MIN_SIDE)
    keep = keep[torch.sort(cand_scores[keep], descending=True, stable=True).indices]
    cand_boxes, cand_scores, labels = cand_boxes[keep], cand_scores[keep], labels[keep]
    keep = batched_nms(cand_boxes, cand_scores, labels, nms_iou).sort().values
    keep = keep[:max_per_image]
    return cand_boxes[keep], cand_scores[keep], labels[keep] + 1


def run_both(boxes, scores, deltas, image_size, threshold, iou, top_k, background=True,
             stds=None, exp=rounded_exp):
    """(numpy postprocess, the torch reference) on the same arrays."""
    new = postprocess(boxes, scores, deltas, image_size, threshold, iou, top_k, background, stds)
    old = torch_postprocess(torch.from_numpy(boxes), torch.from_numpy(scores),
                            None if deltas is None else torch.from_numpy(deltas), image_size,
                            threshold, iou, top_k, background, stds, exp)
    return new, tuple(t.numpy() for t in old)


def assert_identical(new, old):
    for got, expected in zip(new, old):
        assert got.dtype == expected.dtype and got.shape == expected.shape
        assert np.array_equal(got, expected)


def clustered_boxes(n: int, seed: int) -> np.ndarray:
    """Integer boxes in a few clusters inside the image, so NMS has plenty to suppress."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(40, 160, size=(4, 2))[rng.integers(0, 4, n)]
    half = rng.integers(5, 40, size=(n, 2))
    jitter = rng.integers(-8, 9, size=(n, 2))
    return np.c_[centres + jitter - half, centres + jitter + half].round().astype(np.float32)


def awkward_case(seed: int, n: int, num_classes: int, background: bool, deltas: bool,
                 threshold: float):
    """Boxes and scores with everything postprocess must get right: clustered integer boxes
    (IoU exactly at thresholds), fractional ones, boxes partly and wholly outside the image,
    empty and inverted ones; tied scores (across classes and proposals, and equal to the
    threshold); class deltas with huge, infinite and NaN values."""
    rng = np.random.default_rng(seed)
    height, width = IMAGE
    boxes = clustered_boxes(n, seed)
    some = rng.random(n) < 0.3  # fractional boxes, some reaching outside the image
    xy = rng.uniform(-60, [width + 20, height + 20], size=(n, 2))
    boxes[some] = np.c_[xy, xy + rng.uniform(0, 120, size=(n, 2))][some]
    some = rng.random(n) < 0.05  # wholly outside
    boxes[some] = [width + 5, 10, width + 50, 40]
    some = rng.random(n) < 0.05  # empty, thinner than MIN_SIDE, or inverted
    boxes[some, 2] = boxes[some, 0] + rng.choice([0.0, 0.005, -3.0], size=some.sum())
    columns = num_classes + background
    scores = rng.dirichlet(np.full(columns, 0.3), size=n).astype(np.float32)
    scores[rng.integers(0, n, n // 8)] = scores[0]  # tied rows
    coarse = rng.random((n, columns)) < 0.2  # ties within and across classes
    scores[coarse] = np.round(scores[coarse] * 16) / 16
    scores[rng.random((n, columns)) < 0.02] = np.float32(threshold)  # not above it
    if not deltas:
        return boxes, scores, None
    box_deltas = rng.normal(0, 1.5, size=(n, num_classes, 4)).astype(np.float32)
    odd = rng.random((n, num_classes, 4))
    box_deltas[odd < 0.01] = 60.0  # tw, th clamped; tx, ty far outside
    box_deltas[(odd > 0.01) & (odd < 0.012)] = -60.0
    box_deltas[(odd > 0.5) & (odd < 0.501)] = np.inf
    box_deltas[(odd > 0.6) & (odd < 0.601)] = np.nan
    return boxes, scores, box_deltas


CASES = [  # (n, classes, background, deltas, score threshold, NMS IoU, top-k)
    (60, 3, True, False, 0.05, 0.3, 40),
    (60, 3, True, True, 0.05, 0.3, 40),
    (150, 5, True, False, 0.0, 0.5, None),
    (150, 5, True, True, 0.01, 0.5, 100),
    (120, 4, False, False, 0.1, 0.3, None),
    (120, 4, False, True, 0.1, 0.7, 30),
    (80, 30, False, True, 0.01, 0.25, None),  # many classes, few boxes each
    (400, 6, True, False, 0.0, 0.3, 100),     # > 1,000 boxes: NMS one class at a time
    (400, 6, True, True, 0.0, 0.5, None),
    (300, 8, False, True, 0.02, 0.3, 300),
]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("case", CASES)
def test_bit_identical_to_torch_version(case, seed):
    n, classes, background, with_deltas, threshold, iou, top_k = case
    boxes, scores, deltas = awkward_case(seed, n, classes, background, with_deltas, threshold)
    stds = FAST_RCNN_STDS if with_deltas and seed % 2 else None
    new, old = run_both(boxes, scores, deltas, IMAGE, threshold, iou, top_k, background, stds)
    assert_identical(new, old)
    assert new[2].dtype == np.int64 and new[0].dtype == new[1].dtype == np.float32
    assert len(new[2]) > 0


@pytest.mark.parametrize("matrix_max, block", [(0, 1), (0, 7), (8, 32), (100_000, 32)])
@pytest.mark.parametrize("case", [CASES[1], CASES[6], CASES[8]])
def test_blocked_and_matrix_nms_agree(case, matrix_max, block, monkeypatch):
    """Whichever of the two NMS ways a label's boxes take (in blocks for many boxes, every pair
    at once for few), in blocks of any size, the torch version's result."""
    monkeypatch.setattr(postprocess_module, "_MATRIX_MAX", matrix_max)
    monkeypatch.setattr(postprocess_module, "_BLOCK", block)
    monkeypatch.setattr(postprocess_module, "_MATRIX_ELEMENTS", 5000)  # many small batches
    n, classes, background, with_deltas, threshold, iou, top_k = case
    boxes, scores, deltas = awkward_case(9, n, classes, background, with_deltas, threshold)
    assert_identical(*run_both(boxes, scores, deltas, IMAGE, threshold, iou, top_k, background))


def test_both_nms_regimes_and_the_cut_are_exercised():
    """The cases above reach both of torchvision's batched_nms paths (up to 1,000 boxes: one NMS
    with the coordinate trick; above: per class) and the top-k cut."""
    counts = []
    for n, classes, background, with_deltas, threshold, _, _ in CASES:
        boxes, scores, deltas = awkward_case(0, n, classes, background, with_deltas, threshold)
        found = postprocess(boxes, scores, deltas, IMAGE, threshold, 1.0, None, background)
        counts.append(len(found[2]))  # IoU 1.0 suppresses nothing: the boxes NMS gets
    assert min(counts) < 1000 < max(counts)


def test_small_inputs_round_as_batched_nms_coordinate_trick():
    """Up to 1,000 boxes torchvision moves label k's boxes by k * (max + 1), which rounds their
    coordinates: here B's height 2.99 rounds to 3 at x = 500,500 (float32 steps of 1/32), so its
    IoU with A becomes 0.30000001 > 0.3 and B is suppressed, as the torch version did; NMS on the
    unmoved boxes (IoU 0.299) would keep it."""
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 2.99], [0, 0, 1000, 1000]], dtype=np.float32)
    scores = np.zeros((3, 501), dtype=np.float32)
    scores[0, 500], scores[1, 500], scores[2, 0] = 0.9, 0.8, 0.5
    new, old = run_both(boxes, scores, None, (1000, 1000), 0.05, 0.3, None, background=False)
    assert_identical(new, old)
    assert new[2].tolist() == [501, 1]
    assert reference_nms(boxes[:2], scores[:2, 500], 0.3) == [0, 1]


def test_huge_coordinates_let_labels_meet_as_in_torchvision():
    """Past 2 ** 24 the moved coordinates round by whole pixels: at x ~ 67 million (steps of 8)
    an 8 px box of label 998 and one of label 999 land on the same place, and torchvision's
    single NMS lets the first suppress the second; so does postprocess."""
    side, label = 67261, 997
    boxes = np.array([[side - 8, side - 8, side, side], [0, 0, 8, 8], [100, 100, 108, 108]],
                     dtype=np.float32)
    scores = np.zeros((3, 1000), dtype=np.float32)
    scores[0, label], scores[1, label + 1], scores[2, label + 1] = 0.9, 0.8, 0.7
    new, old = run_both(boxes, scores, None, (side, side), 0.05, 0.3, None, background=False)
    assert_identical(new, old)
    assert new[1].tolist() == pytest.approx([0.9, 0.7])  # 0.8 went, in another label


@pytest.mark.parametrize("iou", [0.3, 0.5])
def test_ties_everywhere_match_torch(iou):
    """Many equal scores: the order (score, then label, then proposal) and which of two tied
    overlapping boxes survives must be the torch version's."""
    boxes = clustered_boxes(300, 7)
    rng = np.random.default_rng(8)
    scores = (rng.integers(0, 4, size=(300, 4)) / 4).astype(np.float32)
    new, old = run_both(boxes, scores, None, IMAGE, 0.0, iou, None)
    assert_identical(new, old)
    assert len(np.unique(new[1])) == 3 and len(new[1]) > 20


def test_with_torch_exp_only_the_last_bits_of_boxes_differ():
    """Against the torch version exactly as it was (torch.exp, ~1 ulp off on some inputs):
    the same detections, boxes equal to float32 rounding."""
    boxes, scores, deltas = awkward_case(3, 200, 5, True, True, 0.01)
    new, old = run_both(boxes, scores, deltas, IMAGE, 0.01, 0.3, None, stds=FAST_RCNN_STDS,
                        exp=torch.exp)
    assert np.array_equal(new[1], old[1]) and np.array_equal(new[2], old[2])
    np.testing.assert_allclose(new[0], old[0], rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_reference_on_clustered_boxes(seed):
    rng = np.random.default_rng(seed + 10)
    boxes = clustered_boxes(120, seed)
    scores = rng.dirichlet(np.full(4, 0.3), size=120).astype(np.float32)  # background + 3 classes
    scores[rng.integers(0, 120, 10)] = scores[0]  # tied scores, across classes and proposals
    got_boxes, got_scores, got_labels = postprocess(boxes, scores, None, IMAGE, 0.05, 0.3, 40)
    expected = reference_postprocess(boxes, scores, 0.05, 0.3, 40)
    assert got_labels.tolist() == [c for _, c, _ in expected]
    assert got_scores.tolist() == [-s for s, _, _ in expected]
    clipped = np.clip(boxes, 0, [IMAGE[1], IMAGE[0], IMAGE[1], IMAGE[0]])
    assert np.array_equal(got_boxes, clipped[[i for _, _, i in expected]])
    # threshold, NMS and top-k all had work to do
    above = int((scores[:, 1:] > 0.05).sum())
    assert 40 < len(reference_postprocess(boxes, scores, 0.05, 0.3, None)) < above < 3 * 120


@pytest.mark.parametrize("iou, height, kept", [
    (0.3, 3.0, False),     # IoU 30/100 = 0.30000001 in float32: > 0.3, suppressed
    (0.3, 2.9, True),      # IoU 0.29 < 0.3
    (0.25, 2.5, True),     # IoU exactly 0.25 (representable): not > 0.25, kept
    (0.25, 2.5000002, False),  # the next float32 above 2.5: IoU just above 0.25, suppressed
])
def test_iou_exactly_at_threshold(iou, height, kept):
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, height], [50, 50, 60, 60]], dtype=np.float32)
    scores = np.array([[0.1, 0.9], [0.2, 0.8], [0.3, 0.7]], dtype=np.float32)
    _, _, labels = out = postprocess(boxes, scores, None, IMAGE, 0.0, iou, None)
    assert (len(labels) == 3) == kept
    assert reference_nms(boxes, scores[:, 1], iou) == ([0, 1, 2] if kept else [0, 2])
    assert out[1].tolist() == pytest.approx([0.9, 0.8, 0.7] if kept else [0.9, 0.7])


def test_classes_are_suppressed_independently():
    boxes = np.array([[10.0, 10.0, 50.0, 50.0], [12.0, 10.0, 50.0, 52.0]], dtype=np.float32)
    scores = np.array([[0.0, 0.6, 0.4], [0.0, 0.3, 0.7]], dtype=np.float32)
    out_boxes, out_scores, labels = PostProcess()(boxes, scores, None, IMAGE)
    # class 1 keeps box 0, class 2 keeps box 1; each suppresses the other box in its own class only
    assert labels.tolist() == [2, 1] and out_scores.tolist() == pytest.approx([0.7, 0.6])
    assert np.array_equal(out_boxes, boxes[[1, 0]])


def test_score_threshold_is_strict_and_top_k():
    boxes = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [60, 0, 70, 10]],
                     dtype=np.float32)
    scores = np.array([[0.5, 0.5], [0.75, 0.25], [0.875, 0.125], [0.9375, 0.0625]],
                      dtype=np.float32)
    _, kept, _ = PostProcess(score_threshold=0.125)(boxes, scores, None, IMAGE)
    assert kept.tolist() == [0.5, 0.25]  # 0.125 itself is not above the threshold
    _, kept, _ = PostProcess(score_threshold=0.0, max_per_image=3)(boxes, scores, None, IMAGE)
    assert kept.tolist() == [0.5, 0.25, 0.125]
    _, kept, _ = PostProcess(score_threshold=0.0, max_per_image=None)(boxes, scores, None, IMAGE)
    assert len(kept) == 4


def test_threshold_is_compared_in_the_scores_dtype():
    """float32(0.3) is not above 0.3 once 0.3 is rounded to float32 too (as torch compares)."""
    boxes = np.array([[0, 0, 10, 10]], dtype=np.float32)
    scores = np.array([[0.7, 0.3]], dtype=np.float32)
    assert len(postprocess(boxes, scores, None, IMAGE, 0.3, 0.3, None)[2]) == 0
    # in float64 the same score, 0.30000001, is above 0.3
    new, old = run_both(boxes, scores.astype(np.float64), None, IMAGE, 0.3, 0.3, None)
    assert_identical(new, old)
    assert len(new[2]) == 1
    assert len(postprocess(boxes, scores, None, IMAGE, 0.29999, 0.3, None)[2]) == 1


def test_ties_order_by_label_then_proposal():
    boxes = np.array([[100.0, 100.0, 120.0, 120.0], [0.0, 0.0, 20.0, 20.0]], dtype=np.float32)
    scores = np.array([[0.0, 0.5, 0.5], [0.0, 0.5, 0.5]], dtype=np.float32)
    out_boxes, _, labels = PostProcess()(boxes, scores, None, IMAGE)
    assert labels.tolist() == [1, 1, 2, 2]
    assert np.array_equal(out_boxes, boxes[[0, 1, 0, 1]])


def test_empty_inputs_and_nothing_above_threshold():
    for boxes, scores, deltas in [
            (np.zeros((0, 4), np.float32), np.zeros((0, 3), np.float32), None),
            (np.zeros((0, 4), np.float32), np.zeros((0, 3), np.float32),
             np.zeros((0, 2, 4), np.float32)),
            (np.array([[0, 0, 5, 5]], np.float32), np.array([[1, 0, 0]], np.float32), None)]:
        out_boxes, out_scores, labels = PostProcess()(boxes, scores, deltas, IMAGE)
        assert out_boxes.shape == (0, 4) and out_scores.shape == (0,) and labels.shape == (0,)
        assert labels.dtype == np.int64 and out_boxes.dtype == out_scores.dtype == np.float32


def test_boxes_clipped_and_outside_boxes_dropped():
    boxes = np.array([[-20.0, 150.0, 40.0, 260.0], [310.0, 10.0, 350.0, 50.0]], dtype=np.float32)
    scores = np.array([[0.2, 0.8], [0.1, 0.9]], dtype=np.float32)
    out_boxes, out_scores, _ = PostProcess()(boxes, scores, None, IMAGE)
    assert out_scores.tolist() == pytest.approx([0.8])  # the second lies right of the image
    assert np.array_equal(out_boxes, np.array([[0.0, 150.0, 40.0, 200.0]], dtype=np.float32))


def test_class_specific_deltas_are_applied():
    boxes = np.array([[50.0, 50.0, 90.0, 70.0]], dtype=np.float32)
    scores = np.array([[0.1, 0.3, 0.6]], dtype=np.float32)
    deltas = np.array([[[0.0, 0.0, 0.0, 0.0], [0.5, -0.5, 0.2, 0.4]]], dtype=np.float32)
    out_boxes, _, labels = PostProcess()(boxes, scores, deltas, IMAGE, box_stds=FAST_RCNN_STDS)
    assert labels.tolist() == [2, 1]
    assert np.array_equal(out_boxes[0], decode(deltas[0, 1:], boxes, FAST_RCNN_STDS)[0])
    # hand-computed: centre (70, 60) + (0.05 * 40, -0.05 * 20); size 40 x 20 * exp(0.04, 0.08)
    w, h = 40 * np.exp(0.04), 20 * np.exp(0.08)
    np.testing.assert_allclose(out_boxes[0], [72 - w / 2, 59 - h / 2, 72 + w / 2, 59 + h / 2],
                               rtol=1e-6)
    assert np.array_equal(out_boxes[1], boxes[0])


def test_no_background_scores():
    """The 1,000-class ImageNet classifier: every column is a class, labels are column + 1."""
    boxes = np.array([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]], dtype=np.float32)
    scores = np.zeros((2, 1000), dtype=np.float32)
    scores[0, 0], scores[1, 999] = 0.9, 0.4
    _, out_scores, labels = PostProcess()(boxes, scores, None, IMAGE, background=False)
    assert labels.tolist() == [1, 1000] and out_scores.tolist() == pytest.approx([0.9, 0.4])


def test_half_precision_scores_and_bad_shapes():
    boxes = np.array([[0.0, 0.0, 10.0, 10.0]], dtype=np.float32)
    out = PostProcess()(boxes, np.array([[0.25, 0.75]], dtype=np.float16), None, IMAGE)
    assert out[0].dtype == out[1].dtype == np.float32 and out[1].tolist() == [0.75]
    with pytest.raises(DetectionError, match=r"box_deltas have shape \(1, 2, 4\); expected "
                                             r"\[1, 1, 4\] for 1 classes"):
        PostProcess()(boxes, np.array([[0.5, 0.5]]), np.zeros((1, 2, 4)), IMAGE)
    with pytest.raises(DetectionError, match=r"scores have shape \(2, 2\) for 1 boxes"):
        PostProcess()(boxes, np.zeros((2, 2)), None, IMAGE)
    with pytest.raises(DetectionError, match=r"boxes have shape \(1, 3\); expected \[N, 4\]"):
        PostProcess()(boxes[:, :3], np.zeros((1, 2)), None, IMAGE)


@pytest.mark.parametrize("settings, message", [
    (dict(score_threshold=-0.1), "--score-threshold -0.1 \\(score_threshold=-0.1\\)"),
    (dict(score_threshold=float("nan")), "score_threshold=nan"),
    (dict(score_threshold=True), "score_threshold=True"),
    (dict(nms_iou=0.0), "nms_iou=0.0\\): must be in \\(0, 1\\]"),
    (dict(max_per_image=0), "max_per_image=0"),
    (dict(max_per_image=2.5), "max_per_image=2.5"),
])
def test_settings_are_checked_when_made(settings, message):
    with pytest.raises(DetectionError, match=message):
        PostProcess(**settings)


def test_postprocess_and_box_coder_import_no_torch():
    """The ONNX Runtime detection path post-processes without loading torch (~3-4 s)."""
    code = ("import sys, detector.postprocess, detector.box_coder; "
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision'))"
            "; assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", code], check=True)
