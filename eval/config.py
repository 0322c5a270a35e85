"""Configuration: small frozen dataclasses filled from YAML, checked by name and type.

    cfg = load_config(TrainConfig, "configs/raccoon_cpu.yaml", ["solver.lr=0.01"])

The one way a config comes in. The file is read through `eval.inputs.read_text` (a regular
file of at most 1 MiB: a FIFO, device or folder is one error at once) and parsed by
`ConfigLoader`, PyYAML's safe loader made strict: a key given twice in one mapping, a tag
beyond the plain ones (``!!python/object``, ``!foo``) and aliases that would expand the
document past `MAX_NODES` values (a "billion laughs") are refused while the document is
composed, before any value is built or shown. ``--set a.b=value`` overrides are parsed by the
same loader, and every error names where its key came from: the file, the ``_base_`` file it
inherits the key from (`eval.config_base`), or the ``--set`` item.

Unknown keys and wrong types are rejected with the dotted key. Values out of range: a
dataclass checks its own fields in ``__post_init__`` with `check_fields` (or raises
`ConfigValueError`), so a config built in Python gets the same checks as one read from a file.
Values in messages are cut to `SHOWN` characters. Configuration stops at the construction
boundary: tools read a config and pass plain values on, library code never sees a config.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import re
import reprlib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from eval.config_base import inherited
from eval.errors import DetectionError
from eval.inputs import read_text

T = TypeVar("T")

# Composed values a config may hold, counting each alias as the whole value it stands for. The
# largest shipped config holds about 60; this leaves a hundredfold headroom, while nine nested
# levels of nine aliases (1 KB of YAML, 9**9 values) are refused at the fifth level.
MAX_NODES = 10_000
MAX_ALIASES = 100   # ``*name`` uses in one document; configs need few or none
MAX_DEPTH = 32      # nested sections and lists; configs are 4 deep
SHOWN = 60          # characters of a value shown in a message
PLAIN_TAGS = {f"tag:yaml.org,2002:{name}"
              for name in ("str", "int", "float", "bool", "null", "seq", "map")}
FILE_FIX = "see configs/, or a run's config.yaml"

_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = SHOWN
_repr.maxlist = _repr.maxtuple = _repr.maxdict = 6
_repr.maxlevel = 3


def short_repr(value: Any) -> str:
    """``repr(value)`` of at most `SHOWN` characters, never formatting more than that."""
    text = _repr.repr(value)
    return text if len(text) <= SHOWN else text[:SHOWN - 3] + "..."


def _cut(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


class ConfigValueError(ValueError):
    """A field's value out of its range: ``key`` is the field (dotted below its dataclass),
    ``rule`` what is allowed, e.g. ``ConfigValueError("lr", "must be > 0", -1.0)``."""

    def __init__(self, key: str, rule: str, value: Any):
        super().__init__(f"{key} {rule}, got {short_repr(value)}")
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


# --- YAML: one loader --------------------------------------------------------------------------

class RefusedYAML(yaml.MarkedYAMLError):
    """Valid YAML that a config may not hold (duplicate key, tag, alias expansion)."""

    def __init__(self, problem: str, mark: Any, first_line: int | None = None):
        super().__init__(problem=problem, problem_mark=mark)
        self.first_line = first_line  # a duplicate key's first line


class ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing what a config never needs and an attacker would use:
    duplicate keys in a mapping (the second would silently replace the first), any tag but the
    plain ones, and aliases past `MAX_ALIASES` uses or `MAX_NODES` values once expanded (counted
    while composing: nothing is expanded, built or formatted first), nesting past `MAX_DEPTH`."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._aliases = self._nodes = self._depth = 0
        self._sizes: dict[yaml.Node, int] = {}  # node -> values it stands for, aliases expanded

    def compose_node(self, parent: Any, index: Any) -> yaml.Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            return self._compose_alias(parent, index, event)
        if event.tag not in (None, "!") and event.tag not in PLAIN_TAGS:
            tag = event.tag.replace("tag:yaml.org,2002:", "!!")
            raise RefusedYAML(f"the tag {_cut(tag, 60)} is not allowed; a config holds plain "
                              "numbers, text, lists and mappings", event.start_mark)
        self._nodes, self._depth = self._nodes + 1, self._depth + 1
        if self._depth > MAX_DEPTH:
            raise RefusedYAML(f"nested more than {MAX_DEPTH} levels deep", event.start_mark)
        if self._nodes > MAX_NODES:
            raise RefusedYAML(f"more than {MAX_NODES} values", event.start_mark)
        node = super().compose_node(parent, index)
        self._depth -= 1
        self._sizes[node] = self._expanded_size(node)
        return node

    def _compose_alias(self, parent: Any, index: Any, event: yaml.AliasEvent) -> yaml.Node:
        self._aliases += 1
        if self._aliases > MAX_ALIASES:
            raise RefusedYAML(f"more than {MAX_ALIASES} aliases (*name); a config needs few or "
                              "none", event.start_mark)
        node = super().compose_node(parent, index)  # the anchored node itself, not a copy
        if node not in self._sizes:  # its anchor is still open: the value would hold itself
            raise RefusedYAML(f"alias *{_cut(event.anchor, 40)} is inside the value it names "
                              "(a recursive value)", event.start_mark)
        return node

    def _expanded_size(self, node: yaml.Node) -> int:
        """Values ``node`` stands for once every alias below it is replaced by its value: sums
        of its children's sizes, so nothing is expanded to count it."""
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        else:
            children = []
        size = 1 + sum(self._sizes[child] for child in children)
        if size > MAX_NODES:
            raise RefusedYAML(f"its aliases expand to more than {MAX_NODES} values (an alias "
                              "bomb?)", node.start_mark)
        return size

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, int] = {}  # key -> its line
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # <<: keys merged in may repeat
                    continue
                key, line = self.construct_object(key_node), key_node.start_mark.line + 1
                try:
                    seen = key in first
                except TypeError:
                    continue  # unhashable: the safe loader refuses it
                if seen:
                    raise RefusedYAML(f"duplicate key {short_repr(key)} (the second would "
                                      "replace the first)", key_node.start_mark, first[key])
                first[key] = line
        return super().construct_mapping(node, deep=deep)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, KeyError, OverflowError) as e:  # !!int abc, 2020-13-45, 5000 digits
            tag = node.tag.replace("tag:yaml.org,2002:", "")
            raise RefusedYAML(f"{short_repr(node.value)} is not a valid {tag} "
                              f"({_cut(str(e), 60)})", node.start_mark) from None


