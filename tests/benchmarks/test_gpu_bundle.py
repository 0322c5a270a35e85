"""benchmarks/gpu_bundle.py: the folder gpu.py reads on a machine without ../shared, with a
checkpoint stripped of its training state; a cache lacking a test image is a one-line error."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from proposals.checkpoint import ModelSpec, load_checkpoint, save_checkpoint
from eval.datasets import load_dataset
from proposals.cache import ProposalCache

ROOT = Path(__file__).resolve().parents[2]
RACCOON = ROOT.parent / "shared" / "data" / "raccoon"

pytestmark = pytest.mark.skipif(not RACCOON.is_dir(), reason=f"{RACCOON} not found")


@pytest.fixture(scope="module")
def bundle():
    path = ROOT / "benchmarks" / "gpu_bundle.py"
    spec = importlib.util.spec_from_file_location("gpu_bundle", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bundle_holds_the_test_images_their_proposals_and_a_slim_checkpoint(bundle, tmp_path,
                                                                             capsys):
    test = load_dataset(RACCOON / "annotations", images=RACCOON / "images",
                        split=str(RACCOON / "data" / "test_labels.csv")).images[:3]
    cache = ProposalCache.create(tmp_path / "cache", "selective_search", {"superpixel_scale": 2.0})
    for i, record in enumerate(test):
        cache.save(record.image_id, np.array([[0, 0, 10 + i, 20]], np.float32))
    save_checkpoint(tmp_path / "full.pt", classes=["raccoon"], spec=ModelSpec(1, 64, 4),
                    state_dict={"w": torch.ones(2)}, proposals={}, epoch=3,
                    optimizer={"state": torch.zeros(1000)}, rng={"torch": torch.zeros(5)})
    out = tmp_path / "bundle"
    args = ["--checkpoint", str(tmp_path / "full.pt"), "--proposals", str(tmp_path / "cache"),
            "--out", str(out), "--images", "2"]
    assert bundle.main(args) == 0
    assert "MiB" in capsys.readouterr().out
    copied = load_dataset(out / "raccoon" / "annotations", images=out / "raccoon" / "images",
                          split=str(out / "raccoon" / "data" / "test_labels.csv"))
    present = [r.image_id for r in copied.images if Path(r.file_name).is_file()]
    assert present == [r.image_id for r in test[:2]]
    proposals = ProposalCache.open(out / "proposals", "selective_search",
                                   {"superpixel_scale": 2.0})
    assert proposals.load(test[1].image_id).tolist() == [[0, 0, 11, 20]]
    payload = load_checkpoint(out / "model.pt")
    assert payload["epoch"] == 3 and torch.equal(payload["state_dict"]["w"], torch.ones(2))
    assert not {"optimizer", "scheduler", "rng"} & set(payload)

    assert bundle.main(args[:-1] + ["3"]) == 0
    assert bundle.main(args[:-1] + ["4"]) == 2  # the 4th test image has no proposals
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no proposals for" in err and "tools/propose.py" in err
