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
    from proposals.config import ProposalConfig

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


# --- The one YAML loader: duplicate keys, tags, aliases; --set by the same rules --------------

def refused(path, overrides=(), cls=Config) -> str:
    """The one-line error loading ``path`` with ``overrides`` gives."""
    with pytest.raises(DetectionError) as info:
        load_config(cls, path, list(overrides))
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message, message
    return message


@pytest.mark.parametrize("text, key, lines", [
    ("solver:\n  lr: 1\nname: a\nsolver:\n  momentum: 0.5\n", "'solver'", "lines 1 and 4"),
    ("solver:\n  lr: 1\n  steps: [1]\n  lr: 2\n", "'lr'", "lines 2 and 4"),
    ("solver: {lr: 1, lr: 2}\n", "'lr'", "lines 1 and 1"),
])
def test_duplicate_keys_refused_with_both_lines(tmp_path, text, key, lines):
    # A second section used to replace the first without a word.
    message = refused(write(tmp_path, text))
    assert message.startswith(f"{tmp_path / 'c.yaml'}: {lines}: duplicate key {key}")


@pytest.mark.parametrize("text, tag", [
    ("solver: !!python/object:collections.OrderedDict {lr: 1}\n", "!!python/object"),
    ("name: !!python/object/apply:os.getcwd []\n", "!!python/object/apply"),
    ("name: !custom x\n", "!custom"),
    ("name: !!binary aGk=\n", "!!binary"),
])
def test_tags_refused_in_one_line(tmp_path, text, tag):
    message = refused(write(tmp_path, text))
    assert f"line 1: the tag {tag}" in message and "not allowed" in message


def bomb(levels: int = 9, width: int = 9) -> str:
    """A "billion laughs": ``levels`` anchors, each a list of ``width`` aliases of the one
    before (9 x 9: about 1 KB of YAML, 9**9 = 387 million strings once expanded)."""
    lines = ["a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]"
              for i in range(1, levels + 1)]
    return "\n".join(lines) + f"\nname: *a{levels}\n"


def test_alias_bomb_refused_before_it_expands(tmp_path):
    # Refused while composing, at the first level past MAX_NODES values (a4: 66,430), before
    # anything builds or shows the value.
    message = refused(write(tmp_path, bomb()))
    assert "line 5: its aliases expand to more than" in message


def test_aliases_limited_in_number_and_never_recursive(tmp_path):
    from eval.config import MAX_ALIASES

    many = "a: &a 1\nsolver: {steps: [" + ", ".join(["*a"] * (MAX_ALIASES + 1)) + "]}\n"
    assert f"more than {MAX_ALIASES} aliases" in refused(write(tmp_path, many))
    assert "recursive" in refused(write(tmp_path, "solver: &s {steps: *s}\n"))
    # A few aliases are plain YAML and still load.
    cfg = load_config(Config, write(tmp_path, "solver: {lr: &lr 0.5, momentum: *lr}\n"))
    assert cfg.solver.lr == cfg.solver.momentum == 0.5


def test_values_in_messages_are_cut_short(tmp_path):
    # An unknown value is shown by its first characters, never whole.
    message = refused(write(tmp_path, "name: [" + ", ".join(["x" * 100] * 50) + "]\n"))
    assert "name must be str" in message and len(message) < 300
    message = refused(write(tmp_path, ""), ["solver.lr=" + "9" * 5000 + "x"])
    assert "solver.lr must be float" in message and len(message) < 400


def test_fifo_config_refused_at_once(fed_fifo):
    assert "FIFO" in refused(fed_fifo("c.yaml"))


def test_set_errors_name_the_set_item(tmp_path):
    path = write(tmp_path, "solver:\n  lr: 1\n")
    message = refused(path, ["solver.lr=fast"])
    assert message.startswith(f"--set solver.lr=fast (on {path}): solver.lr must be float")
    assert refused(path, ["name=x", "solver.lrr=1"]).startswith("--set solver.lrr=1 (on ")
    # A value from the file is named by the file, even with --set of other keys.
    message = refused(write(tmp_path, "solver:\n  lr: fast\n"), ["solver.momentum=0.5"])
    assert message.startswith(f"{path}: solver.lr must be float")
    # A later --set of the whole section takes the key over from an earlier one.
    message = refused(path, ["solver.lr=2", "solver={lr: fast}"])
    assert message.startswith("--set solver={lr: fast} (on ")
    # Without a file the item alone.
    with pytest.raises(DetectionError, match=r"^--set device=tpu: device must be one of"):
        load_config(Config, None, ["device=tpu"])


@pytest.mark.parametrize("override, problem", [
    ("solver={lr: 1, lr: 2}", "duplicate key 'lr'"),
    ("name=!!python/name:os.system", "the tag !!python/name:os.system is not allowed"),
    ("solver={steps: &a [1], lr: *a, momentum: *a}", None),  # aliases within the limits: fine
])
def test_set_values_parsed_by_the_same_loader(tmp_path, override, problem):
    message = refused(write(tmp_path, ""), [override])
    assert message.startswith(f"--set {override} (on ")
    if problem:
        assert problem in message
    else:
        assert "solver.lr must be float" in message


def test_range_error_from_set_names_the_set(tmp_path):
    from detector.training.config import load_train_config

    path = write(tmp_path, "solver:\n  lr: 0.01\n")
    with pytest.raises(DetectionError) as info:
        load_train_config(path, ["solver.lr=-1"])
    assert str(info.value).startswith(f"--set solver.lr=-1 (on {path}): solver.lr must be > 0")
    with pytest.raises(DetectionError, match=r"^--set task=\[1\] .*task \[1\] is unknown"):
        load_train_config(path, ["task=[1]"])


def test_configs_are_read_by_the_safe_loader_only():
    import yaml

    from eval.config import ConfigLoader, parse_yaml

    assert issubclass(ConfigLoader, yaml.SafeLoader)
    with pytest.raises(DetectionError, match="not allowed"):
        parse_yaml("a: !!python/object/apply:os.system ['true']", "c.yaml", "fix it")
    with pytest.raises(DetectionError, match="c.yaml: invalid YAML"):
        parse_yaml("a: \x07", "c.yaml", "fix it")  # a control character: the reader refuses it
