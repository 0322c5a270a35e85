"""Benchmark: regions per second through warping + GoogLeNet classification.

    python benchmarks/bench_classifier.py                       # CPU, sizes 224 and 96
    python benchmarks/bench_classifier.py --regions 64 --threads 2   # quick
    python benchmarks/bench_classifier.py --cuda-only           # on a GPU machine

CPU (always): a random-init 21-class RegionClassifier (VOC-sized) in eval mode on one 500 x 375
image with random proposals, in the same run:
- batched: ``warp_regions`` (one roi_align per batch) + one forward per batch;
- naive:   per box, enlarge by the context padding, crop whole pixels, pad with the mean, resize
           with ``F.interpolate`` (bilinear, antialiased), then the same batched forward;
- naive b1: the naive warp and one forward per region (R-CNN's original loop).
"warp" columns time warping alone, "total" warping + classification.

CUDA (only where available): GoogLeNet at 224 in fp32, bf16 autocast, and bf16 autocast +
channels_last, as regions/s for one network and images/s for an ensemble of 6 networks over
1,400 proposals per image (GoogLeNet's ILSVRC 2014 setting), warping included.
"""
from __future__ import annotations

import argparse
import contextlib
import time
from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F

from detector.classifier import RegionClassifier
from detector.regions import context_boxes, iter_warped_regions
from proposals.networks import normalize_image

NUM_CLASSES = 20  # PASCAL VOC: 20 classes + background = 21 outputs


