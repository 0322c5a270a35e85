"""detector.cli.common: the one-line promise of every command, output paths, devices."""
import argparse
import warnings

import pytest

from detector.cli.common import run_main
from eval.outputs import check_output_dir, check_output_file
from proposals.devices import pick_device
from eval.errors import DetectionError


def test_an_error_and_a_warning_are_one_line_each(capsys):
    def run(args):
        warnings.warn("image a.jpg is truncated")
        raise DetectionError("a.jpg: cannot decode; remove it")

    assert run_main(run, argparse.Namespace()) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == ["warning: image a.jpg is truncated",
                                "error: a.jpg: cannot decode; remove it"]


def test_a_missing_extra_is_named_and_other_import_errors_are_not_hidden(capsys):
    def needs_torch(args):
        raise ModuleNotFoundError("No module named 'torch'", name="torch")

    def a_bug(args):
        raise ModuleNotFoundError("No module named 'tourch'", name="tourch")

    assert run_main(needs_torch, argparse.Namespace()) == 2
    assert "[detect]" in capsys.readouterr().err
    with pytest.raises(ModuleNotFoundError):
        run_main(a_bug, argparse.Namespace())


def test_output_paths_are_checked_before_work(tmp_path):
    assert check_output_file(tmp_path / "new" / "deeper" / "r.json", "--json").parent.is_dir()
    assert check_output_dir(tmp_path / "out", "--out").is_dir()
    (tmp_path / "file").write_text("x")
    for check, path, words in ((check_output_file, tmp_path, "is a folder"),
                               (check_output_dir, tmp_path / "file", "is a file"),
                               (check_output_file, tmp_path / ("n" * 300) / "r.json", "255-byte"),
                               (check_output_file, tmp_path / "file" / "r.json", "cannot write")):
        with pytest.raises(DetectionError, match=words):
            check(path, "--flag")


@pytest.mark.parametrize("name", ["tpu", "cuda:x", "gpu", "cuda:-1"])
def test_unknown_devices_are_refused_by_name(name):
    with pytest.raises(DetectionError, match=f"--device {name}"):
        pick_device(name)


def test_cpu_and_auto_without_cuda():
    import torch

    assert pick_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert pick_device("auto") == torch.device("cpu")
        with pytest.raises(DetectionError, match="no CUDA device"):
            pick_device("cuda:0")
