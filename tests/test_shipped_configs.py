"""The shipped configs: each loads, and no split serves two purposes (a test split is never a
validation split, and validation images are never trained on)."""
from pathlib import Path

import pytest

from detector import load_train_config
from eval.datasets import load_dataset

REPO = Path(__file__).resolve().parents[1]
RACCOON = REPO.parent / "shared" / "data" / "raccoon"
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    config = load_train_config(path)
    assert config.data.gt and config.output


@pytest.mark.skipif(not RACCOON.is_dir(), reason=f"{RACCOON} not present")
@pytest.mark.parametrize("path", [p for p in CONFIGS if "raccoon" in p.name], ids=lambda p: p.name)
def test_raccoon_validates_on_training_images_and_never_on_the_test_split(path, monkeypatch):
    monkeypatch.chdir(REPO)  # the configs' paths are relative to the repository
    data = load_train_config(path).data

    def ids(split):
        return {r.image_id for r in load_dataset(data.gt, images=data.images, split=split).images}

    train, val = ids(data.train_split), ids(data.val_split)
    test = ids(str(RACCOON / "data" / "test_labels.csv"))
    everything_trained = ids(str(RACCOON / "data" / "train_labels.csv"))
    assert (len(train), len(val), len(test)) == (128, 32, 40)
    assert not train & val and not val & test and not train & test
    assert train | val == everything_trained  # validation is carved from the training images
