"""Checkpoints: plain types only (weights_only reads them), exact training state, old formats,
and the MultiBox network that travels inside a classifier checkpoint."""
import os
import pickle
from collections import Counter, OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

import proposals.combined as combined
from proposals.checkpoint import (FORMAT_VERSION, ModelSpec, load_checkpoint, read_torch_file,
                                  save_checkpoint)
from eval.errors import DetectionError
from proposals.cache import ProposalCache
from proposals.combined import (COMBINED, ProposalConfig, build_proposer, embedded_multibox,
                                proposal_record, proposer_for)
from proposals.multibox import MultiBox, network_digest, network_of, save_multibox
from proposals.config import SelectiveSearchConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PRIORS = torch.tensor([[0.1, 0.1, 0.6, 0.7], [0.3, 0.2, 0.9, 0.9], [0.0, 0.5, 0.4, 1.0]])
IMAGE = np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)


def classifier(path: Path, **extra) -> Path:
    fields = {"state_dict": {}, "proposals": {"method": "selective_search", "params": {}}, **extra}
    save_checkpoint(path, classes=["a"], spec=ModelSpec(1, 32, 2), **fields)
    return path


def test_values_weights_only_refuses_are_stored_plain_and_restored(tmp_path):
    extra = {"counts": Counter({7: 1, 9: 2}), "array": np.arange(6, dtype=np.int16).reshape(2, 3),
             "scalar": np.float32(0.25), "ordered": OrderedDict(b=1, a=(2, 3.5, None))}
    # Under a field of the format (any other is refused); the RNG state holds numpy values.
    payload = load_checkpoint(classifier(tmp_path / "c.pt", rng=extra))["rng"]
    assert type(payload["counts"]) is Counter and payload["counts"] == extra["counts"]
    assert payload["array"].dtype == np.int16 and np.array_equal(payload["array"], extra["array"])
    assert payload["scalar"] == 0.25 and payload["ordered"] == extra["ordered"]
    assert type(payload["ordered"]) is OrderedDict
    # On disk they are plain: a tagged dict and a tensor, which weights_only reads anywhere.
    raw = read_torch_file(tmp_path / "c.pt", "missing")
    assert raw["format"] == FORMAT_VERSION
    raw = raw["rng"]
    assert raw["counts"]["items"] == {7: 1, 9: 2} and isinstance(raw["array"]["tensor"],
                                                                torch.Tensor)


def test_a_value_that_could_not_be_read_back_is_refused_before_writing(tmp_path):
    with pytest.raises(ValueError, match="cannot hold a PosixPath"):
        classifier(tmp_path / "c.pt", where=Path("runs"))
    assert not list(tmp_path.iterdir())


def test_optimizer_and_step_schedule_resume_exactly(tmp_path):
    """SGD momentum buffers and MultiStepLR (milestones: a Counter) through a checkpoint."""
    def solver(model):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        return optimizer, torch.optim.lr_scheduler.MultiStepLR(optimizer, [2, 3], gamma=0.5)

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer, schedule = solver(model)
    for _ in range(2):
        optimizer.zero_grad()
        model(torch.ones(1, 3)).sum().backward()
        optimizer.step()
        schedule.step()
    classifier(tmp_path / "c.pt", optimizer=optimizer.state_dict(),
               scheduler=schedule.state_dict(), state_dict=model.state_dict())
    payload = load_checkpoint(tmp_path / "c.pt")
    twin = torch.nn.Linear(3, 2)
    twin.load_state_dict(payload["state_dict"])
    twin_optimizer, twin_schedule = solver(twin)
    twin_optimizer.load_state_dict(payload["optimizer"])
    twin_schedule.load_state_dict(payload["scheduler"])
    assert type(twin_schedule.milestones) is Counter
    for _ in range(3):
        for m, o, s in ((model, optimizer, schedule), (twin, twin_optimizer, twin_schedule)):
            o.zero_grad()
            m(torch.ones(1, 3)).sum().backward()
            o.step()
            s.step()
        assert schedule.get_last_lr() == twin_schedule.get_last_lr()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters()))


