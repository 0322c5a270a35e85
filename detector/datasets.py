"""Dataset readers: COCO instances JSON, PASCAL VOC folders, ILSVRC DET folders.

Every format becomes one in-memory form, `Dataset`: an ordered class list and, per image, its
id, file, size and ground truth as float32 ``(x1, y1, x2, y2)`` boxes in absolute pixels with
labels ``1..K`` (0 is background). Dataset ids and names are mapped here, at the I/O edge only.

NumPy-only (Pillow is imported lazily by `read_image`): the evaluation path uses this module and
must not need torch.
"""
from __future__ import annotations

import csv
import json
import math
import os
import re
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from detector.errors import DetectionError

PathLike = str | os.PathLike
# Tried in this order when an XML's <filename> is not in the image folder (ILSVRC XMLs name the
# image without its extension).
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".JPEG", ".JPG", ".PNG")
_SYNSET = re.compile(r"n\d{8}")


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


# --- COCO instances JSON -----------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class CocoInstances:
    """A COCO instances file as arrays, kept exactly as pycocotools sees it.

    ``image_ids`` int64 [I] sorted ascending (pycocotools evaluates images in that order), with
    ``file_names``, ``widths`` int64 [I] and ``heights`` int64 [I] in the same order.
    ``category_ids`` int64 [K] sorted ascending, ``category_names`` in that order; a category's
    label is its position + 1. Annotations stay in file order (evaluators break ties by it):
    ``ann_ids`` int64 [A]; ``ann_image`` int64 [A] indexes ``image_ids``; ``ann_label`` int64 [A]
    in 1..K; ``ann_bbox`` float64 [A, 4] ``(x, y, w, h)`` in absolute pixels, the JSON numbers
    unchanged; ``ann_area`` float64 [A], the file's ``area`` (w * h where absent);
    ``ann_iscrowd`` bool [A]. Zero-size and out-of-image boxes are kept, as pycocotools keeps them.
    """

    image_ids: np.ndarray
    file_names: tuple[str, ...]
    widths: np.ndarray
    heights: np.ndarray
    category_ids: np.ndarray
    category_names: tuple[str, ...]
    ann_ids: np.ndarray
    ann_image: np.ndarray
    ann_label: np.ndarray
    ann_bbox: np.ndarray
    ann_area: np.ndarray
    ann_iscrowd: np.ndarray
    source: str


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _coco_index(entries: object, key: str, fields: tuple[str, ...], source: str) -> dict[int, dict]:
    """``{id: entry}`` of the 'images' or 'categories' list; ids must be unique integers."""
    if not isinstance(entries, list):
        raise DetectionError(f"{source}: '{key}' must be a list, got {type(entries).__name__}")
    by_id: dict[int, dict] = {}
    for i, entry in enumerate(entries):
        where = f"{source}: {key}[{i}]"
        if not isinstance(entry, dict) or any(f not in entry for f in fields):
            raise DetectionError(f"{where} must be an object with {', '.join(fields)}; "
                                 f"got {str(entry)[:80]}")
        if not _is_int(entry["id"]) or entry["id"] in by_id:
            raise DetectionError(f"{where}: id {entry['id']!r} is not a unique integer; "
                                 f"give every entry of '{key}' its own integer id")
        by_id[entry["id"]] = entry
    return by_id


