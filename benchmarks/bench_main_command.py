"""The main command as a user runs it on a CPU, end to end: ``tools/detect.py PHOTO`` with the
ImageNet GoogLeNet at 224 px (one network), wall and CPU seconds per photo, for each backend.

    python benchmarks/bench_main_command.py ../shared/data/raccoon/images/raccoon-{1,2,3}.jpg

Each run is a fresh process, as a user's is: start-up (imports), loading the model (and for
ONNX Runtime reading its cached export), selective search, warping, the network, NMS and the
outputs. The weights are a torchvision GoogLeNet state dict of random values passed with
--imagenet-weights (no download here): the speed is the real model's (same graph, same
proposals), the labels are not. The first ``auto`` run of a fresh cache exports the model and is
reported on its own line; then the backends run interleaved on each photo per round, and each
figure is a median over rounds, with the median of same-round ratios to ``torch`` (PyTorch's
CPU default, float32 channels_last).
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BACKENDS = ("auto", "torch")


def random_imagenet_weights(path: Path) -> None:
    """A torchvision GoogLeNet state dict (aux heads included, as the download has)."""
    import torch
    from torchvision.models import googlenet

    torch.manual_seed(0)
    torch.save(googlenet(weights=None, aux_logits=True, init_weights=True).state_dict(), path)


def run_once(photo: str, weights: Path, backend: str, out: Path, env: dict) -> tuple[float, float]:
    """(wall s, CPU s of the child) of one ``tools/detect.py`` process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(REPO / "tools" / "detect.py"), photo,
                           "--imagenet-weights", str(weights), "--backend", backend,
                           "--out", str(out)], cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"detect failed ({backend}, {photo}):\n{done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("photos", nargs="+", help="photos, each one detect run per backend and round")
    p.add_argument("--rounds", type=int, default=3, help="runs per photo and backend")
    p.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS),
                   help="the backends to time (default both; the ratio column needs torch)")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench_main_command_"))
    weights = work / "googlenet-random.pth"
    random_imagenet_weights(weights)
    env = {**os.environ, "XDG_CACHE_HOME": str(work / "cache")}  # a fresh export cache
    wall, cpu = run_once(args.photos[0], weights, "auto", work / "first", env)
    print(f"first auto run (exports the model into an empty cache): {wall:.1f} s wall, "
          f"{cpu:.1f} s CPU", flush=True)
    print("| photo | proposals | backend | wall s (median) | CPU s (median) | "
          "wall vs torch |")
    print("|---|---|---|---|---|---|")
    for photo in args.photos:
        times: dict[str, list[tuple[float, float]]] = {b: [] for b in args.backends}
        for _ in range(args.rounds):
            for backend in args.backends:
                times[backend].append(run_once(photo, weights, backend, work / backend, env))
        proposals = proposals_of(work / "auto", photo)
        for backend in args.backends:
            walls = [w for w, _ in times[backend]]
            ratio = "-"  # without torch's runs
            if "torch" in times:
                same_round = [w / t for (w, _), (t, _) in zip(times[backend], times["torch"])]
                ratio = f"{statistics.median(same_round):.2f}"
            print(f"| {Path(photo).name} | {proposals} | {backend} | "
                  f"{statistics.median(walls):.1f} | "
                  f"{statistics.median(c for _, c in times[backend]):.1f} | {ratio} |",
                  flush=True)
    return 0


def proposals_of(out: Path, photo: str) -> str:
    """The proposal count the detect command printed for ``photo`` is not kept in its JSON;
    count them as the command does (the default selective search)."""
    from eval.datasets import read_image
    from proposals.selective_search import selective_search

    return str(len(selective_search(read_image(photo))))


if __name__ == "__main__":
    raise SystemExit(main())
