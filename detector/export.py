"""An ensemble exported to ONNX (`export_onnx`, with torch); running an exported file is
`detector.runtime`'s (`load_exported`, what ``Detector.load(..., backend="onnxruntime")`` runs,
without torch).

    tools/export.py runs/a/last.pt runs/b/last.pt --out model.onnx --check-image photo.jpg
    Detector.load(["model.onnx"], backend="onnxruntime")

The ONNX graph is the ensemble's verdict on warped regions, nothing else: input ``regions``
float32 ``[B, 3, S, S]`` (B free) as `detector.regions.warp_regions` gives them, outputs
``probs`` float32 ``[B, C]``, the members' averaged softmax (`detector.pipeline.classify_regions`),
and, when a member regresses boxes, ``deltas`` float32 ``[B, K, 4]``, their mean. The input is
float, not uint8: warping interpolates normalised pixels, so a region is not whole numbers and
rounding it to bytes would change the scores. Proposals, warping and post-processing stay
outside the graph (ONNX Runtime warps with its RoiAlign, bit-identical to torchvision's
roi_align: `detector.onnx_warp`); the file's ``metadata_props[METADATA_KEY]`` (JSON) holds what
they need:
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
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from detector.pipeline import Ensemble, classify_regions, imagenet_ensemble, load_ensemble
from detector.runtime import (METADATA_FORMAT, METADATA_KEY, MemberInfo, OnnxMembers,
                              classify_exported, ort_session, require)
from eval.datasets import read_image
from eval.errors import DetectionError
from eval.outputs import check_output_file, write_atomic
from proposals.combined import SELECTIVE_SEARCH, proposer_for
from proposals.defaults import IMAGENET_MEAN, IMAGENET_STD
from proposals.networks import channels_first, normalize_image

# Largest |ONNX Runtime - PyTorch| of a softmax an export may show; float32 reorderings of
# GoogLeNet's sums stay near 1e-6.
TOLERANCE = 1e-4
# Regions of the check image compared (spread over its proposals, small to large).
CHECK_REGIONS = 48


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
        require(module)
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
    ``boxes``' regions, run as one batch and as batches of 1 (the batch axis is free); ONNX
    Runtime warps the regions too, as detection runs it (`detector.runtime.classify_exported`)."""
    spec = ensemble.spec
    reference, ref_deltas = classify_regions(pixels, boxes, ensemble.members,
                                             input_size=spec.input_size,
                                             context_pad=spec.context_pad)
    members = OnnxMembers(ort_session(model, torch.get_num_threads(), "the exported model"),
                          ensemble_info(ensemble), threads=torch.get_num_threads())
    worst = 0.0
    for batch_size in (len(boxes), 1):
        probs, deltas = classify_exported(pixels.numpy(), boxes.numpy(), members,
                                          input_size=spec.input_size,
                                          context_pad=spec.context_pad, batch_size=batch_size)
        worst = max(worst, float(np.abs(probs - reference.numpy()).max()))
        if ref_deltas is not None:
            worst = max(worst, float(np.abs(deltas - ref_deltas.numpy()).max()))
    return worst


def ensemble_info(ensemble: Ensemble) -> MemberInfo:
    """What the detection path reads of a PyTorch ensemble's members (`MemberInfo`)."""
    first = ensemble.members[0]
    return MemberInfo(first.num_classes, bool(first.background),
                      any(m.bbox_pred is not None for m in ensemble.members))
