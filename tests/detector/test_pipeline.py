"""The detection path (a `Detector` call on an image and its proposals): output format,
determinism, batching, ensemble averaging, box regression, the 1,000-class ImageNet path;
load_ensemble and proposals_for errors."""

import numpy as np
import pytest
import torch
from torchvision.models import googlenet

from proposals.checkpoint import ModelSpec, save_checkpoint
from detector.classifier import build_classifier
from eval.errors import DetectionError
from detector.api import Detector
from detector.pipeline import imagenet_ensemble, load_ensemble
from detector.records import proposals_for
from detector.postprocess import PostProcess
from detector.regions import warp_regions
from proposals.networks import normalize_image
from proposals.cache import ProposalCache
from proposals.combined import proposer_for

SIZE, PAD = 64, 4  # small regions: GoogLeNet at 64 px is ~12x cheaper than at 224
CLASSES = ["red", "blue"]
IMAGE = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
# 8 distinct boxes inside the 64 x 48 image: detections can be traced back to them.
PROPOSALS = np.array([[x, y, x + 16 + 2 * i, y + 18] for i, (x, y) in
                      enumerate([(0, 0), (5, 3), (10, 6), (20, 2), (30, 10), (2, 20),
                                 (15, 25), (30, 28)])], dtype=np.float32)
# Keep every (proposal, class) pair: no threshold, no suppression (IoU is never > 1), no top-k.
EVERYTHING = dict(score_threshold=0.0, nms_iou=1.0, max_per_image=None)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def member(seed: int, box_regression: bool = False):
    """A random 2-class classifier whose softmax varies from region to region.

    GoogLeNet's own init (std 0.01) shrinks activations layer by layer to ~1e-12, so every
    region would get the same near-uniform softmax; He init keeps them O(1).
    """
    torch.manual_seed(seed)
    model = build_classifier(2, weights=None, box_regression=box_regression, input_size=SIZE)
    for module in model.trunk.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight)
    torch.nn.init.normal_(model.cls_score.weight, std=0.02)
    return model.eval()


@pytest.fixture(scope="module")
def members():
    return [member(1), member(2)]


def run(image, proposals, models, batch_size=256, **post):
    """``Detector(models)(image, proposals)`` with ``post`` its PostProcess settings, as
    tensors (boxes, scores, labels)."""
    classes = [str(k) for k in range(models[0].num_classes)]
    detector = Detector(models, ModelSpec(len(classes), SIZE, PAD), classes, "cpu",
                        postprocess=PostProcess(**post), batch_size=batch_size)
    result = detector(image, proposals)
    return tuple(torch.from_numpy(a) for a in (result.boxes, result.scores, result.labels))


def proposal_index(boxes: torch.Tensor) -> list[int]:
    """The proposal each output box is (boxes are unmoved without regression)."""
    return [int(np.flatnonzero((PROPOSALS == b.numpy()).all(1))[0]) for b in boxes]


def test_output_format_and_determinism(members):
    boxes, scores, labels = run(IMAGE, PROPOSALS, members, max_per_image=10)
    assert boxes.shape == (10, 4) and scores.shape == (10,) and labels.shape == (10,)
    assert boxes.dtype == scores.dtype == torch.float32 and labels.dtype == torch.int64
    assert set(labels.tolist()) <= {1, 2}
    assert (scores[:-1] >= scores[1:]).all()  # best first
    assert (boxes[:, 2] <= 64).all() and (boxes[:, 3] <= 48).all() and (boxes >= 0).all()
    again = run(torch.from_numpy(IMAGE).permute(2, 0, 1), torch.from_numpy(PROPOSALS), members,
                max_per_image=10)  # the same image as a [3, H, W] tensor
    for a, b in zip((boxes, scores, labels), again):
        assert torch.equal(a, b)


def test_batch_size_does_not_change_the_result(members):
    small = run(IMAGE, PROPOSALS, members, batch_size=7)
    large = run(IMAGE, PROPOSALS, members, batch_size=1000)
    assert torch.equal(small[0], large[0]) and torch.equal(small[2], large[2])
    torch.testing.assert_close(small[1], large[1], rtol=1e-5, atol=1e-6)


