"""The proposal report of Hosang et al. ("What makes for effective detection proposals?", PAMI
2016): recall at IoU 0.5 and 0.7 and average recall (AR: mean recall over IoU 0.5:0.05:0.95)
versus the number of proposals per image, AR by object size, and boxes per image; as a text
table, JSON, and a figure that compares methods.

Streaming: `ProposalRecallAccumulator` takes one image at a time and keeps only each gt's best
IoU per count (float64 [C] per gt box), so a cache of 118k images is never held in memory.

Object size as COCO names it, by ``ImageRecord.areas``: COCO's annotation ``area`` (the
segment's area, what COCOeval uses; w * h where the file has none), the box's w * h for VOC and
ILSVRC. small: area < 32², medium: 32² <= area < 96², large: area >= 96². The bins are
half-open so that each gt is in exactly one (COCOeval's closed ranges put an area of exactly 32²
or 96² in two). Crowd boxes are left out, as everywhere in proposal recall.

NumPy only; matplotlib only inside `plot_proposal_report`.
"""
from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eval.boxes import as_boxes
from eval.datasets import ImageRecord
from eval.outputs import write_atomic
from eval.recall import (AR_IOU_THRESHOLDS, RecallResult, check_counts, prefix_best_iou,
                         recall_result)

# Hosang et al.'s x axis, 10 to 2000 proposals per image, and every proposal (None).
REPORT_COUNTS: tuple[int | None, ...] = (10, 20, 50, 100, 200, 500, 1000, 2000, None)
# COCO's object sizes (pixels², lower bound inclusive, upper exclusive).
SIZE_RANGES: dict[str, tuple[float, float]] = {
    "small": (0.0, 32.0 ** 2), "medium": (32.0 ** 2, 96.0 ** 2), "large": (96.0 ** 2, math.inf)}
# The counts whose recall-versus-IoU curves the figure draws (those the report has).
PLOT_COUNTS: tuple[int | None, ...] = (100, 1000, None)


@dataclass(frozen=True, eq=False)
class ProposalReport:
    """One proposal method on one dataset.

    ``recall``: over every (non-crowd) gt box, rows ``recall.counts``, columns IoU 0.5:0.05:0.95.
    ``by_size``: the same over the small, medium and large gts alone. ``num_images`` includes
    the ``failed_images`` (no proposals: their gts count as missed). ``boxes_per_image``: every
    proposal of the images, averaged over them.
    """

    recall: RecallResult
    by_size: dict[str, RecallResult]
    num_images: int
    failed_images: int
    boxes_per_image: float

    @property
    def counts(self) -> tuple[int | None, ...]:
        return self.recall.counts

    def format(self, name: str) -> str:
        """A text table titled ``name``: a row per count; proposals per image used, recall at
        IoU 0.5 and 0.7, AR, and AR of the small, medium and large gts."""
        sizes = ", ".join(f"{s} {r.num_gt}" for s, r in self.by_size.items())
        title = (f"{name}: {self.num_images} images ({self.failed_images} failed), "
                 f"{self.recall.num_gt} gt boxes ({sizes}), "
                 f"{self.boxes_per_image:.1f} boxes per image")
        head = ["proposals", "per image", "R@0.5", "R@0.7", "AR", "AR_small", "AR_medium",
                "AR_large"]
        rows = [head]
        for c, count in enumerate(self.counts):
            values = [self.recall.recall_at(0.5, count), self.recall.recall_at(0.7, count),
                      self.recall.average_recall[c],
                      *(r.average_recall[c] for r in self.by_size.values())]
            rows.append(["all" if count is None else str(count),
                         f"{self.recall.mean_proposals[c]:.1f}", *(f"{v:.4f}" for v in values)])
        widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
        lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in rows]
        return "\n".join([title, *lines])

    def to_json(self) -> dict:
        """JSON-ready: ``counts`` (null: every proposal), ``recall`` {"0.5": [...], ...,
        "0.95": [...]}, ``AR`` and ``AR_by_size`` {small, medium, large} lists aligned with
        ``counts``, ``num_gt_by_size``, ``proposals_per_image`` (used, aligned with
        ``counts``), ``boxes_per_image``. A value that is undefined (no gt) is null."""
        r = self.recall
        return {
            "counts": list(r.counts),
            "recall": {f"{t:g}": _floats(r.recall[:, i]) for i, t in enumerate(r.iou_thresholds)},
            "AR": _floats(r.average_recall),
            "AR_by_size": {s: _floats(x.average_recall) for s, x in self.by_size.items()},
            "num_gt": r.num_gt,
            "num_gt_by_size": {s: x.num_gt for s, x in self.by_size.items()},
            "proposals_per_image": _floats(r.mean_proposals),
            "num_images": self.num_images,
            "failed_images": self.failed_images,
            "boxes_per_image": _floats([self.boxes_per_image])[0],
        }


