"""RegionClassifier: shapes, the three initialisations, and clear errors. Never downloads."""

import pytest
import torch
from torchvision.models import googlenet

from proposals.defaults import MIN_INPUT_SIZE
from detector.classifier import (RegionClassifier, build_classifier,
                                 imagenet_classifier)
from eval.errors import DetectionError

SIZE = 64  # a CPU-sized region


@pytest.fixture(scope="module")
def torchvision_file(tmp_path_factory):
    """A torchvision GoogLeNet (aux heads included, as the ImageNet file) saved as a state dict."""
    torch.manual_seed(0)
    net = googlenet(weights=None, aux_logits=True, transform_input=True, init_weights=True).eval()
    path = tmp_path_factory.mktemp("weights") / "googlenet.pth"
    torch.save(net.state_dict(), path)
    return path, net


@pytest.fixture(scope="module")
def regions():
    return torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


def test_shapes_with_and_without_box_regression(regions):
    plain = RegionClassifier(3, SIZE).eval()
    logits, deltas = plain(regions)
    assert logits.shape == (2, 4) and deltas is None
    boxed = RegionClassifier(3, SIZE, box_regression=True).eval()
    logits, deltas = boxed(regions)
    assert logits.shape == (2, 4) and deltas.shape == (2, 3, 4)
    assert boxed.bbox_pred.weight.shape == (12, 1024)
    # heads start near zero (Fast R-CNN init): logits ~ uniform, deltas ~ 0
    assert logits.abs().max() < 1.0 and deltas.abs().max() < 0.1


def test_minimum_input_size():
    model = RegionClassifier(2, MIN_INPUT_SIZE).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 3, MIN_INPUT_SIZE, MIN_INPUT_SIZE))[0].shape == (1, 3)
    with pytest.raises(DetectionError, match="at least 15"):
        RegionClassifier(2, MIN_INPUT_SIZE - 1)
    with pytest.raises(DetectionError, match="S >= 15"):
        model(torch.zeros(1, 3, MIN_INPUT_SIZE - 1, MIN_INPUT_SIZE - 1))
    with pytest.raises(DetectionError, match="at least 1 class"):
        RegionClassifier(0)


def test_random_init_is_seeded():
    torch.manual_seed(3)
    a = build_classifier(2, weights=None, input_size=SIZE)
    torch.manual_seed(3)
    b = build_classifier(2, weights=None, input_size=SIZE)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name


def test_torchvision_state_dict_fills_the_trunk(torchvision_file, regions):
    path, net = torchvision_file
    model = build_classifier(5, weights=path, box_regression=True, input_size=SIZE).eval()
    for name, value in net.state_dict().items():
        if not name.startswith(("fc.", "aux1.", "aux2.")):
            assert torch.equal(model.state_dict()["trunk." + name], value), name
    with torch.no_grad():
        logits, deltas = model(regions)
    assert logits.shape == (2, 6) and deltas.shape == (2, 5, 4)


def test_imagenet_classifier_equals_torchvision_googlenet(torchvision_file, regions):
    path, net = torchvision_file
    model, names = imagenet_classifier(weights=path, input_size=SIZE)
    assert len(names) == 1000 and names[0] == "tench" and model.num_classes == 1000
    with torch.no_grad():
        logits, deltas = model.eval()(regions)
        expected = net(regions)
    assert deltas is None and logits.shape == (2, 1000)
    torch.testing.assert_close(logits, expected)


def test_region_classifier_state_dict_round_trip(tmp_path, regions):
    model = build_classifier(4, weights=None, box_regression=True, input_size=SIZE).eval()
    bare, nested = tmp_path / "bare.pth", tmp_path / "checkpoint.pth"
    torch.save(model.state_dict(), bare)
    torch.save({"format": 1, "classes": list("abcd"), "state_dict": model.state_dict()}, nested)
    with torch.no_grad():
        expected = model(regions)
        for path in (bare, nested):
            loaded = build_classifier(4, weights=path, box_regression=True, input_size=SIZE).eval()
            for got, want in zip(loaded(regions), expected):
                torch.testing.assert_close(got, want)


def test_mismatched_weights_name_file_and_keys(tmp_path):
    path = tmp_path / "boxed.pth"
    torch.save(RegionClassifier(4, SIZE, box_regression=True).state_dict(), path)
    with pytest.raises(DetectionError, match=r"boxed\.pth.*unexpected keys: bbox_pred\.weight"):
        build_classifier(4, weights=path, box_regression=False, input_size=SIZE)
    with pytest.raises(DetectionError, match=r"boxed\.pth.*size mismatch.*cls_score"):
        build_classifier(7, weights=path, box_regression=True, input_size=SIZE)
    plain = tmp_path / "plain.pth"
    torch.save(RegionClassifier(4, SIZE).state_dict(), plain)
    with pytest.raises(DetectionError, match=r"plain\.pth.*missing keys: bbox_pred\.weight"):
        build_classifier(4, weights=plain, box_regression=True, input_size=SIZE)


def test_unusable_weights_files(tmp_path):
    with pytest.raises(DetectionError, match="not found"):
        build_classifier(2, weights=tmp_path / "absent.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(DetectionError, match=r"garbage\.pth: not a file written by torch\.save"):
        build_classifier(2, weights=garbage)
    listed = tmp_path / "list.pth"
    torch.save([1, 2, 3], listed)
    with pytest.raises(DetectionError, match="holds no state dict"):
        build_classifier(2, weights=listed)
    half = tmp_path / "half.pth"  # a torchvision file missing a trunk layer
    state = googlenet(weights=None, aux_logits=False, init_weights=False).state_dict()
    torch.save({k: v for k, v in state.items() if not k.startswith("inception5b.")}, half)
    with pytest.raises(DetectionError, match=r"half\.pth.*missing keys: trunk\.inception5b"):
        build_classifier(2, weights=half, input_size=SIZE)


@pytest.mark.usefixtures("no_downloads")
def test_imagenet_download_failure_is_one_line():
    for build in (lambda: build_classifier(3, input_size=SIZE), lambda: imagenet_classifier()):
        with pytest.raises(DetectionError) as info:
            build()
        message = str(info.value)
        assert "\n" not in message
        assert "cannot download" in message and "local weights file" in message