def test_ensemble_score_is_the_mean_of_the_members_softmax(members):
    with torch.inference_mode():
        regions = warp_regions(normalize_image(IMAGE), torch.from_numpy(PROPOSALS), SIZE, PAD)
        probs = [m(regions)[0].softmax(1) for m in members]  # each [8, 3], column 0 background
    expected = (probs[0] + probs[1]) / 2
    boxes, scores, labels = run(IMAGE, PROPOSALS, members, **EVERYTHING)
    assert len(scores) == len(PROPOSALS) * len(CLASSES)
    got = expected[proposal_index(boxes), labels]
    torch.testing.assert_close(scores, got, rtol=1e-5, atol=1e-6)
    # The members really disagree, and their scores vary over regions.
    assert (probs[0] - probs[1]).abs().max() > 0.1 and probs[0].std(0).min() > 0.003


class CheapMember(torch.nn.Module):
    """A stand-in classifier (logits from each region's mean colour) that records batch sizes."""

    background, num_classes = True, 2

    def __init__(self):
        super().__init__()
        self.batches: list[int] = []

    def forward(self, regions):
        self.batches.append(regions.shape[0])
        means = regions.mean(dim=(2, 3))  # [B, 3]
        return torch.stack([means[:, 0], means[:, 1], means[:, 2]], 1), None


def test_regions_go_through_in_bounded_batches():
    spy = CheapMember()
    rng = np.random.default_rng(1)
    corners = rng.uniform(0, 40, (5000, 2))
    proposals = np.concatenate([corners, corners + rng.uniform(5, 20, (5000, 2))], 1)
    boxes, scores, _ = run(IMAGE, proposals.astype(np.float32), [spy], batch_size=64)
    assert max(spy.batches) == 64 and sum(spy.batches) == 5000  # all classified, 64 at most
    assert len(boxes) == 100  # the default top-k


def test_no_proposals_give_no_detections(members):
    boxes, scores, labels = run(IMAGE, np.zeros((0, 4), np.float32), members)
    assert boxes.shape == (0, 4) and scores.shape == (0,) and labels.shape == (0,)


def test_box_deltas_are_averaged_over_members_with_a_regression_head(members):
    """Constant heads: tx = 0.1 and 0.3 average to 0.2, a shift of 0.2 * width; a member
    without a head does not dilute it."""
    models = [member(3, box_regression=True), member(4, box_regression=True), members[0]]
    for model, tx in zip(models[:2], (0.1, 0.3)):
        torch.nn.init.zeros_(model.bbox_pred.weight)
        with torch.no_grad():
            model.bbox_pred.bias.copy_(torch.tensor([tx, 0, 0, 0]).repeat(2))
    proposals = np.array([[10, 10, 30, 30], [4, 4, 14, 24]], np.float32)
    boxes, _, _ = run(IMAGE, proposals, models, **EVERYTHING)
    expected = {(14.0, 10.0, 34.0, 30.0), (6.0, 4.0, 16.0, 24.0)}  # x shifted by 0.2 * w
    assert {tuple(round(float(v), 4) for v in b) for b in boxes} == expected


def test_imagenet_model_scores_are_a_softmax_over_1000_classes(imagenet_weights_path):
    """No background column: the scores of one region over all 1,000 classes sum to 1."""
    torch.manual_seed(0)
    state = googlenet(weights=None, aux_logits=True, init_weights=True).state_dict()
    torch.save(state, imagenet_weights_path)  # what torchvision would download
    ensemble = imagenet_ensemble("cpu")
    assert len(ensemble.classes) == 1000 and ensemble.classes[0] == "tench"
    assert ensemble.members[0].background is False and ensemble.spec.input_size == 224
    boxes, scores, labels = run(IMAGE, PROPOSALS[:3], ensemble.members, **EVERYTHING)
    assert len(scores) == 3000 and labels.min() == 1 and labels.max() == 1000
    totals = torch.zeros(3).index_add_(0, torch.tensor(proposal_index(boxes)), scores.double().float())
    torch.testing.assert_close(totals, torch.ones(3), rtol=1e-4, atol=1e-4)


@pytest.mark.usefixtures("no_downloads")
def test_imagenet_model_without_download_is_a_clear_error():
    with pytest.raises(DetectionError, match="cannot download"):
        imagenet_ensemble("cpu")


# --- load_ensemble -----------------------------------------------------------------------------