def _coco_annotation(i: int, ann: object, image_pos: dict[int, int], cat_label: dict[int, int],
                     source: str) -> tuple[int, int, int, list[float], float, bool]:
    """Validate annotation #i: (id, image index, label, xywh, area, iscrowd)."""
    where = f"{source}: annotation #{i} (id {ann.get('id') if isinstance(ann, dict) else None})"
    missing = [k for k in ("id", "image_id", "category_id", "bbox") if not isinstance(ann, dict)
               or k not in ann]
    if missing:
        raise DetectionError(f"{where} lacks {', '.join(missing)}; every annotation needs id, "
                             "image_id, category_id and bbox [x, y, width, height]")
    if not _is_int(ann["id"]):
        raise DetectionError(f"{where}: the id must be an integer; fix the annotation")
    bbox = ann["bbox"]
    if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(map(_is_number, bbox))):
        raise DetectionError(f"{where}: bbox must be 4 finite numbers [x, y, width, height], "
                             f"got {bbox!r}; fix the annotation")
    if bbox[2] < 0 or bbox[3] < 0:
        raise DetectionError(f"{where}: bbox {bbox} has a negative width or height; COCO boxes "
                             "are [x, y, width, height], not corner pairs")
    image, label = ann["image_id"], ann["category_id"]
    if not _is_int(image) or image not in image_pos:
        raise DetectionError(f"{where}: image_id {image!r} is not in 'images'; add the image or "
                             "remove the annotation")
    if not _is_int(label) or label not in cat_label:
        raise DetectionError(f"{where}: category_id {label!r} is not in 'categories'; add the "
                             "category or fix the annotation")
    area = ann.get("area", bbox[2] * bbox[3])
    if not _is_number(area):
        raise DetectionError(f"{where}: area {area!r} is not a finite number; fix or remove it")
    xywh = [float(v) for v in bbox]
    crowd = bool(ann.get("iscrowd"))
    return ann["id"], image_pos[image], cat_label[label], xywh, float(area), crowd


def parse_coco_instances(obj: dict, source: str = "<dict>") -> CocoInstances:
    """Validate a COCO instances dict (the parsed JSON) and turn it into `CocoInstances`."""
    keys = ("images", "annotations", "categories")
    if not isinstance(obj, dict) or any(k not in obj for k in keys):
        have = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise DetectionError(f"{source}: not COCO instances (found {have}); the file needs "
                             "'images', 'annotations' and 'categories'")
    images = _coco_index(obj["images"], "images", ("id", "width", "height"), source)
    cats = _coco_index(obj["categories"], "categories", ("id", "name"), source)
    image_ids, cat_ids = sorted(images), sorted(cats)
    for i in image_ids:
        if not (_is_number(images[i]["width"]) and _is_number(images[i]["height"])):
            raise DetectionError(f"{source}: image id {i}: width and height must be numbers")
    if not isinstance(obj["annotations"], list):
        raise DetectionError(f"{source}: 'annotations' must be a list")
    image_pos = {image_id: k for k, image_id in enumerate(image_ids)}
    cat_label = {cat_id: k + 1 for k, cat_id in enumerate(cat_ids)}
    rows, seen = [], {}
    for i, ann in enumerate(obj["annotations"]):
        rows.append(_coco_annotation(i, ann, image_pos, cat_label, source))
        first = seen.setdefault(rows[-1][0], i)
        if first != i:
            raise DetectionError(f"{source}: annotation #{i} (id {rows[-1][0]}) repeats the id of "
                                 f"annotation #{first}; give each annotation its own id")
    column = lambda k, dtype: np.array([r[k] for r in rows], dtype=dtype)  # noqa: E731
    return CocoInstances(
        image_ids=np.array(image_ids, np.int64),
        file_names=tuple(str(images[i].get("file_name", "")) for i in image_ids),
        widths=np.array([images[i]["width"] for i in image_ids], np.int64),
        heights=np.array([images[i]["height"] for i in image_ids], np.int64),
        category_ids=np.array(cat_ids, np.int64),
        category_names=tuple(str(cats[c]["name"]) for c in cat_ids),
        ann_ids=column(0, np.int64), ann_image=column(1, np.int64), ann_label=column(2, np.int64),
        ann_bbox=column(3, np.float64).reshape(-1, 4), ann_area=column(4, np.float64),
        ann_iscrowd=column(5, bool), source=source)


