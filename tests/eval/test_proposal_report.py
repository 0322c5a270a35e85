"""The proposal report (eval.proposal_report): its numbers against recall computed with plain
loops, the JSON's schema and alignment, counts beyond what images have, empty inputs, labels
and the figure."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from eval.datasets.common import _record
from eval.proposal_report import (REPORT_COUNTS, SIZE_RANGES, ProposalRecallAccumulator,
                                  plot_proposal_report, proposal_report, unique_labels)
from eval.recall import AR_IOU_THRESHOLDS, proposal_recall

THRESHOLDS = [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]


def brute_iou(a, b) -> float:
    """Continuous IoU of two xyxy boxes, written out."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih
    return iw * ih / union if union > 0 else 0.0


def record(image_id, boxes, areas=None, crowd=None, size=(400, 300)):
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    n = len(boxes)
    if areas is None:
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return _record(image_id, f"{image_id}.jpg", size[0], size[1], boxes, np.ones(n),
                   np.zeros(n), np.zeros(n) if crowd is None else crowd, areas)


def random_boxes(rng, n, low=4, high=160):
    xy = rng.uniform(0, 200, (n, 2))
    wh = rng.uniform(low, high, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1)


def random_case(seed=0):
    """Six images: gts of every size with some crowd boxes and COCO-like areas (not w * h, so
    that the report must read them), proposals near the gts; one image without gts, one
    without proposals, one failed (None)."""
    rng = np.random.default_rng(seed)
    records, proposals = [], []
    for i, (gts, props) in enumerate([(7, 300), (5, 40), (0, 25), (4, 0), (6, 120), (3, None)]):
        boxes = random_boxes(rng, gts)
        areas = 0.45 * (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        records.append(record(i, boxes, areas, crowd=rng.random(gts) < 0.2))
        if props is None:
            proposals.append(None)
            continue
        near = boxes[rng.integers(0, max(gts, 1), props)] if gts else random_boxes(rng, props)
        proposals.append(near + rng.normal(0, 6, (props, 4)) if props else np.zeros((0, 4)))
        proposals[-1][:, 2:] = np.maximum(proposals[-1][:, 2:], proposals[-1][:, :2])
    return records, proposals


def brute_report(records, proposals, counts):
    """Per count: recall [T] over all gts, AR, AR per size, proposals used per image; with
    plain loops over every gt and proposal."""
    out = []
    for n in counts:
        best, areas, used = [], [], []
        for rec, props in zip(records, proposals):
            props = [] if props is None else list(props)
            top = props if n is None else props[:n]
            used.append(len(top))
            for box, area, crowd in zip(rec.boxes, rec.areas, rec.iscrowd):
                if crowd:
                    continue
                best.append(max([brute_iou(box, p) for p in top], default=0.0))
                areas.append(area)

        def recall(values):
            return [sum(b >= t for b in values) / len(values) if values else math.nan
                    for t in THRESHOLDS]

        by_size = {}
        for name, (low, high) in SIZE_RANGES.items():
            values = [b for b, a in zip(best, areas) if low <= a < high]
            by_size[name] = (float(np.mean(recall(values))), len(values))
        out.append({"recall": recall(best), "AR": float(np.mean(recall(best))),
                    "by_size": by_size, "used": sum(used) / len(used)})
    return out


@pytest.mark.parametrize("counts", [REPORT_COUNTS, (1, 3, 10, None), (None, 2)])
def test_report_matches_brute_force(counts):
    records, proposals = random_case()
    report = proposal_report(records, proposals, counts)
    expected = brute_report(records, proposals, counts)
    assert report.recall.num_gt == sum(int((~r.iscrowd).sum()) for r in records)
    assert 0 < report.recall.recall_at(0.5, None) < 1  # a case that tests something
    for c, want in enumerate(expected):
        np.testing.assert_allclose(report.recall.recall[c], want["recall"], rtol=0, atol=1e-12)
        assert report.recall.average_recall[c] == pytest.approx(want["AR"], abs=1e-12)
        assert report.recall.mean_proposals[c] == pytest.approx(want["used"])
        for name, (ar, num) in want["by_size"].items():
            assert report.by_size[name].num_gt == num
            assert report.by_size[name].average_recall[c] == pytest.approx(ar, abs=1e-12)
    assert all(r.num_gt for r in report.by_size.values())  # every size present
    box_areas = np.concatenate([(r.boxes[:, 2] - r.boxes[:, 0]) * (r.boxes[:, 3] - r.boxes[:, 1])
                                for r in records])
    bins = [np.digitize(a, [32 ** 2, 96 ** 2]) for a in (box_areas, np.concatenate(
        [r.areas for r in records]))]
    assert (bins[0] != bins[1]).any()  # sizes by w * h would differ: the areas are read
    assert sum(r.num_gt for r in report.by_size.values()) == report.recall.num_gt
    assert report.num_images == 6 and report.failed_images == 1
    sizes = [0 if p is None else len(p) for p in proposals]
    assert report.boxes_per_image == pytest.approx(sum(sizes) / 6)


def test_report_equals_proposal_recall_of_the_same_boxes():
    """Streaming image by image gives what the in-memory `proposal_recall` gives."""
    records, proposals = random_case(1)
    proposals = [np.zeros((0, 4)) if p is None else p for p in proposals]
    gts = [r.boxes[~r.iscrowd] for r in records]
    whole = proposal_recall(gts, proposals, REPORT_COUNTS)
    report = proposal_report(records, proposals)
    np.testing.assert_array_equal(report.recall.recall, whole.recall)
    np.testing.assert_array_equal(report.recall.average_recall, whole.average_recall)
    np.testing.assert_array_equal(report.recall.mean_proposals, whole.mean_proposals)


def test_thresholds_and_size_bins_at_their_edges():
    # IoU exactly 0.5 counts at 0.5 (>=); an area of exactly 32² is medium, 96² large
    # (half-open bins), whatever the box's own w * h.
    rec = record("a", [[0, 0, 10, 10], [50, 50, 60, 60], [100, 100, 110, 110]],
                 areas=[32.0 ** 2 - 1e-9, 32.0 ** 2, 96.0 ** 2])
    props = np.array([[0.0, 0, 10, 20], [50, 50, 60, 60]])
    report = proposal_report([rec], [props], counts=(1, None))
    np.testing.assert_array_equal(report.recall.recall[1], [2 / 3] + [1 / 3] * 9)
    np.testing.assert_array_equal(report.recall.recall[0], [1 / 3] + [0] * 9)
    assert {k: r.num_gt for k, r in report.by_size.items()} == {"small": 1, "medium": 1,
                                                                "large": 1}
    assert report.by_size["small"].average_recall[1] == pytest.approx(0.1)
    assert report.by_size["medium"].average_recall[1] == 1.0
    assert report.by_size["large"].average_recall[1] == 0.0


def test_json_schema_and_alignment():
    records, proposals = random_case(2)
    report = proposal_report(records, proposals, counts=(10, 100, None))
    table = json.loads(json.dumps(report.to_json(), allow_nan=False))
    assert table["counts"] == [10, 100, None]
    assert list(table["recall"]) == ["0.5", "0.55", "0.6", "0.65", "0.7", "0.75", "0.8",
                                     "0.85", "0.9", "0.95"]
    assert all(len(v) == 3 for v in table["recall"].values())
    assert len(table["AR"]) == len(table["proposals_per_image"]) == 3
    assert set(table["AR_by_size"]) == set(table["num_gt_by_size"]) == {"small", "medium",
                                                                         "large"}
    assert all(len(v) == 3 for v in table["AR_by_size"].values())
    assert sum(table["num_gt_by_size"].values()) == table["num_gt"] == report.recall.num_gt
    assert table["num_images"] == 6 and table["failed_images"] == 1
    assert table["boxes_per_image"] == pytest.approx(report.boxes_per_image)
    for i, t in enumerate(AR_IOU_THRESHOLDS):
        assert table["recall"][f"{t:g}"] == list(report.recall.recall[:, i])
    # AR is the mean of the ten recall columns.
    for c in range(3):
        mean = np.mean([table["recall"][k][c] for k in table["recall"]])
        assert table["AR"][c] == pytest.approx(mean, abs=1e-12)


def test_counts_above_what_images_have():
    rng = np.random.default_rng(3)
    records = [record(i, random_boxes(rng, 3)) for i in range(3)]
    proposals = [random_boxes(rng, n) for n in (5, 12, 20)]
    report = proposal_report(records, proposals, counts=(10, 1000, None))
    np.testing.assert_array_equal(report.recall.recall[1], report.recall.recall[2])
    np.testing.assert_allclose(report.recall.mean_proposals, [(5 + 10 + 10) / 3, 37 / 3, 37 / 3])
    assert report.boxes_per_image == pytest.approx(37 / 3)


def test_empty_inputs():
    # No image at all: nothing to recall; undefined numbers are null in JSON, the table prints.
    nothing = proposal_report([], [], counts=(10, None))
    table = nothing.to_json()
    assert table["AR"] == [None, None] and table["recall"]["0.5"] == [None, None]
    assert table["num_gt"] == 0 and table["boxes_per_image"] == 0.0
    assert "0 images" in nothing.format("empty")
    # Images without gts or proposals; no small object: AR_by_size small is null.
    records = [record("a", np.zeros((0, 4))), record("b", [[0, 0, 100, 100]])]
    report = proposal_report(records, [np.array([[0.0, 0, 5, 5]]), np.zeros((0, 4))])
    table = json.loads(json.dumps(report.to_json(), allow_nan=False))
    assert table["AR"] == [0.0] * len(REPORT_COUNTS)
    assert table["AR_by_size"]["small"] == [None] * len(REPORT_COUNTS)
    assert table["num_gt_by_size"] == {"small": 0, "medium": 0, "large": 1}
    assert table["boxes_per_image"] == 0.5


def test_accumulator_refuses_misaligned_areas_and_bad_counts():
    from eval.errors import DetectionError

    with pytest.raises(ValueError, match="areas"):
        ProposalRecallAccumulator().add(np.zeros((2, 4)), np.zeros(3), np.zeros((0, 4)))
    with pytest.raises(DetectionError, match="counts"):
        ProposalRecallAccumulator(counts=(10, 10))


def test_unique_labels():
    assert unique_labels(["runs/ss", "runs/mb"]) == ["ss", "mb"]
    assert unique_labels(["a/x/ss", "b/x/ss", "mb"]) == ["a/x/ss", "b/x/ss", "mb"]
    assert unique_labels(["c", "c"]) == ["c", "c #2"]


def test_plot_has_one_line_per_report_in_each_panel(tmp_path):
    pytest.importorskip("matplotlib")
    records, proposals = random_case(4)
    reports = {"runs/a/ss": proposal_report(records, proposals),
               "runs/b/ss": proposal_report(records, proposals[::-1])}
    path = tmp_path / "report.png"
    fig = plot_proposal_report(reports, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(fig.axes) == 6
    for ax in fig.axes:
        assert len(ax.lines) == 2
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["a/ss", "b/ss"]
    assert fig.axes[0].get_xscale() == "log"
    # Counts that a report lacks: their recall-versus-IoU panels are left out.
    only = {"x": proposal_report(records, proposals, counts=(10, 100))}
    fig = plot_proposal_report(only, tmp_path / "r.svg")
    assert sum(1 for ax in fig.axes if ax.lines) == 4
    assert (tmp_path / "r.svg").read_text().lstrip().startswith("<?xml")
