"""PASCAL VOC XML: one XML per image (shared with ILSVRC DET), VOC roots and plain XML folders.
NumPy only (Pillow only for an image's size where an XML has none).

Ground truth is read as the devkits read it: every box as annotated, never clipped to the image
nor dropped; an inverted box (xmax < xmin) is refused, naming the XML."""
from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eval.datasets.common import (Dataset, ImageRecord, PathLike, _class_entries, _plural,
                                  _read_split, _record, _strip_ext, _Tally)
from eval.errors import DetectionError
from eval.inputs import check_name, open_input, read_bytes, shown

# Tried in this order when an XML's <filename> is not in the image folder (ILSVRC XMLs name the
# image without its extension).
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".JPEG", ".JPG", ".PNG")


@dataclass
class _XmlAnnotation:
    """One VOC/ILSVRC XML: ``boxes`` float64 [N, 4] continuous xyxy as annotated; width and
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
        what = "missing" if text is None else f"{shown(text.strip())}, not a number"
        raise DetectionError(f"{where}: <{tag}> is {what}; fix the annotation")
    return value


def _read_xml(path: Path, base: int) -> _XmlAnnotation:
    """Parse one XML whose pixel indices are inclusive and start at ``base``.

    PASCAL VOC counts pixels from 1 (``base=1``), ILSVRC from 0 (``base=0``); both devkits take a
    box's width as xmax - xmin + 1. In continuous coordinates the box is therefore
    ``(xmin - base, ymin - base, xmax + 1 - base, ymax + 1 - base)``.
    """
    data = read_bytes(path, "annotation", "fix or remove the file")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as e:
        raise DetectionError(f"{path}: not valid XML ({e}); fix or remove the file") from None
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
        value = float(text) if text else 0.0
    except ValueError:
        value = math.nan
    if not 0 <= value < 2**31:  # also NaN; 0 is how some tools write "unknown"
        raise DetectionError(f"{path}: <{tag}> is {shown(text)}, not a number of pixels; fix it, "
                             "or delete <size> to take the size from the image")
    return int(value)


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

    add_size = "add <size><width>..</width><height>..</height></size>"
    with open_input(image, "image", f"{xml} has no <size> to read instead: {add_size}") as f:
        try:
            with Image.open(f) as im:
                return im.size
        except (OSError, ValueError) as e:
            raise DetectionError(f"{xml}: no <size> and cannot read it from {image} ({e}); "
                                 f"{add_size}") from None


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
    """One `ImageRecord` per XML, boxes as annotated; their oddities in one warning.

    The size is the XML's <size> as written (the image is not read: no protocol uses it), or
    the image header's where the XML has none.
    """
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
        boxes = tally.check(ann.boxes, np.array([width, height]))
        areas = (ann.boxes[:, 2] - ann.boxes[:, 0]) * (ann.boxes[:, 3] - ann.boxes[:, 1])
        records.append(_record(ann.path.stem, str(image), width, height, boxes, labels,
                               ann.difficult, np.zeros(len(labels), bool), areas))
    tally.warn(str(ann_dir), "the XMLs' <size>, not checked against the images")
    return tuple(records)


def _select_xmls(ann_dir: Path, split_file: PathLike | None) -> tuple[list[Path], list[int]]:
    """The XMLs to read, sorted by image id, and each one's 1-based image index (the split
    file's index column, else the position in the sorted list)."""
    check_name(ann_dir)  # first: looking up an over-long name raises
    if not ann_dir.is_dir():
        raise DetectionError(f"{ann_dir}: not a folder; pass the folder of annotation XMLs")
    if split_file is None:
        folders = [p for p in ann_dir.glob("*.xml") if p.is_dir()]
        if folders:
            raise DetectionError(f"{folders[0]}: is a folder, not an XML file; move it out of "
                                 f"{ann_dir}")
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
    # A FIFO or device is not missing: its reader refuses it by name.
    missing = [p for p in paths if not p.exists() or p.is_dir()]
    if missing:
        what = "a folder, not an XML file" if missing[0].is_dir() else "missing"
        raise DetectionError(f"{split_file}: {_plural(len(missing), 'image')} without an XML in "
                             f"{ann_dir}, e.g. {missing[0].stem!r} ({missing[0].name} is {what}); "
                             "fix the split or add them")
    return paths, [index[i] for i in ids]


def _voc_split_file(root: Path, split: str) -> Path:
    """A split name in ``ImageSets/Main`` or a path to a split file."""
    check_name(split)
    for candidate in (root / "ImageSets" / "Main" / f"{split}.txt", Path(split)):
        if candidate.exists() and not candidate.is_dir():  # a FIFO: refused by its reader
            return candidate
    raise DetectionError(f"{root}: no split {split!r} in ImageSets/Main and no such file; pass a "
                         "split name from ImageSets/Main or a split file")


def load_voc(root: PathLike, split: str | None = None,
             classes: Sequence[str] | PathLike | None = None,
             images_dir: PathLike | None = None) -> Dataset:
    """A PASCAL VOC root (``Annotations/*.xml``, ``JPEGImages/``, ``ImageSets/Main/``).

    ``split``: a name in ``ImageSets/Main`` (``"val"``) or a split file; None reads every XML.
    ``classes``: names, a class file (see `read_class_list`) or None for the sorted names found.
    VOC pixels are 1-based inclusive: x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax. Boxes
    are kept as annotated, also where they reach past the image (VOCevaldet.m never clips). Images
    sorted by id (the XML's stem); the image files need not exist unless an XML lacks <size>: a
    <size> is taken as written, unchecked (no protocol uses it; training puts in the real one).
    """
    root = Path(root)
    check_name(root)
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
    column. Images sorted by id (the XML's stem). Coordinates, sizes and ``classes`` as in
    `load_voc`.
    """
    ann_dir = Path(annotations_dir)
    paths, _ = _select_xmls(ann_dir, split_file)
    anns = [_read_xml(p, base=1) for p in paths]
    names, lookup, where = _resolve_classes(classes, anns)
    records = _xml_records(anns, ann_dir, Path(images_dir or ann_dir), lookup, where,
                           image_required=True)
    return Dataset(names, records, tuple(range(1, len(names) + 1)), str(ann_dir))