def load_coco_instances(path_or_dict: PathLike | dict) -> CocoInstances:
    """Read a COCO instances JSON file (or take its parsed dict) as `CocoInstances`."""
    if isinstance(path_or_dict, dict):
        return parse_coco_instances(path_or_dict)
    path = Path(path_or_dict)
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except json.JSONDecodeError as e:
        raise DetectionError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: "
                             f"{e.msg}; fix or re-download the file") from e
    except (OSError, UnicodeDecodeError) as e:
        raise DetectionError(f"{path}: cannot read the COCO file ({e}); check the path") from e
    return parse_coco_instances(obj, str(path))


def load_coco(annotations: PathLike | dict, image_root: PathLike | None = None) -> Dataset:
    """COCO instances -> `Dataset`.

    ``(x, y, w, h)`` becomes ``(x, y, x + w, y + h)``, clipped to the image; boxes empty after
    clipping are dropped (both counted in one warning). ``image_id`` is the COCO id, labels follow
    the sorted category ids, ``areas`` are COCO's ``area`` (what small/medium/large use).
    """
    inst = load_coco_instances(annotations)
    x, y, w, h = inst.ann_bbox.T
    sizes = np.stack([inst.widths, inst.heights], axis=1)[inst.ann_image]
    tally = _Tally()
    boxes, keep = tally.clip(np.stack([x, y, x + w, y + h], axis=1), sizes)
    tally.warn(inst.source)
    order = np.argsort(inst.ann_image, kind="stable")  # grouped by image, file order within
    order = order[keep[order]]
    counts = np.bincount(inst.ann_image[order], minlength=len(inst.image_ids))
    groups = np.split(order, np.cumsum(counts)[:-1])
    root = None if image_root is None else str(image_root)
    images = tuple(
        _record(int(image_id), os.path.join(root, name) if root else name, int(wd), int(ht),
                boxes[g], inst.ann_label[g], np.zeros(len(g), bool), inst.ann_iscrowd[g],
                inst.ann_area[g])
        for image_id, name, wd, ht, g in zip(inst.image_ids, inst.file_names, inst.widths,
                                              inst.heights, groups))
    category_ids = tuple(int(c) for c in inst.category_ids)
    return Dataset(inst.category_names, images, category_ids, inst.source)


# --- Shared by all readers ---------------------------------------------------------------------


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
    """(line number, stripped text) of a text file's lines, without blanks and '#' comments."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DetectionError(f"{path}: cannot read ({e}); check the path") from e
    lines = enumerate((line.strip() for line in text.splitlines()), 1)
    return [(n, line) for n, line in lines if line and not line.startswith("#")]


def _is_map_line(text: str) -> bool:
    """True for ``synset index [name]`` lines, the form of ILSVRC's ``map_det.txt``."""
    tokens = text.split()
    return len(tokens) >= 2 and tokens[1].isdigit()


def _parse_class_map(path: PathLike, lines: list[tuple[int, str]]) -> list[tuple[str, str]]:
    """(synset, name) per class ordered by index; the indices must run 1..K."""
    by_index: dict[int, tuple[str, str]] = {}
    for lineno, text in lines:
        if not _is_map_line(text):
            raise DetectionError(f"{path} line {lineno}: expected 'synset index name' as in "
                                 f"ILSVRC's map_det.txt, got {text!r}")
        synset, index, *words = text.split()
        if int(index) in by_index:
            raise DetectionError(f"{path} line {lineno}: class index {index} is used twice")
        by_index[int(index)] = (synset, " ".join(words) or synset)
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


# --- PASCAL VOC and ILSVRC XML -----------------------------------------------------------------


@dataclass
class _XmlAnnotation:
    """One VOC/ILSVRC XML: ``boxes`` float64 [N, 4] continuous xyxy, not yet clipped; width and
    height 0 where the XML has no size."""

    path: Path
    filename: str
    width: int
    height: int
    names: list[str]
    boxes: np.ndarray
    difficult: np.ndarray


def _xml_number(node: ET.Element, tag: str, where: str) -> float:
    text = node.findtext(tag)
    try:
        value = float(text)  # VOC writes "174", CVAT exports "174.0"
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        shown = "missing" if text is None else f"{text.strip()!r}, not a number"
        raise DetectionError(f"{where}: <{tag}> is {shown}; fix the annotation")
    return value


