"""The training core on its own: the epoch's batch sampler, the region loss, the photometric
distortion, flips, RNG restore, and the gathering of per-rank results in order."""
import json
import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from detector.distributed import gather_in_order, shard
from detector.training.core import (capture_rng, distort, epoch_batches, flip_boxes,
                                    region_loss, restore_rng, seeded_generator)
from eval.errors import DetectionError
from proposals.checkpoint import from_plain, read_torch_file, write_payload


# --- epoch_batches ---------------------------------------------------------------------------

def all_ranks(count, per_batch, world, seed=(3, 1, -1)):
    return [epoch_batches(count, per_batch, seeded_generator(*seed), rank, world)
            for rank in range(world)]


def test_one_process_takes_the_seeded_permutation_in_groups():
    batches = epoch_batches(7, 2, seeded_generator(3, 1, -1))
    order = torch.randperm(7, generator=seeded_generator(3, 1, -1)).tolist()
    assert batches == [order[0:2], order[2:4], order[4:6], order[6:7]]
    assert sorted(i for b in batches for i in b) == list(range(7))


@pytest.mark.parametrize("per_batch", [1, 2, 3])
def test_every_rank_runs_the_same_number_of_steps_and_every_image_is_seen(per_batch):
    for count in range(1, 21):
        epoch = epoch_batches(count, per_batch, seeded_generator(3, 1, -1))
        for world in range(1, 10):
            shares = all_ranks(count, per_batch, world)
            steps = {len(s) for s in shares}
            assert len(steps) == 1 and steps.pop() >= 1, (count, per_batch, world)
            assert {i for s in shares for b in s for i in b} == set(range(count))
            # round by round, the ranks' batches are the epoch's, wrapped as often as needed
            interleaved = [s[k] for k in range(len(shares[0])) for s in shares]
            assert interleaved == [epoch[i % len(epoch)] for i in range(len(interleaved))]
            assert len(interleaved) - len(epoch) < world  # no round more than needed


def test_six_images_in_pairs_on_eight_ranks_give_every_rank_one_step():
    """Twice the 3 batches is 6: with the old padding ranks 6 and 7 had none and DDP hung."""
    epoch = epoch_batches(6, 2, seeded_generator(0, 0, -1))
    shares = [epoch_batches(6, 2, seeded_generator(0, 0, -1), rank, 8) for rank in range(8)]
    assert [len(s) for s in shares] == [1] * 8
    assert [s[0] for s in shares] == [epoch[0], epoch[1], epoch[2]] * 2 + [epoch[0], epoch[1]]


def test_one_image_on_many_ranks():
    assert all_ranks(1, 4, 5) == [[[0]]] * 5


def test_no_images_no_batches_on_any_rank():
    assert all_ranks(0, 2, 3) == [[], [], []]


def test_the_order_follows_the_seed_and_the_epoch():
    assert all_ranks(20, 2, 3, (3, 1, -1)) == all_ranks(20, 2, 3, (3, 1, -1))
    assert all_ranks(20, 2, 3, (3, 1, -1)) != all_ranks(20, 2, 3, (3, 2, -1))  # next epoch
    assert all_ranks(20, 2, 3, (3, 1, -1)) != all_ranks(20, 2, 3, (4, 1, -1))  # other seed


def test_bad_batch_or_rank_is_refused():
    for per_batch, rank, world in [(0, 0, 1), (2, 1, 1), (2, -1, 2), (2, 0, 0)]:
        with pytest.raises(ValueError):
            epoch_batches(4, per_batch, seeded_generator(0), rank, world)


# --- region_loss -----------------------------------------------------------------------------

LN2, LN3 = math.log(2), math.log(3)


def tiny_batch():
    """3 regions, 2 classes: a background row and two foreground rows (only row 1 regressed)."""
    logits = torch.tensor([[0.0, 0.0, 0.0],    # label 0: CE = ln 3
                           [0.0, LN2, 0.0],    # label 1: p = 2/4, CE = ln 2
                           [LN2, 0.0, 0.0]])   # label 2: p = 1/4, CE = ln 4 (and wrong)
    labels = torch.tensor([0, 1, 2])
    deltas = torch.zeros(3, 2, 4)
    deltas[1, 0] = torch.tensor([0.05, -0.05, 1.0, 0.0])   # row 1, its true class 1
    deltas[1, 1] = torch.tensor([9.0, 9.0, 9.0, 9.0])      # another class's: never used
    deltas[2] = 7.0                                        # row 2 is not regressed
    targets = torch.zeros(3, 4)
    regress = torch.tensor([False, True, False])
    return logits, deltas, labels, targets, regress


