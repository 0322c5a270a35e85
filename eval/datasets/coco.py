"""COCO instances JSON: `CocoInstances` (arrays exactly as pycocotools reads them) and `load_coco`.
NumPy only."""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from eval.boxes import xywh_to_xyxy
from eval.datasets.common import (Dataset, PathLike, _is_int, _read_split, _record,
                                  _strip_ext, _Tally, read_class_list)
from eval.errors import DetectionError
from eval.inputs import is_number, read_json, shown


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
            raise DetectionError(f"{where}: id {shown(entry['id'])} is not a unique integer; "
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
    if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(map(is_number, bbox))):
        raise DetectionError(f"{where}: bbox must be 4 finite numbers [x, y, width, height], "
                             f"got {shown(bbox)}; fix the annotation")
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
    if not is_number(area) or area < 0:
        raise DetectionError(f"{where}: area {shown(area)} is not a finite number >= 0; fix or "
                             "remove it")
    crowd = ann.get("iscrowd", 0)
    # pycocotools takes any truthy value as crowd; "no" would silently become a crowd box.
    if type(crowd) not in (int, bool) or crowd not in (0, 1):
        raise DetectionError(f"{where}: iscrowd {shown(crowd)} is not 0, 1, true or false; fix it")
    xywh = [float(v) for v in bbox]
    crowd = bool(crowd)
    return ann["id"], image_pos[image], cat_label[label], xywh, float(area), crowd


def _check_category_names(cats: dict[int, dict], source: str) -> None:
    """Category names are non-empty strings, each used once (detections may name classes);
    a clash is reported by ascending id."""
    seen: dict[str, int] = {}
    for cat_id in sorted(cats):
        name = cats[cat_id]["name"]
        if not isinstance(name, str) or not name:
            raise DetectionError(f"{source}: category id {cat_id} has name {name!r}; give it a "
                                 "non-empty string name")
        if name in seen:
            raise DetectionError(f"{source}: categories {seen[name]} and {cat_id} are both named "
                                 f"{name!r}; give each category its own name")
        seen[name] = cat_id


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
    _check_category_names(cats, source)
    for i in image_ids:
        size = images[i]["width"], images[i]["height"]
        if not all(is_number(v) and 0 < v < 2**31 for v in size):
            raise DetectionError(f"{source}: image id {i}: width and height must be positive "
                                 f"numbers of pixels, got {shown(size[0])} x {shown(size[1])}; fix the image "
                                 "entry")
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
    obj = read_json(path, "ground truth", "pass a COCO instances .json file (fix or re-download "
                    "it if damaged)")
    return parse_coco_instances(obj, str(path))


def load_coco(annotations: PathLike | dict, image_root: PathLike | None = None) -> Dataset:
    """COCO instances -> `Dataset` (`coco_dataset` of `load_coco_instances`)."""
    return coco_dataset(load_coco_instances(annotations), image_root)


def coco_dataset(inst: CocoInstances, image_root: PathLike | None = None) -> Dataset:
    """`CocoInstances` -> `Dataset`.

    ``(x, y, w, h)`` becomes ``(x, y, x + w, y + h)``, every box kept as annotated (as
    pycocotools keeps it): one reaching past its image is not clipped, a zero-size one is not
    dropped (both counted in one warning). ``image_id`` is the COCO id, labels follow the sorted
    category ids, ``areas`` are COCO's ``area`` (what small/medium/large use).
    """
    sizes = np.stack([inst.widths, inst.heights], axis=1)[inst.ann_image]
    tally = _Tally()
    boxes = tally.check(xywh_to_xyxy(inst.ann_bbox), sizes)
    tally.warn(inst.source, "the file's width and height")
    order = np.argsort(inst.ann_image, kind="stable")  # grouped by image, file order within
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


def _split_positions(split: PathLike, ids: list, file_names: list[str], source: str) -> list[int]:
    """Positions of the images a split file names, by image id or by file name (sorted)."""
    wanted = [image_id for image_id, _ in _read_split(split)]
    by_key: dict[str, int] = {}
    for i, (image_id, name) in enumerate(zip(ids, file_names)):
        by_key[str(image_id)] = i
        by_key.setdefault(_strip_ext(Path(name).name), i)
    missing = [w for w in wanted if w not in by_key]
    if missing:
        raise DetectionError(f"{split}: image {missing[0]!r} is not in {source} "
                             f"({len(missing)} such entries); list COCO image ids or file names")
    if not wanted:
        raise DetectionError(f"{split}: names no images; list COCO image ids or file names")
    return sorted({by_key[w] for w in wanted})


def coco_split_mask(inst: CocoInstances, split: PathLike) -> np.ndarray:
    """bool [I]: the images (in ``inst.image_ids`` order) that a split file names, by image id
    or file name. What pycocotools' ``params.imgIds`` selects."""
    keep = np.zeros(len(inst.image_ids), bool)
    keep[_split_positions(split, inst.image_ids.tolist(), list(inst.file_names), inst.source)] = True
    return keep


def coco_class_mask(inst: CocoInstances, classes: PathLike) -> np.ndarray:
    """bool [K]: the categories (in ``inst.category_ids`` order) a class list file names (see
    `read_class_list`). What pycocotools' ``params.catIds`` selects."""
    names = read_class_list(classes)
    unknown = [n for n in names if n not in inst.category_names]
    if unknown:
        raise DetectionError(f"{classes}: class {unknown[0]!r} is not a category of {inst.source} "
                             f"({len(unknown)} such names); list category names of that file")
    return np.isin(np.array(inst.category_names, dtype=object), np.array(names, dtype=object))


def subset_coco_instances(inst: CocoInstances, image_keep: np.ndarray,
                          category_keep: np.ndarray) -> CocoInstances:
    """The images ``image_keep`` bool [I] and categories ``category_keep`` bool [K] of ``inst``
    with their annotations (file order kept), indices renumbered: as if the file held only them."""
    ann = image_keep[inst.ann_image] & category_keep[inst.ann_label - 1]
    image_pos = np.cumsum(image_keep) - 1
    label = np.cumsum(category_keep)
    return replace(
        inst, image_ids=inst.image_ids[image_keep],
        file_names=tuple(n for n, k in zip(inst.file_names, image_keep) if k),
        widths=inst.widths[image_keep], heights=inst.heights[image_keep],
        category_ids=inst.category_ids[category_keep],
        category_names=tuple(n for n, k in zip(inst.category_names, category_keep) if k),
        ann_ids=inst.ann_ids[ann], ann_image=image_pos[inst.ann_image[ann]],
        ann_label=label[inst.ann_label[ann] - 1], ann_bbox=inst.ann_bbox[ann],
        ann_area=inst.ann_area[ann], ann_iscrowd=inst.ann_iscrowd[ann])


def _coco_subset(dataset: Dataset, split: PathLike) -> Dataset:
    """The images of a COCO dataset that a split file names, by image id or by file name."""
    keep = _split_positions(split, [r.image_id for r in dataset.images],
                            [r.file_name for r in dataset.images], dataset.source)
    return replace(dataset, images=tuple(dataset.images[i] for i in keep))