def random_image_and_boxes(num_boxes: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A 500 x 375 uint8 image and proposals of log-uniform sides 20..500 px (R-CNN drops < 20)."""
    g = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (3, 375, 500), dtype=torch.uint8, generator=g)
    sides = torch.exp(torch.empty(num_boxes, 2).uniform_(2.996, 6.215, generator=g))  # log 20..500
    corner = torch.rand(num_boxes, 2, generator=g) * (torch.tensor([500.0, 375.0]) - sides / 2)
    return image, torch.cat([corner, corner + sides], dim=1)


def naive_warp(image: torch.Tensor, box: torch.Tensor, size: int, pad: int) -> torch.Tensor:
    """One region the plain way: crop whole pixels of the enlarged box, mean (0) fill, resize.
    (Assumes the box starts inside the image, as random_image_and_boxes makes them.)"""
    x1, y1, x2, y2 = context_boxes(box[None], size, pad)[0].round().int().tolist()
    x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)
    h, w = image.shape[1:]
    crop = image[:, max(y1, 0):min(y2, h), max(x1, 0):min(x2, w)]
    crop = F.pad(crop, (max(-x1, 0), max(x2 - w, 0), max(-y1, 0), max(y2 - h, 0)))
    return F.interpolate(crop[None], size=(size, size), mode="bilinear", align_corners=False,
                         antialias=True)


def batched_chunks(image, boxes, size, pad, batch):
    yield from iter_warped_regions(image, boxes, size, pad, batch)


def naive_chunks(image, boxes, size, pad, batch):
    for start in range(0, len(boxes), batch):
        yield torch.cat([naive_warp(image, b, size, pad) for b in boxes[start:start + batch]])


def detect_scores(chunks: Callable, nets: list[torch.nn.Module], image, boxes, size: int, pad: int,
                  batch: int, bf16: bool = False, channels_last: bool = False) -> None:
    """Warp all boxes chunk by chunk and average the members' softmax (no nets: warp only)."""
    autocast = (torch.autocast(image.device.type, dtype=torch.bfloat16) if bf16
                else contextlib.nullcontext())
    with torch.inference_mode():
        for regions in chunks(image, boxes, size, pad, batch):
            if not nets:
                continue
            if channels_last:
                regions = regions.contiguous(memory_format=torch.channels_last)
            with autocast:
                sum(net(regions)[0].float().softmax(1) for net in nets) / len(nets)


def best_seconds(run: Callable[[], None], repeats: int, cuda: bool = False) -> float:
    """Fastest of ``repeats`` timed calls (synchronising the GPU before stopping the clock)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        if cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def cpu_table(sizes: list[int], num_regions: int, batch: int, repeats: int) -> None:
    image_u8, boxes = random_image_and_boxes(num_regions)
    image = normalize_image(image_u8)
    print(f"\nCPU, {torch.get_num_threads()} threads, {num_regions} regions, batch {batch}, "
          f"best of {repeats} (interleaved), random-init GoogLeNet {NUM_CLASSES + 1}-way, "
          "regions/s")
    print(f"{'size':>5} {'path':<9} {'warp':>9} {'total':>9}")
    paths = [("batched", batched_chunks, batch), ("naive", naive_chunks, batch),
             ("naive b1", naive_chunks, 1)]
    for size in sizes:
        pad = round(16 * size / 224)  # R-CNN's 16 px at 224, scaled
        nets = [RegionClassifier(NUM_CLASSES, size).eval()]
        detect_scores(batched_chunks, nets, image, boxes[:batch], size, pad, batch)  # warm-up
        # Repeats interleave the paths, so that load from other processes on a shared machine
        # hits them alike instead of biasing whichever row ran during it.
        best: dict[tuple[str, bool], float] = {}
        for _ in range(repeats):
            for name, chunks, b in paths:
                for classify in (False, True):
                    run = partial(detect_scores, chunks, nets if classify else [], image, boxes,
                                  size, pad, b)
                    key = (name, classify)
                    best[key] = min(best.get(key, float("inf")), best_seconds(run, 1))
        for name, _, _ in paths:
            print(f"{size:>5} {name:<9} {num_regions / best[name, False]:>9.1f} "
                  f"{num_regions / best[name, True]:>9.1f}", flush=True)


def precision_table(device: torch.device, num_regions: int, batch: int, repeats: int,
                    members: int, size: int = 224) -> None:
    """fp32 vs bf16 vs bf16 + channels_last, one network and an ensemble (meant for CUDA;
    ``device`` is an argument so that the code path can be smoke-run on CPU)."""
    cuda = device.type == "cuda"
    image_u8, boxes = random_image_and_boxes(num_regions)
    image, boxes = normalize_image(image_u8.to(device)), boxes.to(device)
    torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name(device) if cuda else "CPU"
    print(f"\n{name}, {size} px, {num_regions} proposals per image, batch {batch}, "
          f"best of {repeats}, batched warping included")
    print(f"{'mode':<20} {'regions/s (1 net)':>18} {f'images/s ({members} nets)':>18}")
    for mode in ("fp32", "bf16", "bf16+channels_last"):
        options = {"bf16": mode != "fp32", "channels_last": mode.endswith("channels_last")}
        memory_format = torch.channels_last if options["channels_last"] else torch.contiguous_format
        nets = [RegionClassifier(NUM_CLASSES, size).eval().to(device, memory_format=memory_format)
                for _ in range(members)]

        def run(k: int) -> None:
            detect_scores(batched_chunks, nets[:k], image, boxes, size, round(16 * size / 224),
                          batch, **options)

        run(members)  # warm-up: cudnn autotuning, allocator
        one = best_seconds(lambda: run(1), repeats, cuda)
        ensemble = best_seconds(lambda: run(members), repeats, cuda)
        print(f"{mode:<20} {num_regions / one:>18.0f} {1 / ensemble:>18.2f}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--regions", type=int, default=128, help="proposals per image on CPU")
    parser.add_argument("--batch", type=int, default=32,
                        help="regions per warp/forward batch on CPU")
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 96], help="CPU input sizes")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per row (best is kept)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's)")
    parser.add_argument("--cuda-regions", type=int, default=1400,
                        help="proposals per image on CUDA")
    parser.add_argument("--cuda-batch", type=int, default=256, help="regions per batch on CUDA")
    parser.add_argument("--members", type=int, default=6, help="ensemble size on CUDA")
    parser.add_argument("--cuda-only", action="store_true", help="skip the CPU table")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if not args.cuda_only:
        cpu_table(args.sizes, args.regions, args.batch, args.repeats)
    if torch.cuda.is_available():
        precision_table(torch.device("cuda"), args.cuda_regions, args.cuda_batch, args.repeats,
                        args.members)
    else:
        print("\nCUDA: not available, GPU rows skipped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
