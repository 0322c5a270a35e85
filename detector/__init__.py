"""The detector: dataset readers, region warping, classifiers, training and inference.

This file stays free of heavy imports: `detector.datasets` and `detector.errors` serve the
evaluation path, which must not import torch.
"""
