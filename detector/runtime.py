"""The ONNX Runtime side of detection, with no torch: a file of tools/export.py (or a cached
export, `detector.export_cache`) in a session (`load_exported`, `ort_session`), its metadata
checked (`exported_metadata`), and the regions of an image classified by it
(`classify_exported`: warped by ONNX Runtime's RoiAlign, `detector.onnx_warp`, bit-identical to
`detector.regions.warp_regions`). Which backend runs the networks is chosen here too
(`backend_or_default`, `check_backend`).

    members = load_exported("model.onnx").members          # an OnnxMembers
    probs, deltas = classify_exported(pixels, boxes, members, input_size=224, context_pad=16)

Arrays in and out are numpy: ``pixels`` float32 ``[3, H, W]`` (`normalized_pixels`), boxes
float32 ``[N, 4]``. Torch-free (a fresh-process test in tests/detector/test_export_cache.py
holds it), so that detecting with an export on the CPU never pays torch's start-up; exporting
is `detector.export`'s, with torch.
Needs onnxruntime only (the `onnx` extra installs it).
"""
from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detector.onnx_warp import ONNX_EXTRA, Warper, cpu_session
from detector.records import Ensemble
from eval.errors import DetectionError
from eval.inputs import is_number, parse_json, read_bytes, shown
from proposals.defaults import (BACKENDS, IMAGENET_MEAN, IMAGENET_STD, MIN_INPUT_SIZE,
                                REGION_BATCH)
from proposals.spec import ModelSpec

# The metadata entry that marks a file as ours; its JSON layout's version.
METADATA_KEY = "googlenet_detection"
METADATA_FORMAT = 1
# The environment variable that sets the default of --backend (backend=None).
BACKEND_VARIABLE = "GDET_BACKEND"
FROM_EXPORT = ("export the checkpoints with tools/export.py CKPT --format onnx --out FILE "
               "--check-image PHOTO")


@dataclass(frozen=True)
class MemberInfo:
    """What the detection path reads of a member (``members[0].background``)."""

    num_classes: int
    background: bool
    box_regression: bool


