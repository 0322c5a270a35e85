"""Regions per second of every CPU inference path, end to end, and their parity with fp32.

    python benchmarks/bench_cpu_paths.py --checkpoint runs/raccoon_cpu/last.pt \\
        --checkpoint runs/raccoon_cpu/epoch_004.pt --checkpoint runs/raccoon_cpu/epoch_002.pt \\
        --image ../shared/data/raccoon/images/raccoon-1.jpg --image ...raccoon-2.jpg
    python benchmarks/bench_cpu_paths.py --random-init 224 --regions 128 --image ...

Each path is a `Detector` over the same photo and proposals (its own selective search, so the
regions are real): warping, the networks, the mean softmax and NMS, i.e. everything a photo
costs except its proposals, which every path shares. Paths: fp32 eager, channels_last (fp32),
bf16 autocast, bf16 autocast + channels_last (where the CPU has native bf16) and ONNX Runtime
(an export of the same checkpoints, made here). The machine is shared, so the paths run
interleaved, one call each per batch size and round, and each figure is also given as the
median of its ratios to fp32 eager measured in the same round: compare those ratios, not the
absolute rates of runs made at different times.

Parity, on every --image: the share of regions whose top-1 class equals fp32's and the largest
softmax difference. --random-init SIZE times random-init networks of input SIZE instead of
checkpoints (speed only: their labels say nothing). Uses torch's thread count (ONNX Runtime the
same); set OMP_NUM_THREADS / --threads to change it.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from detector.api import Detector
from detector.classifier import build_classifier
from detector.export import export_onnx
from detector.pipeline import classify_regions
from detector.runtime import classify_exported
from eval.datasets import read_image
from proposals import devices
from proposals.checkpoint import ModelSpec, save_checkpoint
from proposals.networks import channels_first, normalize_image

# The paths: Detector.load keywords. bf16 ones only where the CPU multiplies bf16 natively.
PATHS = {
    "fp32": dict(precision="fp32", channels_last=False),
    "channels_last": dict(precision="fp32", channels_last=True),
    "bf16": dict(precision="bf16", channels_last=False),
    "bf16+channels_last": dict(precision="bf16", channels_last=True),
    "onnxruntime": dict(backend="onnxruntime"),
}


def random_checkpoints(size: int, count: int, folder: Path) -> list[str]:
    """``count`` random-init 1-class checkpoints of input ``size`` (R-CNN's context scaled)."""
    paths = []
    for seed in range(count):
        torch.manual_seed(seed)
        model = build_classifier(1, weights=None, input_size=size)
        path = folder / f"random_{size}_{seed}.pt"
        save_checkpoint(path, classes=["thing"], spec=ModelSpec(1, size, round(16 * size / 224)),
                        state_dict=model.state_dict(),
                        proposals={"method": "selective_search", "params": {}})
        paths.append(str(path))
    return paths


def detectors(checkpoints: list[str], onnx: str, paths: list[str]) -> dict[str, Detector]:
    """One Detector per path over ``checkpoints`` (ONNX Runtime: over their export)."""
    return {name: Detector.load([onnx] if name == "onnxruntime" else checkpoints, "cpu",
                                **PATHS[name]) for name in paths}


def probabilities(detector: Detector, pixels: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """The detector's mean softmax over ``boxes``' regions, as its detection path computes it
    (ONNX Runtime's in numpy: warped and classified by ONNX Runtime)."""
    sizes = dict(input_size=detector.spec.input_size, context_pad=detector.spec.context_pad,
                 batch_size=detector.batch_size)
    if detector.backend == "onnxruntime":
        probs, _ = classify_exported(pixels.numpy(), boxes.numpy(), detector.members, **sizes)
        return torch.from_numpy(probs)
    probs, _ = classify_regions(pixels, boxes, detector.members, path=detector.path, **sizes)
    return probs


@torch.inference_mode()
def parity(dets: dict[str, Detector], photos: list[tuple[np.ndarray, np.ndarray]]
           ) -> dict[str, tuple[float, float]]:
    """path -> (share of regions whose top-1 class is fp32's, largest |softmax - fp32's|)."""
    same, total, worst = dict.fromkeys(dets, 0), 0, dict.fromkeys(dets, 0.0)
    for image, boxes in photos:
        pixels, boxes = normalize_image(channels_first(image)), torch.as_tensor(boxes)
        reference = probabilities(dets["fp32"], pixels, boxes)
        total += len(boxes)
        for name, detector in dets.items():
            probs = probabilities(detector, pixels, boxes)
            same[name] += int((probs.argmax(1) == reference.argmax(1)).sum())
            worst[name] = max(worst[name], float((probs - reference).abs().max()))
    return {name: (same[name] / total, worst[name]) for name in dets}


def timed_rounds(dets: dict[str, Detector], image: np.ndarray, boxes: np.ndarray,
                 batch_sizes: list[int], rounds: int) -> dict[tuple[str, int], list[float]]:
    """(path, batch size) -> seconds of one detector call per round, the paths interleaved."""
    seconds: dict[tuple[str, int], list[float]] = {}
    for name, detector in dets.items():  # warm-up: first calls allocate and pick kernels
        detector.batch_size = batch_sizes[0]
        detector(image, boxes)
    for _ in range(rounds):
        for batch in batch_sizes:
            for name, detector in dets.items():
                detector.batch_size = batch
                start = time.perf_counter()
                detector(image, boxes)
                seconds.setdefault((name, batch), []).append(time.perf_counter() - start)
    return seconds


def report(seconds: dict, members: int, regions: int, batch_sizes: list[int]) -> list[str]:
    """Markdown rows: path, batch, regions/s (median), images/s of the timed photo (its
    ``regions`` proposals), x fp32 eager (median of same-round ratios), seconds per 1,000
    proposals."""
    rows = []
    for batch in batch_sizes:
        fp32 = seconds[("fp32", batch)]
        for name in dict.fromkeys(n for n, b in seconds if b == batch):
            times = seconds[(name, batch)]
            ratio = statistics.median(f / t for f, t in zip(fp32, times))
            rate = regions / statistics.median(times)
            rows.append(f"| {members} | {name} | {batch} | {rate:.1f} | "
                        f"{1 / statistics.median(times):.3f} | {ratio:.2f}x | "
                        f"{1000 / rate:.1f} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", action="append", default=[],
                   help="a trained checkpoint; repeat for the ensemble's members")
    p.add_argument("--random-init", type=int, metavar="SIZE",
                   help="time random-init networks of this input size instead of checkpoints")
    p.add_argument("--image", action="append", required=True,
                   help="a real photo (the first is timed; all are compared for parity)")
    p.add_argument("--members", type=int, nargs="+", default=[1, 3],
                   help="ensemble sizes (the first N checkpoints, repeated if fewer are given)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64, 256],
                   help="regions per batch")
    p.add_argument("--regions", type=int, default=0,
                   help="use the first N proposals of each photo (default all)")
    p.add_argument("--rounds", type=int, default=3, help="timed calls per path and batch")
    p.add_argument("--threads", type=int, help="torch (and ONNX Runtime) threads")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    native_bf16 = devices.cpu_has_native_bf16()
    paths = [n for n in PATHS if native_bf16 or "bf16" not in n]
    work = Path(tempfile.mkdtemp(prefix="bench_cpu_paths_"))
    given = args.checkpoint or random_checkpoints(args.random_init, max(args.members), work)
    print(f"threads {torch.get_num_threads()}, native bf16: {native_bf16}, "
          f"cpu capability {torch.backends.cpu.get_cpu_capability()}")
    print("| members | path | batch | regions/s | images/s | x fp32 eager | "
          "s per 1,000 proposals |")
    print("|---|---|---|---|---|---|---|")
    notes = []
    for members in args.members:
        checkpoints = [given[i % len(given)] for i in range(members)]
        onnx = work / f"members_{members}.onnx"
        export_onnx(checkpoints, onnx, args.image[0])
        dets = detectors(checkpoints, str(onnx), paths)
        photos = [(image, dets["fp32"].proposer(image)[:args.regions or None])
                  for image in (read_image(path) for path in args.image)]
        image, boxes = photos[0]
        print(f"(timed photo: {args.image[0]}, {len(boxes)} proposals)", flush=True)
        seconds = timed_rounds(dets, image, boxes, args.batch_sizes, args.rounds)
        print("\n".join(report(seconds, members, len(boxes), args.batch_sizes)), flush=True)
        for name, (agree, worst) in parity(dets, photos).items():
            notes.append(f"{members} member(s), {name}: top-1 = fp32's on {agree:.2%} of "
                         f"{sum(len(b) for _, b in photos)} regions, max |softmax diff| "
                         f"{worst:.1e}")
    print("\n" + "\n".join(notes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
