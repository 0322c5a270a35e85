"""Checkpoints run by ONNX Runtime on the CPU: the ensemble exported once per model and kept in
the user's cache, what ``Detector.load(..., backend="auto")`` runs on a CPU.

    ensemble = onnx_ensemble(["runs/a/last.pt"], None, load, required=False)

Measured on this project's 2-core CPU (BENCHMARKS.md, "Every CPU path"), ONNX Runtime
classifies GoogLeNet regions several times faster than PyTorch's fastest float32 path
(channels_last) with the same softmax to ~1e-6, so it is the CPU default. Exporting takes
~10 s (torch's torch.export-based exporter), so the file is kept under `export_cache_dir()`,
named by a digest of what decides the graph: the bytes of every checkpoint (or of the ImageNet
weights file; for the downloaded weights, their name), and the versions of torch, torchvision,
onnxscript and onnxruntime (`source_digest`). The next load of the same model reads the file
and its metadata (classes, input size, proposals) without importing torch at all: that start-up
(2-4 s here) is a fifth of the main command's time. A new export is checked against PyTorch
before it is used or kept (random regions, `detector.export.TOLERANCE`); a cached file is read
through the input door and must carry its own digest. Whatever goes wrong (no exporter, an
export that fails or disagrees, a cache folder that cannot be written) the detector still
runs: on PyTorch with one warning, or, when only the cache write failed, on the export in
memory.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from importlib import metadata
from pathlib import Path

from detector.records import Ensemble
from detector.runtime import (OnnxMembers, default_threads, exported_ensemble,
                              exported_metadata, ort_session)
from eval.errors import DetectionError
from eval.inputs import LIMITS, open_input, read_bytes
from eval.outputs import write_atomic
from proposals.combined import SELECTIVE_SEARCH

# Bump when the exported graph changes for the same weights (a cached file is then not reused).
EXPORT_VERSION = 2
# Regions of the parity check of a new export (random pixels, fixed seed).
CHECK_BATCH = 8
# What the exporter and the runtime need (the `detect` and `onnx` extras install them).
NEEDS = ("onnx", "onnxscript", "onnxruntime")
# The software whose versions decide the exported graph (part of the cache key).
SOFTWARE = ("torch", "torchvision", "onnxscript", "onnxruntime")
# The downloaded ImageNet weights, by name (torchvision's weights API; fixed per version).
IMAGENET_SOURCE = "torchvision GoogLeNet_Weights.IMAGENET1K_V1"


def export_cache_dir() -> Path:
    """Where exports are kept: ``$XDG_CACHE_HOME/googlenet-detection/onnx``, by default
    ``~/.cache/googlenet-detection/onnx`` (delete it at any time; it is made again)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "googlenet-detection" / "onnx"


def runtime_available() -> bool:
    """Whether the exporter and ONNX Runtime can be imported (without importing them)."""
    from importlib.util import find_spec

    return all(find_spec(name) is not None for name in NEEDS)


def source_digest(checkpoints: Sequence[str | os.PathLike],
                  imagenet_weights: str | os.PathLike | None = None) -> str:
    """A digest of everything that decides the exported graph, without loading a model: the
    bytes of every checkpoint in order (or, without any, of the ``imagenet_weights`` file, or
    the downloaded weights' name), this cache's format and the versions of `SOFTWARE`.
    A checkpoint that cannot be read is the input door's one error naming it."""
    digest = hashlib.sha256()
    identity = {"export": EXPORT_VERSION, "software": {name: _version(name) for name in SOFTWARE},
                "members": len(checkpoints),
                "imagenet": None if checkpoints or imagenet_weights else IMAGENET_SOURCE}
    digest.update(json.dumps(identity, sort_keys=True).encode())
    for path in checkpoints or ([imagenet_weights] if imagenet_weights else []):
        digest.update(_file_digest(path))
    return digest.hexdigest()


