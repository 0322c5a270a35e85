"""What every dataset reader shares: `ImageRecord`, `Dataset`, class lists, split files, the
tally of ground-truth oddities, and the real image size where an image is read. NumPy only (the
evaluation path must not need torch)."""
from __future__ import annotations

import csv
import io
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from eval.errors import DetectionError
from eval.inputs import read_text, shown

PathLike = str | os.PathLike


@dataclass(frozen=True, eq=False)
class ImageRecord:
    """One image and its ground truth.

    ``boxes`` float32 [N, 4] xyxy in the image's pixels (continuous: width = x2 - x1), as
    annotated: never clipped to the image, as the devkits never clip ground truth; x1 <= x2 and
    y1 <= y2, equal only for COCO's zero-size bboxes, which pycocotools keeps (a trainer skips
    them). ``labels`` int64 [N] in 1..K; ``difficult`` bool [N] (PASCAL VOC: neither true nor
    false positive); ``iscrowd`` bool [N] (COCO: ignored); ``areas`` float64 [N], COCO's
    annotation ``area`` (the segment's area) or the box area for other formats. ``width``,
    ``height``: the image's size as the annotation gives it (from the image header where the
    annotation has none); no evaluation protocol uses it, and code that decodes the image puts
    the real size in with `with_image_sizes`.
    """

    image_id: int | str
    file_name: str
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray
    iscrowd: np.ndarray
    areas: np.ndarray


@dataclass(frozen=True, eq=False)
class Dataset:
    """An ordered class list and its images.

    ``classes[i - 1]`` is the name of label ``i``; ``category_ids[i - 1]`` is the dataset's own
    id for it (COCO category ids; ``1..K`` for VOC and ILSVRC folders). ``blacklist`` holds
    ``(image index, label)`` pairs that the ILSVRC protocol skips. ``source`` is the path read.
    """

    classes: tuple[str, ...]
    images: tuple[ImageRecord, ...]
    category_ids: tuple[int, ...]
    source: str = ""
    blacklist: frozenset[tuple[int, int]] = field(default_factory=frozenset)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "es" if noun.endswith("x") else "s")


@dataclass
class _Tally:
    """The oddities of one load's ground truth, reported as a single warning at its end.

    Ground truth is kept as annotated, whatever the oddity: the devkits (VOCevaldet.m, ILSVRC's
    eval_detection.m, pycocotools' COCOeval) never clip a ground-truth box to its image nor drop
    a zero-size one, so clipping would change the numbers (a detection identical to a box that
    reaches past the image would no longer match it).
    """

    outside: int = 0
    empty: int = 0

    def check(self, boxes: np.ndarray, sizes: np.ndarray, slack: float = 0.0) -> np.ndarray:
        """Float32 copies of float64 xyxy ``boxes`` [N, 4]; counts those that reach past their
        image's ``sizes`` [N or 1, 2] (width, height) by more than ``slack`` pixels (a format's
        rounding: YOLO's fractions) and those of zero width or height."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        limit = np.tile(np.asarray(sizes, np.float64).reshape(-1, 2), 2)
        out = boxes.astype(np.float32)
        # Judged in float32, the boxes as stored: a sliver that rounds to zero width is empty.
        empty = (out[:, 2] <= out[:, 0]) | (out[:, 3] <= out[:, 1])
        past = (boxes < -slack) | (boxes > limit + slack)
        self.outside += int(np.sum(past.any(axis=1)))
        self.empty += int(np.sum(empty))
        return out

    def warn(self, source: str, sizes_from: str) -> None:
        """One warning for the load of ``source`` (nothing when all is well); ``sizes_from``
        says where the image sizes came from."""
        parts = []
        if self.outside:
            verb = "reaches" if self.outside == 1 else "reach"
            parts.append(f"{_plural(self.outside, 'ground-truth box')} {verb} past the image "
                         f"(kept as annotated, as the devkits keep them; the image sizes are "
                         f"{sizes_from})")
        if self.empty:
            parts.append(f"{_plural(self.empty, 'zero-size box')} kept as annotated (no "
                         "detection can match one, as in the devkits)")
        if parts:
            warnings.warn(f"{source}: {'; '.join(parts)}", stacklevel=3)


def with_image_sizes(records: Sequence[ImageRecord], sizes: Sequence[tuple[int, int]]
                     ) -> list[ImageRecord]:
    """``records`` with the (width, height) of each decoded image, for code that reads the
    images (training, detection): the image's real size wins over the annotation's (a VOC
    ``<size>`` or COCO ``width``/``height`` that disagrees), and the mismatches are one warning
    naming the first image with both sizes and how many more there are.
    """
    if len(records) != len(sizes):
        raise ValueError(f"{len(records)} records but {len(sizes)} sizes")
    out, wrong = [], []
    for record, (width, height) in zip(records, sizes):
        if (record.width, record.height) != (width, height):
            wrong.append(f"{record.file_name} is {width} x {height} pixels but its annotation "
                         f"says {record.width} x {record.height}")
            record = replace(record, width=int(width), height=int(height))
        out.append(record)
    if wrong:
        more = f" (and {_plural(len(wrong) - 1, 'more image')})" if len(wrong) > 1 else ""
        warnings.warn(f"{wrong[0]}{more}; the image's real size is used: fix the annotation",
                      stacklevel=2)
    return out


def _record(image_id: int | str, file_name: str, width: int, height: int, boxes: np.ndarray,
            labels: np.ndarray, difficult: np.ndarray, iscrowd: np.ndarray,
            areas: np.ndarray) -> ImageRecord:
    """An `ImageRecord` with the documented shapes and dtypes, also when it has no boxes."""
    return ImageRecord(image_id, file_name, width, height,
                       np.asarray(boxes, np.float32).reshape(-1, 4),
                       np.asarray(labels, np.int64).reshape(-1),
                       np.asarray(difficult, bool).reshape(-1),
                       np.asarray(iscrowd, bool).reshape(-1),
                       np.asarray(areas, np.float64).reshape(-1))


def _content_lines(path: PathLike) -> list[tuple[int, str]]:
    """(line number, stripped text) of a list file's lines (a split, class list or blacklist,
    read through `eval.inputs`), without blanks and '#' comments."""
    text = read_text(path, "list", "check the path, or write a UTF-8 text file of lines")
    lines = enumerate((line.strip() for line in text.splitlines()), 1)
    return [(n, line) for n, line in lines if line and not line.startswith("#")]


def _is_map_line(text: str) -> bool:
    """True for ``synset index [name]`` lines, the form of ILSVRC's ``map_det.txt``."""
    tokens = text.split()
    return len(tokens) >= 2 and _is_digits(tokens[1])


