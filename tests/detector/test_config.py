"""Config loading: nested frozen dataclasses, unknown keys and wrong types named, --set."""
from dataclasses import dataclass, field
from typing import Literal

import pytest

from detector.config import load_config, to_dict
from detector.errors import DetectionError


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
