"""The MultiBox network: box coding, predict (pixels, NMS, top-N), checkpoints."""
import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from proposals.checkpoint import ModelSpec, load_checkpoint, save_checkpoint
from eval.errors import DetectionError
from proposals.multibox import (CHECKPOINT_KIND, MultiBox, decode, encode, multibox_from_payload,
                               predict, save_multibox)
from detector.training.multibox_data import MultiBoxBatches, crop_boxes, sample_training_boxes

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PRIORS = torch.tensor([[x, y, x + w, y + h] for x in (0.0, 0.3, 0.6) for y in (0.0, 0.5)
                       for w, h in ((0.4, 0.5), (0.2, 0.3))])


def load_multibox(path):
    """A MultiBox checkpoint's network, read as the proposer reads it."""
    return multibox_from_payload(load_checkpoint(path, kind=CHECKPOINT_KIND), str(path)).eval()


def test_encode_decode_by_hand_and_inverse():
    prior = torch.tensor([0.2, 0.2, 0.6, 0.4])               # w 0.4, h 0.2
    box = torch.tensor([0.3, 0.1, 0.5, 0.5])
    assert encode(box, prior).tolist() == pytest.approx([0.25, -0.5, -0.25, 0.5])
    g = torch.Generator().manual_seed(0)
    residuals = torch.randn(12, 4, generator=g)
    assert torch.allclose(encode(decode(residuals, PRIORS), PRIORS), residuals, atol=1e-5)


def test_untrained_network_predicts_its_priors_with_confidence_about_one_over_k():
    torch.manual_seed(0)
    model = MultiBox(PRIORS, input_size=32).eval()
    residuals, logits = model(torch.zeros(2, 3, 32, 32))
    assert residuals.shape == (2, 12, 4) and logits.shape == (2, 12)
    assert residuals.abs().max() < 0.05
    assert logits.sigmoid().mean().item() == pytest.approx(1 / 12, rel=0.1)


def test_predict_gives_pixel_boxes_after_nms_best_first():
    torch.manual_seed(0)
    model = MultiBox(PRIORS, input_size=32).eval()
    image = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    boxes, scores = predict(model, image, top_n=5, nms_iou=0.3)
    assert boxes.dtype == torch.float32 and len(boxes) == len(scores) <= 5
    assert (scores[:-1] >= scores[1:]).all()
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 80).all() and (boxes[:, 3] <= 60).all()
    iou = box_iou(boxes, boxes).fill_diagonal_(0)
    assert iou.max() <= 0.3 + 1e-6
    all_boxes, _ = predict(model, image, top_n=None, nms_iou=None)
    assert len(all_boxes) == 12
    # Without NMS the boxes are the priors (untrained: residuals ~0) scaled to pixels.
    scaled = PRIORS.clamp(0, 1) * torch.tensor([80, 60, 80, 60])
    assert box_iou(all_boxes, scaled).max(1).values.min() > 0.9
    tensor_boxes, _ = predict(model, torch.from_numpy(image).permute(2, 0, 1), top_n=5, nms_iou=0.3)
    assert torch.equal(tensor_boxes, boxes)


def test_checkpoint_round_trip_and_kinds(tmp_path):
    torch.manual_seed(0)
    model = MultiBox(PRIORS, input_size=32).eval()
    save_multibox(tmp_path / "mb.pt", model, epoch=3)
    loaded = load_multibox(tmp_path / "mb.pt")
    image = np.full((40, 40, 3), 90, np.uint8)
    assert torch.equal(predict(model, image)[0], predict(loaded, image)[0])
    assert torch.equal(loaded.priors, PRIORS)
    with pytest.raises(DetectionError, match="mb.pt: a multibox checkpoint where a classifier is "
                                             "needed; pass it to the propose command's --multibox"):
        load_checkpoint(tmp_path / "mb.pt")
    save_checkpoint(tmp_path / "cls.pt", classes=["a"], spec=ModelSpec(1, 32, 2), state_dict={},
                    proposals={})
    with pytest.raises(DetectionError, match="cls.pt: a classifier checkpoint where a multibox"):
        load_multibox(tmp_path / "cls.pt")


def test_bad_priors_and_input_size():
    with pytest.raises(DetectionError, match=r"priors have shape \(3,\)"):
        MultiBox(torch.zeros(3))
    with pytest.raises(DetectionError, match="x2 > x1"):
        MultiBox(torch.tensor([[0.5, 0.0, 0.4, 1.0]]))
    with pytest.raises(DetectionError, match="input_size is 8"):
        MultiBox(PRIORS, input_size=8)


def test_crop_keeps_boxes_mostly_inside_and_normalises_them():
    boxes = torch.tensor([[10.0, 10.0, 30.0, 30.0],    # inside
                          [40.0, 0.0, 60.0, 20.0],     # half inside (x 40..50): kept, clipped
                          [44.0, 0.0, 64.0, 20.0]])    # 30% inside: dropped
    kept = crop_boxes(boxes, (0.0, 0.0, 50.0, 100.0))
    assert kept.flatten().tolist() == pytest.approx([0.2, 0.1, 0.6, 0.3, 0.8, 0.0, 1.0, 0.2])


def test_batches_are_a_function_of_seed_epoch_and_index(tmp_path):
    from PIL import Image

    from eval.datasets import ImageRecord
    records = []
    for i in range(3):
        Image.fromarray(np.full((40, 50, 3), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
        records.append(ImageRecord(i, str(tmp_path / f"{i}.png"), 50, 40,
                                   np.array([[5, 5, 30, 30]], np.float32), np.array([1]),
                                   np.array([False]), np.array([False]), np.array([625.0])))
    make = lambda seed: MultiBoxBatches(records, seed=seed, input_size=24, images_per_batch=2)  # noqa: E731
    a, b, other = make(0), make(0), make(1)
    assert len(a) == 2 and a[0][0].shape == (2, 3, 24, 24)
    assert torch.equal(a[1][0], b[1][0]) and all(torch.equal(x, y) for x, y in zip(a[1][1], b[1][1]))
    assert not all(torch.equal(x[0], y[0]) for x, y in zip([a[0], a[1]], [other[0], other[1]]))
    boxes = sample_training_boxes(records, 40, seed=0)
    assert boxes.shape == (40, 4) and boxes.min() >= 0 and boxes.max() <= 1
    assert len(np.unique(boxes, axis=0)) > 10  # crops and flips give varied boxes
