"""YOLO text labels (Ultralytics, darknet): one ``class cx cy w h`` line per object, normalised.
NumPy only (Pillow reads each image's header for its size).

Two ways in, both giving the same `Dataset`:

- ``data.yaml`` (Ultralytics): ``path`` the dataset root (relative to the YAML's folder; the
  YAML's folder when absent), ``train`` / ``val`` / ``test`` each an image folder, a ``.txt``
  list of image paths, or a list of these (relative to ``path``), ``names`` a list or an
  ``{index: name}`` mapping (``nc``, where given, must agree), ``kpt_shape`` for pose labels;
  other keys (``download``, ``flip_idx``, ...) are ignored. An image's label file is its path
  with the last ``images`` folder replaced by ``labels`` and the suffix by ``.txt``
  (``images/val/x.jpg`` -> ``labels/val/x.txt``, Ultralytics' rule), or beside the image where
  its path has no ``images`` folder (darknet's layout).
- a labels folder, its images folder and a class names file (one name per line, darknet's
  ``.names``, or a data.yaml): ``labels/a/x.txt`` is the label file of ``images/a/x.jpg``.

An image without a label file has no objects (a background image, as in Ultralytics). A label
line is ``class cx cy w h``: the class index 0..K-1 and the box centre and size as fractions of
the image's width and height. A segment line (YOLO-seg, ``class x1 y1 x2 y2 ...``, at least 3
points; also oriented boxes, 4 points) counts as its polygon's bounding box, as Ultralytics
takes it for detection. With ``kpt_shape: [K, D]`` in the data.yaml, lines are pose labels
(``class cx cy w h`` then K keypoints of D numbers) and the box is read, the keypoints not.
Any other line (a wrong number of fields, a non-number, a class index out of range, a value
outside [0, 1] by more than `NORMALISED_SLACK`, a negative size) is one DetectionError naming
the file and line. Boxes are kept as annotated, never clipped (see `eval.datasets`).

Image ids follow Ultralytics' COCO-JSON export: the image's path relative to its folder without
the suffix (the file stem for a flat folder; the stem for a ``.txt`` list), as an int where it
is all digits (COCO's ``000000000009.jpg`` is image 9). Category ids are 1..K (class index + 1,
as that export writes them for data other than COCO); detections may name classes instead
(``category_name``).
"""
from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from eval.datasets.common import (Dataset, ImageRecord, PathLike, _content_lines, _is_digits,
                                  _plural, _read_split, _record, _Tally)
from eval.datasets.images import IMAGE_SUFFIXES, list_image_files
from eval.datasets.yolo_yaml import (YAML_SUFFIXES, pick_split, pose_fields, read_data_yaml,
                                     read_yolo_names, yaml_names, yaml_root)
from eval.errors import DetectionError
from eval.inputs import check_name, open_input, read_text, shown

# How far past [0, 1] a normalised value may reach before it is refused: exporters round, and
# annotation tools let an edge slip a pixel or so past the border. Pixel coordinates given by
# mistake are far larger. A box within the slack is kept as annotated, not clipped.
NORMALISED_SLACK = 0.01
# How far (as a fraction of the image) a box may reach past the edge and not be counted as
# reaching past it: label files round their fractions (Ultralytics' converters to 6 decimals,
# hand-made files to 4), so a box drawn to the edge can land a hair beyond it.
ROUNDING_SLACK = 1e-4
_LINE = "'class cx cy w h' (class index, box centre and size as fractions of the image)"
_EXIF_ORIENTATION = 0x0112


def is_yolo(gt: PathLike, classes: PathLike | None = None) -> bool:
    """Whether ``gt`` is YOLO ground truth: a data.yaml, or a folder without any ``.xml`` that
    holds ``.txt`` label files (or holds neither, when ``classes`` is a ``.names`` file or a
    data.yaml). A folder of XMLs is VOC/ILSVRC whatever the class list is called: voc100 ships
    its classes as ``voc.names``."""
    path = Path(gt)
    if path.suffix.lower() in YAML_SUFFIXES:
        return not path.is_dir()
    if not path.is_dir() or (path / "Annotations").is_dir():
        return False
    try:
        suffixes = {Path(name).suffix.lower() for name in os.listdir(path)}
    except OSError:
        return False  # the XML readers name what is wrong with the folder
    if ".xml" in suffixes:
        return False
    named = classes is not None and Path(classes).suffix.lower() in (".names", *YAML_SUFFIXES)
    return ".txt" in suffixes or named


