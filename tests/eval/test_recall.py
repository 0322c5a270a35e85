"""Proposal recall: hand-computed IoUs and recalls, edge cases, and a brute-force loop."""
from __future__ import annotations

import numpy as np
import pytest

import eval.recall as recall_module
from eval.datasets import Dataset, ImageRecord
from eval.errors import DetectionError
from eval.boxes import box_iou
from eval.recall import AR_IOU_THRESHOLDS, evaluate_proposals, proposal_recall


def brute_iou(a, b) -> float:
    """Continuous IoU of two xyxy boxes, written out."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih
    return iw * ih / union if union > 0 else 0.0


def test_box_iou_by_hand() -> None:
    a = np.array([[0.0, 0, 10, 10], [0, 0, 5, 10]])
    b = np.array([[5.0, 5, 15, 15], [10, 10, 20, 20], [0, 0, 10, 10], [3, 3, 3, 3]])
    # 25/175; touching corners share no area (unlike the devkits' inclusive pixels); identical;
    # an empty box. Second row: half of the box, inside it.
    expected = [[1 / 7, 0, 1, 0], [0, 0, 0.5, 0]]
    np.testing.assert_allclose(box_iou(a, b), expected, rtol=1e-15)
    assert box_iou(a, np.zeros((0, 4))).shape == (2, 0)
    assert box_iou(np.zeros(0), b).shape == (0, 4)
    assert box_iou(b[3:], b[3:])[0, 0] == 0.0  # zero union: 0, not NaN


def test_box_iou_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 50, (20, 4))
    b = rng.uniform(0, 50, (30, 4))
    a[:, 2:] += a[:, :2]
    b[:, 2:] += b[:, :2]
    expected = [[brute_iou(p, q) for q in b] for p in a]
    np.testing.assert_allclose(box_iou(a, b), expected, rtol=1e-12)


def test_box_iou_rejects_bad_shapes() -> None:
    with pytest.raises(DetectionError, match=r"\[N, 4\]"):
        box_iou(np.zeros((3, 5)), np.zeros((1, 4)))
    with pytest.raises(DetectionError):
        box_iou(np.zeros(4), np.zeros((1, 4)))


def hand_case() -> tuple[list[np.ndarray], list[np.ndarray]]:
    gts = [np.array([[0.0, 0, 10, 10], [20, 20, 30, 30]]),  # g1, g2
           np.array([[0.0, 0, 10, 10]]),  # g3
           np.zeros((0, 4)),  # no gt
           np.array([[50.0, 50, 60, 60]])]  # g4, no proposals
    proposals = [np.array([[0.0, 0, 10, 10],  # g1: 1
                           [20, 20, 30, 35],  # g2: 100/150
                           [20, 20, 30, 30]]),  # g2: 1
                 np.array([[0.0, 0, 10, 20],  # g3: 0.5
                           [0, 0, 10, 12.5]]),  # g3: 100/125 = 0.8
                 np.array([[0.0, 0, 5, 5], [1, 1, 2, 2]]),
                 np.zeros((0, 4))]
    return gts, proposals


def test_recall_at_counts_by_hand() -> None:
    result = proposal_recall(*hand_case(), counts=(1, 2, None))
    assert result.num_gt == 4
    # Best IoU of g1..g4 with the top 1, top 2 and all proposals of their images.
    expected = [[1, 0, 0.5, 0], [1, 2 / 3, 0.8, 0], [1, 1, 0.8, 0]]
    np.testing.assert_allclose(result.best_iou, expected)
    t = list(np.round(result.iou_thresholds, 2))
    assert result.recall[0, t.index(0.5)] == 0.5 and result.recall[0, t.index(0.55)] == 0.25
    assert result.recall_at(0.5, 2) == 0.75 and result.recall_at(0.7, 2) == 0.5
    assert result.recall_at(0.5) == 0.75 and result.recall_at(0.95) == 0.5
    # Per image min(N, P) with P = 3, 2, 2, 0.
    np.testing.assert_allclose(result.mean_proposals, [0.75, 1.5, 1.75])
    # All proposals: g1, g2 at every threshold; g3 (0.8) at 0.5..0.8, seven of ten; g4 never.
    assert result.average_recall[2] == pytest.approx((7 * 0.75 + 3 * 0.5) / 10)
    with pytest.raises(DetectionError, match="counts"):
        result.recall_at(0.5, 5)


def test_average_recall_is_mean_over_half_to_095() -> None:
    gts, proposals = random_case(1)
    result = proposal_recall(gts, proposals)
    np.testing.assert_allclose(AR_IOU_THRESHOLDS, np.arange(10) * 0.05 + 0.5, atol=1e-15)
    np.testing.assert_allclose(result.average_recall, result.recall.mean(axis=1), rtol=1e-15)
    # AR stays over 0.5:0.95 whatever columns the table shows.
    narrow = proposal_recall(gts, proposals, iou_thresholds=[0.5, 0.7])
    np.testing.assert_allclose(narrow.average_recall, result.average_recall, rtol=1e-15)
    np.testing.assert_allclose(narrow.recall, result.recall[:, [0, 4]], rtol=1e-15)


def test_empty_inputs() -> None:
    no_images = proposal_recall([], [], counts=(1, None))
    assert no_images.num_gt == 0 and np.isnan(no_images.recall).all()
    np.testing.assert_array_equal(no_images.mean_proposals, [0, 0])
    no_gt = proposal_recall([np.zeros((0, 4))], [np.array([[0.0, 0, 1, 1]])], counts=(1,))
    assert no_gt.num_gt == 0 and np.isnan(no_gt.average_recall).all()
    no_proposals = proposal_recall([np.array([[0.0, 0, 1, 1]])], [np.zeros((0, 4))],
                                   counts=(1, None))
    np.testing.assert_array_equal(no_proposals.recall, np.zeros((2, 10)))
    assert "all" in no_proposals.format_table()


def test_bad_arguments_raise() -> None:
    gts, proposals = hand_case()
    with pytest.raises(DetectionError, match="proposal lists"):
        proposal_recall(gts, proposals[:2])
    with pytest.raises(DetectionError, match="positive integers"):
        proposal_recall(gts, proposals, counts=(0, None))
    with pytest.raises(DetectionError, match="distinct"):
        proposal_recall(gts, proposals, counts=(10, 10))
    with pytest.raises(DetectionError, match="proposals of image 1"):
        proposal_recall(gts, [proposals[0], np.zeros((2, 5)), proposals[2], proposals[3]])


def test_format_table() -> None:
    table = proposal_recall(*hand_case(), counts=(1, None)).format_table().splitlines()
    assert table[0] == "proposal recall over 4 gt boxes"
    columns = [f"R@{t:.2f}" for t in AR_IOU_THRESHOLDS]
    assert table[1].split() == ["proposals", "per", "image", *columns, "AR"]
    assert table[2].split()[:3] == ["1", "0.8", "0.5000"]
    assert table[3].split()[0] == "all" and table[3].split()[-1] == "0.6750"


def test_evaluate_proposals_skips_crowd_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [50, 50, 90, 90]], np.float32)
    record = ImageRecord(image_id=1, file_name="1.jpg", width=100, height=100, boxes=boxes,
                         labels=np.array([1, 1]), difficult=np.zeros(2, bool),
                         iscrowd=np.array([False, True]), areas=np.array([100.0, 1600.0]))
    dataset = Dataset(classes=("person",), images=(record,), category_ids=(1,))
    result = evaluate_proposals(dataset.images, [np.array([[0.0, 0, 10, 10]])], counts=(None,))
    assert result.num_gt == 1 and result.recall_at(0.9) == 1.0


def random_case(seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    gts, proposals = [], []
    for _ in range(6):
        g = rng.uniform(0, 80, (rng.integers(0, 6), 4))
        g[:, 2:] = g[:, :2] + rng.uniform(5, 40, (len(g), 2))
        p = rng.uniform(0, 80, (rng.integers(0, 60), 4))
        p[:, 2:] = p[:, :2] + rng.uniform(5, 40, (len(p), 2))
        near = np.repeat(g, 4, axis=0) + rng.normal(0, 3, (4 * len(g), 4))  # good proposals
        p = np.concatenate([p, near])[rng.permutation(len(p) + len(near))]
        gts.append(g)
        proposals.append(p)
    return gts, proposals


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("chunk", [3, 4096])
def test_matches_brute_force(seed: int, chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recall_module, "_CHUNK", chunk)  # 3: many chunks per count
    gts, proposals = random_case(seed)
    counts = (1, 5, 20, 50, None)
    result = proposal_recall(gts, proposals, counts=counts)
    for c, n in enumerate(counts):
        best = [max([brute_iou(q, g) for q in p[:n]], default=0.0)
                for gt, p in zip(gts, proposals) for g in gt]
        np.testing.assert_allclose(result.best_iou[c], best, rtol=1e-12)
        for k, t in enumerate(result.iou_thresholds):
            assert result.recall[c, k] == np.mean([b >= t for b in best])
        assert result.mean_proposals[c] == np.mean([len(p[:n]) for p in proposals])
