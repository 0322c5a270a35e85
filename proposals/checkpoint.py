"""Checkpoints: a trained network with everything needed to use or resume it, and nothing that
runs code when read.

One file per epoch, written atomically (temporary name, then rename)::

    {"format": 2, "classes": [K names], "model": ModelSpec as a dict, "state_dict": ...,
     "proposals": {"method": ..., "params": {...}, "multibox": the MultiBox network, if any},
     "config": the training config as a dict, "epoch": completed epochs,
     "optimizer": ..., "scheduler": ..., "rng": ...}

Detection needs only ``classes``, ``model``, ``state_dict`` and ``proposals`` (which carries the
MultiBox network the proposals need: copying the one file is enough); training adds the rest
so that ``--resume`` continues exactly where it stopped. MultiBox checkpoints have
``"kind": "multibox"`` and ``priors``.

Files from outside are hostile: every read is ``torch.load(weights_only=True)``, which builds
tensors and plain containers only and refuses any other object without running it. What
``weights_only`` would refuse (a ``collections.Counter`` on older torch versions, numpy arrays
and scalars) is stored in plain form and restored on load (`to_plain` / `from_plain`), so a
resumed run is bitwise the uninterrupted one.

``weights_only`` builds shared references as the pickle asks: a 1 KB file can hold a list that
holds itself 9 times, 9 deep (9**9 leaves), which costs nothing until something walks it. So
every read is bounded before anything walks or prints it (`check_bounded`), and a checkpoint's
fields are those of its kind only (`load_checkpoint`).
"""
from __future__ import annotations

import io
import itertools
import os
import pickle
import zipfile
from collections import Counter, OrderedDict
from dataclasses import MISSING, asdict, fields
from pathlib import Path

import numpy as np
import torch

from eval.errors import DetectionError
from proposals.spec import ModelSpec  # what a checkpoint's "model" records
from eval.inputs import open_input, shown
from eval.outputs import write_atomic

# 2: proposal records carry their MultiBox network (1 stored the MultiBox checkpoint's path).
FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)

# Marks a value stored in plain form (`to_plain`); the key cannot come from a config or a
# state dict of ours, whose keys are identifiers.
_TYPE_KEY = "__checkpoint_type__"


def save_checkpoint(path: str | os.PathLike, *, classes: list[str], spec: ModelSpec,
                    state_dict: dict, proposals: dict, **extra) -> None:
    """Write a checkpoint atomically; ``extra`` holds the training state (epoch, optimizer, ...)."""
    if spec.num_classes != len(classes):
        raise ValueError(f"spec has {spec.num_classes} classes, class list {len(classes)}")
    write_payload(path, {"classes": list(classes), "model": asdict(spec),
                         "state_dict": state_dict, "proposals": proposals, **extra})


def write_payload(path: str | os.PathLike, payload: dict) -> None:
    """torch.save ``payload`` (plain types only, with this format's version) to ``path``
    atomically. A value that ``weights_only`` loading could not read back is a ValueError here,
    before anything is written."""
    buffer = io.BytesIO()
    torch.save(to_plain({"format": FORMAT_VERSION, **payload}), buffer)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, buffer.getvalue())


def to_plain(value: object) -> object:
    """``value`` with every Counter and numpy array/scalar in a form ``weights_only`` reads
    (`from_plain` undoes it); tensors, str, numbers, bool, None, bytes, dict, list, tuple as
    they are. Anything else is a ValueError: it could not be read back safely."""
    if isinstance(value, Counter):
        return {_TYPE_KEY: "Counter", "items": {k: to_plain(v) for k, v in value.items()}}
    if isinstance(value, (dict, OrderedDict)) and type(value) in (dict, OrderedDict):
        return type(value)((k, to_plain(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)) and type(value) in (list, tuple):
        return type(value)(to_plain(v) for v in value)
    if isinstance(value, np.ndarray):
        tensor = torch.from_numpy(np.ascontiguousarray(value).copy())
        return {_TYPE_KEY: "ndarray", "tensor": tensor}
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (torch.Tensor, str, bytes, bool, int, float,
                                           torch.dtype, torch.device)):
        return value
    raise ValueError(f"a checkpoint cannot hold a {type(value).__name__} ({value!r:.80}): "
                     "store tensors, numbers, strings and plain containers")


