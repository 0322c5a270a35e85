"""Devices, ranks and precision: the one place that reads ``--device``, torchrun's environment
and the process group, and picks mixed precision.

``torchrun --nproc-per-node N ...`` starts N processes with RANK, WORLD_SIZE and LOCAL_RANK set;
without torchrun every function here is the single-process identity (rank 0 of 1, no group).
Every command, `detector.Detector.load`, training and proposal extraction go through these.
Backend: NCCL when the ranks run on CUDA, gloo on CPU.

torch is imported by the functions that need it, not by this module: `world` and
`resolves_to_cpu` answer without it, so that a detector over ONNX Runtime on a machine with no
GPU never pays torch's start-up (2-4 s; BENCHMARKS.md, "The main command end to end").
"""
from __future__ import annotations

import contextlib
import datetime
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from eval.errors import DetectionError
from proposals.defaults import PRECISIONS, REGION_BATCH, REGION_BATCH_CPU

# What ``--device`` (and ``Detector.load(device=)``) takes, as the error message lists it.
DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
# What a Linux machine on which torch can see a GPU has: NVIDIA's driver, WSL's GPU, ROCm's.
GPU_DEVICE_FILES = ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/dxg", "/dev/kfd")

if TYPE_CHECKING:
    import torch



def world() -> tuple[int, int]:
    """``(rank, world size)`` from torchrun's environment; ``(0, 1)`` without it."""
    try:
        rank, size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    except ValueError:
        raise DetectionError(f"RANK={os.environ.get('RANK')!r} and WORLD_SIZE="
                             f"{os.environ.get('WORLD_SIZE')!r} must be integers") from None
    if not 0 <= rank < size:
        raise DetectionError(f"RANK={rank} is outside WORLD_SIZE={size}")
    return rank, size


def local_rank() -> int:
    """This process's GPU index on its machine (torchrun's LOCAL_RANK; 0 without it)."""
    value = os.environ.get("LOCAL_RANK", "0")
    if not value.isdigit():
        raise DetectionError(f"LOCAL_RANK={value!r} must be a non-negative integer")
    return int(value)