def test_region_loss_is_cross_entropy_plus_smooth_l1_by_hand():
    logits, deltas, labels, targets, regress = tiny_batch()
    loss, parts = region_loss(logits, deltas, labels, targets, regress)
    ce = (LN3 + LN2 + 2 * LN2) / 3
    beta = 1 / 9  # smooth-L1: 0.5 x^2 / beta below beta, |x| - beta / 2 above
    box = (2 * 0.5 * 0.05 ** 2 / beta + (1.0 - beta / 2) + 0.0) / 3  # summed, over R = 3
    assert parts["loss_cls"] == pytest.approx(ce, rel=1e-6)
    assert parts["loss_box"] == pytest.approx(box, rel=1e-6)
    assert loss.item() == pytest.approx(ce + box, rel=1e-6) == parts["loss"]
    assert parts["accuracy"] == pytest.approx(2 / 3)
    cls_only, parts = region_loss(logits, None, labels, targets, regress)
    assert cls_only.item() == pytest.approx(ce, rel=1e-6) and "loss_box" not in parts


def test_background_rows_do_not_enter_the_box_term():
    logits, deltas, labels, targets, regress = tiny_batch()
    _, reference = region_loss(logits, deltas, labels, targets, regress)
    deltas[0] = 100.0  # the background row's deltas, even marked for regression
    targets[0] = -5.0
    _, parts = region_loss(logits, deltas, labels, targets, regress | (labels == 0))
    assert parts["loss_box"] == reference["loss_box"]


def test_no_regressed_rows_give_a_zero_box_term():
    logits, deltas, labels, targets, _ = tiny_batch()
    _, parts = region_loss(logits, deltas, labels, targets, torch.zeros(3, dtype=torch.bool))
    assert parts["loss_box"] == 0.0


def test_region_loss_is_float32_under_bf16():
    logits, deltas, labels, targets, regress = tiny_batch()
    logits = (logits * 1.37 + 0.011).bfloat16()
    deltas = (deltas + 0.013).bfloat16()
    loss, _ = region_loss(logits, deltas, labels, targets, regress)
    assert loss.dtype == torch.float32
    # the float64 loss of the same (bf16-rounded) numbers; a bf16 sum would be ~1e-2 off
    ce = F.cross_entropy(logits.double(), labels)
    box = F.smooth_l1_loss(deltas.double()[1, 0], targets.double()[1], beta=1 / 9,
                           reduction="sum") / 3
    assert loss.item() == pytest.approx((ce + box).item(), rel=1e-6)


# --- distort, flip_boxes ---------------------------------------------------------------------

def two_pixels():
    """A 1x2 image: pixel A = (0.2, 0.4, 0.6), pixel B = (0.6, 0.4, 0.2); grey mean 0.4."""
    return torch.tensor([[[0.2, 0.6]], [[0.4, 0.4]], [[0.6, 0.2]]])


def test_identity_factors_give_the_image_back():
    image = torch.rand(3, 9, 11, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(distort(image, torch.ones(3)), image, atol=1e-6)


def test_distortion_by_hand():
    # brightness 0.5: A (0.1, 0.2, 0.3), B (0.3, 0.2, 0.1); grey 0.1815 and 0.2185, mean 0.2
    # contrast 2 about 0.2: A (0, 0.2, 0.4), B (0.4, 0.2, 0); grey A 0.163, B 0.237
    # saturation 0.5 towards each pixel's grey: A 0.163 + (x - 0.163) / 2
    out = distort(two_pixels(), torch.tensor([0.5, 2.0, 0.5]))
    expected = torch.tensor([[[0.0815, 0.3185]], [[0.1815, 0.2185]], [[0.2815, 0.1185]]])
    assert torch.allclose(out, expected, atol=1e-6)
    grey = distort(two_pixels(), torch.tensor([1.0, 2.0, 0.0]))  # no saturation: grey pixels
    assert torch.allclose(grey, torch.tensor([0.326, 0.474]).expand(3, 1, 2), atol=1e-6)


def test_distortion_stays_in_the_unit_range():
    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(1))
    image[:, 0, 0], image[:, 0, 1] = 1.0, 0.0
    for factors in [(1.2, 1.2, 1.2), (0.8, 0.8, 0.8), (3.0, 3.0, 3.0), (0.0, 5.0, -2.0)]:
        out = distort(image, torch.tensor(factors))
        assert out.min() >= 0 and out.max() <= 1, factors
    assert distort(image, torch.tensor([3.0, 1.0, 1.0])).max() == 1  # clamped, not wrapped


