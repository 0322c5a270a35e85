"""The error report's thumbnails: the highest-scoring false positives of each kind and the
largest missed objects of each class, cropped from their images with the boxes drawn.

A thumbnail is the region around its boxes (the detection, the object that decided its kind)
with a margin, scaled so that its longer side is `THUMB_SIZE` pixels (enlarged at most
`MAX_ZOOM` times: a 10-pixel object stays visible without turning into blur), as a JPEG file.
Images are read through `eval.datasets.read_image` (stored pixel grid, as the boxes), each once;
an image that cannot be read leaves its thumbnails out, with the reason, rather than the whole
report. Pillow and NumPy only.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eval.analysis import BACKGROUND, CONFUSION, KINDS, SIZE_BOUNDS, SIZES, Analysis, ClassErrors
from eval.datasets import read_image
from eval.errors import DetectionError
from eval.outputs import write_atomic

THUMB_SIZE = 200
MAX_ZOOM = 4.0
PER_SECTION = 6  # thumbnails per kind (and of missed objects) per class
FOLDER = "thumbs"
# Box colours: the detection, an object of its class, an object of another class.
DETECTION, OWN_OBJECT, OTHER_OBJECT = (230, 25, 75), (0, 190, 60), (255, 170, 0)


@dataclass(frozen=True)
class Thumb:
    """One thumbnail to draw: of class ``label``, in ``section`` (a kind or "missed"), saved
    as ``file`` (relative to the report), from image ``image`` (dataset index) with the boxes
    ``detection`` and ``object`` (continuous xyxy or None) and ``caption`` lines (plain text,
    escaped by the page)."""

    label: int
    section: str
    file: str
    image: int
    detection: tuple | None
    object: tuple | None
    other_class: bool
    caption: tuple[str, ...]


def choose(analysis: Analysis, per_section: int = PER_SECTION) -> list[Thumb]:
    """The thumbnails of every class: per kind its ``per_section`` highest-ranked false
    positives, and its ``per_section`` largest missed objects."""
    thumbs = []
    for errors in analysis.classes:
        for k, kind in enumerate(KINDS):
            ranked = np.flatnonzero(errors.kind == k)[:per_section]
            thumbs += [_false_positive(analysis, errors, i, n) for n, i in enumerate(ranked)]
        thumbs += [_missed(analysis, errors, n) for n in range(min(per_section,
                                                                   len(errors.missed_gt)))]
    return thumbs


def _false_positive(analysis: Analysis, errors: ClassErrors, i: int, n: int) -> Thumb:
    """The thumbnail of the ``i``-th ranked detection of ``errors``, ``n``-th of its kind."""
    dets, gt, kind = analysis.detections, analysis.gt, int(errors.kind[i])
    row, partner = errors.rows[i], errors.partner[i]
    lines = [f"score {dets.scores[row]:.3f} · {KINDS[kind]}",
             f"IoU {iou_text(errors.iou[i])}" + (" with any object" if kind == BACKGROUND else "")]
    other = kind == CONFUSION
    if other:
        lines[-1] += f" with a {analysis.dataset.classes[gt.labels[partner] - 1]}"
    return Thumb(errors.label, KINDS[kind], _file_name(errors.label, KINDS[kind], n),
                 int(dets.image_index[row]), tuple(dets.boxes[row]),
                 None if partner < 0 else tuple(gt.boxes[partner]), other,
                 (*lines, _image_name(analysis, int(dets.image_index[row]))))


def _missed(analysis: Analysis, errors: ClassErrors, n: int) -> Thumb:
    """The thumbnail of the ``n``-th largest missed object of ``errors``."""
    gt, dets = analysis.gt, analysis.detections
    obj, det = errors.missed_gt[n], errors.missed_det[n]
    size = SIZES[int(np.searchsorted(SIZE_BOUNDS, gt.areas[obj], side="right"))]
    nearest = "no detection of its class overlaps it"
    if det >= 0:
        nearest = (f"best detection: IoU {iou_text(errors.missed_iou[n])}, "
                   f"score {dets.scores[det]:.3f}, {_fate(errors, det)}")
    return Thumb(errors.label, "missed", _file_name(errors.label, "missed", n), int(gt.image[obj]),
                 None if det < 0 else tuple(dets.boxes[det]), tuple(gt.boxes[obj]), False,
                 (f"missed · {size} ({gt.areas[obj]:,.0f} px²)", nearest,
                  _image_name(analysis, int(gt.image[obj]))))


def iou_text(iou: float) -> str:
    """An IoU to two decimals, rounded down: 0.4996 reads 0.49, not 0.50, beside a 0.5 rule."""
    return f"{math.floor(iou * 100 + 1e-9) / 100:.2f}"


def _fate(errors: ClassErrors, det: int) -> str:
    """What became of detection row ``det`` of the class: why it did not take the object."""
    i = int(np.flatnonzero(errors.rows == det)[0])
    if errors.tp[i]:
        return "which took another object"
    if errors.kind[i] >= 0:
        return f"a {KINDS[errors.kind[i]]} false positive"
    return "ignored (on a difficult or crowd object)"


def _file_name(label: int, section: str, n: int) -> str:
    """Thumbnail names from numbers and fixed words only: class names may hold anything."""
    return f"{FOLDER}/{label:04d}-{section}-{n}.jpg"


def _image_name(analysis: Analysis, image: int) -> str:
    return Path(analysis.dataset.images[image].file_name).name


def draw_all(analysis: Analysis, thumbs: list[Thumb], out_dir: Path) -> dict[str, str]:
    """Draw and write every thumbnail under ``out_dir`` (`eval.outputs.write_atomic`), each
    image read once. Returns ``{file: why}`` for those left out (an image that cannot be read)."""
    by_image: dict[int, list[Thumb]] = {}
    for thumb in thumbs:
        by_image.setdefault(thumb.image, []).append(thumb)
    failed = {}
    for image, group in by_image.items():
        path = analysis.dataset.images[image].file_name
        try:
            pixels = read_image(path)
        except DetectionError as e:
            failed.update({t.file: str(e) for t in group})
            continue
        for thumb in group:
            write_atomic(out_dir / thumb.file, render(pixels, thumb))
    return failed


def render(pixels: np.ndarray, thumb: Thumb) -> bytes:
    """The JPEG bytes of ``thumb`` cut from ``pixels`` (RGB uint8 [H, W, 3])."""
    from PIL import Image, ImageDraw

    boxes = [b for b in (thumb.object, thumb.detection) if b is not None]
    x1, y1, x2, y2 = crop_region(np.array(boxes, np.float64), pixels.shape[1], pixels.shape[0])
    scale = min(THUMB_SIZE / max(x2 - x1, y2 - y1), MAX_ZOOM)
    size = (max(1, round((x2 - x1) * scale)), max(1, round((y2 - y1) * scale)))
    canvas = Image.fromarray(pixels[y1:y2, x1:x2]).resize(size, Image.Resampling.BILINEAR)
    pen = ImageDraw.Draw(canvas)
    colours = [OTHER_OBJECT if thumb.other_class else OWN_OBJECT] if thumb.object else []
    colours += [DETECTION] if thumb.detection else []
    for box, colour in zip(boxes, colours):
        corners = (np.array(box) - [x1, y1, x1, y1]) * scale
        left, top, right, bottom = corners.tolist()
        pen.rectangle((left, top, max(left, right), max(top, bottom)), outline=colour, width=2)
    buffer = io.BytesIO()
    canvas.save(buffer, format="JPEG", quality=88)
    return buffer.getvalue()


def crop_region(boxes: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    """Integer pixel region (x1, y1, x2, y2) around ``boxes`` [N, 4] with a margin of a
    quarter of their extent plus 8 pixels, inside the image; the whole image where the
    boxes lie outside it."""
    lo, hi = boxes[:, :2].min(axis=0), boxes[:, 2:].max(axis=0)
    margin = 0.25 * (hi - lo).max() + 8
    x1, y1 = np.floor(np.maximum(lo - margin, 0)).astype(int)
    x2, y2 = np.ceil(np.minimum(hi + margin, [width, height])).astype(int)
    if x2 - x1 < 1 or y2 - y1 < 1:
        return 0, 0, width, height
    return int(x1), int(y1), int(x2), int(y2)
