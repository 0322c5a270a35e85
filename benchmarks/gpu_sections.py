"""The five sections of benchmarks/gpu.py (issue 6), each a function returning table rows:
(a) `classification` and `compiled`, (b) `ensemble`, (c) `pipeline`, (d) `training`,
(e) `parity`; `Sizes` says how much work each does. See gpu.py for what each measures."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

from proposals.checkpoint import ModelSpec
from detector.classifier import RegionClassifier
from eval.datasets import load_dataset, read_image
from detector.ensemble import InferencePath, default_path, prepare_members
from detector.api import Detector
from detector.evaluation import detect_records
from detector.pipeline import classify_regions, load_ensemble
from detector.postprocess import PostProcess
from detector.prefetch import prefetch_inputs
from proposals.networks import normalize_image
from detector.training.core import ImageSample, region_step
from eval.detections import to_results
from eval.evaluate import evaluate_results
from proposals.cache import ProposalCache
from proposals.combined import Proposer
from proposals.config import SelectiveSearchConfig
from detector.cli.test import dataset_category_ids

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
NUM_CLASSES = 20  # a VOC-sized head for the synthetic sections; raccoon's 1 class in (c), (e)
GFLOP_224 = 3.0   # GoogLeNet forward per 224 x 224 region: ~1.5 GMAC (torchvision), 2 FLOP each
TRAIN_FLOP_FACTOR = 3  # forward + backward (input and weight gradients) ~ 3 forwards
MODES = ("fp32", "bf16", "bf16+channels_last", "bf16+channels_last+compile")
DEFAULT_PATH = ("bf16", 256)  # what Detector runs on CUDA: autocast, --batch-size 256



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


# (a) classification: one network ------------------------------------------------------------

def mode_path(mode: str) -> InferencePath:
    """The library path a MODES name stands for."""
    return InferencePath(autocast=None if mode == "fp32" else torch.bfloat16,
                         channels_last="channels_last" in mode,
                         compile="inductor" if mode.endswith("compile") else None)


def classification(device: torch.device, sizes: Sizes, peak: float | None,
                   modes: tuple[str, ...] = MODES[:-1]) -> list:
    """`classify_regions` (warping, the network, softmax) with one network, per mode and batch."""
    image, boxes = random_inputs(max(sizes.batches), device)
    pixels, rows = normalize_image(image), []
    for mode in modes:
        path = mode_path(mode)
        net = prepare_members(networks(1, NUM_CLASSES, sizes.input_size, device), path)
        for batch in sizes.batches:
            run = partial(classify_regions, pixels, boxes[:batch], net, path=path,
                          input_size=sizes.input_size, context_pad=sizes.context_pad,
                          batch_size=batch)
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

ENSEMBLE_PATHS = {"bf16": InferencePath(torch.bfloat16),
                  "bf16+channels_last": InferencePath(torch.bfloat16, channels_last=True),
                  "bf16+stacked": InferencePath(torch.bfloat16, stacked=True),
                  "bf16+channels_last+stacked": InferencePath(torch.bfloat16, channels_last=True,
                                                              stacked=True)}


def ensemble(device: torch.device, sizes: Sizes, notes: list) -> list:
    """A `Detector` call (the tools' path: warping, every member, softmax, NMS) per path and batch,
    and how far each path's mean softmax is from float32's."""
    members = networks(sizes.members, NUM_CLASSES, sizes.input_size, device)
    image, boxes = random_inputs(sizes.proposals, device)
    spec = ModelSpec(NUM_CLASSES, sizes.input_size, sizes.context_pad)
    image_np, boxes_np = image.permute(1, 2, 0).cpu().numpy(), boxes.cpu().numpy()
    scores = partial(classify_regions, normalize_image(image), boxes, input_size=spec.input_size,
                     context_pad=spec.context_pad)
    exact, rows = scores(members)[0], []
    for name, path in ENSEMBLE_PATHS.items():
        try:  # stacking can fail where vmap meets an operator it cannot batch
            prepared = prepare_members(members, path)
            gap = (scores(prepared, path=path)[0] - exact).abs().max().item()
        except Exception as e:  # the other paths' rows still stand
            notes.append(f"ensemble {name}: failed, {type(e).__name__}: {e}"[:500])
            continue
        notes.append(f"ensemble {name}: mean softmax within {gap:.2g} of fp32")
        detector = Detector(members, spec, [str(k) for k in range(NUM_CLASSES)], device,
                            path=path)  # prepared (and compiled) once for every batch size
        for batch in sizes.ensemble_batches:
            detector.batch_size = batch
            run = partial(detector, image_np, boxes_np)
            default = " (default path)" if (path, batch) == (default_path(device), 256) else ""
            rows.append(row("ensemble", f"{name} b{batch}{default}",
                            1 / best_seconds(run, sizes.repeats, device), "images/s",
                            detail=f"{sizes.members} nets x {sizes.proposals} regions"))
    return rows


# (c) pipeline: tools/test.py's loop with proposals computed in workers ----------------------

class HeldOut:
    """raccoon's test images (data/test_labels.csv, the first ``count``), the proposer and
    workers of (c), and the proposal cache that (c) fills (or (e), where (c) did not run and
    no ``cache`` folder, a tools/propose.py cache of these images, was given)."""

    def __init__(self, data: Path, count: int, max_boxes: int | None, workers: int, root: str,
                 cache: str | None = None):
        base = data / "raccoon"
        dataset = load_dataset(base / "annotations", images=base / "images",
                               split=str(base / "data" / "test_labels.csv"))
        self.dataset = replace(dataset, images=dataset.images[:count])
        self.proposer = Proposer(SelectiveSearchConfig(max_boxes=max_boxes))
        self.workers, self.root = workers, root
        self.cache = ProposalCache.open(cache) if cache else None

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
    cached = Detector(members, spec, ["object"], device, cache=test.cache)
    computed = Detector(members, spec, ["object"], device, proposer=test.proposer)
    detect_all = partial(detect_records, category_ids=[1], progress=None)
    detect_all(cached, runs[:2])  # warm-up
    classify_rate = len(runs) / timed(partial(detect_all, cached, runs), device)
    rate = len(runs) / timed(partial(detect_all, computed, runs, workers=test.workers), device)
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

PARITY_PATHS = {"bf16 autocast (the CUDA default)": InferencePath(torch.bfloat16),
                "bf16 stacked": InferencePath(torch.bfloat16, stacked=True)}


def parity(device: torch.device, sizes: Sizes, test: HeldOut, checkpoints: list[str]) -> list:
    """Per bf16 path: the share of the held-out proposals whose top-1 class is fp32's; with
    checkpoints also VOC AP@0.5 of every path (tools' post-processing) and the change."""
    if checkpoints:
        loaded = load_ensemble(checkpoints, device)
        members, spec = loaded.members, loaded.spec
        ids = dataset_category_ids(loaded.classes, test.dataset, checkpoints[0])
    else:
        members, spec, ids = (networks(1, 1, sizes.input_size, device),
                              ModelSpec(1, sizes.input_size, sizes.context_pad), [1])
    paths = {"fp32": InferencePath(), **PARITY_PATHS}
    prepared = {name: prepare_members(members, path) for name, path in paths.items()}
    same, results, total = dict.fromkeys(PARITY_PATHS, 0), {name: [] for name in paths}, 0
    for record in test.dataset.images:
        image = torch.from_numpy(read_image(record.file_name)).permute(2, 0, 1).to(device)
        pixels = normalize_image(image)
        boxes = torch.from_numpy(test.proposals(record.image_id)).to(device)
        total += len(boxes)
        for name, path in paths.items():
            probs, deltas = classify_regions(pixels, boxes, prepared[name], path=path,
                                             input_size=spec.input_size,
                                             context_pad=spec.context_pad)
            if name == "fp32":
                top1 = probs.argmax(1)
            else:
                same[name] += int((probs.argmax(1) == top1).sum())
            found = PostProcess()(boxes.cpu().numpy(), probs.cpu().numpy(),
                                  None if deltas is None else deltas.cpu().numpy(),
                                  tuple(pixels.shape[1:]), background=members[0].background)
            results[name] += to_results(record.image_id, ids, *found)
    source = f"{len(checkpoints)} checkpoint(s)" if checkpoints else "random-init net"
    rows = [row("parity", f"top-1 same as fp32: {name}", 100 * count / total, "%",
                detail=f"{total} regions, {source}, goal >= 99%") for name, count in same.items()]
    if checkpoints:
        ap = {name: 100 * evaluate_results(test.dataset, found, "voc").mAP
              for name, found in results.items()}
        rows += [row("parity", f"VOC AP@0.5 {name}", value, "%") for name, value in ap.items()]
        rows += [row("parity", f"AP@0.5 change: {name}", ap[name] - ap["fp32"], "points",
                     detail="goal within 0.5") for name in PARITY_PATHS]
    return rows

