"""Every throughput figure of issue 6 in one command, printed as one table.

    python benchmarks/gpu.py --json gpu.json            # on a GPU machine: about 3 minutes
    python benchmarks/gpu.py --checkpoint runs/raccoon_s0/last.pt --json gpu.json  # + AP@0.5
    python benchmarks/gpu.py --small                    # CPU smoke run (the default without CUDA)

(a) classification: warping (roi_align) + one GoogLeNet, regions/s per batch size, in fp32, bf16
    autocast, bf16 + channels_last, and that + torch.compile (run last: it compiles for minutes);
    TFLOP/s at 3.0 GFLOP per 224 px region (GoogLeNet's 1.5 GMAC, scaled by (size / 224)^2) and
    the share of the bf16 peak.
(b) ensemble: 6 networks over 1,400 proposals of one image, images/s in bf16: the members one
    after another on each batch (as `detect`), with channels_last, stacked with torch.func
    (vmap), and `detect_array` itself (the tools' path, NMS included).
(c) pipeline: tools/test.py's `detect_records` over raccoon's 40 test images (3 passes),
    selective search in --workers processes: images/s against proposals alone (same workers)
    and classification alone (proposals cached), and the ratio to the slower of those two.
(d) training: `region_step` + backward + SGD step on batches of 128 warped regions, regions/s.
(e) parity: the share of raccoon test proposals whose top-1 class is the same in fp32 and bf16;
    with --checkpoint also the VOC AP@0.5 of both.
Timings: the best of 3 after a warm-up call, the GPU synchronised around each. Rows print, and
--json is rewritten, as each section ends; a section that fails is reported in the notes, the
others still run, and the exit status is 1.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.func import functional_call, stack_module_state

from detector.checkpoint import ModelSpec
from detector.classifier import RegionClassifier
from detector.datasets import load_dataset, read_image
from detector.evaluation import detect_array, detect_records
from detector.pipeline import detect, load_ensemble
from detector.prefetch import prefetch_inputs
from detector.regions import iter_warped_regions, normalize_image, warp_regions
from detector.training import ImageSample, region_step
from eval.detections import load_results, to_results
from eval.evaluate import evaluate
from proposals.cache import ProposalCache
from proposals.combined import ProposalConfig, Proposer
from proposals.selective_search import SelectiveSearchConfig
from tools.test import dataset_category_ids

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
NUM_CLASSES = 20  # a VOC-sized head for the synthetic sections; raccoon's 1 class in (c), (e)
GFLOP_224 = 3.0   # GoogLeNet forward per 224 x 224 region: ~1.5 GMAC (torchvision), 2 FLOP each
TRAIN_FLOP_FACTOR = 3  # forward + backward (input and weight gradients) ~ 3 forwards
# Dense bf16 tensor-core peaks in TFLOP/s (NVIDIA data sheets); the first name found is used.
BF16_PEAK_TFLOPS = {"H100 PCIe": 756.0, "H100": 989.0, "H200": 989.0, "A100": 312.0,
                    "L40S": 362.0}
MODES = ("fp32", "bf16", "bf16+channels_last", "bf16+channels_last+compile")
DEFAULT_PATH = ("bf16", 256)  # what detect_array runs on CUDA: autocast, --batch-size 256
SECTIONS = ("classification", "ensemble", "pipeline", "training", "parity", "compile")


@dataclass(frozen=True)
class Sizes:
    """How much work each section does: the paper's setting, or `SMALL` for a CPU smoke run."""

    input_size: int = 224
    batches: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048)
    repeats: int = 3
    members: int = 6
    proposals: int = 1400           # per image, in (b)
    ensemble_batches: tuple[int, ...] = (256, 1024)
    train_regions: int = 128        # R-CNN's batch
    train_steps: int = 5            # per timed repeat
    images: int = 40                # raccoon test images
    passes: int = 3                 # over them in (c): the workers' start is paid once
    max_boxes: int | None = None    # selective search's top-N (None: all, as the tools)
    compile: bool = True

    @property
    def context_pad(self) -> int:
        return round(16 * self.input_size / 224)  # R-CNN's 16 px at 224, scaled


SMALL = Sizes(input_size=64, batches=(8, 32), repeats=1, members=2, proposals=16,
              ensemble_batches=(16,), train_regions=16, train_steps=1, images=2, passes=1,
              max_boxes=20, compile=False)


