"""k-means priors with the IoU distance."""
import numpy as np
import pytest

from eval.errors import DetectionError
from proposals.priors import cluster_priors, mean_best_iou

GROUPS = np.array([[0.05, 0.05, 0.10, 0.10],     # tiny, top left
                   [0.60, 0.60, 0.66, 0.68],     # tiny, bottom right
                   [0.10, 0.10, 0.90, 0.90]])    # large, centred


def jittered_groups(per_group: int = 50, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    boxes = [g + rng.uniform(-0.005, 0.005, (per_group, 4)) for g in GROUPS]
    return np.concatenate(boxes)


def test_recovers_three_groups_small_and_large_alike():
    boxes = jittered_groups()
    priors = cluster_priors(boxes, 3, seed=0)
    assert priors.dtype == np.float32 and priors.shape == (3, 4)
    # Each group's mean box is a centre (to the jitter's precision), whatever its size: an IoU
    # distance treats a 5%-wide cluster like an 80%-wide one.
    order = [int(np.argmin(np.abs(priors - g).sum(1))) for g in GROUPS]
    assert sorted(order) == [0, 1, 2]
    assert np.abs(priors[order] - GROUPS).max() < 0.003
    assert mean_best_iou(boxes, priors) > 0.85


def test_deterministic_for_a_seed():
    boxes = np.random.default_rng(1).uniform(0, 0.5, (300, 4))
    boxes[:, 2:] += boxes[:, :2] + 0.01
    a, b = cluster_priors(boxes, 12, seed=3), cluster_priors(boxes, 12, seed=3)
    assert np.array_equal(a, b)
    # More priors cover the boxes better (Lloyd iterations only improve on the seeding).
    assert mean_best_iou(boxes, cluster_priors(boxes, 24, seed=3)) > mean_best_iou(boxes, a)


def test_every_prior_is_used_and_valid():
    boxes = jittered_groups(per_group=20)
    priors = cluster_priors(boxes, 10, seed=0)
    assert (priors[:, 2:] > priors[:, :2]).all()
    assert len(np.unique(priors, axis=0)) == 10


def test_needs_k_distinct_boxes():
    with pytest.raises(DetectionError, match="cannot make 4 priors from 3 distinct"):
        cluster_priors(np.repeat(GROUPS, 5, axis=0), 4)
    with pytest.raises(DetectionError, match=r"expected \[M, 4\]"):
        cluster_priors(np.zeros((3, 3)), 1)
