"""Checkpoints run by ONNX Runtime on the CPU: the loaded ensemble exported once per model and
kept in the user's cache, what ``Detector.load(..., backend="auto")`` runs on a CPU.

    members = onnx_members(ensemble, "runs/a/last.pt")   # None: stay on PyTorch (it says why)

Measured on this project's 2-core CPU (BENCHMARKS.md, "Every CPU path"), ONNX Runtime
classifies GoogLeNet regions several times faster than PyTorch's fastest float32 path
(channels_last) with the same softmax to ~1e-6, so it is the CPU default. Exporting takes
~10 s (torch's torch.export-based exporter), so the file is kept under `export_cache_dir()`,
named by a digest of everything that decides the graph (every weight, the classes, the input
size, the versions of torch, onnxscript and onnxruntime); the next load of the same model reads
it in ~0.1 s. A new export is checked against PyTorch before it is used or kept (random
regions, `detector.export.TOLERANCE`); a cached file is read through the input door and must
carry its own digest. Whatever goes wrong (no exporter, an export that fails or disagrees, a
cache folder that cannot be written) the detector still runs: on PyTorch with one warning, or,
when only the cache write failed, on the export in memory.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import torch

from detector.export import (MeanEnsemble, OnnxMembers, TOLERANCE, ensemble_info,
                             exported_metadata, metadata_of, onnx_model, ort_session)
from detector.pipeline import Ensemble
from eval.errors import DetectionError
from eval.inputs import read_bytes
from eval.outputs import write_atomic

# Bump when the exported graph changes for the same weights (a cached file is then not reused).
EXPORT_VERSION = 1
# Regions of the parity check of a new export (random pixels, fixed seed).
CHECK_BATCH = 8
# What the exporter and the runtime need (the `detect` and `onnx` extras install them).
NEEDS = ("onnx", "onnxscript", "onnxruntime")


def export_cache_dir() -> Path:
    """Where exports are kept: ``$XDG_CACHE_HOME/googlenet-detection/onnx``, by default
    ``~/.cache/googlenet-detection/onnx`` (delete it at any time; it is made again)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "googlenet-detection" / "onnx"


def runtime_available() -> bool:
    """Whether the exporter and ONNX Runtime can be imported (without importing them)."""
    from importlib.util import find_spec

    return all(find_spec(name) is not None for name in NEEDS)


def model_digest(ensemble: Ensemble) -> str:
    """A digest of everything that decides the exported graph: every member's weights (names,
    dtypes, shapes, values), the metadata the file carries, and the software that exports and
    runs it."""
    import onnxruntime
    import onnxscript

    digest = hashlib.sha256()
    identity = {"export": EXPORT_VERSION, "torch": torch.__version__,
                "onnxscript": onnxscript.__version__, "onnxruntime": onnxruntime.__version__,
                "metadata": metadata_of(ensemble, [])}
    digest.update(json.dumps(identity, sort_keys=True).encode())
    for member in ensemble.members:
        for name, tensor in member.state_dict().items():
            value = tensor.detach().cpu().contiguous()
            digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}".encode())
            digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def onnx_members(ensemble: Ensemble, where: str, *, required: bool = False,
                 threads: int | None = None) -> OnnxMembers | None:
    """The ensemble's members as one ONNX Runtime session on the CPU (``threads`` intra-op
    threads, default torch's), from the cache or exported now. Where that cannot be done:
    None with one warning saying why (the caller keeps the PyTorch members), or, ``required``
    (``backend="onnxruntime"`` asked for), a DetectionError."""
    threads = threads or torch.get_num_threads()
    if not runtime_available():
        raise DetectionError(f"{where}: ONNX Runtime needs onnx, onnxscript and onnxruntime: "
                             "pip install -e \".[onnx]\"; or drop --backend onnxruntime")
    try:
        digest = model_digest(ensemble)
        path = export_cache_dir() / f"{digest[:32]}.onnx"
        session = _cached_session(path, digest, threads)
        if session is None:
            session = _export_session(ensemble, digest, path, threads)
    except _Fallback as e:
        if required:
            raise DetectionError(f"{where}: --backend onnxruntime: {e}") from None
        warnings.warn(f"{where}: running on PyTorch, not ONNX Runtime: {e}", stacklevel=3)
        return None
    return OnnxMembers(session, ensemble_info(ensemble), len(ensemble.members))


class _Fallback(Exception):
    """Why ONNX Runtime cannot run this ensemble now."""


def _cached_session(path: Path, digest: str, threads: int):
    """The session of the cached export at ``path``, or None when there is none or it is not
    this model's (damaged, or another model's under a colliding name): it is exported again."""
    if not path.is_file():
        return None
    try:
        session = ort_session(read_bytes(path, "onnx"), threads, path)
        if exported_metadata(session, path).get("digest") != digest:
            return None
    except DetectionError:
        return None
    return session


def _export_session(ensemble: Ensemble, digest: str, path: Path, threads: int):
    """Export the ensemble, check it against PyTorch, keep it at ``path`` (a failed write only
    warns) and return its session."""
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
    size = ensemble.spec.input_size
    regions = torch.randn(CHECK_BATCH, 3, size, size,
                          generator=torch.Generator().manual_seed(0))
    got = OnnxMembers(session, ensemble_info(ensemble), len(ensemble.members))(regions)
    with torch.inference_mode():
        want = MeanEnsemble(ensemble.members).eval()(regions)
    return max(float((g - w).abs().max()) for g, w in zip(got, want))
