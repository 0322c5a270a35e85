"""Configuration: small frozen dataclasses filled from YAML, checked by name and type.

    cfg = load_config(TrainConfig, "configs/raccoon_cpu.yaml", ["solver.lr=0.01"])

Unknown keys and wrong types are rejected with the dotted key and the file; ``--set a.b=value``
overrides take YAML syntax for the value. Values out of range: a dataclass checks its own
fields in ``__post_init__`` with `check_fields` (or raises `ConfigValueError`), so a config built
in Python gets the same checks as one read from a file; `from_dict` names the file and the
dotted key. Configuration stops at the construction boundary: tools read a config and pass
plain values on, library code never sees a config object.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from eval.errors import DetectionError

T = TypeVar("T")


class ConfigValueError(ValueError):
    """A field's value out of its range: ``key`` is the field (dotted below its dataclass),
    ``rule`` what is allowed, e.g. ``ConfigValueError("lr", "must be > 0", -1.0)``."""

    def __init__(self, key: str, rule: str, value: Any):
        super().__init__(f"{key} {rule}, got {value!r}")
        self.key, self.rule, self.value = key, rule, value


# Range rules by name: (test, what the error says is allowed). Floats must also be finite.
RULES: dict[str, tuple[Any, str]] = {
    "size": (lambda v: v >= 1, "must be at least 1"),
    "count": (lambda v: v >= 0, "must be at least 0"),
    "positive": (lambda v: v > 0, "must be > 0"),
    "nonnegative": (lambda v: v >= 0, "must be >= 0"),
    "fraction": (lambda v: 0 <= v <= 1, "must be in [0, 1]"),
    "iou": (lambda v: 0 < v <= 1, "must be in (0, 1]"),
    "momentum": (lambda v: 0 <= v < 1, "must be in [0, 1)"),
}


def check_fields(obj: Any, **rules: str) -> None:
    """Check fields of ``obj`` against named `RULES` (``lr="positive"``); None passes (an
    optional value left out). Raises `ConfigValueError` naming the first field out of range."""
    for name, rule in rules.items():
        value = getattr(obj, name)
        if value is None:
            continue
        test, allowed = RULES[rule]
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigValueError(name, f"{allowed} (a finite number)", value)
        if not test(value):
            raise ConfigValueError(name, allowed, value)


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] = (), *,
                base: dict | None = None, where: str | None = None) -> T:
    """Build ``cls`` from a YAML file (or ``base``, a config's plain dict, or its defaults) and
    ``key=value`` overrides; errors name ``where`` (default: the file)."""
    import copy

    import yaml

    data = read_yaml(path) if path else copy.deepcopy(base or {})
    where = where or (str(path) if path else "<defaults>")
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise DetectionError(f"--set {item!r}: expected key=value, e.g. solver.lr=0.01")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as e:
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise DetectionError(f"{where}: --set {item}: the value is not valid YAML ({problem}); "
                                 f"quote it or fix it, e.g. --set {key.strip()}=0.01") from None
        _set_dotted(data, key.strip().split("."), value)
    return from_dict(cls, data, where)


def read_yaml(path: str | Path) -> dict:
    """A YAML config file as a dict (not checked against any class yet)."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise DetectionError(f"{path}: config file not found; see configs/ for examples") from None
    except IsADirectoryError:
        raise DetectionError(f"{path}: is a folder, not a config file; give a YAML file "
                             "(see configs/, or a run's config.yaml)") from None
    except UnicodeDecodeError:
        raise DetectionError(f"{path}: not a text (UTF-8) file; give a YAML config") from None
    except OSError as e:
        raise DetectionError(f"{path}: cannot read the config ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        raise DetectionError(f"{path}: invalid YAML ({e}); fix the file") from None
    if not isinstance(data, dict):
        raise DetectionError(f"{path}: a config must be a mapping of keys to values")
    return data


def from_dict(cls: type[T], data: dict, where: str, prefix: str = "") -> T:
    """Instantiate dataclass ``cls`` from ``data``, checking every key and value."""
    if not isinstance(data, dict):
        raise DetectionError(f"{where}: {prefix or 'the config'} must be a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise DetectionError(f"{where}: unknown key {prefix}{unknown[0]}; "
                             f"known keys here: {', '.join(sorted(fields))}")
    hints = typing.get_type_hints(cls)
    values = {name: _convert(hints[name], value, where, prefix + name)
              for name, value in data.items()}
    try:
        return cls(**values)
    except ConfigValueError as e:
        raise DetectionError(f"{where}: {prefix}{e.key} {e.rule}, got {e.value!r}; fix the "
                             f"file or --set {prefix}{e.key.partition('[')[0]}=...") from None
    except (TypeError, ValueError, DetectionError) as e:
        raise DetectionError(f"{where}: {prefix.rstrip('.') or 'config'}: {e}") from None


def to_dict(config: Any) -> dict:
    """The plain-dict form of a config (what checkpoints and caches store)."""
    return dataclasses.asdict(config)


def _set_dotted(data: dict, keys: list[str], value: Any) -> None:
    for key in keys[:-1]:
        data = data.setdefault(key, {})
        if not isinstance(data, dict):
            raise DetectionError(f"--set {'.'.join(keys)}: {key} is not a section")
    data[keys[-1]] = value


def _convert(hint: Any, value: Any, where: str, key: str) -> Any:
    """``value`` checked against the annotation ``hint`` (and converted where lossless)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value if value is not None else {}, where, key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for option in options:
            if dataclasses.is_dataclass(option) and isinstance(value, dict):
                return _convert(option, value, where, key)  # its own errors, not "must be"
            try:
                return _convert(option, value, where, key)
            except DetectionError:
                continue
        raise _type_error(where, key, hint, value)
    if origin is typing.Literal:
        if value in args:
            return value
        raise DetectionError(f"{where}: {key} must be one of {', '.join(map(repr, args))}, "
                             f"got {value!r}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise _type_error(where, key, hint, value)
        item = args[0] if args else Any
        return tuple(_convert(item, v, where, f"{key}[{i}]") for i, v in enumerate(value))
    return _scalar(hint, value, where, key)


def _scalar(hint: Any, value: Any, where: str, key: str) -> Any:
    if hint is Any:
        return value
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint in (str, bool) and type(value) is hint:
        return value
    raise _type_error(where, key, hint, value)


def _type_error(where: str, key: str, hint: Any, value: Any) -> DetectionError:
    name = getattr(hint, "__name__", str(hint))
    return DetectionError(f"{where}: {key} must be {name}, got {value!r} ({type(value).__name__})")
