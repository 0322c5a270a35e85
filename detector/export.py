"""An ensemble exported to ONNX (`export_onnx`), and an exported file run by ONNX Runtime
(`load_exported`, what ``Detector.load(..., backend="onnxruntime")`` runs).

    tools/export.py runs/a/last.pt runs/b/last.pt --out model.onnx --check-image photo.jpg
    Detector.load(["model.onnx"], backend="onnxruntime")

The ONNX graph is the ensemble's verdict on warped regions, nothing else: input ``regions``
float32 ``[B, 3, S, S]`` (B free) as `detector.regions.warp_regions` gives them, outputs
``probs`` float32 ``[B, C]``, the members' averaged softmax (`detector.pipeline.classify_regions`),
and, when a member regresses boxes, ``deltas`` float32 ``[B, K, 4]``, their mean. The input is
float, not uint8: warping interpolates normalised pixels, so a region is not whole numbers and
rounding it to bytes would change the scores. Proposals, warping and post-processing stay
outside the graph; the file's ``metadata_props[METADATA_KEY]`` (JSON) holds what they need:
classes, input size, context padding, normalisation and the proposal settings.

An export is checked before it is written: ONNX Runtime's softmax on real warped regions of a
photo (the model's own proposals) must be within `TOLERANCE` of PyTorch's, or nothing is written.
Needs the `onnx` extra (onnx, onnxscript, onnxruntime); running an exported file needs
onnxruntime only.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from detector.pipeline import Ensemble, classify_regions, imagenet_ensemble, load_ensemble
from detector.regions import iter_warped_regions
from eval.datasets import read_image
from eval.errors import DetectionError
from eval.inputs import is_number, parse_json, read_bytes, shown
from eval.outputs import check_output_file, write_atomic
from proposals.checkpoint import ModelSpec
from proposals.combined import SELECTIVE_SEARCH, proposer_for
from proposals.defaults import BACKENDS, MIN_INPUT_SIZE, REGION_BATCH
from proposals.networks import IMAGENET_MEAN, IMAGENET_STD, channels_first, normalize_image

# The metadata entry that marks a file as ours; its JSON layout's version.
METADATA_KEY = "googlenet_detection"
METADATA_FORMAT = 1
# Largest |ONNX Runtime - PyTorch| of a softmax an export may show; float32 reorderings of
# GoogLeNet's sums stay near 1e-6.
TOLERANCE = 1e-4
# Regions of the check image compared (spread over its proposals, small to large).
CHECK_REGIONS = 48
# The environment variable that sets the default of --backend (backend=None).
BACKEND_VARIABLE = "GDET_BACKEND"
_EXTRA = "pip install 'googlenet-detection[onnx]' (or -e \".[onnx]\" in a clone)"
_FROM_EXPORT = ("export the checkpoints with tools/export.py CKPT --format onnx --out FILE "
                "--check-image PHOTO")


class MeanEnsemble(nn.Module):
    """The members as one graph: regions -> (mean softmax, mean deltas of the members that
    regress boxes, if any), float32, as `classify_regions` computes them."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, regions: Tensor) -> tuple[Tensor, ...]:
        outputs = [member(regions) for member in self.members]
        probs = torch.stack([logits.float().softmax(dim=1) for logits, _ in outputs]).mean(0)
        regressed = [deltas.float() for _, deltas in outputs if deltas is not None]
        return (probs, torch.stack(regressed).mean(0)) if regressed else (probs,)


def export_onnx(checkpoints: Sequence[str | os.PathLike], out: str | os.PathLike,
                check_image: str | os.PathLike, *,
                imagenet_weights: str | os.PathLike | None = None,
                tolerance: float = TOLERANCE) -> float:
    """Write the ensemble of ``checkpoints`` (or, with none, the ImageNet GoogLeNet of the
    local ``imagenet_weights`` file) to ``out`` as ONNX, once ONNX Runtime agrees with PyTorch
    on the regions of ``check_image``. Returns the largest softmax difference found.

    ``out`` is checked before any work (never one of the inputs) and written atomically.
    Models whose proposals need a MultiBox network are refused: the file would not carry it.
    """
    out = check_output_file(out, "--out", [*checkpoints, ("--imagenet-weights", imagenet_weights),
                                           ("--check-image", check_image)])
    for module in ("onnxscript", "onnxruntime"):  # the exporter's and the check's
        _require(module)
    if not checkpoints and imagenet_weights is None:
        raise DetectionError("nothing to export: pass checkpoints, or --imagenet-weights FILE "
                             "for the ImageNet GoogLeNet")
    ensemble = (load_ensemble(list(checkpoints), "cpu") if checkpoints
                else imagenet_ensemble("cpu", imagenet_weights))
    where = str(checkpoints[0]) if checkpoints else str(imagenet_weights)
    check_exportable(ensemble, where)
    pixels, boxes = check_regions(ensemble, check_image, where)
    model = onnx_model(ensemble, metadata_of(ensemble, checkpoints or [imagenet_weights]))
    difference = parity(ensemble, model, pixels, boxes)
    if not difference <= tolerance:  # also refuses nan
        raise DetectionError(f"{out}: not written: ONNX Runtime's softmax differs from "
                             f"PyTorch's by up to {difference:.2e} (over {tolerance:g}) on "
                             f"{len(boxes)} regions of {check_image}; report it with the "
                             "versions of torch, onnxscript and onnxruntime")
    write_atomic(out, model)
    return difference


