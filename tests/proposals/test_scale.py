"""Proposals at data-set scale: the end-of-run summary holds one image's boxes at a time, not
every image's (1.8 GB at COCO train2017's 118,287 images with the default preset)."""
import tracemalloc

import numpy as np

from eval.datasets import Dataset, ImageRecord
from eval.recall import evaluate_proposals
from proposals.cache import ProposalCache
from proposals.extract import CachedBoxes, Job, print_cache_summary

IMAGES, BOXES = 40, 20_000  # 320 kB of boxes an image, 12.8 MB in all


def record(image_id: str) -> ImageRecord:
    """A 1000 x 1000 image with two gt boxes."""
    return ImageRecord(image_id, f"{image_id}.jpg", 1000, 1000,
                       np.array([[10, 10, 200, 300], [500, 400, 900, 950]], np.float32),
                       np.array([1, 1]), np.zeros(2, bool), np.zeros(2, bool), np.ones(2))


def filled_cache(root) -> tuple[ProposalCache, Dataset]:
    rng = np.random.default_rng(0)
    cache = ProposalCache.create(root, "test", {})
    records = tuple(record(f"im{i:03d}") for i in range(IMAGES))
    for r in records:
        corner = rng.uniform(0, 800, size=(BOXES, 2))
        cache.save(r.image_id, np.concatenate([corner, corner + rng.uniform(1, 200, (BOXES, 2))],
                                              axis=1))
    return cache, Dataset(("thing",), records, (1,))


def test_summary_reads_one_image_at_a_time(tmp_path, capsys):
    cache, dataset = filled_cache(tmp_path / "cache")
    jobs = [Job(r.image_id, r.file_name) for r in dataset.images]
    tracemalloc.start()
    try:
        print_cache_summary(cache, jobs, dataset)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert f"{IMAGES}/{IMAGES} images have proposals" in capsys.readouterr().out
    # All boxes at once would be 12.8 MB; one image's, and the recall's work on it, a few MB.
    assert peak < 4 * BOXES * 16 * 4, f"{peak / 1e6:.1f} MB"


def test_cached_boxes_give_the_recall_of_the_loaded_list(tmp_path):
    cache, dataset = filled_cache(tmp_path / "cache")
    lazy = CachedBoxes(cache, dataset.images)
    assert len(lazy) == IMAGES and np.array_equal(lazy[3], cache.load("im003"))
    loaded = [cache.load(r.image_id) for r in dataset.images]
    a, b = evaluate_proposals(dataset.images, lazy), evaluate_proposals(dataset.images, loaded)
    assert np.array_equal(a.recall, b.recall) and np.array_equal(a.best_iou, b.best_iou)
