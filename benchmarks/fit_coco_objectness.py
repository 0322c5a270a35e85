"""Fit the coco mode's objectness score (`proposals.objectness`) and print its constants.

    python benchmarks/fit_coco_objectness.py              # the even half of ../shared/data/coco128
    python benchmarks/fit_coco_objectness.py --gt X.json --images DIR

Data: the even-numbered images (0, 2, ...) of coco128; the odd ones stay held out for
bench_presets.py. For each image, every candidate of the coco preset's pool
(`proposals.selective_search.objectness_pool`: the distinct boxes of its 7 hierarchies with sides
of at least 4 px) with its features.

Labels and weights: a box is positive when its IoU with some non-crowd ground-truth box is at
least 0.5. A positive weighs 1 / (the number of pool boxes hitting that ground-truth box), its
largest such weight if it hits several: a small object, covered by one or two boxes, then counts
as much as a large one covered by twenty. Positives share half of the total weight, negatives
the other half.

Model: logistic regression on the features standardised by their mean and standard deviation
over all boxes (+1e-9), L2 penalty 1e-4 on the weights (not the bias), minimised by SciPy's
L-BFGS-B from zero. Deterministic: the same data give the same constants, printed as Python
for the block between BEGIN and END FITTED WEIGHTS in proposals/objectness.py.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.optimize import minimize

from eval.boxes import box_iou
from eval.datasets import ImageRecord, load_dataset, read_image
from proposals.config import preset_config
from proposals.objectness import FEATURES
from proposals.selective_search import objectness_pool

from bench_presets import add_coco128_arguments  # this folder: scripts run from it
HIT_IOU = 0.5
L2 = 1e-4


def image_samples(record: ImageRecord) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's features [N, F], labels [N] (1 = hits a gt) and positive weights [N]."""
    boxes, features = objectness_pool(read_image(record.file_name), preset_config("coco"))
    gts = np.asarray(record.boxes, np.float64).reshape(-1, 4)
    gts = gts[~np.asarray(record.iscrowd, bool).reshape(-1)]
    if len(gts) == 0:
        return features, np.zeros(len(boxes)), np.zeros(len(boxes))
    hit = box_iou(boxes, gts) >= HIT_IOU
    hitters = np.maximum(hit.sum(axis=0), 1)  # per gt: the pool boxes covering it
    return features, hit.any(axis=1).astype(np.float64), (hit / hitters).max(axis=1)


def fit(features: np.ndarray, labels: np.ndarray,
        weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(mean, std, weights, bias) of the weighted, L2-penalised logistic regression."""
    mean, std = features.mean(axis=0), features.std(axis=0) + 1e-9
    design = np.concatenate([(features - mean) / std, np.ones((len(features), 1))], axis=1)
    positive = weights / weights.sum() * 0.5
    negative = (1 - labels) / (1 - labels).sum() * 0.5

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        z = design @ theta
        value = positive @ np.logaddexp(0, -z) + negative @ np.logaddexp(0, z)
        sigmoid = 1 / (1 + np.exp(-z))
        gradient = design.T @ (-positive * (1 - sigmoid) + negative * sigmoid)
        penalty = np.r_[theta[:-1], 0.0]
        return value + L2 * penalty @ penalty, gradient + 2 * L2 * penalty

    result = minimize(loss, np.zeros(design.shape[1]), jac=True, method="L-BFGS-B")
    return mean, std, result.x[:-1], float(result.x[-1])


def constants(mean: np.ndarray, std: np.ndarray, weights: np.ndarray, bias: float) -> str:
    """The fitted constants as Python lines, one value per line, named by feature."""
    lines = []
    for name, values in (("MEAN", mean), ("STD", std), ("WEIGHTS", weights)):
        lines.append(f"{name} = (")
        lines += [f"    {float(v)!r},  # {feature}" for v, feature in zip(values, FEATURES)]
        lines.append(")")
    lines.append(f"BIAS = {bias!r}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_coco128_arguments(parser)
    args = parser.parse_args(argv)

    records = load_dataset(args.gt, images=args.images).images[0::2]
    start = time.perf_counter()
    samples = []
    for i, record in enumerate(records):
        samples.append(image_samples(record))
        print(f"\r{i + 1}/{len(records)} images", end="", flush=True)
    features, labels, weights = (np.concatenate(part) for part in zip(*samples))
    print(f"\n{len(labels)} boxes, {int(labels.sum())} positive, "
          f"{time.perf_counter() - start:.0f} s; fitting")
    print(constants(*fit(features, labels, weights)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