def load_yolo_yaml(path: PathLike, split: str | None = None) -> Dataset:
    """The images of one split of an Ultralytics ``data.yaml`` and their labels.

    ``split``: ``train``, ``val`` or ``test``; None takes the only split the file names (a
    file naming several is an error asking for one: training on ``val`` by default would go
    unnoticed).
    """
    path = Path(path)
    data = read_data_yaml(path)
    names = yaml_names(data, path)
    split = pick_split(data, path, split)
    root = yaml_root(data, path)
    entries = data[split] if isinstance(data[split], list) else [data[split]]
    images = [item for entry in entries for item in _split_images(entry, root, f"{path}: {split}")]
    # Only a split of whole folders has an image for every label file beside its labels.
    whole = all((root / os.path.expanduser(entry)).is_dir() for entry in entries)
    return _dataset(images, _label_path, names, f"the names of {path}", pose_fields(data, path),
                    str(path), unread=whole)


def load_yolo(labels_dir: PathLike, images_dir: PathLike | None = None,
              classes: PathLike | None = None, split_file: PathLike | None = None) -> Dataset:
    """A folder of YOLO label files, the folder of their images and the class names.

    ``images_dir``: by default the labels folder with its last ``labels`` part replaced by
    ``images``, else the labels folder itself where the images lie beside their labels.
    ``classes``: one name per line (darknet's ``.names``) or a data.yaml's ``names``.
    ``split_file``: image ids (see the module docstring), one per line.
    """
    labels_dir = Path(labels_dir)
    check_name(labels_dir)
    if not labels_dir.is_dir():
        raise DetectionError(f"{labels_dir}: not a folder; pass the folder of YOLO labels")
    if classes is None:
        raise DetectionError(f"{labels_dir}: YOLO labels number their classes; pass the class "
                             "names (a file of one name per line, or the data.yaml) as classes")
    names = read_yolo_names(classes)
    images_dir = _images_folder(labels_dir, images_dir)
    check_name(images_dir)
    if not images_dir.is_dir():
        raise DetectionError(f"{images_dir}: not a folder; pass the folder of the labels' images")
    images = _folder_images(images_dir, str(images_dir))
    if split_file is not None:
        images = _select(images, split_file)

    def label_of(image: Path) -> Path:
        return labels_dir / image.relative_to(images_dir).with_suffix(".txt")

    return _dataset(images, label_of, names, f"the class names {classes}", 0, str(labels_dir),
                    unread=split_file is None, names_file=classes)


def _dataset(images: list[tuple[int | str, Path]], label_of: Callable[[Path], Path],
             names: tuple[str, ...], names_where: str, fields: int, source: str, unread: bool,
             names_file: PathLike | None = None) -> Dataset:
    """The `Dataset` of ``images`` (image id, path), ordered as COCO orders them (int ids
    ascending, then the others); ``label_of`` gives an image's label file. ``unread``: warn
    about the label files beside theirs that no image claims (where ``images`` are whole
    folders: a split that lists some images leaves the others' labels unread, rightly)."""
    seen: dict[int | str, Path] = {}
    for image_id, image in images:
        if seen.setdefault(image_id, image) != image:
            raise DetectionError(f"{image} and {seen[image_id]} would share the image id "
                                 f"{image_id!r}; rename one of them")
    images = sorted(images, key=lambda item: (isinstance(item[0], str), item[0]))
    labels = [label_of(image) for _, image in images]
    if unread:
        _warn_unread_labels(labels, names_file, source)
    records = _records(images, labels, names, names_where, fields, source)
    return Dataset(names, records, tuple(range(1, len(names) + 1)), source)


def _split_images(entry: object, root: Path, where: str) -> list[tuple[int | str, Path]]:
    """(image id, image path) of one split entry: an image folder, or a .txt list of images."""
    if not isinstance(entry, str) or not entry:
        raise DetectionError(f"{where}: expected an image folder or a .txt list of images, got "
                             f"{shown(entry)}")
    folder = root / os.path.expanduser(entry)
    check_name(folder)
    if folder.is_dir():
        return _folder_images(folder, where)
    if not folder.exists():
        raise DetectionError(f"{where}: {folder} does not exist; fix the path (relative to the "
                             "dataset's 'path')")
    return _listed_images(folder)


