"""Every throughput figure of issue 6 in one command, printed as one table.

    python benchmarks/gpu.py --json gpu.json            # on a GPU machine: about 3 minutes
    python benchmarks/gpu.py --checkpoint runs/raccoon_s0/last.pt --json gpu.json  # + AP@0.5
    python benchmarks/gpu.py --small                    # CPU smoke run (the default without CUDA)

Every section times the library's own calls, so the figures are those of the tools' paths
(`detector.ensemble.InferencePath`; the tools' default is `default_path`, bf16 on CUDA):
(a) classification: `classify_regions` (warping, one GoogLeNet, softmax), regions/s per batch
    size, in fp32, bf16 autocast, bf16 + channels_last, and that + torch.compile (run last: it
    compiles for minutes); TFLOP/s at 3.0 GFLOP per 224 px region (GoogLeNet's 1.5 GMAC,
    scaled by (size / 224)^2) and the share of the bf16 peak.
(b) ensemble: `detect_array` (as tools/detect.py: NMS included) with 6 networks over 1,400
    proposals of one image, images/s, per path: members one after another, channels_last,
    stacked into one vmapped call (torch.func), both.
(c) pipeline: tools/test.py's loop (`detect_records`) over raccoon's 40 test images (3 passes),
    selective search in --workers processes: images/s against proposals alone (same workers)
    and classification alone (proposals cached), and the ratio to the slower of those two.
(d) training: `region_step` + backward + SGD step on batches of 128 warped regions, regions/s.
(e) parity: per bf16 path, the share of raccoon test proposals whose top-1 class is fp32's;
    with --checkpoint also the VOC AP@0.5 of fp32 and of each bf16 path.
Timings: the best of 3 after a warm-up call, the GPU synchronised around each. Rows print, and
--json is rewritten, as each section ends; a section that fails is reported in the notes, the
others still run, and the exit status is 1. --full runs the GPU sizes on a CPU (for (e)).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import torch

# benchmarks/ is not a package: this runs as a script, with its folder first on sys.path.
from gpu_sections import (DATA, MODES, SMALL, HeldOut, Sizes, classification,  # noqa: F401
                          compiled, ensemble, parity, pipeline, training)

# Dense bf16 tensor-core peaks in TFLOP/s (NVIDIA data sheets); the first name found is used.
BF16_PEAK_TFLOPS = {"H100 PCIe": 756.0, "H100": 989.0, "H200": 989.0, "A100": 312.0,
                    "L40S": 362.0}
SECTIONS = ("classification", "ensemble", "pipeline", "training", "parity", "compile")


def peak_tflops(device: torch.device, override: float | None) -> tuple[float | None, str]:
    """The bf16 peak (TFLOP/s) that shares are of, and where it came from."""
    if override:
        return override, "--peak-tflops"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    for key, value in BF16_PEAK_TFLOPS.items():
        if key in name:
            return value, f"data sheet, {key} dense"
    return None, "unknown for this device: pass --peak-tflops"


# the run and its table -----------------------------------------------------------------------

def run_sections(sections: list[str], args: argparse.Namespace, device: torch.device,
                 sizes: Sizes, peak: float | None, notes: list,
                 done: Callable[[dict], None]) -> dict[str, list]:
    """Every section asked for, printing its rows and calling ``done(found)`` after each; a
    section that raises is noted with its traceback and left empty."""
    found: dict[str, list] = {}
    with tempfile.TemporaryDirectory(prefix="gpu_bench_") as root:
        test = (HeldOut(args.data, sizes.images, sizes.max_boxes, args.workers, f"{root}/cache",
                        args.proposals)
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
    return f"{r['section']:<15} {r['setting']:<56} {value:>10} {r['unit']:<10} {', '.join(more)}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", action="store_true",
                   help="tiny sizes (input 64, batches 8 and 32, 2 images): a smoke run; "
                        "chosen automatically without CUDA")
    p.add_argument("--full", action="store_true",
                   help="the GPU sizes even without CUDA (e.g. --only parity on a CPU)")
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
    p.add_argument("--proposals", metavar="CACHE",
                   help="a tools/propose.py cache of the raccoon test images for (e) (default: "
                        "selective search, computed once; needs OpenCV contrib)")
    p.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    p.add_argument("--cudnn-benchmark", action="store_true",
                   help="set torch.backends.cudnn.benchmark (the tools leave it off)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    small = args.small or (device.type != "cuda" and not args.full)
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
          f"({peak_source})\n{'section':<15} {'setting':<56} {'value':>10} {'unit':<10} more")
    run_sections(sections, args, device, sizes, peak, notes, save)
    for note in notes:
        print(f"note: {note}")
    print(f"total {meta['seconds']} s")
    return 1 if any("FAILED" in note for note in notes) else 0


if __name__ == "__main__":
    raise SystemExit(main())