def _read_xml(path: Path, base: int) -> _XmlAnnotation:
    """Parse one XML whose pixel indices are inclusive and start at ``base``.

    PASCAL VOC counts pixels from 1 (``base=1``), ILSVRC from 0 (``base=0``); both devkits take a
    box's width as xmax - xmin + 1. In continuous coordinates the box is therefore
    ``(xmin - base, ymin - base, xmax + 1 - base, ymax + 1 - base)``.
    """
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise DetectionError(f"{path}: not valid XML ({e}); fix or remove the file") from e
    except OSError as e:
        raise DetectionError(f"{path}: cannot read ({e})") from e
    names, boxes, difficult = [], [], []
    for k, obj in enumerate(root.findall("object"), 1):
        name, bndbox = (obj.findtext("name") or "").strip(), obj.find("bndbox")
        if not name or bndbox is None:
            raise DetectionError(f"{path}: object #{k} has no {'<bndbox>' if name else '<name>'}; "
                                 "every <object> needs <name> and <bndbox>")
        where = f"{path}: object #{k} ({name})"
        x1, y1, x2, y2 = (_xml_number(bndbox, t, where) for t in ("xmin", "ymin", "xmax", "ymax"))
        if x2 < x1 or y2 < y1:
            raise DetectionError(f"{where}: inverted box (xmin {x1:g}, ymin {y1:g}, xmax {x2:g}, "
                                 f"ymax {y2:g}); swap the coordinates or fix the annotation")
        names.append(name)
        boxes.append([x1 - base, y1 - base, x2 + 1 - base, y2 + 1 - base])
        has_flag = (obj.findtext("difficult") or "").strip() != ""
        difficult.append(has_flag and _xml_number(obj, "difficult", where) != 0)
    width, height = (_xml_size(root, tag, path) for tag in ("size/width", "size/height"))
    return _XmlAnnotation(path, (root.findtext("filename") or "").strip(), width, height, names,
                          np.array(boxes, np.float64).reshape(-1, 4), np.array(difficult, bool))


def _xml_size(root: ET.Element, tag: str, path: Path) -> int:
    """<size> width or height in pixels; 0 when absent (the image header is read instead)."""
    text = (root.findtext(tag) or "").strip()
    try:
        return int(float(text)) if text else 0
    except ValueError:
        raise DetectionError(f"{path}: <{tag}> is {text!r}, not a number; fix it, or delete "
                             "<size> to take the size from the image") from None


def _strip_ext(name: str) -> str:
    """An image or XML file name without its extension; other names unchanged."""
    stem, ext = os.path.splitext(name)
    return stem if ext.lower() in {".jpg", ".jpeg", ".png", ".xml"} else name


def _find_image(ann: _XmlAnnotation, image_dir: Path, required: bool) -> Path:
    """The image of an XML: its <filename> in ``image_dir``, else that name or the XML's stem
    with each of `IMAGE_EXTS`. Not found: DetectionError if ``required``, else the first guess."""
    bases = dict.fromkeys(b for b in (_strip_ext(ann.filename), ann.path.stem) if b)
    names = list(dict.fromkeys([ann.filename] * bool(ann.filename)
                               + [b + ext for b in bases for ext in IMAGE_EXTS]))
    for name in names:
        if (image_dir / name).is_file():
            return image_dir / name
    if required:
        raise DetectionError(f"{ann.path}: its image is not in {image_dir} (tried "
                             f"{', '.join(names)}); pass the image folder or fix <filename>")
    return image_dir / names[0]


def _image_size(image: Path, xml: Path) -> tuple[int, int]:
    """(width, height) from the image header, in the stored pixel grid (no EXIF rotation)."""
    from PIL import Image

    try:
        with Image.open(image) as im:
            return im.size
    except (OSError, ValueError) as e:
        raise DetectionError(f"{xml}: no <size> and cannot read it from {image} ({e}); add "
                             "<size><width>..</width><height>..</height></size>") from e


