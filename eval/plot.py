"""Precision-recall curves of an `EvalResult` as an image (needs matplotlib, the `plot` extra).

The figure answers "how good is the detector, and on which classes does it fail": the title
names the protocol, its IoU threshold and the mAP. Up to `ALL_CLASSES_UP_TO` classes every
class gets its own labelled curve; past that, 70 overlapping lines say nothing, so the plot
shows the mean curve over all classes with the `EXTREMES` best and worst classes by AP, and a
second panel lists every class's AP, best first.

Every curve is drawn as its AP sees it: interpolated (the best precision at any recall at least
as high, as VOC since 2010 and COCO compute AP) at COCO's 101 recall points, 0 past the last
recall reached, so a curve's fall to 0 shows how far its recall goes.
"""
from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np

from eval.errors import DetectionError
from eval.outputs import write_atomic
from eval.results import EvalResult

_MISSING = "--plot needs matplotlib: pip install 'googlenet-detection[plot]'"

ALL_CLASSES_UP_TO = 10  # more curves than the ten colours of matplotlib's cycle cannot be told apart
EXTREMES = 3  # best and worst classes drawn beside the mean past that
TABLE_ROWS = 30  # rows per column of the AP table (more columns, then longer ones, as classes grow)
TABLE_FONT = 8  # points
MONO_EM = 0.61  # width of a monospace glyph in ems (DejaVu Sans Mono: 0.602)
RECALL_GRID = np.linspace(0.0, 1.0, 101)  # COCO's recall points (pycocotools' recThrs)

# What each protocol counts as a hit; COCO's curves are those `eval.evaluate` keeps (IoU 0.5,
# all areas, 100 detections per image), while its headline AP averages IoU 0.5:0.95.
IOU_NAMES = {
    "voc": "PR at IoU 0.5 (VOC, all-point AP)",
    "voc07": "PR at IoU 0.5 (VOC2007, 11-point AP)",
    "ilsvrc": "PR at IoU 0.5, lower for boxes under ~24 px (ILSVRC)",
    "coco": "PR at IoU 0.5 (COCO: all areas, 100 detections per image)",
}


def _pyplot():
    """matplotlib.pyplot on the Agg backend (no display), or the line that says how to get it."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise DetectionError(_MISSING) from None
    return plt


def plot_format(path: str | os.PathLike) -> str:
    """The image format ``path``'s suffix names (no suffix: png), checked before any work:
    matplotlib must be installed and able to write it."""
    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    plt = _pyplot()
    fig = plt.figure()
    try:
        formats = fig.canvas.get_supported_filetypes()
    finally:
        plt.close(fig)
    if fmt not in formats:
        raise DetectionError(f"--plot {path}: matplotlib cannot write .{fmt} images; use one of "
                             f"{', '.join('.' + f for f in sorted(formats))}")
    return fmt


def plot_curves(result: EvalResult, path: str | os.PathLike) -> None:
    """`curves_figure` of ``result`` written atomically to ``path`` in the format of its
    suffix (`plot_format`)."""
    fmt = plot_format(path)
    plt = _pyplot()
    fig = curves_figure(result)
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format=fmt, dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)
    write_atomic(path, buffer.getvalue())


def interpolated(recall: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Precision [101] at each `RECALL_GRID` point r: the highest precision at a recall >= r
    (0 where the recall never reaches r). ``recall`` [D] non-decreasing, ``precision`` [D]."""
    recall, precision = np.asarray(recall, float), np.asarray(precision, float)
    if len(recall) == 0:  # no detection of the class
        return np.zeros_like(RECALL_GRID)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    first = np.searchsorted(recall, RECALL_GRID, side="left")
    return np.where(first < len(recall), envelope[np.minimum(first, len(recall) - 1)], 0.0)


def curve_aps(result: EvalResult, curves: dict[str, np.ndarray]) -> dict[str, float]:
    """The AP each drawn curve stands for: the protocol's per-class AP, except for COCO, whose
    per-class AP averages IoU 0.5:0.95 while its curves are at IoU 0.5: there the area under
    the 101 points, pycocotools' AP50 of the class."""
    if result.protocol == "coco":
        return {name: float(curve.mean()) for name, curve in curves.items()}
    return {name: float(result.per_class[name]) for name in curves}


