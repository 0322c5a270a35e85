"""What every dataset reader shares: `ImageRecord`, `Dataset`, class lists, split files, and
the clipping tally. NumPy only (the evaluation path must not need torch)."""
from __future__ import annotations

import csv
import io
import os
import warnings
from dataclasses import dataclass, field

import numpy as np

from eval.errors import DetectionError
from eval.inputs import read_text, shown

PathLike = str | os.PathLike


@dataclass(frozen=True, eq=False)
class ImageRecord:
    """One image and its ground truth.

    ``boxes`` float32 [N, 4] xyxy in the image's pixels (continuous: width = x2 - x1,
    0 <= x1 < x2 <= width); ``labels`` int64 [N] in 1..K; ``difficult`` bool [N] (PASCAL VOC:
    neither true nor false positive); ``iscrowd`` bool [N] (COCO: ignored); ``areas`` float64
    [N], COCO's annotation ``area`` (the segment's area) or the box area for other formats.
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
    """The skippable oddities of one load, reported as a single warning at its end."""

    clipped: int = 0
    empty: int = 0

    def clip(self, boxes: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Clip float64 xyxy ``boxes`` [N, 4] to ``sizes`` [N or 1, 2] (width, height).

        Returns float32 boxes [N, 4] and a bool mask [N] of those still non-empty.
        """
        limit = np.tile(np.asarray(sizes, np.float64).reshape(-1, 2), 2)
        clipped = np.clip(boxes.reshape(-1, 4), 0.0, limit)
        out = clipped.astype(np.float32)
        # Judge emptiness in float32: a sliver that rounds to zero width must not survive.
        keep = (out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])
        self.clipped += int(np.sum(keep & np.any(clipped != boxes, axis=1)))
        self.empty += int(np.sum(~keep))
        return out, keep

    def warn(self, source: str) -> None:
        parts = []
        if self.clipped:
            verb = "was" if self.clipped == 1 else "were"
            boxes = _plural(self.clipped, "box")
            parts.append(f"{boxes} extended past the image and {verb} clipped")
        if self.empty:
            parts.append(f"{_plural(self.empty, 'zero-size box')} skipped")
        if parts:
            warnings.warn(f"{source}: {'; '.join(parts)}", stacklevel=3)


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
