"""What the commands share: one-line errors, output paths checked before the work, devices, and
the argument groups that several commands take with the same meaning.

Torch-free at import (``gdet-evaluate`` and ``pip install -e .`` alone must work): torch is
imported inside the functions that need it.
"""
from __future__ import annotations

import argparse
import codecs
import contextlib
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

from eval.errors import DetectionError
from eval.outputs import created_folders_removed_on_failure
from proposals.defaults import (BACKENDS, MAX_PER_IMAGE, NMS_IOU, PRECISIONS, REGION_BATCH,
                                REGION_BATCH_CPU, SCORE_THRESHOLD)

# The modules that only the `detect` extra installs, and the line that says so.
_EXTRA_MODULES = {"torch", "torchvision", "cv2", "scipy"}
_EXTRA_HINT = "pip install 'googlenet-detection[detect]' (or -e \".[detect]\" in a clone)"


def run_main(run: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    """Call a command's ``run(args)``; a user's mistake is one line on stderr and exit status 2.

    ``run`` returns an exit status (None = 0). Warnings print as one ``warning: <message>``
    line each (not Python's two lines with the source). A `DetectionError` prints
    ``error: <message>``; a missing optional dependency prints which extra installs it.
    Ctrl-C (SIGINT) and SIGTERM print one ``interrupted`` line and exit with 130 and 143
    (`proposals.interrupts`: SIGTERM raises as Ctrl-C does, and an interrupt that something
    inside ``run`` swallowed still ends the command so). A file name that is not valid in the
    output's encoding prints escaped (`_names_printable`).
    """
    import signal

    from proposals.interrupts import stop_on_signals

    with stop_on_signals() as signals, _names_printable():
        try:
            try:
                with warnings.catch_warnings(), created_folders_removed_on_failure():
                    warnings.showwarning = _one_line_warning
                    status = run(args) or 0
            except DetectionError as e:
                status = 2
                if signals.received is None:  # else the error is the interrupt's doing
                    print(f"error: {e}", file=sys.stderr)
            except ModuleNotFoundError as e:
                if (e.name or "").partition(".")[0] not in _EXTRA_MODULES:
                    raise
                print(f"error: this command needs {e.name}, which `pip install -e .` alone "
                      f"does not install: {_EXTRA_HINT}", file=sys.stderr)
                status = 2
            finally:
                signals.disarm()  # from here on a signal is only remembered
        except KeyboardInterrupt:
            status = None
    if signals.received is not None or status is None:
        print("interrupted", file=sys.stderr)
        return 128 + (signals.received or signal.SIGINT)
    return status


@contextlib.contextmanager
def _names_printable() -> Iterator[None]:
    """stdout and stderr, where they would raise on a character their encoding cannot write,
    write it escaped instead while a command runs: on Linux a file name's bytes that are not
    UTF-8 arrive as lone surrogates (``os.fsdecode``), which a strict UTF-8 stream refuses with
    UnicodeEncodeError in the middle of the output. Such a name prints as ``caf\\xe9.jpg``,
    its bytes, as ``ls -b`` shows it (`_escape_unwritable`)."""
    changed = []
    for stream in (sys.stdout, sys.stderr):
        errors = getattr(stream, "errors", None)
        if errors in ("strict", "backslashreplace") and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors=_ESCAPE)
            changed.append((stream, errors))
    try:
        yield
    finally:
        for stream, errors in changed:
            if not stream.closed:
                stream.reconfigure(errors=errors)