def test_format_1_checkpoints_are_still_read(tmp_path):
    torch.save({"format": 1, "classes": ["a"], "model": {"num_classes": 1}, "state_dict": {},
                "proposals": {"method": "selective_search", "params": {}}}, tmp_path / "old.pt")
    assert load_checkpoint(tmp_path / "old.pt")["classes"] == ["a"]


def test_the_network_digest_is_its_content_not_its_file(tmp_path):
    torch.manual_seed(0)
    model = MultiBox(PRIORS, 32)
    save_multibox(tmp_path / "a.pt", model, epoch=1)
    save_multibox(tmp_path / "b.pt", model, epoch=2, config={"seed": 3})
    digests = {network_digest(network_of(load_checkpoint(tmp_path / n, kind="multibox")))
               for n in ("a.pt", "b.pt")}
    assert len(digests) == 1
    with torch.no_grad():
        model.head.bias[0] += 1e-3
    save_multibox(tmp_path / "c.pt", model)
    assert network_digest(network_of(load_checkpoint(tmp_path / "c.pt", kind="multibox"))) \
        not in digests


@pytest.fixture
def combined_world(tmp_path):
    """A MultiBox checkpoint and a combined-proposals cache whose manifest names it."""
    torch.manual_seed(1)
    save_multibox(tmp_path / "mb.pt", MultiBox(PRIORS, 32), epoch=2)
    config = ProposalConfig(SelectiveSearchConfig(max_boxes=20), str(tmp_path / "mb.pt"),
                            multibox_top=2)
    proposer = build_proposer(config)
    cache = ProposalCache.create(tmp_path / "cache", proposer.method, proposer.params,
                                 proposer.version)
    return tmp_path, proposer, cache


def test_a_cache_names_its_multibox_network_by_digest_not_path(combined_world):
    root, proposer, cache = combined_world
    assert cache.method == COMBINED
    assert set(cache.params["multibox"]) == {"network_sha256", "top_n", "nms_iou"}
    manifest = "".join(p.read_text() for p in (root / "cache").rglob("*.json"))
    assert manifest and str(root) not in manifest and "mb.pt" not in manifest


def test_a_classifier_checkpoint_carries_its_proposals_network(combined_world, monkeypatch):
    """Saved with proposal_record, the checkpoint alone proposes as the MultiBox file did: the
    file deleted, from another folder, in a fresh process (the pickled proposer reads the
    network again from the checkpoint)."""
    root, proposer, cache = combined_world
    expected = proposer(IMAGE)
    record = proposal_record(cache, root / "mb.pt")
    save_checkpoint(root / "model" / "det.pt", classes=["a"], spec=ModelSpec(1, 32, 2),
                    state_dict={}, proposals=record)
    (root / "model").rename(root / "moved")
    os.remove(root / "mb.pt")
    monkeypatch.chdir(root / "cache")
    combined._MODELS.clear()  # as a new process would start
    payload = load_checkpoint(root / "moved" / "det.pt")
    network = embedded_multibox(root / "moved" / "det.pt", payload["proposals"])
    again = proposer_for(payload["proposals"]["method"], payload["proposals"]["params"],
                         "det.pt", network)
    assert again.params == proposer.params
    assert np.array_equal(again(IMAGE), expected)
    shipped = pickle.dumps(again)
    assert len(shipped) < 10_000  # the network stays out of what workers are sent
    combined._MODELS.clear()
    assert np.array_equal(pickle.loads(shipped)(IMAGE), expected)


def test_proposal_record_checks_the_network_before_training(combined_world):
    root, proposer, cache = combined_world
    with pytest.raises(DetectionError, match="cache: holds selective_search\\+multibox "
                                             "proposals.*proposals.multibox"):
        proposal_record(cache)
    torch.manual_seed(2)
    save_multibox(root / "other.pt", MultiBox(PRIORS, 32))
    with pytest.raises(DetectionError, match="other.pt: not the MultiBox network that made"):
        proposal_record(cache, root / "other.pt")
    plain = ProposalCache.create(root / "ss", "selective_search", {}, 1)
    with pytest.raises(DetectionError, match="ss: holds selective_search proposals, without"):
        proposal_record(plain, root / "mb.pt")
    assert proposal_record(plain) == {"method": "selective_search", "params": {}}