class ProposalRecallAccumulator:
    """Builds a `ProposalReport` image by image (``add``), then ``report()``.

    Keeps each gt's best IoU among the top N proposals for each N of ``counts``, its area, and
    running sums of proposals: never the proposals themselves.
    """

    def __init__(self, counts: Sequence[int | None] = REPORT_COUNTS):
        self.counts = check_counts(counts)
        self._best: list[np.ndarray] = []  # float64 [C, G_i] per image
        self._areas: list[np.ndarray] = []  # float64 [G_i]
        self._used = np.zeros(len(self.counts))  # proposals used, summed over images
        self._boxes = 0
        self._images = 0
        self._failed = 0

    def add(self, gt_boxes: np.ndarray, gt_areas: np.ndarray, proposals: np.ndarray) -> None:
        """One image: its gts [G, 4] xyxy with their areas [G] (see the module docstring), and
        its proposals [P, 4] xyxy, ranked best first."""
        gt = as_boxes(gt_boxes, "gt boxes")
        areas = np.asarray(gt_areas, np.float64).reshape(-1)
        if len(areas) != len(gt):
            raise ValueError(f"{len(gt)} gt boxes but {len(areas)} areas")
        proposals = as_boxes(proposals, "proposals")
        self._best.append(prefix_best_iou(gt, proposals, self.counts))
        self._areas.append(areas)
        self._used += [len(proposals) if n is None else min(n, len(proposals))
                       for n in self.counts]
        self._boxes += len(proposals)
        self._images += 1

    def add_failed(self, gt_boxes: np.ndarray, gt_areas: np.ndarray) -> None:
        """An image without proposals (its computation failed): its gts count as missed."""
        self.add(gt_boxes, gt_areas, np.zeros((0, 4), np.float32))
        self._failed += 1

    def add_record(self, record: ImageRecord, proposals: np.ndarray | None) -> None:
        """``record``'s non-crowd gts against ``proposals`` (None: the image failed)."""
        boxes, areas = non_crowd(record)
        if proposals is None:
            self.add_failed(boxes, areas)
        else:
            self.add(boxes, areas, proposals)

    def report(self) -> ProposalReport:
        """The report of the images added so far."""
        best = np.concatenate([np.zeros((len(self.counts), 0)), *self._best], axis=1)
        areas = np.concatenate([np.zeros(0), *self._areas])
        images = max(self._images, 1)  # no image: nothing used, 0 per image
        mean_used = self._used / images
        by_size = {name: recall_result(best[:, (areas >= low) & (areas < high)], self.counts,
                                       mean_used)
                   for name, (low, high) in SIZE_RANGES.items()}
        return ProposalReport(recall_result(best, self.counts, mean_used), by_size,
                              self._images, self._failed, self._boxes / images)


def non_crowd(record: ImageRecord) -> tuple[np.ndarray, np.ndarray]:
    """(boxes [G, 4], areas [G]) of ``record``'s gts that are not crowd boxes: a crowd box
    stands for many objects at once, and no proposal is meant to cover it."""
    keep = ~np.asarray(record.iscrowd, bool).reshape(-1)
    return (np.asarray(record.boxes, np.float64).reshape(-1, 4)[keep],
            np.asarray(record.areas, np.float64).reshape(-1)[keep])


def proposal_report(records: Sequence[ImageRecord], proposals: Sequence[np.ndarray | None],
                    counts: Sequence[int | None] = REPORT_COUNTS) -> ProposalReport:
    """The report of in-memory proposals: ``proposals[i]`` [P, 4] ranked boxes of
    ``records[i]`` (None: the image failed)."""
    if len(records) != len(proposals):
        raise ValueError(f"{len(proposals)} proposal lists for {len(records)} images")
    accumulator = ProposalRecallAccumulator(counts)
    for record, boxes in zip(records, proposals):
        accumulator.add_record(record, boxes)
    return accumulator.report()


