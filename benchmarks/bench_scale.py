"""Benchmark: tools/propose.py at data-set scale: CPU per image, and memory against image count.

    python benchmarks/bench_scale.py throughput               # voc100, coco128; --workers 1, 2
    python benchmarks/bench_scale.py throughput --preset rcnn --workers 1 --photos voc100
    python benchmarks/bench_scale.py memory --count 5000      # 5,000 images, --workers 2
    python benchmarks/bench_scale.py memory --count 5000 --folder /tmp/scale5k --keep

Both run the command as a user does (``python tools/propose.py``, default preset: selective
search fast mode, superpixel x2, 500 px working copy) in a child process, on the real photos of
../shared/data (voc100 and coco128, 228 images).

``throughput``: each ``--workers`` setting fills a fresh cache from each photo set (voc100's
100, coco128's 128; ``--preset`` passes one to the command). The robust figure is the CPU
seconds per image of the whole process tree (main process and workers, user + system, from
``getrusage(RUSAGE_CHILDREN)`` around the run; it includes the start-up imports of every
process, which the command's own "CPU s per image" line leaves out); wall images/s is as
observed, so it depends on what else the machine runs.

``memory``: builds ``--count`` images as links to the 228 photos under distinct names (the
folder listing accepts links to files; ``--folder``, default a temporary one), with a COCO
instances JSON that gives each its photo's boxes, so that the run takes the data-set path
(``--gt``) and ends with the recall summary. While the command runs, the resident memory (VmRSS)
of its process tree is sampled every ``--every`` seconds, with the number of images done (files
in the cache's boxes/); printed: the tree's RSS when each 1,000 images were done, and the peak.
Then the command runs again on the full cache (nothing to compute: listing and summary alone),
the figure for what the end of a run costs.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from eval.datasets.images import list_image_files

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
SOURCES = {"voc100": SHARED / "voc100" / "images",
           "coco128": SHARED / "coco128" / "images" / "train2017"}
VOC100_COCO = SHARED / "voc100" / "gts" / "coco_format_v1" / "instances_default.json"
COCO128 = SHARED / "coco128" / "instances_train2017_128.json"
VOC_CATEGORY_OFFSET = 1000  # voc100's category ids, moved past COCO's in the joined JSON


def photos() -> list[tuple[Path, dict, list[dict]]]:
    """Every shared photo: (file, its COCO image entry, its annotations), voc100 then coco128.
    voc100's categories are numbered from `VOC_CATEGORY_OFFSET` so that both sets share one
    category list."""
    for folder in SOURCES.values():
        if not folder.is_dir():
            raise SystemExit(f"{folder} not found: this benchmark needs ../shared/data")
    out = []
    for path, folder, offset in ((VOC100_COCO, SOURCES["voc100"], VOC_CATEGORY_OFFSET),
                                 (COCO128, SOURCES["coco128"], 0)):
        data = json.loads(path.read_text())
        by_image: dict[int, list[dict]] = {}
        for a in data["annotations"]:
            by_image.setdefault(a["image_id"], []).append(
                {**a, "category_id": a["category_id"] + offset})
        for image in sorted(data["images"], key=lambda i: i["file_name"]):
            out.append((folder / image["file_name"], image, by_image.get(image["id"], [])))
    return out


def categories() -> list[dict]:
    """COCO's categories and voc100's (offset), as one list."""
    coco = json.loads(COCO128.read_text())["categories"]
    voc = json.loads(VOC100_COCO.read_text())["categories"]
    return coco + [{**c, "id": c["id"] + VOC_CATEGORY_OFFSET, "name": "voc_" + c["name"]}
                   for c in voc]


def build_folder(folder: Path, count: int) -> Path:
    """``folder/images/`` with ``count`` links to the shared photos (cycled, distinct names) and
    ``folder/instances.json`` giving each its photo's boxes; returns the JSON's path."""
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    source = photos()
    entries, annotations = [], []
    for n in range(count):
        path, image, boxes = source[n % len(source)]
        name = f"{n:06d}_{path.name}"
        link = images / name
        if not link.exists():
            os.symlink(path, link)
        entries.append({**image, "id": n + 1, "file_name": name})
        annotations += [{**a, "id": len(annotations) + 1 + i, "image_id": n + 1}
                        for i, a in enumerate(boxes)]
    gt = folder / "instances.json"
    gt.write_text(json.dumps({"images": entries, "annotations": annotations,
                              "categories": categories()}))
    return gt


def propose_command(*args: str) -> list[str]:
    return [sys.executable, str(REPO / "tools" / "propose.py"), *args]


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def throughput(args: argparse.Namespace) -> None:
    """CPU s per image and wall images/s of a full run, per photo set and ``--workers``."""
    preset = ["--preset", args.preset] if args.preset else []
    print(f"preset {args.preset or 'default (googlenet)'}, {os.cpu_count()} CPUs")
    print("photos    workers  images  CPU s/image (tree)  CPU s/image (command)  images/s wall")
    for name in args.photos:
        source = SOURCES[name]
        if not source.is_dir():
            raise SystemExit(f"{source} not found: this benchmark needs ../shared/data")
        count = len(list_image_files(source)[0])
        for workers in args.workers:
            with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
                tree, own, wall = timed_run(source, Path(tmp) / "cache", workers, preset)
            print(f"{name:<8}  {workers:>7}  {count:>6}  {tree / count:>18.3f}  {own:>21}  "
                  f"{count / wall:>13.2f}")


def timed_run(images: Path, out: Path, workers: int, extra: list[str]) -> tuple[float, str, float]:
    """(CPU s of the process tree, the command's own CPU s per image, wall s) of one run of the
    command on ``images`` into an empty cache ``out``."""
    cpu, start = children_cpu(), time.perf_counter()
    done = subprocess.run(propose_command("--images", str(images), "--out", str(out),
                                          "--workers", str(workers), *extra),
                          capture_output=True, text=True)
    wall, cpu = time.perf_counter() - start, children_cpu() - cpu
    if done.returncode != 0:
        raise SystemExit(f"propose failed ({done.returncode}):\n{done.stderr[-2000:]}")
    # "time: 0.412 CPU s per image; ..." (the workers' time on each image, imports left out)
    own = next((line.split()[1] for line in done.stdout.splitlines()
                if line.startswith("time:")), "?")
    return cpu, own, wall


def tree_rss(root: int) -> tuple[int, int]:
    """(kB resident in process ``root`` and all its descendants, number of processes), from
    /proc; a process that ends while being read is left out."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        kids = [p for p, parent in parents.items() if parent == pid and p not in tree]
        tree.update(kids)
        frontier += kids
    total = 0
    for pid in tree:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        total += next((int(line.split()[1]) for line in status.splitlines()
                       if line.startswith("VmRSS:")), 0)
    return total, len(tree)


def sampled_run(command: list[str], cache: Path, every: float, log) -> list[tuple]:
    """Run ``command``; every ``every`` s, (seconds, images done, tree RSS kB, processes)."""
    samples = []
    start = time.perf_counter()
    with subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT) as process:
        while process.poll() is None:
            rss, count = tree_rss(process.pid)
            boxes = cache / "boxes"
            done = sum(1 for _ in os.scandir(boxes)) if boxes.is_dir() else 0
            samples.append((time.perf_counter() - start, done, rss, count))
            time.sleep(every)
    if process.returncode != 0:
        raise SystemExit(f"propose failed with status {process.returncode}; see {log.name}")
    return samples


