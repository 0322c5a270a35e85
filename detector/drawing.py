"""Annotated copies of images: boxes, class names and scores drawn on the pixels (Pillow).

What makes a picture with twenty boxes readable at a glance:
- every outline is drawn first, worst score to best, so the best box lies on top where boxes
  cross; then every label, in the same order, so no outline ever cuts through a label;
- label text and line width scale with the photo (`label_size`), in a TrueType font;
- each label is white or black text, whichever contrasts more with its tab (`text_colour`);
- one colour per class from 80 colours picked far apart in CIELAB (`class_colour`);
- a label stays whole inside the image and, where it can, clear of better labels: above its
  box where there is room, else inside it, at its top or bottom (`tab_candidates`,
  `place_tabs`).
"""
from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eval.outputs import write_atomic

# 80 colours (COCO's class count) chosen greedily, each the sRGB colour farthest in CIELAB from
# those before it, among colours with chroma > 30 and 35 < L* < 88 (no greys, nothing so dark or
# pale that it vanishes on a photo). The first 20 are >= 38 apart (CIE76), all 80 >= 19; tests
# hold both. A fixed list, so a class keeps its colour across runs and library versions.
PALETTE_HEX = (
    "5500ff 00ff00 ff1100 00ccff 666600 ee66bb 33eeaa 0077ff eedd00 ff9977 "
    "ff22ff 007766 335588 229900 dddd99 aa0033 ccbbff ff9900 7722bb 884466 "
    "884411 aaee44 88eedd cc88ff 22ee66 ff0077 66aa66 3399ee 774499 ccaa33 "
    "ffaacc bb3300 ff00bb 006611 aa8855 ff0044 aa1199 99bb44 ff6677 aa1166 "
    "3355ff 2288aa bb6666 aa33ff 99ee88 ff6600 00bb99 cc7722 9977aa cc55ee "
    "446633 4444bb ffaaff 44cc00 8888ee eebb77 44aaaa 99ccff cc5544 00eeff "
    "dddd55 00bb55 3355aa ff6644 aaddaa 558811 ee7799 665522 aaaa55 aa5599 "
    "eebb00 9966ff dd0088 997700 dd11cc 9944bb ff77ee dd9988 6688bb 008855"
).split()
PALETTE = tuple(tuple(int(h[i:i + 2], 16) for i in (0, 2, 4)) for h in PALETTE_HEX)

# Label text is ~1/45 of the shorter side: a photo fitted to a screen (700-900 px) then shows it
# at 15-20 px, the size of ordinary UI text, whether the file is 500 or 4000 px. Never under
# 12 px: smaller glyphs blur into their 1 px strokes when the image is viewed at its own size.
TEXT_FRACTION, MIN_TEXT_PX = 0.022, 12


def class_colour(label: int) -> tuple[int, int, int]:
    """RGB colour of class ``label`` (1..K, DESIGN's convention); the palette repeats past 80."""
    return PALETTE[(int(label) - 1) % len(PALETTE)]


def text_colour(fill: tuple[int, int, int]) -> tuple[int, int, int]:
    """White or black, whichever contrasts more with ``fill`` by WCAG 2's ratio
    (L1 + 0.05) / (L2 + 0.05) on relative luminance; the better one is always >= 4.58:1."""
    linear = [c / 255 / 12.92 if c <= 10 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in fill]
    luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    on_white, on_black = 1.05 / (luminance + 0.05), (luminance + 0.05) / 0.05
    return (255, 255, 255) if on_white >= on_black else (0, 0, 0)


def label_size(width: int, height: int) -> tuple[int, int]:
    """(text size, line width) in pixels for a ``width`` x ``height`` image: text by
    `TEXT_FRACTION`; lines about as thick as a bold stroke of that text, at least 2 px."""
    text = max(MIN_TEXT_PX, round(TEXT_FRACTION * min(width, height)))
    return text, max(2, round(text / 7))


