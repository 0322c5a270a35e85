"""Detect objects in images with a trained region-classifier ensemble (or ImageNet GoogLeNet).

    python tools/detect.py photo.jpg --checkpoint runs/raccoon/last.pt
    python tools/detect.py photos/ more.jpg --checkpoint a.pt --checkpoint b.pt --out dets/
    python tools/detect.py photo.jpg --imagenet-weights googlenet-1378be20.pth
    torchrun --nproc-per-node 2 tools/detect.py photos/ --checkpoint a.pt

Writes OUT/detections.json (COCO results) and annotated copies; images are read in their
stored pixel grid (no EXIF rotation). The command lives in detector/cli/detect.py (also the
console script gdet-detect); from Python, use detector.Detector.
"""
import sys

from detector.cli.detect import main

if __name__ == "__main__":
    sys.exit(main())
