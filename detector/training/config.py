"""The training configs: what a YAML file under configs/ (or a run's ``config.yaml``) holds.

    config = load_train_config("configs/raccoon_cpu.yaml", ["solver.epochs=1"])

A config's ``task`` picks the class: ``classifier`` (default, `TrainConfig`) or ``multibox``
(`MultiBoxTrainConfig`, the MultiBox proposal network). Every field is checked when the
dataclass is built (``__post_init__``), from a file or in Python: sizes >= 1, fractions in
[0, 1], IoUs in (0, 1], finite rates; a file's errors name the file and the dotted key.

Torch-free: the train command reads and checks its config before torch is imported.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from eval.config import (ConfigSource, ConfigValueError, check_fields, config_source,
                         from_dict, load_config, short_repr, to_dict)
from eval.errors import DetectionError
from proposals.config import ProposalConfig, expand_preset
from proposals.defaults import (CONTEXT_PAD, INPUT_SIZE, MIN_INPUT_SIZE, MULTIBOX_ALPHA,
                                MULTIBOX_NMS, MULTIBOX_TOP)

# What `--resume` may change: how long the run goes on, where it writes, how often it validates.
RESUMABLE = ("solver.epochs", "solver.eval_every", "output")


def _check_input_size(value: int) -> None:
    if value < MIN_INPUT_SIZE:
        raise ConfigValueError("input_size", f"must be at least {MIN_INPUT_SIZE} (GoogLeNet's "
                               f"smallest input; {INPUT_SIZE} as on ImageNet, 32-96 on a CPU)",
                               value)


@dataclass(frozen=True)
class DataConfig:
    gt: str = ""                       # dataset: COCO JSON, VOC or XML folder, YOLO data.yaml
    images: str | None = None          # image folder, where the ground truth needs one
    classes: str | None = None         # class list file (default: sorted names found)
    train_split: str | None = None     # split name or file of ids (csv with 'filename' too)
    val_split: str | None = None       # evaluated every solver.eval_every epochs
    proposals: str = ""                # proposal cache from the propose command


@dataclass(frozen=True)
class ModelConfig:
    input_size: int = INPUT_SIZE       # GoogLeNet's; smaller for CPU configs
    context_pad: int = CONTEXT_PAD     # R-CNN's context around each region
    weights: str | None = "imagenet"   # "imagenet", a state-dict file, or null (random)
    init_seed: int = 0                 # same initialisation for every ensemble member
    box_regression: bool = False       # GoogLeNet's entry used none; R-CNN did

    def __post_init__(self) -> None:
        _check_input_size(self.input_size)
        check_fields(self, context_pad="count", init_seed="count")
        if 2 * self.context_pad >= self.input_size:
            # The box itself must keep some of the warped square (R-CNN: 16 of 224 per side).
            raise ConfigValueError("context_pad", f"must be below input_size / 2 "
                                   f"({self.input_size / 2:g})", self.context_pad)


@dataclass(frozen=True)
class Solver:
    """SGD with momentum and a step schedule, for every task."""

    epochs: int = 10
    lr: float = 0.001                  # R-CNN fine-tuning
    momentum: float = 0.9
    weight_decay: float = 0.0005
    steps: tuple[int, ...] = (7,)      # epochs at which lr is multiplied by gamma
    gamma: float = 0.1
    images_per_batch: int = 2
    eval_every: int = 0                # validate every N epochs (0 = never)

    def __post_init__(self) -> None:
        check_fields(self, epochs="size", lr="positive", momentum="momentum",
                     weight_decay="nonnegative", gamma="positive", images_per_batch="size",
                     eval_every="count")
        for i, step in enumerate(self.steps):
            if step < 1:
                raise ConfigValueError(f"steps[{i}]", "must be an epoch >= 1", step)
            if i and step <= self.steps[i - 1]:
                raise ConfigValueError("steps", "must be increasing epochs", list(self.steps))


@dataclass(frozen=True)
class SolverConfig(Solver):
    regions_per_batch: int = 128       # R-CNN: 32 foreground + 96 background
    fg_fraction: float = 0.25

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fields(self, regions_per_batch="size", fg_fraction="fraction")
        if self.regions_per_batch % self.images_per_batch:
            # Each image gives regions_per_batch / images_per_batch regions.
            raise ConfigValueError("regions_per_batch", "must be a multiple of "
                                   f"solver.images_per_batch ({self.images_per_batch})",
                                   self.regions_per_batch)


@dataclass(frozen=True)
class AugmentConfig:
    flip: bool = True
    photometric: bool = True


def _check_run(config) -> None:
    """What both tasks' top level shares: seed, output, loader workers."""
    check_fields(config, seed="count", loader_workers="count")
    if not config.output.strip():
        raise ConfigValueError("output", "must name a folder", config.output)