def save(path, model, classes=CLASSES, box_regression=False):
    save_checkpoint(path, classes=classes, spec=ModelSpec(len(classes), SIZE, PAD, box_regression),
                    state_dict=model.state_dict(),
                    proposals={"method": "selective_search", "params": {"max_boxes": 7}})


@pytest.fixture(scope="module")
def saved(tmp_path_factory, members):
    """m0.pt and m1.pt: the two members; green.pt: member 1 with another class list."""
    folder = tmp_path_factory.mktemp("checkpoints")
    save(folder / "m0.pt", members[0])
    save(folder / "m1.pt", members[1])
    save(folder / "green.pt", members[1], classes=["red", "green"])
    return folder


def test_load_ensemble_restores_the_members(saved, members):
    ensemble = load_ensemble([saved / "m0.pt", saved / "m1.pt"], "cpu")
    assert ensemble.classes == ("red", "blue") and ensemble.spec == ModelSpec(2, SIZE, PAD)
    assert (ensemble.proposal_method, ensemble.proposal_params) == ("selective_search", {"max_boxes": 7})
    assert not any(m.training for m in ensemble.members)
    for a, b in zip(run(IMAGE, PROPOSALS[:3], members), run(IMAGE, PROPOSALS[:3], ensemble.members)):
        assert torch.equal(a, b)


def test_weights_that_do_not_fit_name_the_checkpoint(tmp_path, members):
    # The class list says 3 classes; the weights are a 2-class model's.
    save_checkpoint(tmp_path / "bad.pt", classes=["a", "b", "c"], spec=ModelSpec(3, SIZE, PAD),
                    state_dict=members[0].state_dict(), proposals={})
    with pytest.raises(DetectionError, match="bad.pt: weights do not fit"):
        load_ensemble([tmp_path / "bad.pt"], "cpu")


def test_members_with_different_classes_are_refused(saved):
    with pytest.raises(DetectionError, match="green.pt: its classes differ"):
        load_ensemble([saved / "m0.pt", saved / "green.pt"], "cpu")
    with pytest.raises(DetectionError, match="missing.pt: checkpoint not found"):
        load_ensemble([saved / "missing.pt"], "cpu")


# --- proposals ---------------------------------------------------------------------------------

def test_proposals_from_cache_or_selective_search(tmp_path):
    cache = ProposalCache.create(tmp_path / "c", "selective_search", {})
    cache.save("img", PROPOSALS[:3])
    assert np.array_equal(proposals_for(IMAGE, "img", "img.png", cache=cache), PROPOSALS[:3])
    image = np.full((48, 64, 3), 100, np.uint8)
    image[10:30, 10:40] = (220, 20, 20)
    proposer = proposer_for("selective_search", {"max_boxes": 5, "min_box_side": 8}, "ck")
    boxes = proposals_for(image, "img", "img.png", proposer=proposer)
    assert boxes.dtype == np.float32 and 1 <= len(boxes) <= 5


def test_an_image_without_proposals_is_an_error_naming_it(tmp_path):
    cache = ProposalCache.create(tmp_path / "c", "selective_search", {})
    cache.save("img", np.zeros((0, 4), np.float32))
    with pytest.raises(DetectionError, match="photos/img.png: no proposals"):
        proposals_for(IMAGE, "img", "photos/img.png", cache=cache)


def test_proposals_that_cannot_be_computed_on_the_fly(tmp_path):
    with pytest.raises(DetectionError, match="ck.pt: unknown proposal method 'edge_boxes'.*--proposals"):
        proposer_for("edge_boxes", {}, "ck.pt")
    with pytest.raises(DetectionError, match="ck.pt: unreadable selective_search proposal parameters"):
        proposer_for("selective_search", {"colour": "hsv"}, "ck.pt")
    params = {"multibox": {"checkpoint": str(tmp_path / "gone.pt"), "sha256": "0", "top_n": 200,
                           "nms_iou": 0.7}}
    # An older checkpoint (format 1) named its MultiBox file: refused, with the ways out.
    with pytest.raises(DetectionError, match="ck.pt: its selective_search\\+multibox proposals need "
                                             "a MultiBox network that it does not carry.*retrain"
                                             ".*--proposals"):
        proposer_for("selective_search+multibox", params, "ck.pt")


def test_an_ensemble_of_no_checkpoints_is_one_error():
    with pytest.raises(DetectionError, match="no checkpoint given; pass at least one"):
        load_ensemble([], "cpu")