def _resolve_classes(classes: Sequence[str] | PathLike | None, anns: list[_XmlAnnotation]
                     ) -> tuple[tuple[str, ...], dict[str, int], str]:
    """(class names, object name -> label, how to name the class list in messages)."""
    if classes is None:
        names = tuple(sorted({n for a in anns for n in a.names}))
        return names, {n: i + 1 for i, n in enumerate(names)}, "the classes found"
    if isinstance(classes, (str, os.PathLike)):
        entries, where = _class_entries(classes), f"the class file {classes}"
    else:
        entries, where = [(n, n) for n in classes], "the given class list"
    names = tuple(name for _, name in entries)
    if len(set(names)) != len(names):
        raise DetectionError(f"{where} names a class twice; each class must appear once")
    # map_det lines name objects by synset; accept the human name too.
    lookup = {name: i + 1 for i, name in enumerate(names)}
    lookup.update((key, i + 1) for i, (key, _) in enumerate(entries))
    return names, lookup, where


def _xml_records(anns: list[_XmlAnnotation], ann_dir: Path, images_dir: Path,
                 labels_of: dict[str, int], classes_where: str, image_required: bool
                 ) -> tuple[ImageRecord, ...]:
    """One `ImageRecord` per XML; clipping and skipped boxes reported in one warning."""
    tally = _Tally()
    records = []
    for ann in anns:
        image = _find_image(ann, images_dir / ann.path.parent.relative_to(ann_dir), image_required)
        width, height = ann.width, ann.height
        if width <= 0 or height <= 0:
            width, height = _image_size(image, ann.path)
        labels = np.array([labels_of.get(n, 0) for n in ann.names], np.int64)
        if not labels.all():
            k = int(np.argmin(labels))
            raise DetectionError(f"{ann.path}: object #{k + 1} is named {ann.names[k]!r}, which "
                                 f"is not in {classes_where}; add it there or fix the annotation")
        boxes, keep = tally.clip(ann.boxes, np.array([width, height]))
        areas = (boxes[:, 2] - boxes[:, 0]).astype(np.float64) * (boxes[:, 3] - boxes[:, 1])
        records.append(_record(ann.path.stem, str(image), width, height, boxes[keep], labels[keep],
                               ann.difficult[keep], np.zeros(int(keep.sum()), bool), areas[keep]))
    tally.warn(str(ann_dir))
    return tuple(records)