@dataclass(frozen=True)
class TrainConfig:
    task: Literal["classifier"] = "classifier"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    seed: int = 0                      # sampling and input order (ensemble members differ here)
    output: str = "runs/train"
    loader_workers: int = 2
    # How data.proposals was made (propose --config fills it from here); when given, training
    # refuses a cache made otherwise. null: take the cache as it is.
    proposals: ProposalConfig | None = None

    def __post_init__(self) -> None:
        _check_run(self)  # the proposals section checks itself (ProposalConfig)


@dataclass(frozen=True)
class MultiBoxDataConfig:
    gt: str = ""                       # dataset: COCO JSON, VOC or XML folder, YOLO data.yaml
    images: str | None = None
    classes: str | None = None         # (classes are ignored: MultiBox is class-agnostic)
    train_split: str | None = None
    val_split: str | None = None


@dataclass(frozen=True)
class MultiBoxModelConfig:
    num_priors: int = 800              # K output slots (the paper's 800)
    input_size: int = INPUT_SIZE
    weights: str | None = "imagenet"   # trunk: "imagenet", a GoogLeNet/checkpoint file, or null
    init_seed: int = 0
    prior_samples: int = 20            # augmented training boxes per prior for the k-means

    def __post_init__(self) -> None:
        _check_input_size(self.input_size)
        check_fields(self, num_priors="size", init_seed="count", prior_samples="size")


@dataclass(frozen=True)
class MultiBoxLossConfig:
    alpha: float = MULTIBOX_ALPHA      # weight of the location term
    matching: Literal["bipartite", "best_prior", "predicted"] = "bipartite"

    def __post_init__(self) -> None:
        check_fields(self, alpha="nonnegative")


@dataclass(frozen=True)
class MultiBoxAugmentConfig:
    crop: bool = True
    flip: bool = True
    photometric: bool = True


@dataclass(frozen=True)
class MultiBoxValidation:
    top_n: int = MULTIBOX_TOP
    nms_iou: float = MULTIBOX_NMS

    def __post_init__(self) -> None:
        check_fields(self, top_n="size", nms_iou="iou")


@dataclass(frozen=True)
class MultiBoxTrainConfig:
    task: Literal["multibox"] = "multibox"
    data: MultiBoxDataConfig = field(default_factory=MultiBoxDataConfig)
    model: MultiBoxModelConfig = field(default_factory=MultiBoxModelConfig)
    loss: MultiBoxLossConfig = field(default_factory=MultiBoxLossConfig)
    solver: Solver = field(default_factory=Solver)
    augment: MultiBoxAugmentConfig = field(default_factory=MultiBoxAugmentConfig)
    validation: MultiBoxValidation = field(default_factory=MultiBoxValidation)
    seed: int = 0
    output: str = "runs/multibox"
    loader_workers: int = 2

    def __post_init__(self) -> None:
        _check_run(self)


AnyTrainConfig = TrainConfig | MultiBoxTrainConfig
TASKS: dict[str, type] = {"classifier": TrainConfig, "multibox": MultiBoxTrainConfig}


def config_class(task: object, where: str) -> type:
    """The config class of ``task`` (a config's ``task`` value); ``where`` names its file."""
    if not isinstance(task, str) or task not in TASKS:
        raise DetectionError(f"{where}: task {short_repr(task)} is unknown; use one of "
                             f"{', '.join(TASKS)}")
    return TASKS[task]


def load_train_config(path: str | Path, overrides: list[str] = ()) -> AnyTrainConfig:
    """A training config from a YAML file and ``key=value`` overrides (YAML values), of the
    class its ``task`` names (after the overrides). Every value is checked; errors name the
    file, or the ``--set`` item the key came from, and the key."""
    source = config_source(path, overrides)
    _expand_preset(source)
    return source.build(config_class(source.data.get("task", "classifier"), source.where("task")))