def from_plain(value: object) -> object:
    """`to_plain`'s inverse: Counters and numpy arrays back. ``value`` comes from
    `read_torch_file`, whose `check_bounded` has capped its size and depth (this walk would
    otherwise expand shared references without limit)."""
    if isinstance(value, dict):
        tag = value.get(_TYPE_KEY)
        if tag == "Counter":
            return Counter({k: from_plain(v) for k, v in value["items"].items()})
        if tag == "ndarray":
            return value["tensor"].numpy()
        return type(value)((k, from_plain(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return type(value)(from_plain(v) for v in value)
    return value


def read_torch_file(path: str | os.PathLike, missing: str,
                    map_location: str | torch.device = "cpu") -> object:
    """What ``torch.save`` wrote to ``path``, read with ``weights_only=True``: tensors and plain
    containers only; a file holding any other object is refused unread (unpickling it could run
    code), and bounded in size (`check_bounded`). Every failure is one DetectionError naming
    ``path``; ``missing`` says what to do when there is no such file (e.g. "checkpoint not
    found; ...")."""
    if not os.path.lexists(path):
        raise DetectionError(f"{path}: {missing}")
    fix = "pass a checkpoint or weights .pt file"
    # Through the input door: a folder, FIFO or device is one error at once, never a hang.
    with open_input(path, "checkpoint", fix) as file:
        # torch.save has written zip archives since torch 1.6
        if not zipfile.is_zipfile(file):
            raise DetectionError(f"{path}: not a file written by torch.save (it may be "
                                 "truncated, or another kind of file); use a complete "
                                 "checkpoint or weights file")
        file.seek(0)
        payload = _torch_load(path, file, map_location)
    check_bounded(payload, path)
    return payload


def _torch_load(path: str | os.PathLike, file: io.BufferedIOBase,
                map_location: str | torch.device) -> object:
    """``torch.load(weights_only=True)`` of an open file; every failure one DetectionError."""
    try:
        return torch.load(file, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise DetectionError(f"{path}: refused unread: it holds Python objects other than "
                             "tensors and plain containers, and loading them could run code; "
                             "use a checkpoint written by this toolkit or a plain state dict"
                             ) from None
    except Exception as e:  # torch raises several types for damaged or foreign archives
        reason = " ".join(str(e).split())[:160]
        raise DetectionError(f"{path}: a zip archive but not a readable torch.save file "
                             f"({type(e).__name__}: {reason}); it may be damaged: use another "
                             "copy or another epoch's file") from None


# A real checkpoint (GoogLeNet weights, Adam state, the RNG's 625 words, a MultiBox network
# inside) holds about 4,000 values, 5 levels deep: these limits leave a wide margin, and refuse
# a reference bomb after a fraction of a second without building anything.
MAX_VALUES = 1_000_000
MAX_DEPTH = 32


def check_bounded(value: object, where: str | os.PathLike) -> None:
    """Refuse (one DetectionError naming ``where``) a value read from a file that holds more
    than `MAX_VALUES` values (shared references counted each time they are reached, as any
    walk would reach them) or nests deeper than `MAX_DEPTH`, and a tensor that claims more
    elements than its storage holds (a view that would allocate when copied). Walks with a
    stack of iterators: memory in the depth, never in the size."""
    stack, count = [iter((value,))], 0
    while stack:
        for item in stack[-1]:
            count += 1
            if count > MAX_VALUES:
                _refuse_unbounded(where, f"more than {MAX_VALUES:,} values (lists or dicts "
                                         "that reference one another expand without limit)")
            if isinstance(item, torch.Tensor) and item.layout == torch.strided:
                _check_tensor_storage(item, where)
            children = (itertools.chain(item.keys(), item.values()) if isinstance(item, dict)
                        else item if isinstance(item, (list, tuple)) else None)
            if children is not None:
                if len(stack) > MAX_DEPTH:
                    _refuse_unbounded(where, f"containers nested more than {MAX_DEPTH} deep")
                stack.append(iter(children))
                break
        else:
            stack.pop()


def _check_tensor_storage(tensor: torch.Tensor, where: str | os.PathLike) -> None:
    elements = tensor.untyped_storage().nbytes() // max(tensor.element_size(), 1)
    if tensor.numel() > elements:
        _refuse_unbounded(where, f"a tensor of shape {tuple(tensor.shape)} over a storage of "
                                 f"{elements:,} elements")


def _refuse_unbounded(where: str | os.PathLike, what: str) -> None:
    raise DetectionError(f"{where}: refused unread: it holds {what}, far beyond any "
                         "checkpoint or weights file; use a file written by tools/train.py or "
                         "torch.save(model.state_dict(), path)")


# What each kind of checkpoint must hold, and where it belongs (for messages).
_REQUIRED = {"classifier": ("classes", "model", "state_dict"),
             "multibox": ("model", "priors", "state_dict")}
# Every field a checkpoint of each kind may hold (`save_checkpoint`, `save_multibox` and the
# training state `detector.training.loop` adds); any other is refused before it is converted.
_TRAINING_STATE = ("config", "epoch", "optimizer", "scheduler", "rng")
_FIELDS = {"classifier": ("format", "kind", "classes", "model", "state_dict", "proposals",
                          *_TRAINING_STATE),
           "multibox": ("format", "kind", "model", "priors", "state_dict", *_TRAINING_STATE)}
_USED_BY = {"classifier": "the detect/test commands' --checkpoint (or train --resume)",
            "multibox": "the propose command's --multibox (or proposals.multibox in a "
                        "training config)"}
_MISSING = {"classifier": "checkpoint not found; train one with tools/train.py or check the path",
            "multibox": "MultiBox checkpoint not found; train one with tools/train.py "
                        "(task: multibox) or fix the path",
            None: "checkpoint not found; check the path"}
_FROM_TRAIN = "use a checkpoint written by tools/train.py"


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    kind: str | None = "classifier") -> dict:
    """Read a checkpoint of ``kind`` ("classifier", "multibox", or None for either) safely
    (`read_torch_file`); anything else, or a newer format, is one DetectionError naming it."""
    payload = read_torch_file(path, _MISSING.get(kind, _MISSING[None]), map_location)
    if not isinstance(payload, dict) or "format" not in payload:
        raise DetectionError(f"{path}: not a checkpoint of this toolkit (no format); "
                             "use a file written by tools/train.py")
    check_format(path, payload["format"])
    found = payload.get("kind", "classifier")
    if not isinstance(found, str):
        raise DetectionError(f"{path}: kind {shown(found)} is not a checkpoint kind (a name: "
                             f"{' or '.join(_REQUIRED)}); {_FROM_TRAIN}")
    kind = kind or found
    if found != kind or kind not in _REQUIRED:
        raise DetectionError(f"{path}: a {found} checkpoint where a {kind} is needed; pass it "
                             f"to {_USED_BY.get(found, 'the tool that made it')}")
    unknown = [k for k in payload if k not in _FIELDS[kind]]
    if unknown:
        raise DetectionError(f"{path}: unknown field {shown(unknown[0])} in a {kind} checkpoint "
                             f"(the fields are {', '.join(_FIELDS[kind])}); refused unread ("
                             f"{_FROM_TRAIN})")
    missing = [k for k in _REQUIRED[kind] if k not in payload]
    if missing:
        raise DetectionError(f"{path}: not a {kind} checkpoint of this toolkit (no "
                             f"{', '.join(missing)}); {_FROM_TRAIN}")
    if not isinstance(payload["state_dict"], dict):
        raise DetectionError(f"{path}: state_dict is {type(payload['state_dict']).__name__}, not "
                             f"a mapping of tensors; {_FROM_TRAIN}")
    if kind == "classifier":
        model_spec(payload, path)  # classes and model, checked
        _check_proposal_record(payload.get("proposals"), path)
    return from_plain(payload)


def check_format(path: str | os.PathLike, version: object) -> None:
    """Refuse a checkpoint ``format`` this toolkit cannot read (one line naming ``path``)."""
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise DetectionError(f"{path}: not a checkpoint of this toolkit (format {version!r}); "
                             "use a file written by tools/train.py")
    if version not in READABLE_FORMATS:
        raise DetectionError(f"{path}: checkpoint format {version} is newer than this toolkit "
                             f"reads (up to {FORMAT_VERSION}); update the toolkit to use it")


# The values each integer field of a `ModelSpec` may take in a checkpoint: sizes are bounded,
# so that a hostile record cannot make the network allocate without limit.
_SPEC_RANGES = {"num_classes": (1, 100_000), "input_size": (1, 4096), "context_pad": (0, 4096)}


def model_spec(payload: dict, where: str | os.PathLike) -> ModelSpec:
    """The `ModelSpec` of a classifier checkpoint's payload (the one parser of its ``model``
    record), checked: `ModelSpec`'s fields only, each of its type (a bool is not an int) and
    range, and ``classes`` a list of that many names. Anything else is one DetectionError
    naming ``where``."""
    record, classes = payload.get("model"), payload.get("classes")
    known = {f.name: f for f in fields(ModelSpec)}
    if not isinstance(record, dict):
        raise DetectionError(f"{where}: model is {shown(record)}, not a model description "
                             f"(an object of {', '.join(known)}); {_FROM_TRAIN}")
    unknown = [k for k in record if k not in known]
    absent = [n for n, f in known.items() if f.default is MISSING and n not in record]
    if unknown or absent:
        problem = f"unknown field {shown(unknown[0])}" if unknown else f"no {absent[0]}"
        raise DetectionError(f"{where}: malformed model description ({problem}; the fields are "
                             f"{', '.join(known)}); {_FROM_TRAIN}")
    for name, value in record.items():
        want = bool if known[name].type in ("bool", bool) else int
        low, high = (False, True) if want is bool else _SPEC_RANGES.get(name, (0, 2**31 - 1))
        if type(value) is not want or not low <= value <= high:
            what = "true or false" if want is bool else f"an integer in {low}..{high}"
            raise DetectionError(f"{where}: model {name} is {shown(value)}, not {what}; "
                                 f"{_FROM_TRAIN}")
    if not isinstance(classes, list) or not all(type(c) is str for c in classes):
        raise DetectionError(f"{where}: classes is {shown(classes)}, not a list of class "
                             f"names; {_FROM_TRAIN}")
    spec = ModelSpec(**record)
    if spec.num_classes != len(classes):
        raise DetectionError(f"{where}: the model has {spec.num_classes} classes but the class "
                             f"list {len(classes)}; the checkpoint is corrupt ({_FROM_TRAIN})")
    return spec


def _check_proposal_record(record: object, where: str | os.PathLike) -> None:
    """A classifier checkpoint's ``proposals``: absent, or an object whose ``method`` is a name
    and ``params`` an object (what detection recomputes the proposals with)."""
    if record is None:
        return
    if (not isinstance(record, dict) or not isinstance(record.get("method", ""), str)
            or not isinstance(record.get("params", {}), dict)):
        raise DetectionError(f"{where}: proposals is {shown(record)}, not a proposal record "
                             "(an object with a method name and its params); " + _FROM_TRAIN)


def check_ensemble(paths: list[str], payloads: list[dict]) -> None:
    """Ensemble members must agree on classes, input size and context padding."""
    first = payloads[0]
    for path, other in zip(paths[1:], payloads[1:]):
        if other["classes"] != first["classes"]:
            raise DetectionError(f"{path}: its classes differ from {paths[0]}'s; an ensemble's "
                                 "members must be trained on the same class list")
        a, b = model_spec(first, paths[0]), model_spec(other, path)
        if (a.input_size, a.context_pad) != (b.input_size, b.context_pad):
            raise DetectionError(f"{path}: input size/context padding {b.input_size}/{b.context_pad} "
                                 f"differ from {paths[0]}'s {a.input_size}/{a.context_pad}")