def check_exportable(ensemble: Ensemble, where: str) -> None:
    """Refuse what an ONNX file cannot carry: proposals that need a MultiBox network."""
    if ensemble.proposal_network is not None or ensemble.proposal_method != SELECTIVE_SEARCH:
        raise DetectionError(f"{where}: its {ensemble.proposal_method} proposals need its "
                             "MultiBox network, which an ONNX export does not carry; detect "
                             "with the checkpoint itself (the torch backend), or export a model "
                             "trained on selective search proposals")


def check_regions(ensemble: Ensemble, image_path: str | os.PathLike, where: str
                  ) -> tuple[Tensor, Tensor]:
    """The check image's normalised pixels [3, H, W] and `CHECK_REGIONS` of its proposals
    (computed as the model's are), spread from the first to the last."""
    image = read_image(image_path)
    proposer = proposer_for(ensemble.proposal_method, ensemble.proposal_params, where)
    boxes = proposer(image)
    if len(boxes) == 0:
        raise DetectionError(f"--check-image {image_path}: no proposals in it; pass a photo")
    keep = np.unique(np.linspace(0, len(boxes) - 1, CHECK_REGIONS).round().astype(int))
    return normalize_image(channels_first(image)), torch.as_tensor(boxes[keep])


def metadata_of(ensemble: Ensemble, sources: Sequence[str | os.PathLike]) -> dict:
    """What the file says about itself (JSON in its metadata): enough to propose, warp,
    normalise and read the outputs without this toolkit."""
    members, spec = ensemble.members, ensemble.spec
    regression = any(m.bbox_pred is not None for m in members)
    return {"format": METADATA_FORMAT, "exported_by": "googlenet-detection tools/export.py",
            "classes": list(ensemble.classes), "background": bool(members[0].background),
            "members": len(members), "box_regression": regression,
            "input": "regions", "outputs": ["probs", "deltas"] if regression else ["probs"],
            "input_size": spec.input_size, "context_pad": spec.context_pad,
            "normalization": {"scale": 255, "mean": list(IMAGENET_MEAN),
                              "std": list(IMAGENET_STD), "fill": 0.0},
            "proposals": {"method": ensemble.proposal_method,
                          "params": ensemble.proposal_params},
            "sources": [Path(s).name for s in sources]}


