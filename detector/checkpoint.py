"""Checkpoints: a trained region classifier with everything needed to use or resume it.

One file per epoch, written atomically (temporary name, then rename)::

    {"format": 1, "classes": [K names], "model": ModelSpec as a dict, "state_dict": ...,
     "proposals": {"method": ..., "params": {...}}, "config": the training config as a dict,
     "epoch": completed epochs, "optimizer": ..., "scheduler": ..., "rng": ...}

Detection needs only ``classes``, ``model``, ``state_dict`` and ``proposals``; training adds the
rest so that ``--resume`` continues exactly where it stopped.
"""
from __future__ import annotations

import io
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from detector.errors import DetectionError
from detector.fileio import write_atomic

FORMAT_VERSION = 1


@dataclass(frozen=True)
class ModelSpec:
    """What a network was built with: classes 1..K plus background, input size, context padding."""

    num_classes: int
    input_size: int = 224
    context_pad: int = 16
    box_regression: bool = False


def save_checkpoint(path: str | os.PathLike, *, classes: list[str], spec: ModelSpec,
                    state_dict: dict, proposals: dict, **extra) -> None:
    """Write a checkpoint atomically; ``extra`` holds the training state (epoch, optimizer, ...)."""
    if spec.num_classes != len(classes):
        raise ValueError(f"spec has {spec.num_classes} classes, class list {len(classes)}")
    write_payload(path, {"classes": list(classes), "model": asdict(spec),
                         "state_dict": state_dict, "proposals": proposals, **extra})


def write_payload(path: str | os.PathLike, payload: dict) -> None:
    """torch.save ``payload`` (with this format's version) to ``path`` atomically."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT_VERSION, **payload}, buffer)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, buffer.getvalue())


# What each kind of checkpoint must hold, and the tool that uses it (for messages).
_REQUIRED = {"classifier": ("classes", "model", "state_dict"),
             "multibox": ("model", "priors", "state_dict")}
_USED_BY = {"classifier": "tools/detect.py / tools/test.py --checkpoint",
            "multibox": "tools/propose.py --multibox (or the proposals section of a config)"}


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    kind: str | None = "classifier") -> dict:
    """Read a checkpoint of ``kind`` ("classifier", "multibox", or None for either); anything
    else is a clear error."""
    try:
        payload = torch.load(path, map_location=map_location, weights_only=False)
    except FileNotFoundError:
        raise DetectionError(f"{path}: checkpoint not found; train one with tools/train.py "
                             "or check the path") from None
    except Exception as e:  # torch raises several types for truncated or foreign files
        raise DetectionError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e}); "
                             "it may be truncated: use another epoch's file") from None
    if not isinstance(payload, dict) or "format" not in payload:
        raise DetectionError(f"{path}: not a checkpoint of this toolkit (no format); "
                             "use a file written by tools/train.py")
    found = payload.get("kind", "classifier")
    kind = kind or found
    if found != kind or kind not in _REQUIRED:
        raise DetectionError(f"{path}: a {found} checkpoint where a {kind} is needed; pass it to "
                             f"{_USED_BY.get(found, 'the tool that made it')}")
    missing = [k for k in _REQUIRED[kind] if k not in payload]
    if missing:
        raise DetectionError(f"{path}: not a {kind} checkpoint of this toolkit (no "
                             f"{', '.join(missing)}); use a file written by tools/train.py")
    if payload["format"] != FORMAT_VERSION:
        raise DetectionError(f"{path}: checkpoint format {payload['format']}, this toolkit reads "
                             f"{FORMAT_VERSION}")
    return payload


def model_spec(payload: dict) -> ModelSpec:
    return ModelSpec(**payload["model"])


def check_ensemble(paths: list[str], payloads: list[dict]) -> None:
    """Ensemble members must agree on classes, input size and context padding."""
    first = payloads[0]
    for path, other in zip(paths[1:], payloads[1:]):
        if other["classes"] != first["classes"]:
            raise DetectionError(f"{path}: its classes differ from {paths[0]}'s; an ensemble's "
                                 "members must be trained on the same class list")
        a, b = model_spec(first), model_spec(other)
        if (a.input_size, a.context_pad) != (b.input_size, b.context_pad):
            raise DetectionError(f"{path}: input size/context padding {b.input_size}/{b.context_pad} "
                                 f"differ from {paths[0]}'s {a.input_size}/{a.context_pad}")
