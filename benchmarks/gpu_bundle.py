"""Pack what benchmarks/gpu.py needs on a lent GPU machine that has no ../shared, in one folder.

    python benchmarks/gpu_bundle.py --checkpoint runs/raccoon_s0/last.pt \\
        --proposals cache/raccoon_ss_x2 --out cache/gpu_data

Writes, under --out: ``raccoon/`` with the first 40 test images, their annotations and a
test split of them (gpu.py --data); ``model.pt``, the checkpoint without its optimizer,
scheduler and random state (inference needs none of them, and they double its size);
``proposals/``, the test images' proposals from --proposals, so that (e) needs no OpenCV
contrib there. Then prints the size and
the commands to run. The device tool carries at most 64 MiB a call, and OpenCV contrib (for
selective search in (c)) is a 56 MB wheel, so (c) runs in a call of its own, without model.pt.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path


from proposals.checkpoint import load_checkpoint, write_payload
from eval.datasets import load_dataset
from eval.errors import DetectionError
from proposals.cache import ProposalCache

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "raccoon"
TRAINING_STATE = ("optimizer", "scheduler", "rng")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a tools/train.py checkpoint for (e)")
    p.add_argument("--proposals", required=True, metavar="CACHE",
                   help="a tools/propose.py cache holding the raccoon test images' proposals")
    p.add_argument("--out", default="cache/gpu_data", help="the folder to write (replaced)")
    p.add_argument("--images", type=int, default=40, help="test images to take (gpu.py uses 40)")
    p.add_argument("--data", type=Path, default=DATA, help="the raccoon folder to copy from")
    return p


def bundle(args: argparse.Namespace) -> int:
    """Write the folder; returns its size in bytes."""
    split = args.data / "data" / "test_labels.csv"
    dataset = load_dataset(args.data / "annotations", images=args.data / "images",
                           split=str(split))
    records = dataset.images[:args.images]
    cache = ProposalCache.open(args.proposals)
    missing = [r.image_id for r in records if r.image_id not in cache]
    if missing:
        raise DetectionError(f"{args.proposals}: no proposals for {missing[0]} ({len(missing)} "
                             "test images); fill it with tools/propose.py first")
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    for folder in ("annotations", "images", "data"):
        (out / "raccoon" / folder).mkdir(parents=True)
    copy = ProposalCache.create(out / "proposals", cache.method, cache.params, cache.version)
    names = set()
    for record in records:
        image = Path(record.file_name)
        shutil.copy2(image, out / "raccoon" / "images")
        shutil.copy2(args.data / "annotations" / f"{image.stem}.xml",
                     out / "raccoon" / "annotations")
        copy.save(record.image_id, cache.load(record.image_id))
        names.add(image.name)
    # The split lists just the images taken: the reader wants an image for every listed name.
    lines = split.read_text().splitlines()
    kept = [lines[0]] + [ln for ln in lines[1:] if ln.split(",")[0] in names]
    (out / "raccoon" / "data" / split.name).write_text("\n".join(kept) + "\n")
    payload = load_checkpoint(args.checkpoint)
    write_payload(out / "model.pt", {k: v for k, v in payload.items()
                                     if k not in TRAINING_STATE})
    return sum(f.stat().st_size for f in out.rglob("*") if f.is_file())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        size = bundle(args)
    except DetectionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {size / 2**20:.1f} MiB (the device tool carries 64 MiB a call)\n"
          "on the GPU machine, with carry=[the folder] (gpu_device.sh sets PYTHONPATH):\n"
          f"  bash benchmarks/gpu_device.sh --data {args.out} --checkpoint {args.out}/model.pt "
          f"--proposals {args.out}/proposals --only classification ensemble training parity "
          "compile --json $OUT/gpu.json\n"
          f"and, with carry=[{args.out}/raccoon, .whl] (.whl: the opencv-contrib-python-headless "
          "wheel; model.pt would not fit beside it):\n"
          f"  bash benchmarks/gpu_device.sh --data {args.out} --only pipeline "
          "--json $OUT/gpu_pipeline.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
