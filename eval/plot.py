"""Precision-recall curves of an `EvalResult` as an image (needs matplotlib, the `plot` extra)."""
from __future__ import annotations

import io
import os
from pathlib import Path

from eval.errors import DetectionError
from eval.outputs import write_atomic
from eval.results import EvalResult

_MISSING = "--plot needs matplotlib: pip install 'googlenet-detection[plot]'"


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
    """Precision-recall curve of every class with an AP, written atomically to ``path`` in the
    format of its suffix (`plot_format`); COCO curves are at IoU 0.5, all areas, 100 dets."""
    fmt = plot_format(path)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 6))
    for name, (recall, precision) in result.curves.items():
        ax.plot(recall, precision, label=f"{name} ({100 * result.per_class[name]:.1f})")
    title = "IoU 0.5" if result.protocol == "coco" else result.protocol
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
           title=f"{result.protocol} mAP {100 * result.mAP:.2f} — curves at {title}")
    if len(result.curves) <= 25:
        ax.legend(fontsize=7, loc="lower left")
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=120)
    plt.close(fig)
    write_atomic(path, buffer.getvalue())