def _expand_preset(source: ConfigSource) -> None:
    """Replace ``proposals.selective_search.preset`` by the preset's settings
    (`proposals.config.PRESETS`), the section's other keys winning; ``proposals.preset`` is
    refused with the key to write instead."""
    proposals = source.data.get("proposals")
    if not isinstance(proposals, dict):
        return  # absent, null, or not a mapping (the loader's own error)
    if "preset" in proposals:
        raise DetectionError(f"{source.where('proposals.preset')}: a preset names selective "
                             "search settings; write it as proposals.selective_search.preset")
    section = proposals.get("selective_search")
    if isinstance(section, dict):
        key = "proposals.selective_search.preset"
        proposals["selective_search"] = expand_preset(section, f"{source.where(key)}: {key}")


def config_from_dict(data: dict, where: str) -> AnyTrainConfig:
    """A config from its plain-dict form (a checkpoint's ``config``); ``where`` names it."""
    if not isinstance(data, dict):
        raise DetectionError(f"{where}: its config is not a mapping; is it a training checkpoint?")
    return from_dict(config_class(data.get("task", "classifier"), where), data, where)


def resumed_config(stored: dict, overrides: list[str], where: str) -> AnyTrainConfig:
    """The stored config of a run (a checkpoint's ``config``) with ``overrides`` applied; only
    the `RESUMABLE` keys may change, any other is refused by name."""
    for item in overrides:
        key = item.partition("=")[0].strip()
        if key not in RESUMABLE:
            raise DetectionError(f"{where}: --resume continues the run's own config; {key} "
                                 f"cannot change (only {', '.join(RESUMABLE)} may); start a new "
                                 "run with --config instead")
    data = config_from_dict(stored, where)  # checked before the overrides apply
    return load_config(type(data), None, overrides, base=to_dict(data), where=where)


def changed_keys(old: AnyTrainConfig, new: AnyTrainConfig) -> list[str]:
    """Dotted keys whose values differ between two configs (both of one task)."""
    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for key, value in d.items():
            if isinstance(value, dict):
                out.update(flat(value, f"{prefix}{key}."))
            else:
                out[prefix + key] = value
        return out

    a, b = flat(to_dict(old)), flat(to_dict(new))
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def check_resumable(old: AnyTrainConfig, new: AnyTrainConfig, where: str) -> None:
    """Refuse to resume the run of ``old`` (stored in ``where``) as ``new`` when a key other
    than the `RESUMABLE` ones differs."""
    if type(old) is not type(new):
        raise DetectionError(f"{where}: a {old.task} run cannot resume as task {new.task}")
    fixed = [k for k in changed_keys(old, new) if k not in RESUMABLE]
    if fixed:
        raise DetectionError(f"{where}: {fixed[0]} differs from the run's config; a resumed run "
                             f"may change only {', '.join(RESUMABLE)}")


def config_yaml(config: AnyTrainConfig) -> str:
    """The YAML text of a resolved config (a run's ``config.yaml``; ``--config`` reads it)."""
    import yaml

    def plain(value):
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return yaml.safe_dump(plain(to_dict(config)), sort_keys=False)


def absolute_paths(config: AnyTrainConfig) -> AnyTrainConfig:
    """``config`` with every path it names made absolute (against the working directory), so
    the config stored in checkpoints and ``config.yaml`` means the same from any folder.

    Split values stay as they are unless they name an existing file (a VOC split is a name);
    ``model.weights: imagenet`` and null stay too.
    """
    def absolute(value: str | None, must_exist: bool = False) -> str | None:
        if not value or (must_exist and not Path(value).is_file()):
            return value
        return os.path.abspath(os.path.expanduser(value))  # normalised: no ".." left

    data = config.data
    # Only a classifier's data names a proposal cache (MultiBox makes its own boxes).
    cache = {"proposals": absolute(data.proposals)} if isinstance(data, DataConfig) else {}
    data = replace(data, gt=absolute(data.gt), images=absolute(data.images),
                   classes=absolute(data.classes),
                   train_split=absolute(data.train_split, must_exist=True),
                   val_split=absolute(data.val_split, must_exist=True), **cache)
    weights = config.model.weights
    model = replace(config.model, weights=weights if weights == "imagenet" else absolute(weights))
    changes = {"data": data, "model": model, "output": absolute(config.output)}
    if isinstance(config, TrainConfig) and config.proposals is not None:
        changes["proposals"] = replace(config.proposals,
                                       multibox=absolute(config.proposals.multibox))
    return replace(config, **changes)
