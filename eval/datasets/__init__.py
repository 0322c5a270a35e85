"""Dataset readers: COCO instances JSON, PASCAL VOC folders, ILSVRC DET folders, YOLO labels.

Every format becomes one in-memory form, `Dataset`: an ordered class list and, per image, its
id, file, size and ground truth as float32 ``(x1, y1, x2, y2)`` boxes in absolute pixels with
labels ``1..K`` (0 is background). Dataset ids and names are mapped here, at the I/O edge only;
the boxes themselves stay as annotated (never clipped nor dropped), as the devkits read them.

NumPy-only (Pillow is imported lazily by `read_image`): the evaluation path uses this module and
must not need torch.

One module per format: `eval.datasets.coco`, `.voc`, `.ilsvrc`, `.yolo`; `.images` decodes image
files; `.common` holds what they share. This module picks the reader (`load_dataset`).
"""
from __future__ import annotations

from pathlib import Path

from eval.datasets.coco import (CocoInstances, _coco_subset, coco_class_mask, coco_dataset,
                                coco_split_mask, load_coco, load_coco_instances,
                                parse_coco_instances, subset_coco_instances)
from eval.datasets.common import (Dataset, ImageRecord, PathLike, read_class_list,
                                  with_image_sizes)
from eval.datasets.ilsvrc import _has_synset_names, _is_class_map, load_ilsvrc
from eval.datasets.images import read_image
from eval.datasets.voc import load_voc, load_voc_folder
from eval.datasets.yolo import is_yolo, load_yolo, load_yolo_yaml
from eval.errors import DetectionError
from eval.inputs import check_name

__all__ = ["CocoInstances", "Dataset", "ImageRecord", "coco_class_mask", "coco_dataset",
           "coco_split_mask", "load_coco", "load_coco_instances", "load_dataset", "load_ilsvrc",
           "load_voc", "load_voc_folder", "load_yolo", "load_yolo_yaml", "parse_coco_instances",
           "read_class_list", "read_image", "subset_coco_instances", "with_image_sizes"]


def load_dataset(gt: PathLike, images: PathLike | None = None, classes: PathLike | None = None,
                 blacklist: PathLike | None = None, split: str | None = None) -> Dataset:
    """Ground truth in whichever format ``gt`` is (what the commands' ``--gt`` reads).

    A ``.json`` file: COCO (`load_coco`, ``images`` the image root). A folder with
    ``Annotations/``: PASCAL VOC (`load_voc`, ``split`` a name or a file). A folder of XMLs:
    ILSVRC (`load_ilsvrc`) when ``classes`` is a map_det.txt or the object names are synsets,
    else `load_voc_folder` (``split`` a split file). YOLO (`eval.datasets.yolo.is_yolo`): a
    data.yaml (`load_yolo_yaml`, ``split`` train, val or test), or a folder of label files
    (`load_yolo`: ``images`` their images, ``classes`` the names, ``split`` a file of ids).
    """
    path = Path(gt)
    check_name(path)  # first: looking up an over-long name raises
    if not path.exists():
        raise DetectionError(f"{gt}: no such file or folder; pass a COCO .json file, a folder "
                             "of VOC/ILSVRC XMLs, a YOLO data.yaml or a YOLO labels folder")
    is_map = classes is not None and _is_class_map(classes)
    # Not a folder: a file (the reader refuses a FIFO, device or socket by name, unread).
    if not path.is_dir() and path.suffix.lower() == ".json":
        _reject_options(gt, "COCO JSON", classes=classes, blacklist=blacklist)
        dataset = load_coco(path, images)
        return dataset if split is None else _coco_subset(dataset, split)
    if is_yolo(path, classes):
        _reject_options(gt, "YOLO ground truth", blacklist=blacklist)
        if path.is_dir():
            return load_yolo(path, images, classes, split)
        _reject_options(gt, "a YOLO data.yaml (it names its images and classes)",
                        images=images, classes=classes)
        return load_yolo_yaml(path, split)
    if not path.is_dir():
        raise DetectionError(f"{gt}: not a .json or .yaml file; pass COCO JSON, a YOLO "
                             "data.yaml or a folder of XMLs or YOLO labels")
    if (path / "Annotations").is_dir() and not is_map:
        _reject_options(gt, "a PASCAL VOC root", blacklist=blacklist)
        return load_voc(path, split, classes, images)
    ann_dir = path / "Annotations" if (path / "Annotations").is_dir() else path
    if is_map or _has_synset_names(ann_dir):
        if classes is None:
            raise DetectionError(f"{gt}: the object names are WordNet synsets (ILSVRC); pass the "
                                 "class map (the devkit's map_det.txt) as classes")
        return load_ilsvrc(ann_dir, classes, images, split, blacklist)
    _reject_options(gt, "a folder of VOC XMLs", blacklist=blacklist)
    return load_voc_folder(path, images, classes, split_file=split)


def _reject_options(gt: PathLike, kind: str, **options: object) -> None:
    given = [name for name, value in options.items() if value is not None]
    if given:
        raise DetectionError(f"{gt}: {kind} takes no {' / '.join(given)} option; drop it")
