"""The export command: a trained ensemble (or ImageNet GoogLeNet) as one ONNX file.

    gdet-export runs/a/last.pt --out model.onnx --check-image photo.jpg
    gdet-export runs/a/last.pt runs/b/last.pt runs/c/last.pt --format onnx --out ens.onnx \\
        --check-image photo.jpg
    gdet-export --imagenet-weights googlenet-1378be20.pth --out in1k.onnx --check-image a.jpg
    gdet-detect photo.jpg --checkpoint model.onnx --backend onnxruntime

The file holds the region classifiers (warped regions in, the members' mean softmax out, and
their mean box deltas where they regress boxes) with the classes, input size, normalisation,
context padding and proposal settings in its metadata (JSON under 'googlenet_detection').
Before it is written, ONNX Runtime's softmax on the --check-image's regions (the model's own
proposals) must agree with PyTorch's within 1e-4; otherwise nothing is written. Models whose
proposals need a MultiBox network are refused (the file would not carry it). Needs the `onnx`
extra: pip install 'googlenet-detection[onnx]'.
"""
from __future__ import annotations

import argparse
import sys

from detector.cli.common import HelpFormatter, run_main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gdet-export", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=HelpFormatter)
    p.add_argument("checkpoints", nargs="*", metavar="CKPT",
                   help="checkpoints of the train command, one per ensemble member (softmax "
                        "averaged); none with --imagenet-weights")
    p.add_argument("--imagenet-weights", metavar="FILE",
                   help="without CKPT: export torchvision's 1,000-class ImageNet GoogLeNet from "
                        "this local state dict (e.g. googlenet-1378be20.pth)")
    p.add_argument("--format", choices=("onnx",), default="onnx",
                   help="the file's format (default: onnx)")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="the file to write (e.g. model.onnx); never one of the inputs")
    p.add_argument("--check-image", required=True, metavar="IMAGE",
                   help="a photo like those the model will see: the export is compared with "
                        "PyTorch on its warped proposals before it is written")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_main(run, args)


def run(args: argparse.Namespace) -> int:
    from eval.errors import DetectionError
    from detector.export import TOLERANCE, export_onnx

    if args.checkpoints and args.imagenet_weights:
        raise DetectionError("--imagenet-weights exports the ImageNet GoogLeNet, without "
                             "checkpoints; drop one of them")
    difference = export_onnx(args.checkpoints, args.out, args.check_image,
                             imagenet_weights=args.imagenet_weights)
    print(f"wrote {args.out}: ONNX Runtime's softmax within {difference:.1e} of PyTorch's "
          f"(at most {TOLERANCE:g}) on the regions of {args.check_image}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