def unique_labels(paths: Sequence[str | os.PathLike]) -> list[str]:
    """A short label per path, for a figure: its last folder name, with as many parent folders
    as it takes to tell it from the others' ("a/ss", "b/ss"); the same path twice gets " #2"."""
    parts = [Path(os.path.abspath(p)).parts for p in paths]
    depth = [1] * len(parts)
    while True:
        labels = [str(Path(*p[-d:])) for p, d in zip(parts, depth)]
        # Grow the labels that clash with another path's (the same path always would).
        clash = [i for i, label in enumerate(labels) if depth[i] < len(parts[i]) and any(
            labels[j] == label and parts[j] != parts[i] for j in range(len(parts)))]
        if not clash:
            break
        for i in clash:
            depth[i] += 1
    return [label if label not in labels[:i] else f"{label} #{labels[:i].count(label) + 1}"
            for i, label in enumerate(labels)]


def plot_proposal_report(reports: Mapping[str, ProposalReport], path: str | os.PathLike,
                         at: Sequence[int | None] = PLOT_COUNTS):
    """Draw the reports (cache path -> report) in one figure and write it atomically to
    ``path`` in its suffix's format; returns the matplotlib Figure.

    Top row: recall at IoU 0.5, recall at 0.7 and AR versus proposals per image (log x; each
    point at the mean number of proposals its count used). Bottom row: recall versus IoU at
    each count of ``at`` that the reports have. One line per report in every panel, labelled by
    `unique_labels` of the paths.
    """
    from matplotlib.figure import Figure  # no pyplot: no global state, no display

    from eval.plot import plot_format

    fmt = plot_format(path)
    labels = unique_labels(list(reports))
    at = [n for n in at if all(n in r.counts for r in reports.values())]
    fig = Figure(figsize=(13, 8.5), layout="constrained")
    axes = fig.subplots(2, 3, squeeze=False)
    for ax, what in zip(axes[0], ("R@0.5", "R@0.7", "AR")):
        _draw_versus_count(ax, reports, labels, what)
    for ax, count in zip(axes[1], at):
        _draw_versus_iou(ax, reports, labels, count)
    for ax in axes[1][len(at):]:
        ax.set_axis_off()
    axes[0][0].legend(fontsize=8, loc="best")
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=110)
    write_atomic(path, buffer.getvalue())
    return fig


def _draw_versus_count(ax, reports: Mapping[str, ProposalReport], labels: list[str],
                       what: str) -> None:
    """``what`` (R@0.5, R@0.7 or AR) versus proposals per image, one line per report."""
    for label, report in zip(labels, reports.values()):
        r = report.recall
        y = (r.average_recall if what == "AR"
             else [r.recall_at(float(what[2:]), n) for n in r.counts])
        ax.plot(r.mean_proposals, y, marker=".", label=label)
    ax.set(xscale="log", ylim=(0, 1), xlabel="proposals per image",
           ylabel="average recall" if what == "AR" else f"recall at IoU {what[2:]}", title=what)
    ax.grid(True, which="both", alpha=0.3)


def _draw_versus_iou(ax, reports: Mapping[str, ProposalReport], labels: list[str],
                     count: int | None) -> None:
    """Recall versus IoU threshold with the top ``count`` proposals; AR in the legend."""
    for label, report in zip(labels, reports.values()):
        r = report.recall
        c = r.counts.index(count)
        ax.plot(r.iou_thresholds, r.recall[c], marker=".",
                label=f"{label} (AR {r.average_recall[c]:.3f})")
    ax.set(xlim=(0.5, 1), ylim=(0, 1), xlabel="IoU", ylabel="recall",
           title=f"{'all' if count is None else count} proposals")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")


def _floats(values) -> list[float | None]:
    """Plain floats for JSON; NaN (undefined: no gt) as None, since JSON has no NaN."""
    return [None if math.isnan(v) else float(v) for v in np.asarray(values, np.float64)]
