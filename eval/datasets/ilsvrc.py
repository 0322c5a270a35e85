"""ILSVRC DET: VOC-style XMLs named by WordNet synsets, the devkit's class map and blacklist.
NumPy only."""
from __future__ import annotations

import re
from pathlib import Path

from eval.datasets.common import (Dataset, PathLike, _content_lines, _is_digits,
                                  _is_map_line, _parse_class_map, _parse_index)
from eval.datasets.voc import _read_xml, _select_xmls, _xml_records
from eval.errors import DetectionError
from eval.inputs import read_bytes, shown

_SYNSET = re.compile(r"n\d{8}")


def load_ilsvrc(annotations_dir: PathLike, class_map: PathLike, images_dir: PathLike | None = None,
                split_file: PathLike | None = None, blacklist: PathLike | None = None) -> Dataset:
    """ILSVRC DET: VOC-style XMLs whose object names are WordNet synsets (``n02672831``).

    ``class_map``: ``synset index name`` lines (the devkit's map_det.txt); label = index, class
    name = the human name. ILSVRC pixels are 0-based inclusive (the devkit takes widths as
    xmax - xmin + 1): x1 = xmin, y1 = ymin, x2 = xmax + 1, y2 = ymax + 1, kept as annotated
    (eval_detection.m never clips to the image; <size> is taken as written, see `load_voc`).
    ``split_file``: lines ``<image id> <index>`` (``ImageSets/DET/val.txt``) or plain ids.
    ``blacklist``: the devkit's ``image_index synset`` lines (or ``image_index class_index``);
    the image index is the split file's index column, or the 1-based position among the sorted
    XMLs. Stored as ``Dataset.blacklist``: (0-based position in ``images``, label) pairs.
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
        label = _parse_index(cls) if _is_digits(cls) else lookup.get(cls, 0)
        image = _parse_index(tokens[0])
        if image not in position or label is None or not 1 <= label <= len(lookup):
            raise DetectionError(f"{path} line {lineno}: {shown(text)} names no image index of the "
                                 f"split and class of the class map ({len(indices)} images, "
                                 f"{len(lookup)} classes); use the blacklist of this split")
        pairs.add((position[image], label))
    return frozenset(pairs)


def _is_class_map(path: PathLike) -> bool:
    """True when ``path`` reads as a map_det.txt (every line ``synset index ...``)."""
    try:
        lines = _content_lines(path)
    except DetectionError:
        return False
    return bool(lines) and all(_is_map_line(text) for _, text in lines)


def _has_synset_names(ann_dir: Path) -> bool:
    """True when the first object name among the first XMLs is a WordNet synset."""
    for path in sorted(p for p in ann_dir.glob("*.xml") if p.is_file())[:20]:
        try:
            text = read_bytes(path, "annotation").decode("utf-8", "replace")
        except DetectionError:
            continue  # reported by the reader, with the file named
        match = re.search(r"<name>\s*([^<\s]+)\s*</name>", text)
        if match:
            return _SYNSET.fullmatch(match.group(1)) is not None
    return False