def _read_split(path: PathLike) -> list[tuple[str, int]]:
    """(image id, 1-based image index) per entry of a split file, in file order.

    ``.txt``: the first token of each line (a file name is reduced to its stem); the index is the
    second token where it is an integer (ILSVRC's ``val.txt``), else the entry's position.
    ``.csv``: the ``filename`` column; several rows per image are allowed.
    """
    if str(path).lower().endswith(".csv"):
        try:
            with open(path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                if "filename" not in (reader.fieldnames or []):
                    raise DetectionError(f"{path}: no 'filename' column (header: "
                                         f"{reader.fieldnames}); a CSV split needs one")
                ids = dict.fromkeys(_strip_ext(row["filename"]) for row in reader)
        except (OSError, UnicodeDecodeError) as e:
            raise DetectionError(f"{path}: cannot read the split file ({e})") from e
        return [(image_id, k) for k, image_id in enumerate(ids, 1)]
    rows = [text.split() for _, text in _content_lines(path)]
    return [(_strip_ext(t[0]), int(t[1]) if len(t) > 1 and t[1].isdigit() else k)
            for k, t in enumerate(rows, 1)]


def _select_xmls(ann_dir: Path, split_file: PathLike | None) -> tuple[list[Path], list[int]]:
    """The XMLs to read, sorted by image id, and each one's 1-based image index (the split
    file's index column, else the position in the sorted list)."""
    if not ann_dir.is_dir():
        raise DetectionError(f"{ann_dir}: not a folder; pass the folder of annotation XMLs")
    if split_file is None:
        ids = sorted(p.stem for p in ann_dir.glob("*.xml"))
        index = {image_id: k for k, image_id in enumerate(ids, 1)}
    else:
        index = {}
        for image_id, k in _read_split(split_file):
            index.setdefault(image_id, k)
        ids = sorted(index)
    if not ids:
        raise DetectionError(f"{split_file or ann_dir}: no images; expected *.xml annotations in "
                             f"{ann_dir}")
    paths = [ann_dir / f"{image_id}.xml" for image_id in ids]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DetectionError(f"{split_file}: {_plural(len(missing), 'image')} without an XML in "
                             f"{ann_dir}, e.g. {missing[0].stem!r}; fix the split or add them")
    return paths, [index[i] for i in ids]


def _voc_split_file(root: Path, split: str) -> Path:
    """A split name in ``ImageSets/Main`` or a path to a split file."""
    for candidate in (root / "ImageSets" / "Main" / f"{split}.txt", Path(split)):
        if candidate.is_file():
            return candidate
    raise DetectionError(f"{root}: no split {split!r} in ImageSets/Main and no such file; pass a "
                         "split name from ImageSets/Main or a split file")


def load_voc(root: PathLike, split: str | None = None,
             classes: Sequence[str] | PathLike | None = None,
             images_dir: PathLike | None = None) -> Dataset:
    """A PASCAL VOC root (``Annotations/*.xml``, ``JPEGImages/``, ``ImageSets/Main/``).

    ``split``: a name in ``ImageSets/Main`` (``"val"``) or a split file; None reads every XML.
    ``classes``: names, a class file (see `read_class_list`) or None for the sorted names found.
    VOC pixels are 1-based inclusive: x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax. Images
    sorted by id (the XML's stem); the image files need not exist unless an XML lacks <size>.
    """
    root = Path(root)
    if not (root / "Annotations").is_dir():
        raise DetectionError(f"{root}: no Annotations/ folder; a PASCAL VOC root holds "
                             "Annotations/, JPEGImages/ and ImageSets/Main/")
    paths, _ = _select_xmls(root / "Annotations", _voc_split_file(root, split) if split else None)
    anns = [_read_xml(p, base=1) for p in paths]
    names, lookup, where = _resolve_classes(classes, anns)
    images = Path(images_dir) if images_dir else root / "JPEGImages"
    records = _xml_records(anns, root / "Annotations", images, lookup, where, image_required=False)
    return Dataset(names, records, tuple(range(1, len(names) + 1)), str(root))


def load_voc_folder(annotations_dir: PathLike, images_dir: PathLike | None = None,
                    classes: Sequence[str] | PathLike | None = None,
                    split_file: PathLike | None = None) -> Dataset:
    """A plain folder of VOC XMLs and their images (``images_dir`` defaults to the same folder).

    Each image is the XML's <filename> in ``images_dir``, else its stem + .jpg/.jpeg/.png/.JPEG;
    it must exist. ``split_file``: a .txt of ids (or file names), or a .csv with a ``filename``
    column. Images sorted by id (the XML's stem). Coordinates and ``classes`` as in `load_voc`.
    """
    ann_dir = Path(annotations_dir)
    paths, _ = _select_xmls(ann_dir, split_file)
    anns = [_read_xml(p, base=1) for p in paths]
    names, lookup, where = _resolve_classes(classes, anns)
    records = _xml_records(anns, ann_dir, Path(images_dir or ann_dir), lookup, where,
                           image_required=True)
    return Dataset(names, records, tuple(range(1, len(names) + 1)), str(ann_dir))


def load_ilsvrc(annotations_dir: PathLike, class_map: PathLike, images_dir: PathLike | None = None,
                split_file: PathLike | None = None, blacklist: PathLike | None = None) -> Dataset:
    """ILSVRC DET: VOC-style XMLs whose object names are WordNet synsets (``n02672831``).

    ``class_map``: ``synset index name`` lines (the devkit's map_det.txt); label = index, class
    name = the human name. ILSVRC pixels are 0-based inclusive (the devkit takes widths as
    xmax - xmin + 1): x1 = xmin, y1 = ymin, x2 = xmax + 1, y2 = ymax + 1. ``split_file``: lines
    ``<image id> <index>`` (``ImageSets/DET/val.txt``) or plain ids. ``blacklist``: the devkit's
    ``image_index synset`` lines (or ``image_index class_index``); the image index is the split
    file's index column, or the 1-based position among the sorted XMLs. Stored as
    ``Dataset.blacklist``: (0-based position in ``images``, label) pairs.
    """
    ann_dir = Path(annotations_dir)
    entries = _parse_class_map(class_map, _content_lines(class_map))
    lookup = {synset: i + 1 for i, (synset, _) in enumerate(entries)}
    paths, indices = _select_xmls(ann_dir, split_file)
    anns = [_read_xml(p, base=0) for p in paths]
    records = _xml_records(anns, ann_dir, Path(images_dir or ann_dir), lookup,
                           f"the class map {class_map}", image_required=True)
    skip = _read_blacklist(blacklist, indices, lookup) if blacklist else frozenset()
    return Dataset(tuple(name for _, name in entries), records,
                   tuple(range(1, len(entries) + 1)), str(ann_dir), skip)


def _read_blacklist(path: PathLike, indices: list[int], lookup: dict[str, int]
                    ) -> frozenset[tuple[int, int]]:
    """(position in the dataset, label) pairs from ``image_index synset|class_index`` lines."""
    position = {index: pos for pos, index in enumerate(indices)}
    pairs = set()
    for lineno, text in _content_lines(path):
        tokens = text.split()
        cls = tokens[1] if len(tokens) == 2 else ""
        label = int(cls) if cls.isdigit() else lookup.get(cls, 0)
        image = int(tokens[0]) if tokens[0].isdigit() else 0
        if image not in position or not 1 <= label <= len(lookup):
            raise DetectionError(f"{path} line {lineno}: {text!r} names no image index of the "
                                 f"split and class of the class map ({len(indices)} images, "
                                 f"{len(lookup)} classes); use the blacklist of this split")
        pairs.add((position[image], label))
    return frozenset(pairs)


# --- Format detection and images ---------------------------------------------------------------


def _is_class_map(path: PathLike) -> bool:
    """True when ``path`` reads as a map_det.txt (every line ``synset index ...``)."""
    try:
        lines = _content_lines(path)
    except DetectionError:
        return False
    return bool(lines) and all(_is_map_line(text) for _, text in lines)


def _has_synset_names(ann_dir: Path) -> bool:
    """True when the first object name among the first XMLs is a WordNet synset."""
    for path in sorted(ann_dir.glob("*.xml"))[:20]:
        match = re.search(r"<name>\s*([^<\s]+)\s*</name>", path.read_text(errors="replace"))
        if match:
            return _SYNSET.fullmatch(match.group(1)) is not None
    return False


def load_dataset(gt: PathLike, images: PathLike | None = None, classes: PathLike | None = None,
                 blacklist: PathLike | None = None, split: str | None = None) -> Dataset:
    """Ground truth in whichever format ``gt`` is (what ``tools/evaluate.py --gt`` calls).

    A ``.json`` file: COCO (`load_coco`, ``images`` the image root). A folder with
    ``Annotations/``: PASCAL VOC (`load_voc`, ``split`` a name or a file). A folder of XMLs:
    ILSVRC (`load_ilsvrc`) when ``classes`` is a map_det.txt or the object names are synsets,
    else `load_voc_folder` (``split`` a split file).
    """
    path = Path(gt)
    if not path.exists():
        raise DetectionError(f"{gt}: no such file or folder; pass a COCO .json file or a folder "
                             "of VOC/ILSVRC XMLs")
    is_map = classes is not None and _is_class_map(classes)
    if path.is_file() and path.suffix.lower() == ".json":
        _reject_options("COCO JSON", classes=classes, blacklist=blacklist)
        dataset = load_coco(path, images)
        return dataset if split is None else _coco_subset(dataset, split)
    if path.is_file():
        raise DetectionError(f"{gt}: not a .json file; pass COCO JSON or a folder of XMLs")
    if (path / "Annotations").is_dir() and not is_map:
        _reject_options("a PASCAL VOC root", blacklist=blacklist)
        return load_voc(path, split, classes, images)
    ann_dir = path / "Annotations" if (path / "Annotations").is_dir() else path
    if is_map or _has_synset_names(ann_dir):
        if classes is None:
            raise DetectionError(f"{gt}: the object names are WordNet synsets (ILSVRC); pass the "
                                 "class map (the devkit's map_det.txt) as classes")
        return load_ilsvrc(ann_dir, classes, images, split, blacklist)
    _reject_options("a folder of VOC XMLs", blacklist=blacklist)
    return load_voc_folder(path, images, classes, split_file=split)


def _coco_subset(dataset: Dataset, split: PathLike) -> Dataset:
    """The images of a COCO dataset that a split file names, by image id or by file name."""
    wanted = [image_id for image_id, _ in _read_split(split)]
    by_key: dict[str, int] = {}
    for i, record in enumerate(dataset.images):
        by_key[str(record.image_id)] = i
        by_key.setdefault(_strip_ext(Path(record.file_name).name), i)
    missing = [w for w in wanted if w not in by_key]
    if missing:
        raise DetectionError(f"{split}: image {missing[0]!r} is not in {dataset.source} "
                             f"({len(missing)} such entries); list COCO image ids or file names")
    keep = sorted({by_key[w] for w in wanted})
    return replace(dataset, images=tuple(dataset.images[i] for i in keep))


def _reject_options(kind: str, **options: object) -> None:
    given = [name for name, value in options.items() if value is not None]
    if given:
        raise DetectionError(f"{kind} takes no {' / '.join(given)} option; drop it")


def read_image(path: PathLike, apply_exif: bool = False) -> np.ndarray:
    """Decode an image file to RGB uint8 [H, W, 3], in its stored pixel grid.

    Every Pillow mode becomes RGB: alpha and palette transparency are dropped, 16-bit samples
    keep their high byte (``value >> 8``), 32-bit integer and float samples are clipped to
    0..255, CMYK and YCbCr go through Pillow's conversion. EXIF orientation is NOT applied by
    default: VOC, COCO and ILSVRC boxes, and their recorded width/height, refer to the stored
    pixels, so rotating the pixels would misplace every box. ``apply_exif=True`` rotates to the
    display orientation (`PIL.ImageOps.exif_transpose`), for images without annotations.
    """
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            im.load()  # decode here, so a truncated file fails inside this try
            return _to_rgb(ImageOps.exif_transpose(im) if apply_exif else im)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DetectionError(f"cannot decode image {path}: {e}; re-download or remove it") from e


def _to_rgb(im) -> np.ndarray:
    """A loaded PIL image as RGB uint8 [H, W, 3]."""
    if im.mode.startswith("I;16"):
        # 16-bit: the high byte is the 8-bit image of the same dynamic range.
        gray = (np.asarray(im).astype(np.uint16) >> 8).astype(np.uint8)
    elif im.mode in ("I", "F"):
        # 32-bit int/float samples have no fixed range; read them as 8-bit values.
        gray = np.clip(np.nan_to_num(np.asarray(im, np.float64)), 0, 255).round().astype(np.uint8)
    else:
        if im.mode in ("P", "PA", "LA", "La", "RGBa") or "transparency" in im.info:
            im = im.convert("RGBA")  # Pillow's supported path for alpha and transparency
        return np.array(im.convert("RGB"), dtype=np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)
