"""postprocess against a pure-Python per-class greedy NMS reference."""
import numpy as np
import pytest
import torch

from detector.box_coder import FAST_RCNN_STDS, decode
from eval.errors import DetectionError
from detector.postprocess import PostProcess, postprocess

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


def clustered_boxes(n: int, seed: int) -> np.ndarray:
    """Integer boxes in a few clusters inside the image, so NMS has plenty to suppress."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(40, 160, size=(4, 2))[rng.integers(0, 4, n)]
    half = rng.integers(5, 40, size=(n, 2))
    jitter = rng.integers(-8, 9, size=(n, 2))
    return np.c_[centres + jitter - half, centres + jitter + half].round().astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_reference_on_clustered_boxes(seed):
    rng = np.random.default_rng(seed + 10)
    boxes = clustered_boxes(120, seed)
    scores = rng.dirichlet(np.full(4, 0.3), size=120).astype(np.float32)  # background + 3 classes
    scores[rng.integers(0, 120, 10)] = scores[0]  # tied scores, across classes and proposals
    got_boxes, got_scores, got_labels = postprocess(
        torch.from_numpy(boxes), torch.from_numpy(scores), None, IMAGE, 0.05, 0.3, 40)
    expected = reference_postprocess(boxes, scores, 0.05, 0.3, 40)
    assert got_labels.tolist() == [c for _, c, _ in expected]
    assert got_scores.tolist() == [-s for s, _, _ in expected]
    clipped = np.clip(boxes, 0, [IMAGE[1], IMAGE[0], IMAGE[1], IMAGE[0]])
    assert torch.equal(got_boxes, torch.from_numpy(clipped[[i for _, _, i in expected]]))
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
    _, _, labels = out = postprocess(torch.from_numpy(boxes), torch.from_numpy(scores), None,
                                     IMAGE, 0.0, iou, None)
    assert (len(labels) == 3) == kept
    assert reference_nms(boxes, scores[:, 1], iou) == ([0, 1, 2] if kept else [0, 2])
    assert out[1].tolist() == pytest.approx([0.9, 0.8, 0.7] if kept else [0.9, 0.7])


def test_classes_are_suppressed_independently():
    boxes = torch.tensor([[10.0, 10.0, 50.0, 50.0], [12.0, 10.0, 50.0, 52.0]])
    scores = torch.tensor([[0.0, 0.6, 0.4], [0.0, 0.3, 0.7]])
    out_boxes, out_scores, labels = PostProcess()(boxes, scores, None, IMAGE)
    # class 1 keeps box 0, class 2 keeps box 1; each suppresses the other box in its own class only
    assert labels.tolist() == [2, 1] and out_scores.tolist() == pytest.approx([0.7, 0.6])
    assert torch.equal(out_boxes, boxes[[1, 0]])


def test_score_threshold_is_strict_and_top_k():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 0.0, 30.0, 10.0], [40.0, 0.0, 50.0, 10.0],
                          [60.0, 0.0, 70.0, 10.0]])
    scores = torch.tensor([[0.5, 0.5], [0.75, 0.25], [0.875, 0.125], [0.9375, 0.0625]])
    _, kept, _ = PostProcess(score_threshold=0.125)(boxes, scores, None, IMAGE)
    assert kept.tolist() == [0.5, 0.25]  # 0.125 itself is not above the threshold
    _, kept, _ = PostProcess(score_threshold=0.0, max_per_image=3)(boxes, scores, None, IMAGE)
    assert kept.tolist() == [0.5, 0.25, 0.125]
    _, kept, _ = PostProcess(score_threshold=0.0, max_per_image=None)(boxes, scores, None, IMAGE)
    assert len(kept) == 4


def test_ties_order_by_label_then_proposal():
    boxes = torch.tensor([[100.0, 100.0, 120.0, 120.0], [0.0, 0.0, 20.0, 20.0]])
    scores = torch.tensor([[0.0, 0.5, 0.5], [0.0, 0.5, 0.5]])
    out_boxes, _, labels = PostProcess()(boxes, scores, None, IMAGE)
    assert labels.tolist() == [1, 1, 2, 2]
    assert torch.equal(out_boxes, boxes[[0, 1, 0, 1]])


def test_empty_inputs_and_nothing_above_threshold():
    for boxes, scores in [(torch.zeros(0, 4), torch.zeros(0, 3)),
                          (torch.tensor([[0.0, 0.0, 5.0, 5.0]]), torch.tensor([[1.0, 0.0, 0.0]]))]:
        out_boxes, out_scores, labels = PostProcess()(boxes, scores, None, IMAGE)
        assert out_boxes.shape == (0, 4) and out_scores.shape == (0,) and labels.shape == (0,)
        assert labels.dtype == torch.int64 and out_boxes.dtype == torch.float32


def test_boxes_clipped_and_outside_boxes_dropped():
    boxes = torch.tensor([[-20.0, 150.0, 40.0, 260.0], [310.0, 10.0, 350.0, 50.0]])
    scores = torch.tensor([[0.2, 0.8], [0.1, 0.9]])
    out_boxes, out_scores, _ = PostProcess()(boxes, scores, None, IMAGE)
    assert out_scores.tolist() == pytest.approx([0.8])  # the second lies right of the image
    torch.testing.assert_close(out_boxes, torch.tensor([[0.0, 150.0, 40.0, 200.0]]))


def test_class_specific_deltas_are_applied():
    boxes = torch.tensor([[50.0, 50.0, 90.0, 70.0]])
    scores = torch.tensor([[0.1, 0.3, 0.6]])
    deltas = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [0.5, -0.5, 0.2, 0.4]]])
    out_boxes, _, labels = PostProcess()(boxes, scores, deltas, IMAGE, box_stds=FAST_RCNN_STDS)
    assert labels.tolist() == [2, 1]
    torch.testing.assert_close(out_boxes[0], decode(deltas[0, 1:], boxes, FAST_RCNN_STDS)[0])
    # hand-computed: centre (70, 60) + (0.05 * 40, -0.05 * 20); size 40 x 20 * exp(0.04, 0.08)
    w, h = 40 * np.exp(0.04), 20 * np.exp(0.08)
    expected = torch.tensor([72 - w / 2, 59 - h / 2, 72 + w / 2, 59 + h / 2], dtype=torch.float32)
    torch.testing.assert_close(out_boxes[0], expected)
    torch.testing.assert_close(out_boxes[1], boxes[0])


def test_no_background_scores():
    """The 1,000-class ImageNet classifier: every column is a class, labels are column + 1."""
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]])
    scores = torch.zeros(2, 1000)
    scores[0, 0], scores[1, 999] = 0.9, 0.4
    _, out_scores, labels = PostProcess()(boxes, scores, None, IMAGE, background=False)
    assert labels.tolist() == [1, 1000] and out_scores.tolist() == pytest.approx([0.9, 0.4])


def test_half_precision_scores_and_bad_shapes():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    out = PostProcess()(boxes, torch.tensor([[0.25, 0.75]], dtype=torch.bfloat16), None, IMAGE)
    assert out[0].dtype == out[1].dtype == torch.float32
    with pytest.raises(DetectionError, match="box_deltas"):
        PostProcess()(boxes, torch.tensor([[0.5, 0.5]]), torch.zeros(1, 2, 4), IMAGE)
    with pytest.raises(DetectionError, match="scores"):
        PostProcess()(boxes, torch.zeros(2, 2), None, IMAGE)


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
