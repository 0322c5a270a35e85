"""Bad input to the train command: each case is refused before any training with one error
line naming the config file (or flag) and the key, and leaves no file in the output folder."""
import shutil
from pathlib import Path

import pytest

from detector.cli.train import main

from _check import assert_no_partial_files, assert_one_line_error, files_below

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# (--set override, the key the error must name): every one refused when the config is read.
CLASSIFIER_VALUES = [
    ("solver.lr=-0.01", "solver.lr"),
    ("solver.lr=0", "solver.lr"),
    ("solver.lr=.nan", "solver.lr"),
    ("solver.lr=.inf", "solver.lr"),
    ("solver.momentum=-0.5", "solver.momentum"),
    ("solver.momentum=1.5", "solver.momentum"),
    ("solver.weight_decay=-1", "solver.weight_decay"),
    ("solver.gamma=0", "solver.gamma"),
    ("solver.epochs=0", "solver.epochs"),
    ("solver.epochs=-3", "solver.epochs"),
    ("solver.steps=[2, 1]", "solver.steps"),
    ("solver.steps=[0]", "solver.steps[0]"),
    ("solver.images_per_batch=0", "solver.images_per_batch"),
    ("solver.regions_per_batch=0", "solver.regions_per_batch"),
    ("solver.regions_per_batch=1", "solver.regions_per_batch"),   # below images_per_batch (2)
    ("solver.regions_per_batch=15", "solver.regions_per_batch"),  # not a multiple of it
    ("solver.fg_fraction=1.5", "solver.fg_fraction"),
    ("solver.fg_fraction=-0.1", "solver.fg_fraction"),
    ("solver.eval_every=-1", "solver.eval_every"),
    ("model.input_size=8", "model.input_size"),
    ("model.context_pad=-1", "model.context_pad"),
    ("model.context_pad=16", "model.context_pad"),                 # half of input_size 32
    ("model.init_seed=-1", "model.init_seed"),
    ("loader_workers=-1", "loader_workers"),
    ("seed=-2", "seed"),
    ("output=' '", "output"),
    ("task=detector", "task"),
    ("solver.lrr=0.1", "solver.lrr"),
    ("solver.lr=fast", "solver.lr"),
    ("proposals={multibox_top: 0}", "proposals.multibox_top"),
    ("proposals={multibox_nms: 1.5}", "proposals.multibox_nms"),
    ("proposals={selective_search: {superpixel_scale: 0}}", "superpixel_scale"),
    ("solver.lr=[", "solver.lr"),                                  # malformed YAML
]

MULTIBOX_VALUES = [
    ("model.num_priors=0", "model.num_priors"),
    ("model.prior_samples=0", "model.prior_samples"),
    ("model.input_size=14", "model.input_size"),
    ("loss.alpha=-1", "loss.alpha"),
    ("loss.matching=greedy", "loss.matching"),
    ("validation.top_n=0", "validation.top_n"),
    ("validation.nms_iou=0", "validation.nms_iou"),
    ("validation.nms_iou=1.2", "validation.nms_iou"),
    ("solver.images_per_batch=0", "solver.images_per_batch"),
    ("solver.regions_per_batch=8", "solver.regions_per_batch"),    # not a MultiBox key
]


@pytest.fixture(scope="module")
def mb_config(tiny, tmp_path_factory) -> Path:
    """A MultiBox config on the session's tiny dataset (``tiny``, with its cache and
    ``tiny.yaml``; ``tiny_run``: its finished run to resume; both read-only)."""
    config = tmp_path_factory.mktemp("bad_train") / "mb.yaml"
    config.write_text(f"task: multibox\ndata:\n  gt: {tiny}\n"
                      "model: {num_priors: 4, input_size: 32, weights: null}\n"
                      "solver: {epochs: 1, images_per_batch: 2}\n"
                      "loader_workers: 0\n")
    return config


def refused(capsys, argv, out: Path, *names) -> None:
    """``argv`` fails with one line naming ``names``, and writes nothing below ``out``."""
    before = files_below(out)
    assert_one_line_error(capsys, main, argv, *names)
    assert_no_partial_files(before, out)


@pytest.mark.parametrize("override, key", CLASSIFIER_VALUES, ids=[c[0] for c in CLASSIFIER_VALUES])
def test_classifier_value_refused(tiny, tmp_path, capsys, override, key):
    config = tiny / "tiny.yaml"
    refused(capsys, ["--config", config, "--set", f"output={tmp_path / 'out'}", "--set", override,
                     "--device", "cpu"], tmp_path, config, key)


@pytest.mark.parametrize("override, key", MULTIBOX_VALUES, ids=[c[0] for c in MULTIBOX_VALUES])
def test_multibox_value_refused(mb_config, tmp_path, capsys, override, key):
    config = mb_config
    refused(capsys, ["--config", config, "--set", f"output={tmp_path / 'out'}", "--set", override,
                     "--device", "cpu"], tmp_path, config, key)