def report(samples: list[tuple], count: int, step: int = 1000) -> None:
    """The tree's RSS at each ``step`` images done, and the peak."""
    print("images done   tree RSS (MiB)   processes   seconds")
    for mark in range(step, count + 1, step):
        at = next((s for s in samples if s[1] >= mark), None)
        if at:
            print(f"{mark:>11}   {at[2] / 1024:>14.0f}   {at[3]:>9}   {at[0]:>7.0f}")
    peak = max(samples, key=lambda s: s[2])
    print(f"peak {peak[2] / 1024:.0f} MiB at {peak[1]} images done, {peak[0]:.0f} s")


def memory(args: argparse.Namespace) -> None:
    """RSS of the process tree against images done, for ``--count`` images."""
    folder = Path(args.folder or tempfile.mkdtemp(prefix="bench_scale_"))
    try:
        gt = build_folder(folder, args.count)
        cache = folder / "cache"
        command = propose_command("--gt", str(gt), "--images", str(folder / "images"),
                                  "--out", str(cache), "--workers", str(args.workers))
        print(" ".join(command))
        with open(folder / "propose.log", "a") as log:
            samples = sampled_run(command, cache, args.every, log)
            print(f"{args.count} images, --workers {args.workers}, sampled every {args.every} s")
            report(samples, args.count)
            again = sampled_run(command, cache, min(args.every, 0.5), log)
        print(f"again on the full cache (nothing to compute): peak "
              f"{max(s[2] for s in again) / 1024:.0f} MiB, {again[-1][0]:.0f} s")
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    t = sub.add_parser("throughput", help="CPU s per image with --workers 1 and 2")
    t.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    t.add_argument("--preset", help="the command's --preset (default: none given, its default)")
    t.add_argument("--photos", nargs="+", choices=list(SOURCES), default=list(SOURCES),
                   help="the photo sets to run on")
    m = sub.add_parser("memory", help="process tree RSS against images done")
    m.add_argument("--count", type=int, default=5000, help="images to build and propose on")
    m.add_argument("--folder", help="where to build them (default: a temporary folder)")
    m.add_argument("--keep", action="store_true", help="keep the folder and its cache")
    m.add_argument("--workers", type=int, default=2)
    m.add_argument("--every", type=float, default=2.0, help="seconds between samples")
    args = p.parse_args(argv)
    throughput(args) if args.what == "throughput" else memory(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
