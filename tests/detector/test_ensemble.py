"""detector.ensemble: every inference path (channels_last, stacked members, compiled, bf16)
classifies regions as the plain float32 path does; batch-norm folding; the path's rules."""
import numpy as np
import pytest
import torch

from detector.classifier import build_classifier
from detector.ensemble import (InferencePath, StackedMembers, default_path, fold_batchnorm,
                               prepare_members)
from eval.errors import DetectionError
from detector.api import Detector
from detector.pipeline import classify_regions
from detector.postprocess import PostProcess
from proposals.checkpoint import ModelSpec
from proposals.networks import normalize_image

SIZE, PAD = 64, 4
IMAGE = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
BOXES = torch.tensor([[x, y, x + 16 + 2 * i, y + 18] for i, (x, y) in
                      enumerate([(0, 0), (5, 3), (10, 6), (20, 2), (30, 10), (2, 20),
                                 (15, 25)])], dtype=torch.float32)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def member(seed: int, box_regression: bool = False) -> torch.nn.Module:
    """A random 2-class classifier with trained-looking batch norm (random statistics and
    affine parameters, so folding them is not the identity) and region-dependent scores."""
    torch.manual_seed(seed)
    model = build_classifier(2, weights=None, box_regression=box_regression, input_size=SIZE)
    for module in model.trunk.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight)
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.2)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.normal_(0, 0.1)
    torch.nn.init.normal_(model.cls_score.weight, std=0.3)  # scores that vary by region
    if box_regression:
        torch.nn.init.normal_(model.bbox_pred.weight, std=0.02)
    return model.eval()


@pytest.fixture(scope="module")
def members():
    return [member(1, box_regression=True), member(2, box_regression=True), member(3, True)]


def scores(members, path=InferencePath(), batch_size=4):
    """Mean softmax [N, 3] and mean deltas [N, 2, 4] of ``members`` prepared for ``path``."""
    return classify_regions(normalize_image(IMAGE), BOXES, prepare_members(members, path),
                            input_size=SIZE, context_pad=PAD, batch_size=batch_size, path=path)


@pytest.fixture(scope="module")
def reference(members):
    return scores(members)


def test_folding_batchnorm_keeps_the_function_and_the_original(members):
    model = members[0]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    regions = torch.randn(3, 3, SIZE, SIZE)
    with torch.inference_mode():
        (a, da), (b, db) = model(regions), folded(regions)
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-4) and torch.allclose(da, db, atol=1e-4)
    assert not torch.equal(a, model.cls_score(torch.zeros(1, 1024)).expand_as(a))  # varies
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


@pytest.mark.parametrize("path", [InferencePath(channels_last=True), InferencePath(stacked=True),
                                  InferencePath(channels_last=True, stacked=True)],
                         ids=["channels_last", "stacked", "channels_last+stacked"])
def test_fp32_paths_give_the_plain_results(members, reference, path):
    probs, deltas = scores(members, path)
    assert torch.allclose(probs, reference[0], atol=1e-5)
    assert torch.allclose(deltas, reference[1], atol=1e-5)
    assert reference[0][:, 0].std() > 0.005  # the regions' scores differ


def test_compiled_members_give_the_plain_results(members, reference):
    # The "eager" backend runs TorchDynamo's capture (what --compile does) without inductor's
    # code generation, which takes minutes on a CPU.
    probs, deltas = scores(members, InferencePath(compile="eager"), batch_size=5)  # 5, then 2
    assert torch.allclose(probs, reference[0], atol=1e-5)
    assert torch.allclose(deltas, reference[1], atol=1e-5)


@pytest.mark.parametrize("stacked", [False, True], ids=["autocast", "stacked bf16 weights"])
def test_bf16_keeps_the_top_class(members, reference, stacked):
    probs, _ = scores(members, InferencePath(autocast=torch.bfloat16, stacked=stacked))
    assert probs.dtype == torch.float32
    assert (probs - reference[0]).abs().max() < 0.05  # bf16 keeps ~3 significant digits
    assert not torch.equal(probs, reference[0])  # it did run in bf16
    assert (probs.argmax(1) == reference[0].argmax(1)).float().mean() >= 6 / 7


def test_prepared_members_are_copies_and_still_a_sequence(members):
    prepared = prepare_members(members, InferencePath(channels_last=True))
    weight = members[0].trunk.conv1.conv.weight
    assert weight.is_contiguous() and prepared[0] is not members[0]
    assert prepared[0].trunk.conv1.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert prepare_members(members, InferencePath()) is members  # nothing to change
    stacked = StackedMembers(members)
    assert len(stacked) == 3 and stacked[0] is members[0] and list(stacked) == members


def test_detect_runs_a_stacked_ensemble_like_the_members(members):
    def detect(path):
        classes = [str(k) for k in range(members[0].num_classes)]
        detector = Detector(members, ModelSpec(len(classes), SIZE, PAD), classes, "cpu",
                            path=path, postprocess=PostProcess(score_threshold=0.0, nms_iou=0.5))
        return detector(IMAGE, BOXES)

    plain, stacked = detect(InferencePath()), detect(InferencePath(stacked=True))
    assert (plain.labels == stacked.labels).all()
    assert np.allclose(plain.boxes, stacked.boxes, atol=1e-3)
    assert np.allclose(plain.scores, stacked.scores, atol=1e-5)


def test_stacking_needs_one_architecture(members):
    with pytest.raises(DetectionError, match="one architecture"):
        StackedMembers([members[0], member(4, box_regression=False)])


def test_path_rules_and_defaults():
    with pytest.raises(DetectionError, match="--stacked and --compile"):
        InferencePath(stacked=True, compile="inductor")
    assert default_path("cpu") == InferencePath()
    assert default_path(torch.device("cuda", 0)).autocast == torch.bfloat16
    assert InferencePath().describe() == "fp32"
    assert (InferencePath(torch.bfloat16, channels_last=True, stacked=True).describe()
            == "bfloat16 autocast, channels_last, stacked")