def onnx_model(ensemble: Ensemble, metadata: dict) -> bytes:
    """The serialised ONNX model of the ensemble (torch.export-based exporter, batch axis
    free), weights inside, ``metadata`` as JSON under `METADATA_KEY`."""
    spec = ensemble.spec
    module = MeanEnsemble(ensemble.members).eval()
    example = torch.zeros(2, 3, spec.input_size, spec.input_size)  # 2: 1 would fix the axis
    program = torch.onnx.export(module, (example,), dynamo=True, verbose=False,
                                input_names=["regions"], output_names=metadata["outputs"],
                                dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    proto = program.model_proto
    proto.doc_string = ("GoogLeNet region-classifier ensemble: warped regions in, mean softmax "
                        f"out; see metadata_props['{METADATA_KEY}']")
    proto.metadata_props.add(key=METADATA_KEY, value=json.dumps(metadata))
    return proto.SerializeToString()


def parity(ensemble: Ensemble, model: bytes, pixels: Tensor, boxes: Tensor) -> float:
    """Largest |ONNX Runtime - PyTorch float32| of the softmax (and the deltas) over
    ``boxes``' regions, run as one batch and as batches of 1 (the batch axis is free)."""
    spec = ensemble.spec
    reference, ref_deltas = classify_regions(pixels, boxes, ensemble.members,
                                             input_size=spec.input_size,
                                             context_pad=spec.context_pad)
    members = OnnxMembers(ort_session(model, torch.get_num_threads(), "the exported model"),
                          ensemble_info(ensemble))
    worst = 0.0
    for batch_size in (len(boxes), 1):
        probs, deltas = classify_exported(pixels, boxes, members, input_size=spec.input_size,
                                          context_pad=spec.context_pad, batch_size=batch_size)
        worst = max(worst, float((probs - reference).abs().max()))
        if ref_deltas is not None:
            worst = max(worst, float((deltas - ref_deltas).abs().max()))
    return worst


@dataclass(frozen=True)
class MemberInfo:
    """What the detection path reads of a member (``members[0].background``)."""

    num_classes: int
    background: bool
    box_regression: bool


def ensemble_info(ensemble: Ensemble) -> MemberInfo:
    first = ensemble.members[0]
    return MemberInfo(first.num_classes, bool(first.background),
                      any(m.bbox_pred is not None for m in ensemble.members))


class OnnxMembers(Sequence[MemberInfo]):
    """An exported ensemble in an ONNX Runtime session on the CPU. ``members(regions)`` gives
    the mean softmax and deltas (`classify_exported` runs it); it is still a sequence of its
    members' descriptions, so code that reads ``members[0].background`` works unchanged."""

    def __init__(self, session, info: MemberInfo, count: int = 1) -> None:
        self.session, self.info, self.count = session, info, count

    def __call__(self, regions: Tensor) -> tuple[Tensor, Tensor | None]:
        outputs = self.session.run(None, {"regions": regions.float().contiguous().numpy()})
        deltas = torch.from_numpy(outputs[1]) if len(outputs) > 1 else None
        return torch.from_numpy(outputs[0]), deltas

    def __getitem__(self, index):  # type: ignore[override]
        return ([self.info] * self.count)[index]

    def __len__(self) -> int:
        return self.count


def classify_exported(pixels: Tensor, boxes: Tensor, members: OnnxMembers, *, input_size: int,
                      context_pad: int, batch_size: int = REGION_BATCH,
                      path: object = None) -> tuple[Tensor, Tensor | None]:
    """`classify_regions` for an exported ensemble: the same warped regions, classified by
    ONNX Runtime (``path`` is ignored: the graph runs in float32)."""
    probs, deltas = [], []
    for regions in iter_warped_regions(pixels.cpu(), boxes.cpu(), input_size, context_pad,
                                       batch_size):
        batch_probs, batch_deltas = members(regions)
        probs.append(batch_probs)
        deltas.append(batch_deltas)
    if not probs:
        width = members.info.num_classes + int(members.info.background)
        return pixels.new_zeros((0, width)), None
    return torch.cat(probs), torch.cat(deltas) if deltas[0] is not None else None


def load_exported(path: str | os.PathLike, threads: int) -> Ensemble:
    """An exported file as an `Ensemble` whose members are an `OnnxMembers` (ONNX Runtime on
    the CPU, ``threads`` intra-op threads), with the classes, spec and proposal settings of its
    metadata. Read through the input door; a file that is not ONNX, or not exported by
    tools/export.py, is one DetectionError naming it."""
    data = read_bytes(path, "onnx", _FROM_EXPORT)
    session = ort_session(data, threads, path)
    meta = exported_metadata(session, path)
    info = MemberInfo(len(meta["classes"]), meta["background"], meta["box_regression"])
    spec = ModelSpec(len(meta["classes"]), meta["input_size"], meta["context_pad"],
                     meta["box_regression"])
    return Ensemble(OnnxMembers(session, info, meta["members"]), tuple(meta["classes"]), spec,
                    meta["proposals"]["method"], meta["proposals"]["params"])


def ort_session(model: bytes, threads: int, where: str | os.PathLike):
    """An ONNX Runtime session of ``model`` on the CPU provider, ``threads`` intra-op threads
    (as torch's), one inter-op thread, every graph optimisation."""
    ort = _require("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: its warnings are not the user's to act on
    try:
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # ONNX Runtime raises its own types for files it cannot read
        reason = " ".join(str(e).split())[:200]
        raise DetectionError(f"{where}: not an ONNX model ONNX Runtime can load ({reason}); "
                             f"{_FROM_EXPORT}") from None


def exported_metadata(session, where: str | os.PathLike) -> dict:
    """The file's `METADATA_KEY` record, checked field by field and against the graph's input
    and outputs; missing: the file was not exported by tools/export.py."""
    found = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in found:
        raise DetectionError(f"{where}: not exported by tools/export.py (no '{METADATA_KEY}' "
                             f"metadata: its classes, input size and proposals are unknown); "
                             f"{_FROM_EXPORT}")
    meta = parse_json(found[METADATA_KEY], f"{where} (metadata '{METADATA_KEY}')", _FROM_EXPORT)
    problem = _metadata_problem(meta) or _graph_problem(session, meta)
    if problem:
        raise DetectionError(f"{where}: malformed '{METADATA_KEY}' metadata ({problem}); "
                             f"{_FROM_EXPORT}")
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


def _require(module: str):
    """``module`` imported, or one DetectionError naming the extra that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError:
        raise DetectionError(f"this needs {module}, which the `onnx` extra installs: "
                             f"{_EXTRA}") from None