def pick_device(name: str | torch.device = "auto", what: str = "--device") -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cuda`` -> this process's GPU (torchrun's
    LOCAL_RANK); ``cuda:N`` that GPU; ``cpu``. Anything else, or CUDA without a GPU, is one
    error naming ``what`` (the flag or argument the value came from)."""
    import torch

    name = str(name)
    if name not in ("auto", "cpu", "cuda") and not (name.startswith("cuda:")
                                                     and name[5:].isdigit()):
        raise DetectionError(f"{what} {name}: unknown device; use {DEVICE_CHOICES}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DetectionError(f"{what} {name}: no CUDA device is visible; use cpu or auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{local_rank()}"
    device = torch.device(name)
    if device.type == "cuda":
        if device.index >= torch.cuda.device_count():
            raise DetectionError(f"{what} {name}: only {torch.cuda.device_count()} CUDA "
                                 "device(s) are visible; use cuda:0 ..")
        torch.cuda.set_device(device)
    return device


def join_process_group(device: torch.device | str | None = None, required: bool = True) -> bool:
    """Join torchrun's process group (once) when there is more than one rank: NCCL for CUDA
    ranks, gloo otherwise (``device`` None: gloo, for CPU-only work such as proposals).

    Ranks started without torchrun's rendezvous (RANK and WORLD_SIZE set by hand, no
    MASTER_ADDR) cannot meet: an error when the work needs the others (``required``), else
    each rank works alone on its share. Returns whether this process is in a group.
    """
    if world()[1] == 1 or _group_joined():
        return _group_joined()
    import torch.distributed as dist

    if "MASTER_ADDR" not in os.environ:
        if required:
            raise DetectionError(f"WORLD_SIZE={world()[1]} but no MASTER_ADDR: start the ranks "
                                 "with torchrun (which sets both), or unset WORLD_SIZE")
        return False
    dist.init_process_group("nccl" if device is not None and _device_type(device) == "cuda"
                            else "gloo")
    return True


def leave_process_group() -> None:
    """Leave the process group, if this process joined one."""
    if _group_joined():
        import torch.distributed as dist

        dist.destroy_process_group()


def barrier(timeout: datetime.timedelta | None = None) -> None:
    """Wait for every rank (a no-op without a process group), at most ``timeout`` (None: the
    group's, torch's 30 minutes). Work whose ranks may end hours apart (a resumed proposal run
    whose rank 0 has nothing left, machines of unequal speed) passes a longer one: past it,
    gloo raises on the waiting rank and torchrun kills the others mid-work."""
    if _group_joined():
        import torch.distributed as dist

        dist.barrier(timeout=timeout)


def _group_joined() -> bool:
    """Whether this process is in a process group (none without torch.distributed loaded)."""
    dist = sys.modules.get("torch.distributed")
    return dist is not None and dist.is_available() and dist.is_initialized()


def resolves_to_cpu(name: "str | torch.device") -> bool:
    """Whether `pick_device` would give the CPU for ``name``, answered without importing torch
    where that is certain: ``cpu``, or ``auto`` on a machine with no GPU (`gpu_possible`).
    Anything else (a CUDA name, or a value `pick_device` refuses) is False."""
    name = str(name)
    if name == "cpu":
        return True
    return name == "auto" and (not gpu_possible() or pick_device(name).type == "cpu")


def cpu_or_device(name: "str | torch.device", what: str = "--device") -> "str | torch.device":
    """``"cpu"`` where `resolves_to_cpu` tells it without torch, else `pick_device(name, what)`
    (its errors name ``what``): what the commands pass to `detector.Detector.load`."""
    return "cpu" if resolves_to_cpu(name) else pick_device(name, what)


def gpu_possible() -> bool:
    """False where torch certainly sees no CUDA device: macOS (no CUDA build of torch runs
    there), or Linux without a GPU driver's device files (`GPU_DEVICE_FILES`). True otherwise:
    then only torch can tell."""
    if sys.platform == "darwin":
        return False
    if sys.platform.startswith("linux"):
        return any(Path(f).exists() for f in GPU_DEVICE_FILES)
    return True


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX tiles), where bf16
    autocast is faster than float32; elsewhere oneDNN emulates it, slower than float32.
    (torch.cpu's checks; a torch without them answers False.) Even there ``--precision auto``
    stays float32 on the CPU: bf16 cost 2.4 points of AP on the raccoon test (BENCHMARKS.md)."""
    import torch

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def default_autocast(device: torch.device) -> torch.dtype | None:
    """The mixed precision the tools use on ``device``: bf16 autocast on CUDA (tensor cores;
    BENCHMARKS.md), float32 (None) on CPU, even one with native bf16 (`cpu_has_native_bf16`)."""
    import torch

    return torch.bfloat16 if torch.device(device).type == "cuda" else None


def default_channels_last(device: torch.device) -> bool:
    """Whether detection's networks run in channels_last (NHWC) memory unless told otherwise:
    on the CPU, oneDNN's own layout (1.4-1.9x float32 NCHW, the same results up to rounding:
    BENCHMARKS.md); not on CUDA, until benchmarks/gpu.py measures it there."""
    return _device_type(device) == "cpu"


def default_region_batch(device: torch.device) -> int:
    """Regions classified at once unless told otherwise: `REGION_BATCH` on CUDA,
    `REGION_BATCH_CPU` on the CPU."""
    return REGION_BATCH if _device_type(device) == "cuda" else REGION_BATCH_CPU


def _device_type(device: "torch.device | str") -> str:
    """``cpu`` or ``cuda`` of a device or its name (``cuda:1`` -> ``cuda``), without torch."""
    return str(device).split(":")[0]


def autocast_for(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype that ``precision`` (one of `PRECISIONS`) means on ``device``."""
    import torch

    if precision not in PRECISIONS:
        raise DetectionError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return default_autocast(device)
    return torch.bfloat16 if precision == "bf16" else None


def autocast(device: torch.device, dtype: torch.dtype | None):
    """A context running the networks in ``dtype`` autocast on ``device``; None = float32
    (a context that changes nothing). Box arithmetic stays outside it, in float32."""
    import torch

    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)
