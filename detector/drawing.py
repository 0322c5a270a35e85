"""Annotated copies of images: boxes, class names and scores drawn on the pixels (Pillow)."""
from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from eval.outputs import write_atomic

# Colours for the drawn boxes, cycled by label (distinct on photos: saturated, not grey).
PALETTE = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
           (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212))


def draw(image: np.ndarray, classes: Sequence[str], boxes: np.ndarray, scores: np.ndarray,
         labels: np.ndarray, path: str | os.PathLike) -> None:
    """Write ``image`` (RGB uint8 [H, W, 3], the stored pixel grid the boxes refer to) with its
    boxes ``[N, 4]`` xyxy pixels, class names and scores; JPEG for a ``.jpg`` path, else PNG;
    atomically."""
    from PIL import Image, ImageDraw

    path = Path(path)
    canvas = Image.fromarray(image)
    pen = ImageDraw.Draw(canvas)
    width = max(1, round(max(canvas.size) / 300))  # ~2 px lines on a 500 px photo
    # Lowest score first, so the best detection's label is drawn on top.
    for box, score, label in sorted(zip(boxes, scores, labels), key=lambda d: d[1]):
        colour = PALETTE[(label - 1) % len(PALETTE)]
        x1, y1, x2, y2 = (float(v) for v in box)
        pen.rectangle((x1, y1, max(x1, x2), max(y1, y2)), outline=colour, width=width)
        text = f"{classes[label - 1]} {score:.2f}"
        left, top, right, bottom = pen.textbbox((x1, y1), text)
        ty = y1 - (bottom - top) - 2 if y1 - (bottom - top) - 2 >= 0 else y1  # above if room
        pen.rectangle((x1, ty, x1 + right - left + 4, ty + bottom - top + 2), fill=colour)
        pen.text((x1 + 2, ty - (top - y1)), text, fill=(0, 0, 0))
    buffer = io.BytesIO()
    canvas.save(buffer, format="JPEG" if path.suffix == ".jpg" else "PNG", quality=92)
    write_atomic(path, buffer.getvalue())
