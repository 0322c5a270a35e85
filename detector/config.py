"""Configuration: small frozen dataclasses filled from YAML, checked by name and type.

    cfg = load_config(TrainConfig, "configs/raccoon_cpu.yaml", ["solver.lr=0.01"])

Unknown keys and wrong types are rejected with the dotted key and the file; ``--set a.b=value``
overrides take YAML syntax for the value. Configuration stops at the construction boundary:
tools read a config and pass plain values on, library code never sees a config object.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from detector.errors import DetectionError

T = TypeVar("T")


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] = ()) -> T:
    """Build ``cls`` from a YAML file (or its defaults) and ``key=value`` overrides."""
    import yaml

    data = read_yaml(path) if path else {}
    where = str(path) if path else "<defaults>"
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise DetectionError(f"--set {item!r}: expected key=value, e.g. solver.lr=0.01")
        _set_dotted(data, key.strip().split("."), yaml.safe_load(text) if text.strip() else None)
    return from_dict(cls, data, where)


def read_yaml(path: str | Path) -> dict:
    """A YAML config file as a dict (not checked against any class yet)."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise DetectionError(f"{path}: config file not found; see configs/ for examples") from None
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
    values = {name: _convert(hints[name], value, where, prefix + name) for name, value in data.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        raise DetectionError(f"{where}: {prefix or 'config'}: {e}") from None


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
            try:
                return _convert(option, value, where, key)
            except DetectionError:
                continue
        raise _type_error(where, key, hint, value)
    if origin is typing.Literal:
        if value in args:
            return value
        raise DetectionError(f"{where}: {key} must be one of {', '.join(map(repr, args))}, got {value!r}")
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