# YAML 1.1's "=" (the value key) has no safe constructor: plain text, as any other word.
ConfigLoader.add_constructor("tag:yaml.org,2002:value", yaml.SafeLoader.construct_yaml_str)


def parse_yaml(text: str, where: str, fix: str, lines: bool = True) -> Any:
    """``text`` parsed by `ConfigLoader`; any failure one error starting with ``where`` and
    ending with ``fix`` (with the line, where ``lines``)."""
    loader = None
    try:
        loader = ConfigLoader(text)  # a yaml.SafeLoader subclass: the only way YAML is read
        return loader.get_single_data()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        at = f"line {mark.line + 1}: " if lines and mark is not None else ""
        problem = _cut(e.problem or e.context or "malformed", 120)
        if isinstance(e, RefusedYAML):
            if at and e.first_line is not None:
                at = f"lines {e.first_line} and {mark.line + 1}: "
            raise DetectionError(f"{where}: {at}{problem}; {fix}") from None
        column = f", line {mark.line + 1} column {mark.column + 1}" if at else ""
        raise DetectionError(f"{where}: invalid YAML ({problem}{column}); {fix}") from None
    except yaml.YAMLError as e:  # the reader: a control character
        raise DetectionError(f"{where}: invalid YAML ({_cut(str(e).splitlines()[0], 120)}); "
                             f"{fix}") from None
    finally:
        if loader is not None:
            loader.dispose()


def read_yaml(path: str | Path, fix: str = FILE_FIX) -> dict:
    """A YAML config file as a dict (not checked against any class yet, its ``_base_`` not
    followed); ``fix`` ends the error when it cannot be read."""
    data = parse_yaml(read_text(path, "config", fix), str(path), "fix the file") or {}
    if not isinstance(data, dict):
        raise DetectionError(f"{path}: a config must be a mapping of keys to values; {FILE_FIX}")
    return data


# --- Where each key came from ------------------------------------------------------------------

@dataclasses.dataclass
class ConfigSource:
    """A config's plain data before it is checked, and where each key came from: ``file`` (a
    YAML file, a checkpoint; None: the defaults), the ``_base_`` file in ``origins`` that wrote
    it, or the ``--set`` item that set it last."""

    data: dict
    file: str | None = None
    sets: dict[str, str] = dataclasses.field(default_factory=dict)  # dotted key -> item
    origins: dict[str, str] = dataclasses.field(default_factory=dict)  # dotted key -> file

    def where(self, key: str = "") -> str:
        """What an error about dotted ``key`` starts with: its --set item, the base file that
        wrote it, or the file."""
        item = self._item(key)
        if item is None:
            return self._longest(self.origins, key) or self.file or "<defaults>"
        return f"--set {_cut(item)}" + (f" (on {self.file})" if self.file else "")

    def fix(self, key: str) -> str:
        if self._item(key) is None and self.file:
            return f"fix the file or --set {key}=..."
        return f"fix the value, e.g. --set {key}=..."

    def override(self, item: str) -> None:
        """Apply ``key=value`` (a YAML value, parsed by the same loader as the file)."""
        key, sep, text = item.partition("=")
        keys = [k.strip() for k in key.split(".")]
        if not sep or not all(keys):
            raise DetectionError(f"--set {_cut(item)}: expected key=value, e.g. solver.lr=0.01")
        label = f"--set {_cut(item)}" + (f" (on {self.file})" if self.file else "")
        value = parse_yaml(text, label, "quote the value or fix it",
                           lines=False) if text.strip() else None
        data = self.data
        for i, part in enumerate(keys[:-1]):
            if data.get(part) is None:
                data[part] = {}
            data = data[part]
            if not isinstance(data, dict):
                raise DetectionError(f"{label}: {'.'.join(keys[:i + 1])} is not a section")
        data[keys[-1]] = value
        dotted = ".".join(keys)
        self.sets = {k: v for k, v in self.sets.items() if not k.startswith(dotted + ".")}
        self.sets[dotted] = item

    def build(self, cls: type[T]) -> T:
        """``cls`` from the data, every key and value checked."""
        return _from_dict(cls, self.data, self, "")

    def _item(self, key: str) -> str | None:
        return self._longest(self.sets, key)

    @staticmethod
    def _longest(table: dict[str, str], key: str) -> str | None:
        """The entry of dotted ``key``, or of the nearest section above it, in ``table``."""
        parts = re.sub(r"\[\d+\]", "", key).split(".")
        return next((table[k] for k in (".".join(parts[:n]) for n in
                                        range(len(parts), 0, -1)) if k in table), None)