def _folder_images(folder: Path, where: str) -> list[tuple[int | str, Path]]:
    """(image id, path) of the images below ``folder``; what else lies there is not read."""
    files, _ = list_image_files(folder)
    if not files:
        raise DetectionError(f"{where}: no image files in {folder}; check the path")
    return [(_image_id(p.relative_to(folder).with_suffix("").as_posix()), p) for p in files]


def _listed_images(listing: Path) -> list[tuple[int | str, Path]]:
    """The images a .txt list names, one path per line, relative to the list's folder."""
    out = []
    for lineno, text in _content_lines(listing):
        image = listing.parent / text
        if image.suffix.lower() not in IMAGE_SUFFIXES:
            raise DetectionError(f"{listing} line {lineno}: {shown(text)} is not an image file "
                                 f"({', '.join(sorted(IMAGE_SUFFIXES))}); fix the list")
        out.append((_image_id(image.stem), image))
    if not out:
        raise DetectionError(f"{listing}: lists no images; write one image path per line")
    return out


def _image_id(key: str) -> int | str:
    """A relative path without suffix as an image id: an int where it is all ASCII digits."""
    return int(key) if _is_digits(key) and len(key) <= 18 else key


def _select(images: list[tuple[int | str, Path]], split_file: PathLike
            ) -> list[tuple[int | str, Path]]:
    """The images a split file names by id, in the dataset's order."""
    wanted = {str(image_id) for image_id, _ in _read_split(split_file)}
    have = {str(image_id) for image_id, _ in images}
    missing = sorted(wanted - have)
    if missing or not wanted:
        problem = f"{missing[0]!r} is not an image id" if missing else "no image ids"
        raise DetectionError(f"{split_file}: {problem} of the dataset; list image ids (file "
                             "names without their suffix)")
    return [(image_id, path) for image_id, path in images if str(image_id) in wanted]


def _label_path(image: Path) -> Path:
    """Ultralytics' rule: the last ``images`` folder of the path becomes ``labels``."""
    parts = list(image.with_suffix(".txt").parts)
    for k in range(len(parts) - 2, -1, -1):
        if parts[k] == "images":
            parts[k] = "labels"
            break
    return Path(*parts)


def _images_folder(labels_dir: Path, images_dir: PathLike | None) -> Path:
    if images_dir is not None:
        return Path(images_dir)
    parts = list(labels_dir.parts)
    if "labels" in parts:
        k = len(parts) - 1 - parts[::-1].index("labels")
        beside = Path(*parts[:k], "images", *parts[k + 1:])
        if beside.is_dir():
            return beside
    if labels_dir.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES
                                   for p in labels_dir.iterdir()):
        return labels_dir
    raise DetectionError(f"{labels_dir}: no images beside these YOLO labels (nor an images/ "
                         "folder in place of labels/); pass the images' folder with --images")


def _warn_unread_labels(labels: list[Path], names_file: PathLike | None, source: str) -> None:
    """One warning for the .txt files beside the label files that no image claims (the class
    names file aside): an image missing, or of a type not read (GIF)."""
    claimed = set(labels)
    folders = sorted({p.parent for p in labels if p.parent.is_dir()})
    unread = [p for folder in folders for p in sorted(folder.glob("*.txt")) if p not in claimed
              and not (names_file is not None and p.samefile(names_file))]
    if unread:
        warnings.warn(f"{source}: {_plural(len(unread), 'label file')} without an image not "
                      f"read (e.g. {unread[0]}); add their images or remove them", stacklevel=4)