def best_seconds(run: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Seconds of the fastest of ``repeats`` calls of ``run``, after one untimed warm-up call."""
    run()
    best = float("inf")
    for _ in range(repeats):
        best = min(best, timed(run, device))
    return best


def timed(run: Callable[[], object], device: torch.device) -> float:
    """Seconds of one call of ``run``, the GPU synchronised before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def row(section: str, setting: str, value: float, unit: str, **more) -> dict:
    return {"section": section, "setting": setting, "value": value, "unit": unit, **more}


def networks(count: int, num_classes: int, size: int, device: torch.device) -> list:
    """Random-init classifiers in eval mode. Convolutions He-initialised: GoogLeNet's own init
    shrinks activations to ~1e-12, which gives every region the same scores (and CPU denormals)."""
    torch.manual_seed(0)
    nets = [RegionClassifier(num_classes, size) for _ in range(count)]
    for module in (m for net in nets for m in net.trunk.modules()):
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight)
    return [net.to(device).eval() for net in nets]


def random_inputs(num_boxes: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A 500 x 375 uint8 image [3, H, W] and boxes of log-uniform sides 20..500 px on it."""
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, 375, 500), dtype=torch.uint8, generator=g)
    sides = torch.exp(torch.empty(num_boxes, 2).uniform_(2.996, 6.215, generator=g))
    corner = torch.rand(num_boxes, 2, generator=g) * (torch.tensor([500.0, 375.0]) - sides / 2)
    return image.to(device), torch.cat([corner, corner + sides], dim=1).to(device)


def tflops(regions_per_s: float, size: int, factor: int = 1) -> float:
    """TFLOP/s that ``regions_per_s`` GoogLeNet forwards (times ``factor``) at ``size`` px do."""
    return regions_per_s * GFLOP_224 * factor * (size / 224) ** 2 / 1e3


def peak_tflops(device: torch.device, override: float | None) -> tuple[float | None, str]:
    """The bf16 peak (TFLOP/s) that shares are of, and where it came from."""
    if override:
        return override, "--peak-tflops"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    for key, value in BF16_PEAK_TFLOPS.items():
        if key in name:
            return value, f"data sheet, {key} dense"
    return None, "unknown for this device: pass --peak-tflops"


# (a) classification: one network ------------------------------------------------------------

@torch.inference_mode()
def classify(net: torch.nn.Module, pixels: torch.Tensor, boxes: torch.Tensor, mode: str,
             size: int, pad: int) -> torch.Tensor:
    """Warp ``boxes`` [N, 4] of the normalised image and classify them: logits [N, K + 1]."""
    regions = warp_regions(pixels, boxes, size, pad)
    if "channels_last" in mode:
        regions = regions.contiguous(memory_format=torch.channels_last)
    with torch.autocast(pixels.device.type, dtype=torch.bfloat16, enabled=mode != "fp32"):
        return net(regions)[0]


def classification(device: torch.device, sizes: Sizes, peak: float | None,
                   modes: tuple[str, ...] = MODES[:-1]) -> list:
    image, boxes = random_inputs(max(sizes.batches), device)
    pixels, rows = normalize_image(image), []
    for mode in modes:
        net = networks(1, NUM_CLASSES, sizes.input_size, device)[0]
        if "channels_last" in mode:
            net = net.to(memory_format=torch.channels_last)
        if mode.endswith("compile"):  # dynamic: one compilation for every batch size
            net = torch.compile(net, dynamic=True)
        for batch in sizes.batches:
            run = partial(classify, net, pixels, boxes[:batch], mode, sizes.input_size,
                          sizes.context_pad)
            rate = batch / best_seconds(run, sizes.repeats, device)
            flops = tflops(rate, sizes.input_size)
            default = " (default path)" if (mode, batch) == DEFAULT_PATH else ""
            rows.append(row("classification", f"{mode} b{batch}{default}", rate, "regions/s",
                            tflops=flops, peak_share=flops / peak if peak else None))
    return rows


def compiled(device: torch.device, sizes: Sizes, peak: float | None, notes: list) -> list:
    """(a) with torch.compile, run last: compiling takes a minute or more."""
    if not sizes.compile:
        notes.append(f"classification {MODES[-1]}: skipped (--small or --no-compile)")
        return []
    start = time.perf_counter()
    try:
        rows = classification(device, sizes, peak, MODES[-1:])
    except Exception as e:  # torch.compile can fail for reasons outside this project
        notes.append(f"classification {MODES[-1]}: failed, {type(e).__name__}: {e}"[:500])
        return []
    notes.append(f"classification {MODES[-1]}: {time.perf_counter() - start:.0f} s, "
                 "compilation included")
    return rows


# (b) ensemble: several networks over one image's proposals ----------------------------------

@torch.inference_mode()
def mean_softmax(members: list, pixels: torch.Tensor, boxes: torch.Tensor, size: int, pad: int,
                 batch: int, dtype: torch.dtype | None = torch.bfloat16,
                 channels_last: bool = False) -> torch.Tensor:
    """The members' mean softmax [N, K + 1], one member after another on each batch of regions
    (as `detect`), under ``dtype`` autocast (None: float32)."""
    probs = []
    for regions in iter_warped_regions(pixels, boxes, size, pad, batch):
        if channels_last:
            regions = regions.contiguous(memory_format=torch.channels_last)
        with torch.autocast(pixels.device.type, dtype=dtype or torch.float32,
                            enabled=dtype is not None):
            probs.append(torch.stack([m(regions)[0].float().softmax(1) for m in members]).mean(0))
    return torch.cat(probs)


def stacked(members: list, dtype: torch.dtype) -> Callable[[torch.Tensor], torch.Tensor]:
    """The members as one vmapped call, regions [B, 3, S, S] -> logits [M, B, K + 1]. vmap runs
    beneath autocast (it would stay float32), so the stacked weights are cast to ``dtype``."""
    params, buffers = stack_module_state(members)
    params, buffers = ({k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
                       for state in (params, buffers))
    template = copy.deepcopy(members[0]).to("meta")

    def logits(p: dict, b: dict, regions: torch.Tensor) -> torch.Tensor:
        return functional_call(template, (p, b), (regions,))[0]

    return partial(torch.vmap(logits, in_dims=(0, 0, None)), params, buffers)


@torch.inference_mode()
def stacked_softmax(call: Callable, pixels: torch.Tensor, boxes: torch.Tensor, size: int,
                    pad: int, batch: int, dtype: torch.dtype) -> torch.Tensor:
    """`mean_softmax` through `stacked`: all members in one call per batch."""
    return torch.cat([call(regions.to(dtype)).float().softmax(2).mean(0)
                      for regions in iter_warped_regions(pixels, boxes, size, pad, batch)])


def ensemble(device: torch.device, sizes: Sizes, notes: list) -> list:
    members = networks(sizes.members, NUM_CLASSES, sizes.input_size, device)
    in_cl = [copy.deepcopy(m).to(memory_format=torch.channels_last) for m in members]
    image, boxes = random_inputs(sizes.proposals, device)
    pixels, geometry = normalize_image(image), (sizes.input_size, sizes.context_pad)
    image_np, boxes_np = image.permute(1, 2, 0).cpu().numpy(), boxes.cpu().numpy()
    try:  # build and run it once: vmap's limits show on the first call
        call = stacked(members, torch.bfloat16)
        stacked_softmax(call, pixels, boxes[:2], *geometry, 2, torch.bfloat16)
    except Exception as e:  # the sequential rows still stand
        call = None
        notes.append(f"ensemble vmap: failed, {type(e).__name__}: {e}"[:500])
    rows = []
    for batch in sizes.ensemble_batches:
        runs = {"sequential": partial(mean_softmax, members, pixels, boxes, *geometry, batch),
                "sequential+channels_last": partial(mean_softmax, in_cl, pixels, boxes, *geometry,
                                                    batch, channels_last=True),
                "vmap stacked": call and partial(stacked_softmax, call, pixels, boxes, *geometry,
                                                 batch, torch.bfloat16),
                "detect_array (tools)": partial(detect_array, members,
                                                ModelSpec(NUM_CLASSES, *geometry), image_np,
                                                boxes_np, device, batch)}
        for mode, run in runs.items():
            if run is not None:
                rate = 1 / best_seconds(run, sizes.repeats, device)
                rows.append(row("ensemble", f"{mode} b{batch}", rate, "images/s",
                                detail=f"{sizes.members} nets x {sizes.proposals} regions"))
        if call is not None:
            gap = (runs["sequential"]() - runs["vmap stacked"]()).abs().max().item()
            notes.append(f"ensemble b{batch}: vmap and sequential mean softmax differ by <= "
                         f"{gap:.2g}")
    return rows


# (c) pipeline: tools/test.py's loop with proposals computed in workers ----------------------

class HeldOut:
    """raccoon's test images (data/test_labels.csv, the first ``count``), the proposer and
    workers of (c), and the proposal cache that (c) fills (or (e), where (c) did not run)."""

    def __init__(self, data: Path, count: int, max_boxes: int | None, workers: int, root: str):
        base = data / "raccoon"
        dataset = load_dataset(base / "annotations", images=base / "images",
                               split=str(base / "data" / "test_labels.csv"))
        self.dataset = replace(dataset, images=dataset.images[:count])
        self.proposer = Proposer(ProposalConfig(SelectiveSearchConfig(max_boxes=max_boxes)))
        self.workers, self.root = workers, root
        self.cache: ProposalCache | None = None

    def fill_cache(self, records: list) -> tuple[float, float]:
        """Proposals alone: ``records`` through `prefetch_inputs` into a new cache. Returns
        images/s and the seconds until the first image (the workers' start included)."""
        p = self.proposer
        self.cache = ProposalCache.create(self.root, p.method, p.params, p.version)
        start, first = time.perf_counter(), None
        for image_id, _, _, boxes in prefetch_inputs([(r.image_id, r.file_name) for r in records],
                                                     proposer=p, workers=self.workers):
            first = first or time.perf_counter() - start
            self.cache.save(image_id, boxes)
        return len(records) / (time.perf_counter() - start), first

    def proposals(self, image_id: int | str) -> np.ndarray:
        if self.cache is None:
            self.fill_cache(list(self.dataset.images))
        return self.cache.load(image_id)


def pipeline(device: torch.device, sizes: Sizes, test: HeldOut, notes: list) -> list:
    """Images/s of proposals alone, classification alone, and `detect_records` doing both."""
    members = networks(sizes.members, 1, sizes.input_size, device)
    spec = ModelSpec(1, sizes.input_size, sizes.context_pad)
    runs = list(test.dataset.images) * sizes.passes
    propose_rate, first = test.fill_cache(runs)
    detect_all = partial(detect_records, members, spec, device=device, category_ids=[1],
                         progress=None)
    detect_all(runs[:2], test.cache)  # warm-up
    classify_rate = len(runs) / timed(partial(detect_all, runs, test.cache), device)
    rate = len(runs) / timed(partial(detect_all, runs, None, proposer=test.proposer,
                                     workers=test.workers), device)
    boxes = np.mean([len(test.proposals(r.image_id)) for r in test.dataset.images])
    detail = f"{len(runs)} images, {boxes:.0f} proposals each, {sizes.members} nets"
    notes.append(f"pipeline: the first proposals came after {first:.1f} s (workers' start)")
    return [row("pipeline", f"proposals alone, {test.workers} workers", propose_rate,
                "images/s", detail=detail),
            row("pipeline", "classification alone (cached)", classify_rate, "images/s"),
            row("pipeline", f"detect_records, {test.workers} workers", rate, "images/s"),
            row("pipeline", "ratio to the slower part", rate / min(propose_rate, classify_rate),
                "x", detail="goal >= 0.9")]


# (d) training --------------------------------------------------------------------------------

def training_batch(regions: int, images: int = 2) -> list[ImageSample]:
    """``regions`` random boxes over ``images`` random 500 x 375 images, random labels 0..K."""
    g = torch.Generator().manual_seed(1)
    each, samples = regions // images, []
    for _ in range(images):
        image, boxes = random_inputs(each, torch.device("cpu"))
        labels = torch.randint(0, NUM_CLASSES + 1, (each,), generator=g)
        samples.append(ImageSample(image, boxes, labels, torch.zeros(each, 4),
                                   torch.zeros(each, dtype=torch.bool), torch.ones(3)))
    return samples


def training(device: torch.device, sizes: Sizes) -> list:
    model = networks(1, NUM_CLASSES, sizes.input_size, device)[0].train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)  # R-CNN's
    samples = training_batch(sizes.train_regions)

    def steps(amp: torch.dtype | None) -> None:
        for _ in range(sizes.train_steps):
            loss, _ = region_step(model, samples, device=device, input_size=sizes.input_size,
                                  context_pad=sizes.context_pad, amp_dtype=amp)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    rows = []
    for name, amp in (("fp32", None), ("bf16 autocast (tools/train.py on CUDA)", torch.bfloat16)):
        rate = sizes.train_regions * sizes.train_steps / best_seconds(partial(steps, amp),
                                                                      sizes.repeats, device)
        rows.append(row("training", f"{name}, batch {sizes.train_regions}", rate, "regions/s",
                        tflops=tflops(rate, sizes.input_size, TRAIN_FLOP_FACTOR)))
    return rows


# (e) parity: bf16 against fp32 -------------------------------------------------------------

def top1_agreement(members: list, spec: ModelSpec, test: HeldOut, device: torch.device
                   ) -> tuple[float, int]:
    """Share of all proposals whose top-1 class (the members' mean softmax) is the same in
    fp32 and under bf16 autocast, and how many proposals there were."""
    same = total = 0
    for record in test.dataset.images:
        image = torch.from_numpy(read_image(record.file_name)).permute(2, 0, 1).to(device)
        boxes = torch.from_numpy(test.proposals(record.image_id)).to(device)
        top1 = [mean_softmax(members, normalize_image(image), boxes, spec.input_size,
                             spec.context_pad, 256, dtype).argmax(1)
                for dtype in (None, torch.bfloat16)]
        same, total = same + int((top1[0] == top1[1]).sum()), total + len(boxes)
    return same / total, total


def voc_ap(members: list, spec: ModelSpec, test: HeldOut, device: torch.device,
           category_ids: list[int], autocast: torch.dtype | None) -> float:
    """VOC all-point AP@0.5 (mAP, in [0, 1]) of `detect` on the held-out images:
    `detect_records`' loop with the precision chosen here (that one picks bf16 on CUDA)."""
    results, dataset = [], test.dataset
    for record in dataset.images:
        image = torch.from_numpy(read_image(record.file_name)).permute(2, 0, 1).to(device)
        boxes, scores, labels = detect(image, test.proposals(record.image_id), members,
                                       input_size=spec.input_size, context_pad=spec.context_pad,
                                       autocast=autocast)
        results += to_results(record.image_id, category_ids, boxes.cpu(), scores.cpu(),
                              labels.cpu())
    detections = load_results(results, [r.image_id for r in dataset.images],
                              dataset.category_ids, dataset.classes)
    return evaluate(dataset, detections, "voc").mAP


def parity(device: torch.device, sizes: Sizes, test: HeldOut, checkpoints: list[str]) -> list:
    """Top-1 agreement of fp32 and bf16; with checkpoints also both AP@0.5 and the change."""
    if checkpoints:
        loaded = load_ensemble(checkpoints, device)
        members, spec = loaded.members, loaded.spec
    else:
        members = networks(1, 1, sizes.input_size, device)
        spec = ModelSpec(1, sizes.input_size, sizes.context_pad)
    share, count = top1_agreement(members, spec, test, device)
    rows = [row("parity", "top-1 class same in fp32 and bf16", 100 * share, "%",
                detail=f"{count} regions, {'checkpoint' if checkpoints else 'random-init net'}, "
                       "goal >= 99%")]
    if checkpoints:
        ids = dataset_category_ids(loaded, test.dataset, checkpoints[0])
        ap = {name: 100 * voc_ap(members, spec, test, device, ids, dtype)
              for name, dtype in (("fp32", None), ("bf16", torch.bfloat16))}
        rows += [row("parity", f"VOC AP@0.5 {name}", value, "%") for name, value in ap.items()]
        rows.append(row("parity", "AP@0.5 bf16 - fp32", ap["bf16"] - ap["fp32"], "points",
                        detail="goal within 0.5"))
    return rows


# the run and its table -----------------------------------------------------------------------

def run_sections(sections: list[str], args: argparse.Namespace, device: torch.device,
                 sizes: Sizes, peak: float | None, notes: list,
                 done: Callable[[dict], None]) -> dict[str, list]:
    """Every section asked for, printing its rows and calling ``done(found)`` after each; a
    section that raises is noted with its traceback and left empty."""
    found: dict[str, list] = {}
    with tempfile.TemporaryDirectory(prefix="gpu_bench_") as root:
        test = (HeldOut(args.data, sizes.images, sizes.max_boxes, args.workers, f"{root}/cache")
                if {"pipeline", "parity"} & set(sections) else None)
        jobs = {"classification": lambda: classification(device, sizes, peak),
                "ensemble": lambda: ensemble(device, sizes, notes),
                "pipeline": lambda: pipeline(device, sizes, test, notes),
                "training": lambda: training(device, sizes),
                "parity": lambda: parity(device, sizes, test, args.checkpoint),
                "compile": lambda: compiled(device, sizes, peak, notes)}
        for section in sections:
            try:
                found[section] = jobs[section]()
            except Exception as e:
                notes.append(f"{section}: FAILED {type(e).__name__}: {e}\n"
                             f"{traceback.format_exc()}")
                found[section] = []
            for r in found[section]:
                print(format_row(r), flush=True)
            done(found)
    return found


def format_row(r: dict) -> str:
    more = [r["detail"]] if r.get("detail") else []
    if r.get("tflops") is not None:
        more.append(f"{r['tflops']:.3g} TFLOP/s")
    if r.get("peak_share") is not None:
        more.append(f"{100 * r['peak_share']:.1f}% of peak")
    value = f"{r['value']:,.0f}" if abs(r["value"]) >= 100 else f"{r['value']:.3g}"
    return f"{r['section']:<15} {r['setting']:<48} {value:>10} {r['unit']:<10} {', '.join(more)}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", action="store_true",
                   help="tiny sizes (input 64, batches 8 and 32, 2 images): a smoke run; "
                        "chosen automatically without CUDA")
    p.add_argument("--json", metavar="PATH", help="also write the figures here (JSON)")
    p.add_argument("--checkpoint", action="append", default=[], metavar="CKPT",
                   help="a tools/train.py checkpoint for (e) (repeat it for an ensemble): adds "
                        "the fp32 and bf16 VOC AP@0.5 on raccoon's test images (default: a "
                        "random-init net, top-1 agreement only)")
    p.add_argument("--peak-tflops", type=float,
                   help="the GPU's dense bf16 peak, TFLOP/s (default: by the device's name, "
                        "989 for H100 SXM and H200)")
    p.add_argument("--workers", type=int,
                   help="selective search processes in (c) (default: CPUs - 1; 1 with --small)")
    p.add_argument("--data", type=Path, default=DATA,
                   help="the folder holding raccoon/ (default ../shared/data)")
    p.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    p.add_argument("--cudnn-benchmark", action="store_true",
                   help="set torch.backends.cudnn.benchmark (the tools leave it off)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    small = args.small or device.type != "cuda"
    sizes = replace(SMALL if small else Sizes(), compile=not (small or args.no_compile))
    if args.workers is None:  # one core is left to the process that feeds the GPU
        args.workers = 1 if small else max(1, (os.cpu_count() or 2) - 1)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    peak, peak_source = peak_tflops(device, args.peak_tflops)
    sections, notes = args.only or list(SECTIONS), []
    if not (args.data / "raccoon").is_dir():
        sections = [s for s in sections if s not in ("pipeline", "parity")]
        notes.append(f"pipeline, parity: skipped, {args.data / 'raccoon'} not found")
    meta = {"device": torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads",
            "torch": torch.__version__, "date": datetime.datetime.now().isoformat(" ", "seconds"),
            "command": " ".join(["python benchmarks/gpu.py", *(sys.argv[1:] if argv is None
                                                                else argv)]),
            "small": small, "sizes": asdict(sizes), "workers": args.workers, "peak_tflops": peak,
            "peak_source": peak_source, "tf32_convolutions": torch.backends.cudnn.allow_tf32,
            "cudnn_benchmark": args.cudnn_benchmark, "seconds": None}

    def save(found: dict) -> None:  # after every section: a run cut short keeps its figures
        meta["seconds"] = round(time.perf_counter() - started, 1)
        if args.json:
            Path(args.json).write_text(json.dumps({"meta": meta, "sections": found,
                                                   "notes": notes}, indent=1) + "\n")

    print(f"{meta['device']}, torch {meta['torch']}, {meta['date']}, "
          f"{'SMALL sizes' if small else 'full sizes'}, bf16 peak {peak or '?'} TFLOP/s "
          f"({peak_source})\n{'section':<15} {'setting':<48} {'value':>10} {'unit':<10} more")
    run_sections(sections, args, device, sizes, peak, notes, save)
    for note in notes:
        print(f"note: {note}")
    print(f"total {meta['seconds']} s")
    return 1 if any("FAILED" in note for note in notes) else 0


if __name__ == "__main__":
    raise SystemExit(main())