def onnx_ensemble(checkpoints: Sequence[str | os.PathLike],
                  imagenet_weights: str | os.PathLike | None,
                  load: Callable[[], Ensemble], *, required: bool = False,
                  threads: int | None = None) -> Ensemble:
    """The ensemble of ``checkpoints`` (none: the ImageNet GoogLeNet of ``imagenet_weights``)
    with its members in one ONNX Runtime session on the CPU (``threads`` intra-op threads,
    default `detector.runtime.default_threads`): from the cache without torch, or loaded by
    ``load`` (PyTorch on the CPU) and exported now. Where that cannot be done: ``load``'s
    PyTorch ensemble with one warning saying why, or, ``required`` (``backend="onnxruntime"``
    asked for), a DetectionError."""
    threads = threads or default_threads()
    where = str(checkpoints[0]) if checkpoints else "the ImageNet model"
    if not runtime_available():
        raise DetectionError(f"{where}: ONNX Runtime needs onnx, onnxscript and onnxruntime: "
                             "pip install -e \".[onnx]\"; or drop --backend onnxruntime")
    digest = source_digest(checkpoints, imagenet_weights)
    path = export_cache_dir() / f"{digest[:32]}.onnx"
    cached = _cached_session(path, digest, threads)
    if cached is not None:
        session, meta = cached
        ensemble = exported_ensemble(session, meta, threads)
        return replace(ensemble, proposal_network=_proposal_network(checkpoints, ensemble))
    ensemble = load()
    try:
        session = _export_session(ensemble, digest, path, threads)
    except _Fallback as e:
        if required:
            raise DetectionError(f"{where}: --backend onnxruntime: {e}") from None
        warnings.warn(f"{where}: running on PyTorch, not ONNX Runtime: {e}", stacklevel=3)
        return ensemble
    from detector.export import ensemble_info

    members = OnnxMembers(session, ensemble_info(ensemble), len(ensemble.members), threads)
    return replace(ensemble, members=members)


class _Fallback(Exception):
    """Why ONNX Runtime cannot run this ensemble now."""


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _file_digest(path: str | os.PathLike) -> bytes:
    """sha256 of a checkpoint's bytes, read through the input door in 1 MiB pieces."""
    digest = hashlib.sha256()
    with open_input(path, "checkpoint") as f:
        for piece in iter(lambda: f.read(1 << 20), b""):
            digest.update(piece)
            if f.tell() > LIMITS["checkpoint"]:
                raise DetectionError(f"{path}: larger than a checkpoint can be "
                                     f"({LIMITS['checkpoint']} bytes); check the path")
    return digest.digest()


def _proposal_network(checkpoints: Sequence[str | os.PathLike], ensemble: Ensemble):
    """The MultiBox network a cached model's proposals need (read from its first checkpoint,
    with torch), or None for selective search, which needs none."""
    if ensemble.proposal_method == SELECTIVE_SEARCH or not checkpoints:
        return None
    from proposals.checkpoint import load_checkpoint
    from proposals.combined import embedded_multibox

    payload = load_checkpoint(checkpoints[0])
    return embedded_multibox(checkpoints[0], payload.get("proposals"))


def _cached_session(path: Path, digest: str, threads: int):
    """``(session, metadata)`` of the cached export at ``path``, or None when there is none or
    it is not this model's (damaged, or another model's under a colliding name): it is
    exported again."""
    if not path.is_file():
        return None
    try:
        session = ort_session(read_bytes(path, "onnx"), threads, path)
        meta = exported_metadata(session, path)
    except DetectionError:
        return None
    return (session, meta) if meta.get("digest") == digest else None


def _export_session(ensemble: Ensemble, digest: str, path: Path, threads: int):
    """Export the ensemble, check it against PyTorch, keep it at ``path`` (a failed write only
    warns) and return its session."""
    from detector.export import TOLERANCE, metadata_of, onnx_model

    print(f"exporting the network(s) to ONNX for ONNX Runtime, once per model (~10 s): "
          f"{path.parent}", flush=True)
    metadata = {**metadata_of(ensemble, []), "digest": digest}
    try:
        model = onnx_model(ensemble, metadata)
        session = ort_session(model, threads, "the exported model")
    except Exception as e:  # the exporter raises many types; any of them means "stay on torch"
        reason = " ".join(str(e).split())[:200]
        raise _Fallback(f"the export failed ({type(e).__name__}: {reason})") from None
    difference = _parity(ensemble, session)
    if not difference <= TOLERANCE:  # also refuses nan
        raise _Fallback(f"ONNX Runtime's softmax differs from PyTorch's by {difference:.2e} "
                        f"(over {TOLERANCE:g}); report it with the versions of torch, "
                        "onnxscript and onnxruntime")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, model)
    except (OSError, DetectionError) as e:
        warnings.warn(f"the ONNX export could not be kept in {path.parent} ({e}); it runs from "
                      "memory and is made again next time", stacklevel=4)
    return session


def _parity(ensemble: Ensemble, session) -> float:
    """Largest |ONNX Runtime - PyTorch| of the outputs (softmax, and deltas) on `CHECK_BATCH`
    random regions; PyTorch's are the exported graph's own module, `MeanEnsemble`."""
    import torch

    from detector.export import MeanEnsemble, ensemble_info

    size = ensemble.spec.input_size
    regions = torch.randn(CHECK_BATCH, 3, size, size,
                          generator=torch.Generator().manual_seed(0))
    got = OnnxMembers(session, ensemble_info(ensemble), len(ensemble.members))(regions.numpy())
    with torch.inference_mode():
        want = MeanEnsemble(ensemble.members).eval()(regions)
    return max(float(abs(g - w.numpy()).max()) for g, w in zip(got, want))