def label_font(size: int):
    """A scalable font of ``size`` px: Pillow's own (embedded, Pillow >= 10.1), else DejaVu Sans
    where the system has it, else Pillow's fixed bitmap font (small, but the label is drawn)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: load_default takes no size
        pass
    try:
        return ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError:
        return ImageFont.load_default()


def tab_candidates(box: Sequence[float], tab: tuple[int, int], image: tuple[int, int]
                   ) -> list[tuple[int, int]]:
    """Top-left corners where a ``tab`` (width, height) may label ``box`` (xyxy pixels) in an
    ``image`` (width, height), best first: on the top edge (outside the box where there is
    room above it, then inside), then on the bottom edge (inside, then outside where there is
    room below); each left- then right-aligned with the box. Each is moved as little as needed
    to keep the tab whole in the image (a tab wider than the image starts at its left edge)."""
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    (w, h), (width, height) = tab, image
    above = y1 - h if y1 >= h else y1
    below = y2 if y2 + h <= height else y2 - h
    corners = [(x, y) for y in (above, y1, y2 - h, below) for x in (x1, x2 - w)]
    return [(max(0, round(min(max(0, x), width - w))), max(0, round(min(max(0, y), height - h))))
            for x, y in corners]


def place_tabs(boxes: np.ndarray, tabs: list[tuple[int, int]], scores: np.ndarray,
               image: tuple[int, int]) -> list[tuple[int, int]]:
    """Top-left corner of each box's tab: best score first, each takes the first of its
    `tab_candidates` that overlaps no tab placed before it (else the one overlapping least), so
    that with twenty boxes the labels still mostly stand apart."""
    corners: list[tuple[int, int]] = [(0, 0)] * len(tabs)
    taken: list[tuple[int, int, int, int]] = []
    for i in np.argsort(-np.asarray(scores), kind="stable"):
        (w, h), options = tabs[i], tab_candidates(boxes[i], tabs[i], image)
        corners[i] = min(options, key=lambda c: sum(_overlap((*c, c[0] + w, c[1] + h), t)
                                                    for t in taken))
        taken.append((*corners[i], corners[i][0] + w, corners[i][1] + h))
    return corners


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> int:
    """Area shared by two xyxy rectangles."""
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


@dataclass(frozen=True)
class Label:
    """One box's label as drawn: ``text`` written at ``origin`` (Pillow's default anchor, the
    left of the ascender line) on a ``colour`` tab filling the pixels x1 <= x < x2,
    y1 <= y < y2 of ``tab``."""

    text: str
    colour: tuple[int, int, int]
    tab: tuple[int, int, int, int]
    origin: tuple[int, int]


def layout_labels(font, pad: int, classes: Sequence[str], boxes: np.ndarray, scores: np.ndarray,
                  labels: np.ndarray, image: tuple[int, int]) -> list[Label]:
    """The `Label` of each box ("<class> <score to 2 places>" in ``font``, ``pad`` px of tab
    around the ink), placed by `place_tabs` in an ``image`` of (width, height)."""
    texts = [f"{classes[label - 1]} {score:.2f}" for label, score in zip(labels, scores)]
    inks = [_ink_box(font, text) for text in texts]
    tabs = [(right - left + 2 * pad, bottom - top + 2 * pad) for left, top, right, bottom in inks]
    corners = place_tabs(boxes, tabs, scores, image)
    return [Label(text, class_colour(label), (x, y, x + w, y + h),
                  (x + pad - ink[0], y + pad - ink[1]))
            for text, label, ink, (w, h), (x, y) in zip(texts, labels, inks, tabs, corners)]


def _ink_box(font, text: str) -> tuple[int, int, int, int]:
    """Where ``text`` drawn at (0, 0) puts ink; as tall as "Ag" at least, so tabs are one
    height whether or not a label has capitals or descenders."""
    left, top, right, bottom = font.getbbox(text)
    _, ag_top, _, ag_bottom = font.getbbox("Ag")
    return left, min(top, ag_top), right, max(bottom, ag_bottom)


def annotate(image: np.ndarray, classes: Sequence[str], boxes: np.ndarray, scores: np.ndarray,
             labels: np.ndarray):
    """A PIL image of ``image`` (RGB uint8 [H, W, 3]) with its ``boxes`` ([N, 4] xyxy pixels of
    that grid), class labels (1..K, names in ``classes``) and ``scores`` drawn on it."""
    from PIL import Image, ImageDraw

    canvas = Image.fromarray(image).convert("RGB")
    pen = ImageDraw.Draw(canvas)
    size, line = label_size(*canvas.size)
    font = label_font(size)
    marks = layout_labels(font, max(2, round(size / 5)), classes, boxes, scores, labels,
                          canvas.size)
    order = np.argsort(np.asarray(scores), kind="stable")  # worst first: the best ends on top
    for i in order:
        x1, y1, x2, y2 = (float(v) for v in boxes[i])
        pen.rectangle((x1, y1, max(x1, x2), max(y1, y2)), outline=class_colour(labels[i]),
                      width=line)
    for mark in (marks[i] for i in order):  # after every outline: none crosses a label
        x1, y1, x2, y2 = mark.tab
        pen.rectangle((x1, y1, x2 - 1, y2 - 1), fill=mark.colour)
        pen.text(mark.origin, mark.text, fill=text_colour(mark.colour), font=font)
    return canvas


def draw(image: np.ndarray, classes: Sequence[str], boxes: np.ndarray, scores: np.ndarray,
         labels: np.ndarray, path: str | os.PathLike) -> None:
    """Write `annotate`'s picture of ``image`` and its detections to ``path``: JPEG for a
    ``.jpg`` path, else PNG; atomically."""
    path = Path(path)
    buffer = io.BytesIO()
    annotate(image, classes, boxes, scores, labels).save(
        buffer, format="JPEG" if path.suffix == ".jpg" else "PNG", quality=92)
    write_atomic(path, buffer.getvalue())