def test_a_classifier_checkpoint_as_multibox_is_refused_when_the_proposer_is_built(tmp_path):
    with pytest.raises(DetectionError, match="c.pt: a classifier checkpoint where a multibox is "
                                             "needed; pass it to the detect/test commands' "
                                             "--checkpoint"):
        build_proposer(ProposalConfig(multibox=str(classifier(tmp_path / "c.pt"))))


def test_a_multibox_file_whose_weights_do_not_fit_is_refused_up_front(tmp_path):
    torch.manual_seed(0)
    save_multibox(tmp_path / "mb.pt", MultiBox(PRIORS, 32))
    payload = load_checkpoint(tmp_path / "mb.pt", kind="multibox")
    payload["priors"] = PRIORS[:2]  # 2 slots, a head for 3
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(DetectionError, match="bad.pt: malformed MultiBox network"):
        build_proposer(ProposalConfig(multibox=str(tmp_path / "bad.pt")))


def with_fields(path: Path, **changes) -> Path:
    """A classifier checkpoint at ``path`` (as tools/train.py writes it) with ``changes`` made
    to its stored payload (a value of None deletes the key; ``model`` is merged)."""
    classifier(path)
    payload = torch.load(path, weights_only=True)
    for key, value in changes.items():
        if key == "model" and isinstance(value, dict):
            payload["model"] = {**payload["model"], **value}
        elif value is None:
            del payload[key]
        else:
            payload[key] = value
    torch.save(payload, path)
    return path


@pytest.mark.parametrize("changes, said", [
    ({"model": {"input_size": "32"}}, "model input_size is '32', not an integer"),
    ({"model": {"input_size": 32.0}}, "model input_size is 32.0, not an integer"),
    ({"model": {"context_pad": True}}, "model context_pad is True, not an integer"),
    ({"model": {"box_regression": 1}}, "model box_regression is 1, not true or false"),
    ({"model": {"num_classes": 10 ** 12}}, "model num_classes is 1000000000000, not an integer "
                                            "in 1..100000"),
    ({"model": {"input_size": -5}}, "model input_size is -5"),
    ({"model": {"dropout": 0.5}}, "malformed model description \\(unknown field 'dropout'"),
    ({"model": {"num_classes": 2}}, "the model has 2 classes but the class list 1"),
    ({"model": [1, 32, 2]}, "model is \\[1, 32, 2\\], not a model description"),
    ({"classes": "a"}, "classes is 'a', not a list of class names"),
    ({"classes": [1]}, "classes is \\[1\\], not a list of class names"),
    ({"kind": ["classifier"]}, "kind \\['classifier'\\] is not a checkpoint kind"),
    ({"proposals": "selective_search"}, "proposals is 'selective_search', not a proposal record"),
    ({"proposals": {"method": "selective_search", "params": "fast"}}, "proposals is .*, not a "
                                                                     "proposal record"),
    ({"state_dict": [1, 2]}, "state_dict is list, not a mapping"),
])
def test_fields_of_the_wrong_type_are_one_error_naming_the_file(tmp_path, changes, said):
    path = with_fields(tmp_path / "c.pt", **changes)
    with pytest.raises(DetectionError, match=f"c.pt: {said}") as error:
        load_checkpoint(path)
    assert "tools/train.py" in str(error.value) or "corrupt" in str(error.value)


def test_an_ensemble_member_with_an_unknown_model_key_is_one_error(tmp_path):
    """The one ModelSpec parser: the detector's ensemble loader (which had its own, raising a
    raw TypeError through check_ensemble) refuses the second member by name."""
    from detector.pipeline import load_ensemble

    good = classifier(tmp_path / "good.pt")
    odd = with_fields(tmp_path / "odd.pt", model={"colour": "red"})
    with pytest.raises(DetectionError, match="odd.pt: malformed model description.*'colour'"):
        load_ensemble([good, odd], "cpu")


def test_a_checkpoint_that_is_not_a_regular_file_is_refused_unread(tmp_path):
    """(A FIFO, which would block the reader of old, is in tests/bad_input/test_bad_files.py,
    guarded against a hang.)"""
    (tmp_path / "c.pt").mkdir()
    with pytest.raises(DetectionError, match="c.pt: is a folder"):
        load_checkpoint(tmp_path / "c.pt")
    with pytest.raises(DetectionError, match="/dev/zero: is a device"):
        read_torch_file("/dev/zero", "missing")
