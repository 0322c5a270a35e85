"""YOLO's data.yaml (Ultralytics): class names, splits, the dataset root, the pose shape; and
class names files (darknet's ``.names``). Read through eval.config's safe loader, as configs are.
See `eval.datasets.yolo` for the layouts."""
from __future__ import annotations

import os
from pathlib import Path

from eval.config import parse_yaml
from eval.datasets.common import PathLike, _content_lines
from eval.errors import DetectionError
from eval.inputs import read_text, shown

SPLITS = ("train", "val", "test")
YAML_SUFFIXES = (".yaml", ".yml")


def read_data_yaml(path: PathLike) -> dict:
    """A data.yaml as a mapping, through eval.config's safe loader (at most 1 MiB)."""
    fix = "fix the file (an Ultralytics data.yaml: path, train, val, test, names)"
    data = parse_yaml(read_text(path, "config", fix), str(path), fix)
    if not isinstance(data, dict):
        raise DetectionError(f"{path}: not a mapping of keys to values; {fix}")
    return data


def read_yolo_names(path: PathLike) -> tuple[str, ...]:
    """Class names in class-index order: a data.yaml's ``names``, or a file of one name per
    line (darknet's ``.names``; blank lines and '#' comments skipped)."""
    if Path(path).suffix.lower() in YAML_SUFFIXES:
        return yaml_names(read_data_yaml(path), Path(path))
    names = tuple(text for _, text in _content_lines(path))
    if not names:
        raise DetectionError(f"{path}: no class names; write one class name per line")
    return unique_names(names, str(path))


def yaml_names(data: dict, path: Path) -> tuple[str, ...]:
    """``names`` as a list, or a mapping whose keys run 0..K-1; ``nc`` must match."""
    names = data.get("names")
    if isinstance(names, dict):
        if not all(type(k) is int for k in names) or set(names) != set(range(len(names))):
            raise DetectionError(f"{path}: the keys of 'names' must be the class indices 0..K-1 "
                                 f"(got {shown(sorted(names, key=str))}); fix 'names'")
        names = [names[k] for k in range(len(names))]
    if not isinstance(names, list) or not names:
        raise DetectionError(f"{path}: 'names' must list the class names (a list, or a mapping "
                             "{0: name, 1: name, ...}); add it")
    for k, name in enumerate(names):
        if isinstance(name, bool) or not isinstance(name, (str, int, float)) or name == "":
            raise DetectionError(f"{path}: class {k} is named {shown(name)}; write each name as "
                                 "text, in quotes where YAML would read it otherwise ('no', 'on')")
    nc = data.get("nc", len(names))
    if nc != len(names) or isinstance(nc, bool):
        raise DetectionError(f"{path}: nc is {shown(nc)} but 'names' has {len(names)} entries; "
                             "fix nc or drop it")
    return unique_names(tuple(str(name) for name in names), str(path))


def unique_names(names: tuple[str, ...], where: str) -> tuple[str, ...]:
    twice = next((n for k, n in enumerate(names) if n in names[:k]), None)
    if twice is not None:
        raise DetectionError(f"{where}: the class {twice!r} is named twice; each class must "
                             "appear once (detections may name their class)")
    return names


def pick_split(data: dict, path: Path, split: str | None) -> str:
    """The split key to read: ``split``, or the only one the file names."""
    named = [key for key in SPLITS if data.get(key)]
    if split is None and len(named) == 1:
        return named[0]
    if split is None:
        raise DetectionError(f"{path}: names the splits {', '.join(named) or '(none)'}; pick one "
                             "with --split (train, val or test)")
    if split not in SPLITS:
        raise DetectionError(f"--split {shown(split)}: a data.yaml's split is train, val or test")
    if split not in named:
        raise DetectionError(f"{path}: has no '{split}' split (it names "
                             f"{', '.join(named) or 'none'}); add it or pick another --split")
    return split


def yaml_root(data: dict, path: Path) -> Path:
    root = data.get("path", "")
    if not isinstance(root, str):
        raise DetectionError(f"{path}: 'path' must be the dataset folder, got {shown(root)}")
    return path.parent / os.path.expanduser(root)


def pose_fields(data: dict, path: Path) -> int:
    """The number of fields of a pose label line (``kpt_shape: [K, 2 or 3]``), 0 without."""
    shape = data.get("kpt_shape")
    if shape is None:
        return 0
    if (not isinstance(shape, list) or len(shape) != 2 or not all(type(v) is int for v in shape)
            or shape[0] < 1 or shape[1] not in (2, 3)):
        raise DetectionError(f"{path}: kpt_shape must be [keypoints, 2 or 3], got "
                             f"{shown(shape)}; fix it or drop it for box labels")
    return 5 + shape[0] * shape[1]
