"""What the commands share: one-line errors, output paths checked before the work, devices, and
the argument groups that several commands take with the same meaning.

Torch-free at import (``gdet-evaluate`` and ``pip install -e .`` alone must work): torch is
imported inside the functions that need it.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

from detector.errors import DetectionError

# The modules that only the `detect` extra installs, and the line that says so.
_EXTRA_MODULES = {"torch", "torchvision", "cv2", "scipy"}
_EXTRA_HINT = "pip install 'googlenet-detection[detect]' (or -e \".[detect]\" in a clone)"


def run_main(run: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    """Call a command's ``run(args)``; a user's mistake is one line on stderr and exit status 2.

    ``run`` returns an exit status (None = 0). Warnings print as one ``warning: <message>``
    line each (not Python's two lines with the source). A `DetectionError` prints ``error: <message>``;
    a missing optional dependency prints which extra installs it; Ctrl-C exits with 130.
    """
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning
            return run(args) or 0
    except DetectionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        if (e.name or "").partition(".")[0] not in _EXTRA_MODULES:
            raise
        print(f"error: this command needs {e.name}, which `pip install -e .` alone does not "
              f"install: {_EXTRA_HINT}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    from tqdm import tqdm

    tqdm.write(f"warning: {message}", file=file or sys.stderr)  # on its own line, not a bar's


def check_output_file(path: str | os.PathLike, flag: str) -> Path:
    """An output file ``flag`` will write, checked before any work: a name the file system
    can hold, not a folder, and its folder (created if missing) writable. Returns it as a Path."""
    path = Path(path)
    _check_names(path, flag)
    if path.is_dir():
        raise DetectionError(f"{flag} {path}: is a folder; give the name of a file to write")
    _writable_folder(path.parent, flag, path)
    return path


def check_output_dir(path: str | os.PathLike, flag: str) -> Path:
    """An output folder, created if missing, checked writable before any work."""
    path = Path(path)
    _check_names(path, flag)
    if path.exists() and not path.is_dir():
        raise DetectionError(f"{flag} {path}: is a file, not a folder; give a folder name")
    _writable_folder(path, flag, path)
    return path


def _check_names(path: Path, flag: str) -> None:
    """Every component of ``path`` within the file system's 255-byte limit (on Python 3.11
    ``Path.is_dir`` raises ENAMETOOLONG instead of answering)."""
    from detector.fileio import NAME_MAX

    for part in path.parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise DetectionError(f"{flag} {str(path)[:80]}...: the name {part[:40]!r}... is "
                                 f"{len(os.fsencode(part))} bytes, over the file system's "
                                 f"{NAME_MAX}-byte limit; choose a shorter name")


def _writable_folder(folder: Path, flag: str, target: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise DetectionError(f"{flag} {target}: cannot write there ({e.strerror or e}); choose "
                             "another path") from None


def pick_device(name: str, local_rank: int = 0):
    """``auto`` -> CUDA when present, else CPU; ``cuda`` -> this process's GPU (torchrun's
    LOCAL_RANK); ``cuda:N`` that GPU; ``cpu``. Anything else, or CUDA without a GPU, is an
    error naming --device."""
    import torch

    if name not in ("auto", "cpu", "cuda") and not (name.startswith("cuda:")
                                                     and name[5:].isdigit()):
        raise DetectionError(f"--device {name}: unknown device; use auto, cpu, cuda or cuda:N")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DetectionError(f"--device {name}: no CUDA device is visible; use --device cpu or auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{local_rank}"
    device = torch.device(name)
    if device.type == "cuda":
        if device.index >= torch.cuda.device_count():
            raise DetectionError(f"--device {name}: only {torch.cuda.device_count()} CUDA "
                                 "device(s) are visible; use cuda:0 ..")
        torch.cuda.set_device(device)
    return device


def add_dataset_arguments(p: argparse.ArgumentParser, required: bool = True) -> None:
    """--gt, --images, --classes, --blacklist, --split: what `load_dataset` takes."""
    p.add_argument("--gt", required=required,
                   help="ground truth: a COCO instances JSON, a PASCAL VOC folder (Annotations/, "
                        "JPEGImages/), or a folder of VOC/ILSVRC XML files")
    p.add_argument("--images", help="image folder (COCO image root, or where the XMLs' images are)")
    p.add_argument("--classes", help="class list file: one name per line, or ILSVRC map_det.txt "
                                     "lines 'synset index name' (default: the sorted names found)")
    p.add_argument("--blacklist", help="ILSVRC blacklist file of 'image_index class_index' lines")
    p.add_argument("--split", help="image subset: a VOC ImageSets/Main split name, or a file of ids "
                                   "(.txt, or .csv with a filename column)")


def add_protocol_argument(p: argparse.ArgumentParser) -> None:
    from eval.evaluate import PROTOCOLS

    p.add_argument("--protocol", choices=("auto",) + PROTOCOLS, default="auto",
                   help="coco (AP@[.5:.95], 12 stats), voc07 (11-point), voc (all-point), "
                        "ilsvrc (small-object IoU rule); auto: coco for a JSON ground truth, "
                        "ilsvrc for a synset class map, voc otherwise")


def add_inference_arguments(p: argparse.ArgumentParser) -> None:
    """--device, --max-per-image, --batch-size, --workers and how the networks run (the
    detect and test commands)."""
    p.add_argument("--device", default="auto",
                   help="auto (CUDA when present, with bf16 autocast, else CPU), cpu, cuda, cuda:N")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="the networks' precision: auto = bf16 autocast on CUDA, fp32 on CPU")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction,
                   help="run the networks in channels_last (NHWC) memory (default: the device's "
                        "default path, see BENCHMARKS.md)")
    p.add_argument("--stacked", action=argparse.BooleanOptionalAction,
                   help="run an ensemble's members as one vmapped call per batch (torch.func)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction,
                   help="torch.compile each network (inductor; the first batch waits minutes)")
    p.add_argument("--max-per-image", type=int, default=100,
                   help="keep at most this many detections per image (default 100, COCO's maxDets)")
    p.add_argument("--batch-size", type=int, default=256,
                   help="regions classified at once (bounds memory; default 256)")
    p.add_argument("--workers", type=int, default=0,
                   help="CPU processes computing proposals ahead of classification; default 0 = "
                        "in the main process")


def check_inference_arguments(args: argparse.Namespace) -> None:
    """Reject values of `add_inference_arguments`' flags that cannot work, naming them."""
    for flag, value, least in (("--max-per-image", args.max_per_image, 1),
                               ("--batch-size", args.batch_size, 1), ("--workers", args.workers, 0)):
        if value < least:
            raise DetectionError(f"{flag} {value}: must be at least {least}")


def check_cache_holds(cache, image_ids: list, flag_value: str) -> None:
    """Every image of ``image_ids`` is in the --proposals cache or recorded there as failed
    (the commands skip and report those); checked before any work."""
    _, missing = cache.partition(image_ids)
    if missing:
        raise DetectionError(f"--proposals {flag_value}: no proposals for image {missing[0]!r} "
                             f"({len(missing)} of {len(image_ids)} images, none recorded as "
                             f"failed); run the propose command with --out {flag_value} on "
                             "these images, or drop --proposals")