def test_value_in_the_file_refused(tiny, tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text((tiny / "tiny.yaml").read_text().replace("lr: 0.01", "lr: -1"))
    refused(capsys, ["--config", config, "--set", f"output={tmp_path / 'out'}"], tmp_path,
            config, "solver.lr")


def test_output_naming_a_file(tiny, tmp_path, capsys):
    (tmp_path / "taken").write_text("not a folder")
    config = tiny / "tiny.yaml"
    refused(capsys, ["--config", config, "--set", f"output={tmp_path / 'taken'}", "--device",
                     "cpu"], tmp_path, config, "output", tmp_path / "taken")
    assert (tmp_path / "taken").read_text() == "not a folder"


def test_config_naming_a_folder(tmp_path, capsys):
    refused(capsys, ["--config", tmp_path], tmp_path, tmp_path, "folder")


def test_config_missing(tmp_path, capsys):
    refused(capsys, ["--config", tmp_path / "none.yaml"], tmp_path, tmp_path / "none.yaml")


def test_set_without_equals(tiny, tmp_path, capsys):
    refused(capsys, ["--config", tiny / "tiny.yaml", "--set", "solver.lr"], tmp_path,
            "--set", "solver.lr")


def test_unknown_device(tiny, tmp_path, capsys):
    refused(capsys, ["--config", tiny / "tiny.yaml", "--set", f"output={tmp_path / 'out'}",
                     "--device", "tpu"], tmp_path, "--device tpu")


def test_images_without_proposals(tiny, tmp_path, capsys):
    cache = tmp_path / "cache"
    shutil.copytree(tiny / "cache", cache)
    next((cache / "boxes").glob("*.npy")).unlink()  # neither cached nor recorded as failed
    refused(capsys, ["--config", tiny / "tiny.yaml", "--set", f"output={tmp_path / 'out'}",
                     "--set", f"data.proposals={cache}", "--device", "cpu"], tmp_path / "out",
            cache, "propose")


def test_resume_refuses_a_fixed_key(tiny_run, tmp_path, capsys):
    ckpt = tiny_run / "last.pt"
    refused(capsys, ["--resume", ckpt, "--set", "solver.lr=0.1", "--set",
                     f"output={tmp_path / 'out'}"], tmp_path, ckpt, "solver.lr")


def test_resume_refuses_a_new_seed(tiny_run, tmp_path, capsys):
    ckpt = tiny_run / "last.pt"
    refused(capsys, ["--resume", ckpt, "--seed", "3"], tmp_path, ckpt, "seed")


def test_resume_refuses_config_too(tiny, tiny_run, tmp_path, capsys):
    ckpt = tiny_run / "last.pt"
    refused(capsys, ["--resume", ckpt, "--config", tiny / "tiny.yaml"], tmp_path, ckpt,
            "--config")


def test_resume_checks_the_extended_values(tiny_run, tmp_path, capsys):
    ckpt = tiny_run / "last.pt"
    refused(capsys, ["--resume", ckpt, "--set", "solver.epochs=0", "--set",
                     f"output={tmp_path / 'out'}"], tmp_path, ckpt, "solver.epochs")


def test_resume_from_a_damaged_checkpoint(tmp_path, capsys):
    (tmp_path / "last.pt").write_bytes(b"\x80\x02 not a checkpoint")
    refused(capsys, ["--resume", tmp_path / "last.pt"], tmp_path, tmp_path / "last.pt")


# --- The config boundary: one YAML loader, the file read through eval.inputs ------------------

def test_config_that_is_a_fifo(tmp_path, capsys, fed_fifo):
    fifo = fed_fifo("c.yaml")
    refused(capsys, ["--config", fifo, "--set", f"output={tmp_path / 'out'}"], tmp_path, fifo,
            "FIFO")


def test_config_with_a_section_twice(tiny, tmp_path, capsys):
    # The second solver: section used to replace the first without a word.
    config = tmp_path / "twice.yaml"
    config.write_text((tiny / "tiny.yaml").read_text() + "solver:\n  epochs: 1\n")
    refused(capsys, ["--config", config, "--set", f"output={tmp_path / 'out'}"], tmp_path,
            config, "duplicate key 'solver'")


def test_config_alias_bomb(tmp_path, capsys):
    # Nine levels of nine aliases: 387 million strings if expanded; refused while composed.
    config = tmp_path / "bomb.yaml"
    levels = ["a0: &a0 [" + ", ".join(["lol"] * 9) + "]"]
    levels += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    config.write_text("\n".join(levels) + "\noutput: *a9\n")
    refused(capsys, ["--config", config], tmp_path, config, "aliases expand")


def test_config_python_tag(tmp_path, capsys):
    config = tmp_path / "tag.yaml"
    config.write_text("output: !!python/object/apply:os.getcwd []\n")
    refused(capsys, ["--config", config], tmp_path, config, "!!python/object/apply")


def test_set_error_names_the_set_item(tiny, tmp_path, capsys):
    config = tiny / "tiny.yaml"
    line = assert_one_line_error(capsys, main, ["--config", config, "--set",
                                                f"output={tmp_path / 'out'}", "--set",
                                                "solver.lr=-1"], "solver.lr")
    assert line.startswith(f"error: --set solver.lr=-1 (on {config}): solver.lr must be > 0")
