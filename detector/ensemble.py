"""How an ensemble's members run: precision, memory format, stacked members, compilation.

`InferencePath` names the choices and `default_path(device)` is what the tools run unless told
otherwise. `prepare_members` applies a path to loaded members once (copies, never the caller's
modules), and `member_outputs` runs prepared members on a batch of regions; `detect`
(`detector.pipeline`) is built on both, so what `benchmarks/gpu.py` times per path is the code
the tools run.

Stacking (`StackedMembers`) runs M members of one architecture as one vmapped call
(`torch.func`): each convolution becomes one grouped kernel for all members instead of M
kernels, which matters where kernel launches, not arithmetic, bound the time.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state
from torch.nn.utils.fusion import fuse_conv_bn_eval

from eval.errors import DetectionError
from proposals.devices import autocast, default_autocast

# One member's outputs for a batch: logits [B, C] and box deltas [B, K, 4] or None.
Outputs = tuple[Tensor, Tensor | None]


@dataclass(frozen=True)
class InferencePath:
    """How the members run; every choice keeps the fp32 results up to rounding.

    autocast: dtype of mixed precision (``torch.bfloat16``), None = float32.
    channels_last: members and regions in NHWC memory, the layout tensor cores work in.
    stacked: all members in one vmapped call per batch (`StackedMembers`).
    compile: a ``torch.compile`` backend (``"inductor"``) applied to each member, or None.
    """

    autocast: torch.dtype | None = None
    channels_last: bool = False
    stacked: bool = False
    compile: str | None = None

    def __post_init__(self) -> None:
        if self.stacked and self.compile:
            raise DetectionError("stacked members and torch.compile cannot be combined; "
                                 "choose one of --stacked and --compile")

    def describe(self) -> str:
        """E.g. ``"bf16 autocast, channels_last, stacked"``; ``"fp32"`` for the plain path."""
        parts = [f"{str(self.autocast).removeprefix('torch.')} autocast"] if self.autocast else []
        parts += [name for name, on in (("channels_last", self.channels_last),
                                        ("stacked", self.stacked)) if on]
        parts += [f"compile ({self.compile})"] if self.compile else []
        return ", ".join(parts) or "fp32"


def default_path(device: torch.device | str) -> InferencePath:
    """The path the tools run on ``device``: bf16 autocast on CUDA (tensor cores; BENCHMARKS.md
    holds its parity with fp32), float32 on CPU (where bf16 is emulated on most chips)."""
    return InferencePath(autocast=default_autocast(device))


def prepare_members(members: Sequence[nn.Module], path: InferencePath
                    ) -> Sequence[nn.Module]:
    """``members`` (eval mode, one device) made ready for ``path``: converted copies where the
    path changes them, the same list where it does not (the fp32 and autocast paths)."""
    if path.stacked:
        return StackedMembers(members, path.autocast)
    if path.channels_last:
        members = [copy.deepcopy(m).to(memory_format=torch.channels_last) for m in members]
    if path.compile:
        # dynamic: one compilation serves every batch size (an image's last batch is smaller).
        members = [torch.compile(m, dynamic=True, backend=path.compile) for m in members]
    return members


def member_outputs(members: Sequence[nn.Module], regions: Tensor, path: InferencePath
                   ) -> list[Outputs]:
    """Every member's ``(logits, deltas)`` for ``regions [B, 3, S, S]``, run as ``path`` says
    (``members`` from `prepare_members`)."""
    if path.channels_last:
        regions = regions.contiguous(memory_format=torch.channels_last)
    if isinstance(members, StackedMembers):
        return members(regions)
    with autocast(regions.device, path.autocast):
        return [member(regions) for member in members]


class StackedMembers(Sequence[nn.Module]):
    """Members of one architecture as one call: parameters stacked along a new first dimension
    and the forward vmapped over it (``torch.func``). Still a sequence of the members, so code
    that reads ``members[0].num_classes`` works unchanged.

    Autocast does not reach inside vmap, so for mixed precision the stacked weights themselves
    are cast to ``dtype`` (regions too), after batch norm is folded into the convolutions in
    float32 (no bf16 statistics).
    """

    def __init__(self, members: Sequence[nn.Module], dtype: torch.dtype | None = None) -> None:
        self.members = list(members)
        folded = [fold_batchnorm(m) for m in self.members]
        shapes = [{k: v.shape for k, v in m.state_dict().items()} for m in folded]
        if any(s != shapes[0] for s in shapes[1:]):
            raise DetectionError("stacked members need one architecture (same classes and "
                                 "box-regression head); drop --stacked to run them one after "
                                 "another")
        params, buffers = stack_module_state(folded)
        self.dtype = dtype
        if dtype is not None:
            params, buffers = ({k: v.to(dtype) if v.is_floating_point() else v
                                for k, v in state.items()} for state in (params, buffers))
        template = copy.deepcopy(folded[0]).to("meta")  # the code; the weights come stacked

        def outputs(p: dict, b: dict, regions: Tensor) -> tuple[Tensor, ...]:
            logits, deltas = functional_call(template, (p, b), (regions,))
            return (logits,) if deltas is None else (logits, deltas)  # vmap returns tensors

        self._call = partial(torch.vmap(outputs, in_dims=(0, 0, None)), params, buffers)

    def __call__(self, regions: Tensor) -> list[Outputs]:
        logits, *deltas = self._call(regions.to(self.dtype or regions.dtype))
        return [(logits[i], deltas[0][i] if deltas else None) for i in range(len(self))]

    def __getitem__(self, index):  # type: ignore[override]
        return self.members[index]

    def __len__(self) -> int:
        return len(self.members)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of eval-mode ``model`` with each convolution-then-batch-norm pair (torchvision's
    GoogLeNet ``BasicConv2d``: ``conv``, ``bn``) folded into one convolution with a bias: the
    same function in float32 up to rounding, one kernel less per layer."""
    model = copy.deepcopy(model)
    for module in model.modules():
        conv, bn = getattr(module, "conv", None), getattr(module, "bn", None)
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            module.conv, module.bn = fuse_conv_bn_eval(conv, bn), nn.Identity()
    return model

