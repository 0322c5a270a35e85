"""Config loading: nested frozen dataclasses, unknown keys and wrong types named, --set."""
from dataclasses import dataclass, field
from typing import Literal

import pytest

from eval.config import load_config, to_dict
from eval.errors import DetectionError


@dataclass(frozen=True)
class Solver:
    lr: float = 0.001
    momentum: float = 0.9
    steps: tuple[int, ...] = (10, 20)


@dataclass(frozen=True)
class Config:
    name: str = "x"
    device: Literal["cpu", "cuda"] = "cpu"
    max_boxes: int | None = None
    flip: bool = True
    solver: Solver = field(default_factory=Solver)


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_defaults_file_and_overrides(tmp_path):
    assert load_config(Config) == Config()
    cfg = load_config(Config, write(tmp_path, "name: r\nsolver:\n  lr: 1\n  steps: [3, 4]\n"),
                      ["solver.momentum=0.5", "max_boxes=100", "device=cuda", "flip=false"])
    assert cfg == Config(name="r", device="cuda", max_boxes=100, flip=False,
                         solver=Solver(lr=1.0, momentum=0.5, steps=(3, 4)))
    assert isinstance(cfg.solver.lr, float)
    assert to_dict(cfg)["solver"]["steps"] == (3, 4)


@pytest.mark.parametrize("text, overrides, message", [
    ("solver:\n  lrr: 0.1\n", [], "unknown key solver.lrr"),
    ("solver:\n  lr: fast\n", [], "solver.lr must be float"),
    ("flip: 1\n", [], "flip must be bool"),
    ("max_boxes: 2.5\n", [], "max_boxes must be"),
    ("device: tpu\n", [], "device must be one of"),
    ("", ["solver.steps=[1, a]"], r"solver.steps\[1\] must be int"),
    ("", ["nokey"], "expected key=value"),
    ("- a\n- b\n", [], "must be a mapping"),
    ("name: [unclosed\n", [], "invalid YAML"),
])
def test_errors_name_the_key_and_file(tmp_path, text, overrides, message):
    path = write(tmp_path, text)
    with pytest.raises(DetectionError, match=message) as info:
        load_config(Config, path, overrides)
    assert "c.yaml" in str(info.value) or "--set" in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(DetectionError, match="not found"):
        load_config(Config, tmp_path / "none.yaml")


def test_training_configs_check_their_values_in_python_too():
    # A library user building configs in Python gets the checks a file gets.
    from eval.config import ConfigValueError
    from detector.training.config import (ModelConfig, MultiBoxValidation, Solver, SolverConfig,
                                          TrainConfig)
    from proposals.combined import ProposalConfig

    assert TrainConfig().solver.lr == 0.001
    for build, key in ((lambda: Solver(lr=float("nan")), "lr"),
                       (lambda: Solver(steps=(3, 3)), "steps"),
                       (lambda: SolverConfig(images_per_batch=4, regions_per_batch=6),
                        "regions_per_batch"),
                       (lambda: ModelConfig(input_size=32, context_pad=16), "context_pad"),
                       (lambda: MultiBoxValidation(nms_iou=0.0), "nms_iou"),
                       (lambda: TrainConfig(loader_workers=-1), "loader_workers"),
                       (lambda: ProposalConfig(multibox_top=0), "multibox_top"),
                       (lambda: ProposalConfig(multibox_nms=1.5), "multibox_nms")):
        with pytest.raises(ConfigValueError) as info:
            build()
        assert info.value.key == key


def test_range_error_names_file_key_and_range(tmp_path):
    from detector.training.config import load_train_config

    path = write(tmp_path, "solver:\n  fg_fraction: 2\n")
    with pytest.raises(DetectionError) as info:
        load_train_config(path)
    message = str(info.value)
    assert "c.yaml" in message and "solver.fg_fraction" in message and "[0, 1]" in message


def test_task_picks_the_class(tmp_path):
    from detector.training.config import MultiBoxTrainConfig, TrainConfig, load_train_config

    assert type(load_train_config(write(tmp_path, "seed: 1\n"))) is TrainConfig
    path = write(tmp_path, "task: multibox\n")
    assert type(load_train_config(path)) is MultiBoxTrainConfig
    assert type(load_train_config(path, ["task=classifier"])) is TrainConfig


def test_resumed_config_changes_only_resumable_keys(tmp_path):
    from eval.config import to_dict
    from detector.training.config import TrainConfig, check_resumable, resumed_config

    stored = to_dict(TrainConfig())
    extended = resumed_config(stored, ["solver.epochs=20", "output=elsewhere"], "ck.pt")
    assert extended.solver.epochs == 20 and extended.output == "elsewhere"
    check_resumable(TrainConfig(), extended, "ck.pt")
    with pytest.raises(DetectionError, match="ck.pt: .*solver.lr cannot change"):
        resumed_config(stored, ["solver.lr=1"], "ck.pt")
    changed = resumed_config(stored, [], "ck.pt")
    with pytest.raises(DetectionError, match="ck.pt: model.input_size differs"):
        from dataclasses import replace
        check_resumable(changed, replace(changed, model=replace(changed.model, input_size=64)),
                        "ck.pt")


def test_constants_match_the_networks():
    # train_config stays torch-free, so it repeats two constants of torch modules.
    from detector.classifier import MIN_INPUT_SIZE
    from detector.training.config import MIN_INPUT_SIZE as CONFIG_MIN, MULTIBOX_ALPHA
    from detector.training.multibox_loss import ALPHA

    assert CONFIG_MIN == MIN_INPUT_SIZE and MULTIBOX_ALPHA == ALPHA


def test_config_yaml_reads_back_as_the_same_config(tmp_path):
    from detector.training.config import TrainConfig, config_yaml, load_train_config

    config = load_train_config(write(tmp_path, "solver: {steps: [2, 5]}\nproposals: {}\n"))
    again = tmp_path / "again.yaml"
    again.write_text(config_yaml(config))
    assert load_train_config(again) == config and isinstance(config, TrainConfig)


def test_every_shipped_config_reads_and_checks():
    from pathlib import Path

    from detector.training.config import load_train_config

    configs = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
    assert configs
    tasks = {load_train_config(path).task for path in configs}
    assert tasks == {"classifier", "multibox"}