def _escape_unwritable(error: UnicodeError) -> tuple[str, int]:
    """The codec error handler `_names_printable` sets: a byte that ``os.fsdecode`` carried
    as a lone surrogate (U+DC80..U+DCFF) back as ``\\xNN``; any other character Python's
    ``backslashreplace`` way."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    text = error.object[error.start:error.end]
    return "".join(f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF
                   else c.encode("ascii", "backslashreplace").decode("ascii")
                   for c in text), error.end


_ESCAPE = "gdet.escape_unwritable"
codecs.register_error(_ESCAPE, _escape_unwritable)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every command's ``--help``: the description and epilog as written, and every flag's
    default in its help (`` (default: X)`` added where the help does not say it already)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (action.default not in (None, False, [], argparse.SUPPRESS)
                and "default" not in text.lower()):
            text += " (default: %(default)s)"
        return text


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    from tqdm import tqdm

    tqdm.write(f"warning: {message}", file=file or sys.stderr)  # on its own line, not a bar's


def add_dataset_arguments(p: argparse.ArgumentParser, required: bool = True) -> None:
    """--gt, --images, --classes, --blacklist, --split: what `load_dataset` takes."""
    p.add_argument("--gt", required=required,
                   help="ground truth: a COCO instances JSON, a PASCAL VOC folder (Annotations/, "
                        "JPEGImages/), a folder of VOC/ILSVRC XML files, a YOLO data.yaml, or "
                        "a folder of YOLO label .txt files")
    p.add_argument("--images", help="image folder (COCO image root, where the XMLs' images are, "
                                    "or the YOLO labels' images)")
    p.add_argument("--classes", help="class list file: one name per line (YOLO: darknet's .names "
                                     "or a data.yaml), or ILSVRC map_det.txt lines 'synset "
                                     "index name' (default: the sorted names found)")
    p.add_argument("--blacklist", help="ILSVRC blacklist file of 'image_index class_index' lines")
    p.add_argument("--split", help="image subset: a VOC ImageSets/Main split name, a YOLO "
                                   "data.yaml's train, val or test, or a file of ids (.txt, "
                                   "or .csv with a filename column)")


def check_images_given(gt: str | None, images: str | None) -> None:
    """--gt a folder of XML annotations without --images: their images are looked for beside
    them. A folder that holds XMLs and neither an image nor a subfolder is refused naming
    --images, before any work (the reader could only say which XML's image is missing)."""
    from eval.datasets.images import IMAGE_SUFFIXES

    if gt is None or images is not None:
        return
    folder, xmls = Path(gt), False
    try:
        if not folder.is_dir() or (folder / "Annotations").is_dir():
            return  # COCO JSON, or a VOC root (its images are in JPEGImages/)
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_dir() or Path(entry.name).suffix.lower() in IMAGE_SUFFIXES:
                    return
                xmls = xmls or entry.name.lower().endswith(".xml")
    except OSError:
        return  # the reader names what is wrong with the folder
    if xmls:
        raise DetectionError(f"--gt {gt}: a folder of XML annotations without their images "
                             "beside them; pass the images' folder with --images DIR")


def add_protocol_argument(p: argparse.ArgumentParser) -> None:
    from eval.evaluate import PROTOCOLS

    p.add_argument("--protocol", choices=("auto",) + PROTOCOLS, default="auto",
                   help="coco (AP@[.5:.95], 12 stats), voc07 (11-point), voc (all-point), "
                        "ilsvrc (small-object IoU rule); auto: coco for a JSON ground truth, "
                        "ilsvrc for a synset class map, voc otherwise")


def add_inference_arguments(p: argparse.ArgumentParser) -> None:
    """The keyword arguments of `Detector.load`, as flags with its defaults (the detect and
    test commands), and --workers."""
    p.add_argument("--device", default="auto",
                   help="auto (CUDA when present, with bf16 autocast, else CPU), cpu, cuda, "
                        "cuda:N (default: auto)")
    p.add_argument("--backend", choices=BACKENDS,
                   help="torch: PyTorch; onnxruntime: ONNX Runtime on the CPU, over a .onnx "
                        "file of tools/export.py or the checkpoints exported once and cached "
                        "(~/.cache/googlenet-detection/onnx); auto: onnxruntime on a CPU where "
                        "it is installed and none of --precision bf16, --channels-last, "
                        "--stacked, --compile is given, else torch (default: $GDET_BACKEND if "
                        "set, else auto)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="the networks' precision: auto = bf16 autocast on CUDA, fp32 on CPU "
                        "(bf16 on a CPU lost AP; see BENCHMARKS.md) (default: auto)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction,
                   help="run the networks in PyTorch in channels_last (NHWC) memory (default: "
                        "on for PyTorch on the CPU, off on CUDA; see BENCHMARKS.md)")
    p.add_argument("--stacked", action=argparse.BooleanOptionalAction,
                   help="run an ensemble's members as one vmapped call per batch (torch.func; "
                        "default: off)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction,
                   help="torch.compile each network (inductor; the first batch waits minutes; "
                        "default: off)")
    p.add_argument("--score-threshold", type=float, default=SCORE_THRESHOLD,
                   help="a detection is a (region, class) scoring strictly above this "
                        f"(default {SCORE_THRESHOLD}: low, so mAP sees the whole curve)")
    p.add_argument("--nms-iou", type=float, default=NMS_IOU,
                   help=f"per-class NMS: suppress boxes overlapping a better one by more than "
                        f"this IoU (default {NMS_IOU}, R-CNN's)")
    p.add_argument("--max-per-image", type=int, default=MAX_PER_IMAGE,
                   help=f"keep at most this many detections per image (default {MAX_PER_IMAGE}, "
                        "COCO's maxDets)")
    p.add_argument("--batch-size", type=int,
                   help=f"regions classified at once (bounds memory; default {REGION_BATCH} on "
                        f"CUDA, {REGION_BATCH_CPU} on the CPU)")
    p.add_argument("--workers", type=int, default=0,
                   help="CPU processes computing proposals ahead of classification; default 0 = "
                        "in the main process")


def check_inference_arguments(args: argparse.Namespace) -> None:
    """Reject values of `add_inference_arguments`' flags that cannot work, before any work,
    with the checks `Detector.load` makes (one copy: `PostProcess`, `check_batch_size`)."""
    from detector.api import check_batch_size
    from detector.postprocess import PostProcess

    from detector.runtime import check_backend

    PostProcess(args.score_threshold, args.nms_iou, args.max_per_image)
    if args.batch_size is not None:
        check_batch_size(args.batch_size)
    check_backend(args.backend, args.checkpoint, device=args.device, precision=args.precision,
                  imagenet_weights=getattr(args, "imagenet_weights", None),
                  channels_last=args.channels_last, stacked=args.stacked, compile=args.compile)
    if args.workers < 0:
        raise DetectionError(f"--workers {args.workers}: must be at least 0")


def check_cache_holds(cache, image_ids: list, flag_value: str) -> None:
    """Every image of ``image_ids`` is in the --proposals cache or recorded there as failed
    (the commands skip and report those); checked before any work."""
    _, missing = cache.partition(image_ids)
    if missing:
        raise DetectionError(f"--proposals {flag_value}: no proposals for image {missing[0]!r} "
                             f"({len(missing)} of {len(image_ids)} images, none recorded as "
                             f"failed); run the propose command with --out {flag_value} on "
                             "these images, or drop --proposals")


def inference_options(args: argparse.Namespace) -> dict:
    """The keyword arguments of `Detector.load` that the inference flags set."""
    return dict(backend=args.backend, precision=args.precision,
                channels_last=args.channels_last,
                stacked=args.stacked, compile=args.compile, score_threshold=args.score_threshold,
                nms_iou=args.nms_iou, max_per_image=args.max_per_image,
                batch_size=args.batch_size)


def report_failures(failed: list, total: int) -> int:
    """The summary line(s); exit status 1 if any image failed, else 0."""
    if not failed:
        return 0
    print(f"{total} image(s), {len(failed)} failed:", file=sys.stderr)
    for result in failed:
        print(f"  {result.path}: {result.error}", file=sys.stderr)
    return 1
