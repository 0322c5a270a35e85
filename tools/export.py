"""Export a trained region-classifier ensemble (or ImageNet GoogLeNet) to one ONNX file.

    python tools/export.py runs/a/last.pt runs/b/last.pt --format onnx --out model.onnx \\
        --check-image ../shared/data/raccoon/images/raccoon-1.jpg
    python tools/detect.py photo.jpg --checkpoint model.onnx --backend onnxruntime

Checked against PyTorch on the check image's regions before it is written. The command lives in
detector/cli/export.py (also the console script gdet-export); from Python, use
detector.export.export_onnx.
"""
import sys

from detector.cli.export import main

if __name__ == "__main__":
    sys.exit(main())