def curves_figure(result: EvalResult):
    """The matplotlib Figure `plot_curves` writes (the caller closes it): the PR panel, and the
    AP table panel where there are more than `ALL_CLASSES_UP_TO` classes with curves."""
    plt = _pyplot()
    curves = {name: interpolated(r, p) for name, (r, p) in result.curves.items()}
    aps = curve_aps(result, curves)
    ranked = sorted(curves, key=lambda name: -aps[name])  # best first; ties keep class order
    if len(ranked) <= ALL_CLASSES_UP_TO:
        fig, ax = plt.subplots(figsize=(7, 6))
        _draw_curves(ax, result, curves, aps, ranked)
        return fig
    lines = _table_lines(result, aps)
    rows, columns = _table_shape(len(lines) - 1)
    table_width = columns * (len(lines[0]) + 2) * MONO_EM * TABLE_FONT / 72  # inches
    fig, (ax, table) = plt.subplots(1, 2, figsize=(7 + table_width, max(6.0, 0.16 * rows + 1.2)),
                                    gridspec_kw={"width_ratios": [7, table_width]})
    _draw_curves(ax, result, curves, aps, ranked[:EXTREMES] + ranked[-EXTREMES:])
    _draw_table(table, lines, rows, result.protocol == "coco")
    return fig


def _draw_curves(ax, result: EvalResult, curves: dict[str, np.ndarray], aps: dict[str, float],
                 shown: list[str]) -> None:
    """The mean curve over every class (when there are two or more), then ``shown``'s curves
    (best first), each labelled with its AP; the title names the IoU and the mAP."""
    ap_name = "AP50" if result.protocol == "coco" else "AP"
    if len(curves) > 1:
        mean = np.mean(list(curves.values()), axis=0)
        ax.plot(RECALL_GRID, mean, color="black", linewidth=3,
                label=f"mean of {len(curves)} classes")
    partial = len(shown) < len(curves)  # then ``shown`` is the best few, then the worst few
    for k, name in enumerate(shown):
        worst = partial and k >= EXTREMES
        tag = ("worst " if worst else "best ") if partial else ""
        ax.plot(RECALL_GRID, curves[name], linewidth=1.6, linestyle="--" if worst else "-",
                label=f"{tag}{name} ({ap_name} {100 * aps[name]:.1f})")
    if not curves:
        ax.text(0.5, 0.5, "no class has ground truth", ha="center", transform=ax.transAxes)
    ax.set(xlabel="recall", ylabel="precision (interpolated)", xlim=(0, 1), ylim=(0, 1.02),
           title=f"{IOU_NAMES.get(result.protocol, result.protocol)}\n{_headline(result)}")
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=8, loc="best", framealpha=0.9)  # where it hides least


def _headline(result: EvalResult) -> str:
    """The summary under the title: mAP, and for COCO both AP@[.5:.95] and AP50."""
    if result.stats is not None:
        return f"AP@[.5:.95] {100 * result.stats[0]:.2f}, AP50 {100 * result.stats[1]:.2f}"
    return f"mAP {100 * result.mAP:.2f}"


def _table_shape(count: int) -> tuple[int, int]:
    """(rows, columns) of a table of ``count`` classes: `TABLE_ROWS` per column up to three
    columns, longer columns past that so the figure stays about as wide as a screen."""
    columns = min(3, math.ceil(count / TABLE_ROWS))
    return math.ceil(count / columns), columns


def _table_lines(result: EvalResult, aps: dict[str, float]) -> list[str]:
    """A header and one line per class of ``result``: rank, name, AP in percent, best first;
    classes without ground truth last, as n/a. COCO lines give AP50 (the curves') and
    AP@[.5:.95] (the protocol's)."""
    coco = result.protocol == "coco"
    names = sorted(result.per_class, key=lambda n: (n not in aps, -aps.get(n, 0.0)))
    width = max(len(n) for n in names)
    lines = [f"{'':>3} {'class':<{width}} {'AP50':>5} {'AP':>5}" if coco
             else f"{'':>3} {'class':<{width}} {'AP':>5}"]
    for rank, name in enumerate(names, 1):
        if name not in aps:
            lines.append(f"{rank:>3} {name:<{width}} {'n/a':>5}")
        elif coco:
            lines.append(f"{rank:>3} {name:<{width}} {100 * aps[name]:5.1f} "
                         f"{100 * result.per_class[name]:5.1f}")
        else:
            lines.append(f"{rank:>3} {name:<{width}} {100 * aps[name]:5.1f}")
    return lines


def _draw_table(ax, lines: list[str], rows: int, coco: bool) -> None:
    """`_table_lines` (header first) in columns of ``rows`` classes, each under the header."""
    ax.axis("off")
    header, body = lines[0], lines[1:]
    columns = math.ceil(len(body) / rows)
    step = (len(header) + 2) * MONO_EM * TABLE_FONT  # points: a column's longest line + 2
    for c in range(columns):
        ax.annotate("\n".join([header] + body[c * rows:(c + 1) * rows]), xy=(0, 1),
                    xycoords="axes fraction", xytext=(c * step, 0), textcoords="offset points",
                    va="top", ha="left", family="monospace", fontsize=TABLE_FONT)
    note = "\nAP50: at IoU 0.5; AP: mean over IoU 0.5:0.95" if coco else ""
    ax.set_title("AP (%) of every class, best first" + note, fontsize=10, loc="left")