def _is_digits(text: str) -> bool:
    """ASCII decimal digits only ('²'.isdigit() is True, but int('²') fails)."""
    return text.isascii() and text.isdigit()


def _parse_index(text: str) -> int | None:
    """A decimal index of at most 18 ASCII digits as an int, else None (an int() of thousands
    of digits raises; no dataset has 10^18 images or classes)."""
    return int(text) if _is_digits(text) and len(text) <= 18 else None


def _parse_class_map(path: PathLike, lines: list[tuple[int, str]]) -> list[tuple[str, str]]:
    """(synset, name) per class ordered by index; the indices must run 1..K."""
    by_index: dict[int, tuple[str, str]] = {}
    for lineno, text in lines:
        if not _is_map_line(text):
            raise DetectionError(f"{path} line {lineno}: expected 'synset index name' as in "
                                 f"ILSVRC's map_det.txt, got {text!r}")
        synset, index, *words = text.split()
        number = _parse_index(index)
        if number is None or number > 100_000:
            raise DetectionError(f"{path} line {lineno}: class index {index[:20]} is out of range; "
                                 "indices run 1..K")
        if number in by_index:
            raise DetectionError(f"{path} line {lineno}: class index {index} is used twice")
        by_index[number] = (synset, " ".join(words) or synset)
    missing = sorted(set(range(1, len(by_index) + 1)) - set(by_index))
    if not by_index or missing:
        problem = f"index {missing[0]} is missing" if missing else "no classes"
        raise DetectionError(f"{path}: class indices must run 1..K without gaps; {problem}")
    return [by_index[i] for i in range(1, len(by_index) + 1)]


def _class_entries(path: PathLike) -> list[tuple[str, str]]:
    """(key objects are named by, class name) in label order, from a class list file."""
    lines = _content_lines(path)
    if lines and all(_is_map_line(text) for _, text in lines):
        return _parse_class_map(path, lines)
    if not lines:
        raise DetectionError(f"{path}: no class names; write one class name per line")
    return [(text, text) for _, text in lines]


def read_class_list(path: PathLike) -> tuple[str, ...]:
    """Class names in label order (label = position + 1) from a text file.

    One name per line (blank lines and '#' comments ignored), or ILSVRC ``map_det.txt`` lines
    ``synset index name``, ordered by index, naming each class by its human name.
    """
    return tuple(name for _, name in _class_entries(path))


def _strip_ext(name: str) -> str:
    """An image or XML file name without its extension; other names unchanged."""
    stem, ext = os.path.splitext(name)
    return stem if ext.lower() in {".jpg", ".jpeg", ".png", ".xml"} else name


def _read_split(path: PathLike) -> list[tuple[str, int]]:
    """(image id, 1-based image index) per entry of a split file, in file order.

    ``.txt``: the first token of each line (a file name is reduced to its stem); the index is the
    second token where it is an integer (ILSVRC's ``val.txt``), else the entry's position.
    ``.csv``: the ``filename`` column; several rows per image are allowed.
    """
    if str(path).lower().endswith(".csv"):
        text = read_text(path, "list", "check the path, or write a UTF-8 CSV file")
        try:
            reader = csv.DictReader(io.StringIO(text, newline=""))
            if "filename" not in (reader.fieldnames or []):
                raise DetectionError(f"{path}: no 'filename' column (header: "
                                     f"{shown(reader.fieldnames, 120)}); a CSV split needs one")
            ids = dict.fromkeys(_strip_ext(row["filename"] or "") for row in reader)
        except csv.Error as e:
            raise DetectionError(f"{path}: not a readable CSV split file ({e}); fix it") from None
        return [(image_id, k) for k, image_id in enumerate(ids, 1)]
    out = []
    for k, (lineno, text) in enumerate(_content_lines(path), 1):
        tokens = text.split()
        index = _parse_index(tokens[1]) if len(tokens) > 1 and _is_digits(tokens[1]) else k
        if index is None:
            raise DetectionError(f"{path} line {lineno}: image index {tokens[1][:20]}... is out "
                                 "of range; fix the split file")
        out.append((_strip_ext(tokens[0]), index))
    return out
