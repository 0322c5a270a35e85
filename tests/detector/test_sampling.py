"""Region labelling and fg/bg sampling for fine-tuning, on hand-computed boxes."""
import torch

from detector.training.sampling import label_regions, sample_regions, with_ground_truth


def test_labels_follow_the_best_ground_truth_at_iou_half():
    gt = torch.tensor([[0.0, 0, 10, 10], [20, 20, 40, 40]])
    gt_labels = torch.tensor([3, 1])
    regions = torch.tensor([
        [0.0, 0, 10, 10],    # IoU 1 with gt 0 -> class 3
        [0.0, 0, 10, 20],    # IoU 100/200 = 0.5 exactly -> foreground (>= 0.5)
        [0.0, 0, 10, 21],    # IoU 100/210 < 0.5 -> background
        [20, 20, 40, 30],    # IoU 200/400 = 0.5 with gt 1 -> class 1
        [100, 100, 110, 110],  # no overlap -> background, best IoU 0
    ])
    out = label_regions(regions, gt, gt_labels)
    assert out.labels.tolist() == [3, 3, 0, 1, 0]
    assert torch.allclose(out.max_iou, torch.tensor([1.0, 0.5, 100 / 210, 0.5, 0.0]))
    assert out.matched_gt.tolist()[:4] == [0, 0, 0, 1]


def test_no_ground_truth_means_background():
    out = label_regions(torch.rand(4, 4) * 10 + torch.tensor([0, 0, 10, 10]), torch.zeros(0, 4),
                        torch.zeros(0, dtype=torch.int64))
    assert out.labels.tolist() == [0, 0, 0, 0] and out.matched_gt.tolist() == [-1] * 4


def test_ground_truth_joins_first():
    regions = with_ground_truth(torch.ones(2, 4), torch.zeros(1, 4))
    assert regions.tolist() == [[0, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]]


def test_sampling_counts_fill_and_determinism():
    labels = torch.tensor([1] * 5 + [0] * 200 + [2] * 40)
    g = torch.Generator().manual_seed(0)
    idx = sample_regions(labels, 32, 96, g)
    assert len(idx) == 128 and len(set(idx.tolist())) == 128
    assert (labels[idx] > 0).sum() == 32 and (labels[idx] == 0).sum() == 96
    few = sample_regions(torch.tensor([1, 1, 0, 0, 0, 0]), 32, 96, torch.Generator().manual_seed(0))
    assert sorted(few.tolist()) == [0, 1, 2, 3, 4, 5]
    short = sample_regions(torch.tensor([1] * 3 + [0] * 300), 32, 96, torch.Generator().manual_seed(0))
    assert len(short) == 128 and (torch.tensor([1] * 3 + [0] * 300)[short] > 0).sum() == 3
    again = sample_regions(labels, 32, 96, torch.Generator().manual_seed(0))
    assert torch.equal(idx, again)


def test_ranks_get_equal_disjoint_shares_of_each_epoch(tmp_path):
    """DDP: every rank runs the same number of batches; together they cover every image."""
    import numpy as np

    from eval.datasets import ImageRecord
    from detector.training.core import RegionBatches

    records = [ImageRecord(i, f"{i}.png", 10, 10, np.zeros((0, 4), np.float32), np.zeros(0, np.int64),
                           np.zeros(0, bool), np.zeros(0, bool), np.zeros(0)) for i in range(7)]
    shares = [RegionBatches(records, cache=None, seed=3, images_per_batch=2, regions_per_batch=4,
                            rank=r, world=3) for r in range(3)]
    for share in shares:
        share.set_epoch(5)
    assert [len(s) for s in shares] == [2, 2, 2]  # 4 batches of the epoch, wrapped to 6
    seen = {i for s in shares for b in s.batches for i in b}
    assert seen == set(range(7))
    single = RegionBatches(records, cache=None, seed=3, images_per_batch=2, regions_per_batch=4)
    single.set_epoch(5)
    assert len(single) == 4 and sorted(i for b in single.batches for i in b) == list(range(7))


def test_just_below_half_is_background_and_the_best_ground_truth_wins():
    gt = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 12]])
    regions = torch.tensor([
        [0.0, 0, 10, 20.01],  # IoU 100/200.1 with gt 0, 120/200.1 with gt 1 -> class 2
        [0.0, 0, 10, 24.01],  # IoU 120/240.1 = 0.4998 with gt 1 -> background
        [0.0, 0, 10, 24],     # IoU 120/240 = 0.5 exactly with gt 1 -> foreground
    ])
    out = label_regions(regions, gt, torch.tensor([1, 2]))
    assert out.labels.tolist() == [2, 0, 2] and out.matched_gt.tolist() == [1, 1, 1]
    assert out.max_iou[1] < 0.5 <= out.max_iou[2]
    assert label_regions(torch.zeros(0, 4), gt, torch.tensor([1, 2])).labels.tolist() == []


def test_foreground_never_fills_a_batch_short_of_background():
    """R-CNN fills missing foreground with background, never the other way round."""
    labels = torch.tensor([1] * 200 + [0] * 10)
    idx = sample_regions(labels, 32, 96, torch.Generator().manual_seed(0))
    assert (labels[idx] > 0).sum() == 32 and (labels[idx] == 0).sum() == 10
    no_fg = sample_regions(torch.zeros(300, dtype=torch.int64), 32, 96,
                           torch.Generator().manual_seed(0))
    assert len(no_fg) == 128 and len(set(no_fg.tolist())) == 128


def test_a_default_batch_holds_32_foreground_and_96_background_regions(tmp_path):
    """Two images of a default `RegionBatches` batch, each with plenty of both kinds."""
    import numpy as np
    from PIL import Image

    from eval.datasets import ImageRecord
    from detector.training.core import RegionBatches

    gt = np.array([[10, 10, 50, 50]], np.float32)
    fg = [[10 + d, 10, 50 + d, 50] for d in range(0, 10)] * 3                 # IoU >= 0.67
    bg = [[60 + d, 60, 90 + d, 90] for d in range(0, 10)] * 10                # no overlap
    proposals = np.array(fg + bg, np.float32)

    from proposals.cache import ProposalCache

    cache = ProposalCache.create(tmp_path / "cache", "selective_search", {})
    records = []
    for i in range(2):
        Image.fromarray(np.full((100, 100, 3), 100 + i, np.uint8)).save(tmp_path / f"{i}.png")
        cache.save(i, proposals)
        records.append(ImageRecord(i, str(tmp_path / f"{i}.png"), 100, 100, gt,
                                   np.array([1]), np.zeros(1, bool), np.zeros(1, bool),
                                   np.zeros(1)))
    batches = RegionBatches(records, cache, seed=0)
    assert len(batches) == 1
    samples = batches[0]
    labels = torch.cat([s.labels for s in samples])
    assert len(samples) == 2 and [len(s.labels) for s in samples] == [64, 64]
    assert (labels > 0).sum() == 32 and (labels == 0).sum() == 96
