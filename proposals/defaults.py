"""Every default value of the toolkit, defined once: the library's signatures, the configs'
dataclasses and the commands' flags all import them from here (as detectron2's
``config/defaults.py``). Torch-free, so ``--help`` shows them without the `detect` extra.
"""

# torchvision's ImageNet normalisation (RGB, on [0, 1] pixels), the one GoogLeNet's weights use.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Regions: GoogLeNet's input side, and R-CNN's 16 px of context around each warped proposal.
INPUT_SIZE = 224
CONTEXT_PAD = 16
# The smallest square input GoogLeNet accepts: its four ceil-mode max-pools halve 15 px down to
# 1 px; at 14 px the last one gets 1 x 1 and has no output (found by trying sizes 8..64).
MIN_INPUT_SIZE = 15
# Regions warped and classified at once: 256 x 3 x 224 x 224 float32 is 154 MB, enough to keep
# a GPU busy while 10,000 proposals never need 6 GB at once.
REGION_BATCH = 256
# On the CPU: 64 (a quarter of the memory) was within noise of the fastest batch of every CPU
# path, where 256 ran at 0.68-0.85x batch 32's rate on one quiet thread (BENCHMARKS.md).
REGION_BATCH_CPU = 64

# Post-processing: R-CNN's greedy per-class NMS at IoU 0.3; scores at or below SCORE_THRESHOLD
# are not detections (low, so that mAP sees the whole precision-recall curve); COCO's maxDets.
NMS_IOU = 0.3
SCORE_THRESHOLD = 0.01
MAX_PER_IMAGE = 100
# The networks' precision choices (--precision, precision=): auto = bf16 autocast on CUDA,
# float32 on CPU (proposals.devices.default_autocast), with channels_last there.
PRECISIONS = ("auto", "fp32", "bf16")
# What runs the networks (--backend, backend=): PyTorch, or ONNX Runtime (an exported file, or
# the checkpoints exported once and cached); auto: ONNX Runtime on the CPU where it is installed.
BACKENDS = ("auto", "torch", "onnxruntime")
# What the detect command draws and prints (it writes every detection to detections.json).
SHOW_THRESHOLD = 0.5

# MultiBox: GoogLeNet's 200 boxes added to selective search, after NMS at 0.7; the loss's
# weight of the location term (alpha ~ 0.3 in the papers).
MULTIBOX_TOP = 200
MULTIBOX_NMS = 0.7
MULTIBOX_ALPHA = 0.3