def config_source(path: str | Path | None = None, overrides: typing.Iterable[str] = (), *,
                  base: dict | None = None, where: str | None = None) -> ConfigSource:
    """The data of a YAML file merged onto its ``_base_`` files (see `eval.config_base`), or of
    ``base`` (a config's plain dict), or nothing (the defaults), with ``key=value`` overrides
    applied after; errors name ``where`` (default: the file, or the base file of the key)."""
    data, origins = copy.deepcopy(base or {}), {}
    if path:  # keys the file wrote itself are named by ``where``; a base's by the base
        data, origins = inherited(path, read_yaml, FILE_FIX)
        origins = {key: file for key, file in origins.items() if file != str(path)}
    source = ConfigSource(data, where or (str(path) if path else None), origins=origins)
    for item in overrides:
        source.override(item)
    return source


def load_config(cls: type[T], path: str | Path | None = None, overrides: typing.Iterable[str] = (),
                *, base: dict | None = None, where: str | None = None) -> T:
    """Build ``cls`` from a YAML file (or ``base``, or its defaults) and ``key=value``
    overrides; errors name the file (or ``where``) or the ``--set`` item of the key."""
    return config_source(path, overrides, base=base, where=where).build(cls)


def from_dict(cls: type[T], data: dict, where: str, prefix: str = "") -> T:
    """Instantiate dataclass ``cls`` from ``data``, checking every key and value; errors
    name ``where``."""
    return _from_dict(cls, data, ConfigSource(data, where), prefix)


def to_dict(config: Any) -> dict:
    """The plain-dict form of a config (what checkpoints and caches store)."""
    return dataclasses.asdict(config)


# --- Checking the data against the dataclasses ------------------------------------------------

def _from_dict(cls: type[T], data: Any, src: ConfigSource, prefix: str) -> T:
    section = prefix.rstrip(".")
    if not isinstance(data, dict):
        raise DetectionError(f"{src.where(section)}: {section or 'the config'} must be a "
                             f"mapping, got {short_repr(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = next((key for key in data if key not in fields), None)
    if unknown is not None:
        key = prefix + _cut(str(unknown), 40)
        raise DetectionError(f"{src.where(key)}: unknown key {key}; known keys here: "
                             f"{', '.join(sorted(fields))}")
    hints = typing.get_type_hints(cls)
    values = {name: _convert(hints[name], value, src, prefix + name)
              for name, value in data.items()}
    try:
        return cls(**values)
    except ConfigValueError as e:
        key = prefix + e.key
        raise DetectionError(f"{src.where(key)}: {key} {e.rule}, got {short_repr(e.value)}; "
                             f"{src.fix(key.partition('[')[0])}") from None
    except (TypeError, ValueError, DetectionError) as e:
        raise DetectionError(f"{src.where(section)}: {section or 'config'}: "
                             f"{_cut(str(e), 200)}") from None


def _convert(hint: Any, value: Any, src: ConfigSource, key: str) -> Any:
    """``value`` checked against the annotation ``hint`` (and converted where lossless)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _from_dict(hint, value if value is not None else {}, src, key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for option in options:
            if dataclasses.is_dataclass(option) and isinstance(value, dict):
                return _convert(option, value, src, key)  # its own errors, not "must be"
            try:
                return _convert(option, value, src, key)
            except DetectionError:
                continue
        raise _type_error(src, key, hint, value)
    if origin is typing.Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise DetectionError(f"{src.where(key)}: {key} must be one of "
                             f"{', '.join(map(repr, args))}, got {short_repr(value)}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise _type_error(src, key, hint, value)
        item = args[0] if args else Any
        return tuple(_convert(item, v, src, f"{key}[{i}]") for i, v in enumerate(value))
    return _scalar(hint, value, src, key)


def _scalar(hint: Any, value: Any, src: ConfigSource, key: str) -> Any:
    if hint is Any:
        return value
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint in (str, bool) and type(value) is hint:
        return value
    raise _type_error(src, key, hint, value)


def _type_error(src: ConfigSource, key: str, hint: Any, value: Any) -> DetectionError:
    name = getattr(hint, "__name__", str(hint))
    return DetectionError(f"{src.where(key)}: {key} must be {name}, got {short_repr(value)} "
                          f"({type(value).__name__})")
