"""Configs that inherit: ``_base_: other.yaml`` at the top of a config file, as mmdetection.

    # configs/raccoon_combined_cpu.yaml
    _base_: raccoon_cpu.yaml        # a path relative to this file's folder, or a list of them
    data:
      proposals: cache/raccoon_ss_x2_mb200
    output: runs/raccoon_combined

The bases are read first (a list in order, each later one merged onto the earlier), then the
file itself is merged onto them: mappings merge key by key, the file's values win, and lists
and single values replace the base's whole. ``_delete_: true`` in one of the file's mappings
replaces the base's mapping at that key instead of merging into it (mmdetection's rule), for a
section whose keys the base has and the file must not keep.

detectron2 spells the key ``_BASE_``; every key of ours is lower case, so ``_BASE_`` is refused
with the spelling to use rather than accepted as a second name. Only the ``_base_`` paths are
relative to the file that writes them: every other path in a config (``data.gt``,
``data.proposals``, ...) stays relative to the working directory, whichever file wrote it, so
a value means the same in a base as in the file that inherits it.

Each file is read by the one config reader (`eval.config.read_yaml`: `eval.inputs`' size
limit, `eval.config.ConfigLoader`), passed in as ``read``. A cycle, a chain deeper than
`MAX_BASE_DEPTH` files and more than `MAX_BASE_FILES` files read for one config are one error
naming the files. `inherited` also says which file each dotted key came from, so an error
about a key a base wrote names the base.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from eval.errors import DetectionError

BASE_KEY = "_base_"
DELETE_KEY = "_delete_"
MAX_BASE_DEPTH = 8    # files in one chain (a -> b -> ...); the shipped configs go 2 deep
MAX_BASE_FILES = 32   # files read for one config, a base shared by two others read twice

# Reads one config file as a dict; the text is the fix its errors end with.
Reader = Callable[[Path, str], dict]


def inherited(path: str | Path, read: Reader, fix: str) -> tuple[dict, dict[str, str]]:
    """The data of the config file ``path`` merged onto its ``_base_`` files, and for every
    dotted key in it (sections too) the file whose value it holds. ``fix`` ends the error
    about ``path`` itself (not found, not YAML)."""
    return _Chain(read).load(Path(path), [], fix)


class _Chain:
    """One config's reading: the files read so far, to bound them."""

    def __init__(self, read: Reader):
        self.read, self.files = read, 0

    def load(self, path: Path, chain: list[tuple[str, str]], fix: str
             ) -> tuple[dict, dict[str, str]]:
        """``path`` merged onto its bases; ``chain``: (shown, real path) of the files that
        inherit from it, outermost first."""
        shown, real = str(path), os.path.realpath(path)
        names = " -> ".join([name for name, _ in chain] + [shown])
        if any(real == other for _, other in chain):
            raise DetectionError(f"{chain[-1][0]}: _base_ makes a cycle ({names}); a config "
                                 "cannot inherit from itself, remove one _base_")
        if len(chain) >= MAX_BASE_DEPTH:
            raise DetectionError(f"{chain[-1][0]}: _base_ chains more than {MAX_BASE_DEPTH} "
                                 f"files ({names}); inherit from fewer levels")
        self.files += 1
        if self.files > MAX_BASE_FILES:
            raise DetectionError(f"{chain[0][0]}: its _base_ files read more than "
                                 f"{MAX_BASE_FILES} files; inherit from fewer")
        own = self.read(path, fix)
        bases = _base_paths(own, shown)
        data, origins = {}, {}
        for base in bases:
            asked = f"named by _base_ {base!r} in {shown}, relative to that file's folder"
            loaded, loaded_origins = self.load(path.parent / base, chain + [(shown, real)],
                                               asked)
            data, origins = _overlay(data, origins, loaded, loaded_origins, shown)
        return _overlay(data, origins, own, _keys(own, shown), shown)


def _base_paths(own: dict, shown: str) -> list[str]:
    """The ``_base_`` paths of a file's data (taken out of it): none, one, or a list."""
    if "_BASE_" in own:
        raise DetectionError(f"{shown}: write _base_ (lower case, as mmdetection and every key "
                             "here), not detectron2's _BASE_")
    bases = own.pop(BASE_KEY, [])
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) and b.strip() for b in bases):
        raise DetectionError(f"{shown}: _base_ must be a config file's path or a list of them "
                             f"(relative to {shown}'s folder), got {bases!r:.60}")
    return bases


def _keys(data: dict, file: str, prefix: str = "") -> dict[str, str]:
    """Every dotted key of ``data`` (sections and values, not into lists) -> ``file``."""
    keys = {}
    for key, value in data.items():
        if key == DELETE_KEY:
            continue
        keys[f"{prefix}{key}"] = file
        if isinstance(value, dict):
            keys.update(_keys(value, file, f"{prefix}{key}."))
    return keys


def _overlay(base: dict, base_origins: dict[str, str], child: dict,
             child_origins: dict[str, str], file: str) -> tuple[dict, dict[str, str]]:
    """``child`` merged onto ``base``, and where each key now comes from: the child's keys,
    and the base's keys that the child neither replaced whole nor deleted."""
    replaced: list[str] = []
    data = _merge(base, child, file, "", replaced)
    kept = {key: origin for key, origin in base_origins.items()
            if not any(_within(key, r) for r in replaced)}
    return data, {**kept, **child_origins}


def _within(key: str, section: str) -> bool:
    """Whether dotted ``key`` is ``section`` or below it ('' holds every key)."""
    return not section or key == section or key.startswith(section + ".")


def _merge(base: dict, child: dict, file: str, prefix: str, replaced: list[str]) -> dict:
    """``child`` merged onto ``base`` (neither changed); ``replaced`` gets the dotted keys of
    the base's values the child replaced whole ('' for all of them)."""
    if _deletes(child, file, prefix):
        replaced.append(prefix.rstrip("."))
        base = {}
    merged = dict(base)
    for key, value in child.items():
        if key == DELETE_KEY:
            continue
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merged[key] = _merge(base[key], value, file, dotted + ".", replaced)
        else:
            merged[key] = _merge({}, value, file, dotted + ".", []) if isinstance(
                value, dict) else value  # a mapping's _delete_ keys checked and left out
            replaced.append(dotted)
    return merged


def _deletes(child: dict, file: str, prefix: str) -> bool:
    """Whether ``child`` says ``_delete_: true`` (replace the base's mapping)."""
    value = child.get(DELETE_KEY, False)
    if not isinstance(value, bool):
        raise DetectionError(f"{file}: {prefix}{DELETE_KEY} must be true or false, got "
                             f"{value!r:.60}")
    return value