def _records(images: list[tuple[int | str, Path]], labels: list[Path], names: tuple[str, ...],
             names_where: str, fields: int, source: str) -> tuple[ImageRecord, ...]:
    """One record per image: its header's size, its label file's boxes in pixels."""
    if images and not any(p.is_file() for p in labels):
        raise DetectionError(f"{source}: none of the {len(images)} images has a label file "
                             f"(looked for {labels[0]}, ...); YOLO labels go in labels/ in "
                             "place of images/, or beside the images")
    tally, rotated, records = _Tally(), [], []
    for (image_id, image), label in zip(images, labels):
        width, height, orientation = _image_header(image)
        if orientation != 1:
            rotated.append(image)
        classes, boxes = _read_labels(label, len(names), names_where, fields)
        xyxy = (np.concatenate([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2],
                               axis=1) * [width, height, width, height])
        areas = (xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1])
        records.append(_record(image_id, str(image), width, height,
                               tally.check(xyxy, np.array([width, height]),
                                           ROUNDING_SLACK * max(width, height)), classes + 1,
                               np.zeros(len(classes), bool), np.zeros(len(classes), bool), areas))
    tally.warn(source, "the images' own")
    if rotated:
        warnings.warn(f"{rotated[0]} (and {_plural(len(rotated) - 1, 'more image')}) has an EXIF "
                      "orientation: its boxes are read on the stored pixels, as every image is "
                      "read; if they were drawn on the rotated view, save the images rotated",
                      stacklevel=3)
    return tuple(records)


def _image_header(image: Path) -> tuple[int, int, int]:
    """(width, height, EXIF orientation) from the image's header; the pixels are not decoded."""
    from PIL import Image

    fix = "add the image, or remove it from the dataset"
    with open_input(image, "image", fix) as f:
        try:
            with Image.open(f) as im:
                orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
                return im.size[0], im.size[1], orientation if orientation in range(1, 9) else 1
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise DetectionError(f"{image}: cannot read the image's size ({e}); its YOLO "
                                 "labels need it; re-download or remove the image") from None


def _read_labels(path: Path, num_classes: int, names_where: str, fields: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Class indices int64 [N] and boxes float64 [N, 4] ``(cx, cy, w, h)`` normalised, from a
    label file (none: no objects)."""
    if not path.exists():
        return np.zeros(0, np.int64), np.zeros((0, 4))
    text = read_text(path, "annotation", f"fix or remove the label file (lines of {_LINE})")
    rows = [_parse_line(line.split(), f"{path} line {lineno}", num_classes, names_where, fields)
            for lineno, line in enumerate(text.splitlines(), 1) if line.strip()]
    return (np.array([c for c, _ in rows], np.int64),
            np.array([box for _, box in rows], np.float64).reshape(-1, 4))


def _parse_line(tokens: list[str], where: str, num_classes: int, names_where: str,
                fields: int) -> tuple[int, list[float]]:
    """(class index, [cx, cy, w, h]) of one label line; a segment line gives its bounding box."""
    values = [_number(token, where) for token in tokens]
    if fields and len(values) != fields:
        raise DetectionError(f"{where}: {len(values)} fields, but kpt_shape makes a pose line "
                             f"{fields} ('class cx cy w h' and the keypoints); fix the line")
    if not fields and len(values) != 5 and (len(values) < 7 or len(values) % 2 == 0):
        hint = (" (a 6th number is a score: predictions are not ground truth)"
                if len(values) == 6 else "")
        raise DetectionError(f"{where}: {len(values)} fields{hint}; a line is {_LINE}, or a "
                             "segment 'class x1 y1 x2 y2 ...' of at least 3 points; fix the line")
    index = values[0]
    if not index.is_integer() or not 0 <= index < num_classes:
        raise DetectionError(f"{where}: class {tokens[0][:20]} is not a class index 0.."
                             f"{num_classes - 1} of {names_where}; fix the line or the names")
    names = ("cx", "cy", "w", "h") if fields or len(values) == 5 else ("x", "y") * len(values)
    for name, value in zip(names, values[1:]):
        if name in ("w", "h") and value < 0:
            raise DetectionError(f"{where}: {name} {value:g} is a negative size; a line is "
                                 f"{_LINE}; fix the line")
        if not -NORMALISED_SLACK <= value <= 1 + NORMALISED_SLACK:
            raise DetectionError(f"{where}: {name} {value:g} is outside [0, 1]; YOLO coordinates "
                                 "are fractions of the image's width and height (pixel values: "
                                 "divide by the image's size); fix the line")
    if fields or len(values) == 5:
        return int(index), values[1:5]
    xs, ys = values[1::2], values[2::2]
    return int(index), [(min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2,
                        max(xs) - min(xs), max(ys) - min(ys)]


def _number(token: str, where: str) -> float:
    try:
        value = float(token)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise DetectionError(f"{where}: {shown(token[:40])} is not a number; a line is {_LINE}; "
                             "fix the line")
    return value
