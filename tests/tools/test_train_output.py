"""A training run's folder is never silently replaced: a folder holding a run is refused
before any work unless the user resumes it or asks to overwrite it, and then it is replaced
whole (no epoch_NNN.pt of the old run beside the new ones); the same from Python."""
import shutil

import pytest

from detector import load_train_config, train
from eval.errors import DetectionError
from proposals.checkpoint import load_checkpoint

from _tiny import train_tiny as run

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_a_folder_holding_a_run_is_refused_then_replaced_whole(tiny, tiny_run, tmp_path,
                                                               capsys):
    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)  # 2 epochs: epoch_001.pt, epoch_002.pt, last.pt, ...
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert run(tiny, out, "--set", "solver.epochs=1") == 2
    err = capsys.readouterr().err
    assert "holds a training run" in err and "--resume" in err and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing touched
    assert run(tiny, out, "--set", "solver.epochs=1", "--overwrite") == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["config.yaml", "epoch_001.pt", "last.pt", "metrics.csv"]  # no epoch_002
    assert load_checkpoint(out / "last.pt")["epoch"] == 1
    assert len((out / "metrics.csv").read_text().splitlines()) == 2  # header + the new epoch


def test_python_users_get_the_same_refusal(tiny, tiny_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    config = load_train_config(tiny / "tiny.yaml", [f"output={out}", "solver.epochs=1"])
    with pytest.raises(DetectionError, match="holds a training run .*--overwrite"):
        train(config, device="cpu")
    assert load_checkpoint(out / "last.pt")["epoch"] == 2
    train(config, device="cpu", overwrite=True)
    assert load_checkpoint(out / "last.pt")["epoch"] == 1 and not (out / "epoch_002.pt").exists()