class OnnxMembers(Sequence[MemberInfo]):
    """An exported ensemble in an ONNX Runtime session on the CPU. ``members(regions)`` gives
    the mean softmax and deltas of float32 ``[B, 3, S, S]`` regions (`classify_exported` runs
    it, with ``warper(S, pad)``: ONNX Runtime's RoiAlign with the same thread count); it is
    still a sequence of its members' descriptions, so code that reads ``members[0].background``
    works unchanged."""

    def __init__(self, session, info: MemberInfo, count: int = 1, threads: int | None = None
                 ) -> None:
        self.session, self.info, self.count = session, info, count
        self.threads = threads or default_threads()
        self._warpers: dict[tuple[int, int], Warper] = {}

    def __call__(self, regions: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        outputs = self.session.run(None, {"regions": np.ascontiguousarray(regions, np.float32)})
        return outputs[0], outputs[1] if len(outputs) > 1 else None

    def warper(self, input_size: int, context_pad: int) -> Warper:
        """The region warp these members' inputs need (made once per size)."""
        key = (input_size, context_pad)
        if key not in self._warpers:
            self._warpers[key] = Warper(input_size, context_pad, threads=self.threads)
        return self._warpers[key]

    def __getitem__(self, index):  # type: ignore[override]
        return ([self.info] * self.count)[index]

    def __len__(self) -> int:
        return self.count


def classify_exported(pixels: np.ndarray, boxes: np.ndarray, members: OnnxMembers, *,
                      input_size: int, context_pad: int,
                      batch_size: int = REGION_BATCH) -> tuple[np.ndarray, np.ndarray | None]:
    """`detector.pipeline.classify_regions` for an exported ensemble, in numpy: ``pixels``
    float32 ``[3, H, W]`` (`normalized_pixels`), ``boxes`` float32 ``[N, 4]`` -> the mean
    softmax ``[N, C]`` and mean deltas ``[N, K, 4]`` (or None), the regions warped by ONNX
    Runtime (bit-identical to `detector.regions.warp_regions`) ``batch_size`` at a time."""
    warp = members.warper(input_size, context_pad)
    probs, deltas = [], []
    for start in range(0, len(boxes), batch_size):
        batch_probs, batch_deltas = members(warp(pixels, boxes[start:start + batch_size]))
        probs.append(batch_probs)
        deltas.append(batch_deltas)
    if not probs:
        width = members.info.num_classes + int(members.info.background)
        return np.zeros((0, width), np.float32), None
    return np.concatenate(probs), np.concatenate(deltas) if deltas[0] is not None else None


def normalized_pixels(image: np.ndarray) -> np.ndarray:
    """RGB uint8 ``[H, W, 3]`` -> float32 ``[3, H, W]`` ``(x / 255 - mean) / std``, bit-identical
    to `proposals.networks.normalize_image` (the same float32 operations in the same order);
    the ImageNet mean colour is exactly 0, the warp's fill outside the image."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        raise DetectionError(f"image array has shape {shape}; expected [H, W, 3] RGB (convert "
                             "grayscale or RGBA images to RGB first)")
    if image.dtype != np.uint8:
        raise DetectionError(f"image array has dtype {image.dtype}; expected uint8 pixels")
    mean = np.asarray(IMAGENET_MEAN, np.float32)[:, None, None]
    std = np.asarray(IMAGENET_STD, np.float32)[:, None, None]
    unit = image.transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)
    return np.ascontiguousarray((unit - mean) / std)


def load_exported(path: str | os.PathLike, threads: int | None = None) -> Ensemble:
    """An exported file as an `Ensemble` whose members are an `OnnxMembers` (ONNX Runtime on
    the CPU, ``threads`` intra-op threads, default `default_threads`), with the classes, spec
    and proposal settings of its metadata. Read through the input door; a file that is not
    ONNX, or not exported by tools/export.py, is one DetectionError naming it."""
    threads = threads or default_threads()
    session = ort_session(read_bytes(path, "onnx", FROM_EXPORT), threads, path)
    return exported_ensemble(session, exported_metadata(session, path), threads)


def exported_ensemble(session, meta: dict, threads: int) -> Ensemble:
    """The `Ensemble` of a session and its checked metadata (`exported_metadata`)."""
    info = MemberInfo(len(meta["classes"]), meta["background"], meta["box_regression"])
    spec = ModelSpec(len(meta["classes"]), meta["input_size"], meta["context_pad"],
                     meta["box_regression"])
    return Ensemble(OnnxMembers(session, info, meta["members"], threads),
                    tuple(meta["classes"]), spec, meta["proposals"]["method"],
                    meta["proposals"]["params"])


def ort_session(model: bytes, threads: int, where: str | os.PathLike):
    """An ONNX Runtime session of ``model`` on the CPU (`detector.onnx_warp.cpu_session`:
    ``threads`` intra-op threads, every graph optimisation); a model ONNX Runtime cannot load
    is one DetectionError naming ``where``."""
    require("onnxruntime")
    try:
        return cpu_session(model, threads)
    except Exception as e:  # ONNX Runtime raises its own types for files it cannot read
        reason = " ".join(str(e).split())[:200]
        raise DetectionError(f"{where}: not an ONNX model ONNX Runtime can load ({reason}); "
                             f"{FROM_EXPORT}") from None


def exported_metadata(session, where: str | os.PathLike) -> dict:
    """The file's `METADATA_KEY` record, checked field by field and against the graph's input
    and outputs; missing: the file was not exported by tools/export.py."""
    found = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in found:
        raise DetectionError(f"{where}: not exported by tools/export.py (no '{METADATA_KEY}' "
                             f"metadata: its classes, input size and proposals are unknown); "
                             f"{FROM_EXPORT}")
    meta = parse_json(found[METADATA_KEY], f"{where} (metadata '{METADATA_KEY}')", FROM_EXPORT)
    problem = _metadata_problem(meta) or _graph_problem(session, meta)
    if problem:
        raise DetectionError(f"{where}: malformed '{METADATA_KEY}' metadata ({problem}); "
                             f"{FROM_EXPORT}")
    return meta


def _metadata_problem(meta: object) -> str | None:
    """What is wrong with a metadata record, or None."""
    if not isinstance(meta, dict):
        return f"{shown(meta)} is not an object"
    if meta.get("format") != METADATA_FORMAT:
        return f"format {shown(meta.get('format'))}, this toolkit reads {METADATA_FORMAT}"
    classes, size, pad = meta.get("classes"), meta.get("input_size"), meta.get("context_pad")
    if not isinstance(classes, list) or not classes or not all(type(c) is str for c in classes):
        return f"classes {shown(classes)} is not a list of names"
    for name, low in (("input_size", MIN_INPUT_SIZE), ("context_pad", 0), ("members", 1)):
        value = meta.get(name)
        if type(value) is not int or not low <= value <= 4096:
            return f"{name} {shown(value)} is not an integer in {low}..4096"
    if size <= 2 * pad:
        return f"context_pad {pad} leaves no room in input_size {size}"
    for name in ("background", "box_regression"):
        if type(meta.get(name)) is not bool:
            return f"{name} {shown(meta.get(name))} is not true or false"
    norm = meta.get("normalization")
    if not isinstance(norm, dict) or [norm.get("mean"), norm.get("std")] != [
            list(IMAGENET_MEAN), list(IMAGENET_STD)] or not is_number(norm.get("scale")):
        return f"normalization {shown(norm)} is not this toolkit's ImageNet mean and std"
    proposals = meta.get("proposals")
    if (not isinstance(proposals, dict) or not isinstance(proposals.get("method"), str)
            or not isinstance(proposals.get("params"), dict)):
        return f"proposals {shown(proposals)} is not a method name with its params"
    return None


def _graph_problem(session, meta: dict) -> str | None:
    """Whether the graph's input and outputs are what the metadata says."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    size = meta["input_size"]
    if len(inputs) != 1 or inputs[0].name != "regions" or list(inputs[0].shape[1:]) != [
            3, size, size]:
        got = [(i.name, i.shape) for i in inputs]
        return f"the graph's inputs {shown(got)} are not regions [B, 3, {size}, {size}]"
    wanted = ["probs", "deltas"] if meta["box_regression"] else ["probs"]
    width = len(meta["classes"]) + int(meta["background"])
    if [o.name for o in outputs] != wanted or outputs[0].shape[1:] != [width]:
        got = [(o.name, o.shape) for o in outputs]
        return f"the graph's outputs {shown(got)} are not {wanted} with {width} columns"
    return None


def is_exported_file(files: Sequence[str | os.PathLike]) -> bool:
    """Whether ``files`` is one file of tools/export.py (named ``*.onnx``), not checkpoints."""
    return len(files) == 1 and _is_onnx(files[0])


def _is_onnx(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() == ".onnx"


def backend_or_default(backend: str | None) -> str:
    """``backend``, or where it is None the default: the `BACKEND_VARIABLE` environment
    variable if set (e.g. ``torch`` on machines where exports are not wanted), else ``auto``."""
    if backend is not None:
        return backend
    value = os.environ.get(BACKEND_VARIABLE, "").strip()
    if value and value not in BACKENDS:
        raise DetectionError(f"{BACKEND_VARIABLE}={value!r} (the default --backend): use one "
                             f"of {', '.join(BACKENDS)}, or unset it")
    return value or "auto"


def check_backend(backend: str | None, files: Sequence[str | os.PathLike], *,
                  device: object = "auto", precision: str = "auto",
                  imagenet_weights: object = None, **torch_only: object) -> None:
    """The choices ``backend`` (None: `backend_or_default`) refuses, named by flag and keyword,
    before any file is read. ONNX Runtime (``onnxruntime``, and ``auto`` given an ``.onnx``
    file) runs float32 on the CPU: no CUDA device, no bf16, none of the torch path's options
    (``torch_only``: channels_last, stacked, compile) turned on; an exported file is the one
    --checkpoint."""
    chosen_by = "--backend torch (backend='torch')" if backend else f"{BACKEND_VARIABLE}=torch"
    backend = backend_or_default(backend)
    if backend not in BACKENDS:
        raise DetectionError(f"--backend {backend} (backend={backend!r}): use one of "
                             f"{', '.join(BACKENDS)}")
    exported = any(map(_is_onnx, files))
    if backend == "torch" and exported:
        raise DetectionError(f"--checkpoint {files[0]}: an ONNX file runs on ONNX Runtime; drop "
                             f"{chosen_by} or pass --backend onnxruntime")
    if backend == "torch" or (backend == "auto" and not exported):
        return
    if exported and (len(files) != 1 or imagenet_weights is not None):
        raise DetectionError("an exported .onnx file is a whole ensemble: pass it as the one "
                             "--checkpoint, without other checkpoints or --imagenet-weights")
    if str(device) not in ("auto", "cpu"):
        raise DetectionError(f"--backend onnxruntime runs on the CPU, not --device {device}; "
                             "pass --device cpu (device='cpu')")
    if precision not in ("auto", "fp32"):
        raise DetectionError(f"--backend onnxruntime runs the exported float32 graph; drop "
                             f"--precision {precision} (precision=)")
    chosen = [name for name, value in torch_only.items() if value]
    if chosen:
        raise DetectionError(f"--{chosen[0].replace('_', '-')} ({chosen[0]}=) applies to the "
                             "torch backend only; drop it with --backend onnxruntime")


def default_threads() -> int:
    """ONNX Runtime's intra-op threads: torch's count where torch is loaded (a user may have
    set it), else ``OMP_NUM_THREADS`` if set, else the CPUs this process may run on."""
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "get_num_threads"):
        return torch.get_num_threads()
    value = os.environ.get("OMP_NUM_THREADS", "")
    if value.isdigit() and int(value) > 0:
        return int(value)
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def require(module: str):
    """``module`` imported, or one DetectionError naming the extra that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError:
        raise DetectionError(f"this needs {module}, which the `onnx` extra installs: "
                             f"{ONNX_EXTRA}") from None