def test_flip_boxes_by_hand():
    boxes = torch.tensor([[10.0, 20, 30, 40], [0, 0, 100, 5]])
    flipped = flip_boxes(boxes, 100)
    assert flipped.tolist() == [[70, 20, 90, 40], [0, 0, 100, 5]]
    assert torch.equal(flip_boxes(flipped, 100), boxes)


# --- capture_rng / restore_rng ---------------------------------------------------------------

def draws():
    return (random.random(), random.getrandbits(64), float(np.random.rand()),
            torch.rand(3).tolist(), torch.randint(0, 10**6, (2,)).tolist())


def test_restore_gives_the_same_draws_for_python_numpy_and_torch():
    state = capture_rng()
    first = draws()
    restore_rng(state)
    assert draws() == first
    assert draws() != first  # the streams did move on


def test_the_state_survives_a_checkpoint_read_with_weights_only(tmp_path):
    path = tmp_path / "rng.pt"
    write_payload(path, {"rng": capture_rng()})
    first = draws()
    restore_rng(from_plain(read_torch_file(path, "missing"))["rng"], str(path))
    assert draws() == first


def test_a_state_without_python_and_numpy_restores_torch():
    state = {"torch": torch.get_rng_state()}
    first = torch.rand(4)
    restore_rng(state)
    assert torch.equal(torch.rand(4), first)


@pytest.mark.parametrize("state, part", [
    (None, "no usable RNG state"),
    ({"torch": "abc"}, "no usable RNG state"),
    ({"torch": torch.zeros(3, dtype=torch.uint8)}, "torch"),          # wrong length
    ({"cuda": [torch.zeros(3)]}, "no usable RNG state"),
    ({"python": (3, (1, 2, 3), None)}, "python"),
    ({"python": "abc"}, "python"),
    ({"numpy": ("MT19937", np.zeros(5, np.uint32), 0, 0, 0.0)}, "numpy"),
    ({"numpy": {"a": 1}}, "numpy"),
])
def test_a_malformed_state_is_one_error_naming_the_checkpoint(state, part):
    if isinstance(state, dict) and "torch" not in state:
        state = {"torch": torch.get_rng_state(), **state}
    with pytest.raises(DetectionError, match=r"^run/epoch_002\.pt: .*" + part):
        restore_rng(state, "run/epoch_002.pt")


# --- gather_in_order -------------------------------------------------------------------------

def test_gather_in_order_puts_one_process_pairs_back_in_index_order(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert gather_in_order([(2, "c"), (0, "a"), (3, "d"), (1, "b")]) == ["a", "b", "c", "d"]
    assert gather_in_order([]) == []
    assert shard("abc") == [(0, "a"), (1, "b"), (2, "c")]


def _gather_rank(rank: int, world: int, store: str, out: str) -> None:
    """One rank of the gloo test: its share of 7 items, results gathered on rank 0."""
    import os

    import torch.distributed as dist

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world))
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        items = [f"image{i}" for i in range(7)]
        mine = shard(items)
        result = gather_in_order([(i, item.upper()) for i, item in reversed(mine)])
        with open(f"{out}.{rank}", "w") as f:
            json.dump({"mine": [i for i, _ in mine], "result": result}, f)
    finally:
        dist.destroy_process_group()


def test_gather_in_order_across_two_gloo_processes(tmp_path, monkeypatch):
    """Rendezvous through a file store: no port to pick, so none can collide."""
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    torch.multiprocessing.spawn(_gather_rank, args=(2, str(tmp_path / "store"),
                                                    str(tmp_path / "out")), nprocs=2)
    ranks = [json.loads((tmp_path / f"out.{r}").read_text()) for r in range(2)]
    assert ranks[0]["mine"] == [0, 2, 4, 6] and ranks[1]["mine"] == [1, 3, 5]
    assert ranks[0]["result"] == [f"IMAGE{i}" for i in range(7)]
    assert ranks[1]["result"] is None


def test_validation_is_due_every_n_epochs_and_after_the_last():
    from detector.training.config import Solver
    from detector.training.core import due

    assert [e for e in range(1, 6) if due(e, Solver(epochs=5, eval_every=2, steps=()))] == [2, 4, 5]
    assert not any(due(e, Solver(epochs=5, eval_every=0, steps=())) for e in range(1, 6))
