"""The one config engine: plain data (YAML) into typed dataclasses, every error naming the field.

Configs (trainables/config.py), study files (study/spec.py) and search-space entries
(search_spaces/space.py) are all built here. A dataclass field's annotation says what it takes:
a nested dataclass (a mapping), `list[X]`, `dict`, `bool`, `int`, `float`, `str`, a `Literal`
of allowed values, or a union of these (`int | None`, `str | list[str]`). Unknown keys get a
"did you mean", missing keys without a default are "required".
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import reprlib
import types
import typing

import yaml

from .errors import ConfigError

INT64 = 2 ** 63         # integers go on to torch, numpy and SQLite as signed 64-bit numbers


def did_you_mean(word: str, options, prefix: str = "") -> str:
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.5)
    return f"; did you mean '{prefix}{close[0]}'?" if close else ""


def field_types(cls) -> dict[str, object]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def unknown_key(path: str, key: str, known, noun: str = "config key") -> ConfigError:
    hint = did_you_mean(key, known, path)
    return ConfigError(f"unknown {noun} '{path}{key}'{hint} (allowed: {', '.join(known)})")


_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 80
_SHORT.maxlong = 40


def shown(value) -> str:
    """`value` for an error message: one short line, also for a huge, cyclic or aliased YAML node."""
    if isinstance(value, int) and value.bit_length() > 10_000:   # repr refuses ints over 4300 digits
        return f"an integer of {value.bit_length()} bits"
    return _SHORT.repr(value)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A PyYAML error on one line: where it is, and what is wrong."""
    mark = getattr(exc, "problem_mark", None)
    at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    return at + " ".join(str(getattr(exc, "problem", None) or exc).split())


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader refusing a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":      # `<<: *base`: its keys may be overridden
                continue
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice in one mapping (which one is meant?)",
                    key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _UniqueKeyLoader.construct_mapping)


def parse_yaml(text: str, where: str):
    """YAML text as plain data (safe_load's types; a key twice in one mapping is refused);
    ConfigError starting with `where` if it is not YAML."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)     # a SafeLoader: plain data only
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML: {_yaml_problem(exc)}") from None
    except ValueError as exc:       # a scalar PyYAML cannot build: an int of 5000 digits, 2020-13-45
        raise ConfigError(f"{where}: not valid YAML: {' '.join(str(exc).split())}") from None
    except RecursionError:
        raise ConfigError(f"{where}: not valid YAML: nested too deeply") from None


def read_yaml(path, where: str | None = None):
    """A YAML file as plain data; ConfigError starting with `where` (the path) if it is not
    readable UTF-8 YAML text."""
    where = where or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where}: not UTF-8 text (byte {exc.start}): is it a YAML file?") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot be read: {exc.strerror or exc}") from None
    return parse_yaml(text, where)


def yaml_number(value):
    """YAML 1.1 (PyYAML) reads 1e-4 as a string; such a string is the number it spells."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def _choices(options) -> str:
    quoted = [f"'{o}'" for o in options]
    return " or ".join(quoted) if len(quoted) == 2 else "one of " + ", ".join(quoted)


def _describe(kind) -> str:
    """What a value of annotation `kind` must be, for an error message."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in typing.get_args(kind))
    if origin is typing.Literal:
        return _choices(typing.get_args(kind))
    if dataclasses.is_dataclass(kind):
        return f"a mapping of {kind.__name__} fields"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string",
            dict: "a mapping", list: "a list"}.get(origin or kind, str(kind))


def _same_shape(kind, value) -> bool:
    """Whether `value` is the kind of YAML node (mapping, list, scalar) that `kind` takes."""
    if dataclasses.is_dataclass(kind) or kind is dict or typing.get_origin(kind) is dict:
        return isinstance(value, dict)
    if typing.get_origin(kind) is list:
        return isinstance(value, (list, tuple))
    return not isinstance(value, (dict, list, tuple))


def coerce(path: str, kind, value, noun: str = "config key"):
    """`value` as annotation `kind` requires; ConfigError naming `path` otherwise."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = [o for o in typing.get_args(kind) if o is not type(None)]
        if value is None and len(options) < len(typing.get_args(kind)):
            return None
        shaped = [o for o in options if _same_shape(o, value)]
        if len(shaped) == 1:        # the one option this node can be: its own error is the clearest
            return coerce(path, shaped[0], value, noun)
        for option in shaped:
            try:
                return coerce(path, option, value, noun)
            except ConfigError:
                continue
        raise ConfigError(f"'{path}' must be {_describe(kind)}, got {shown(value)}")
    if origin is typing.Literal:
        allowed = typing.get_args(kind)
        if value not in allowed or isinstance(value, bool):
            hint = did_you_mean(value, allowed) if isinstance(value, str) else ""
            raise ConfigError(f"'{path}' must be {_choices(allowed)}, got {shown(value)}{hint}")
        return value
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise ConfigError(f"'{path}' must be {_describe(kind)}, got {shown(value)}")
        return build(kind, value, path + ".", noun)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"'{path}' must be a list, got {shown(value)}")
        (item,) = typing.get_args(kind)
        return [coerce(f"{path}[{i}]", item, v, noun) for i, v in enumerate(value)]
    if kind is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"'{path}' must be a list, got {shown(value)}")
        return list(value)
    if kind is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"'{path}' must be a mapping, got {shown(value)}")
        return dict(value)
    if kind is str and isinstance(value, str) and "\x00" in value:    # no name, path or URL holds one
        raise ConfigError(f"'{path}' must be a string without NUL characters, got {shown(value)}")
    if kind is bool and isinstance(value, bool) or kind is str and isinstance(value, str):
        return value
    if kind is float:
        value = yaml_number(value)
    if kind in (int, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        problem = _number_problem(kind, value)
        if problem:
            raise ConfigError(f"'{path}' must be {problem}, got {shown(value)}")
        return kind(value)
    raise ConfigError(f"'{path}' must be {_describe(kind)}, got {shown(value)}")


def _number_problem(kind, value: int | float) -> str | None:
    """What a number of type `kind` must be that `value` is not; None when it fits."""
    if kind is float:
        try:
            return None if math.isfinite(value) else "a finite number"
        except OverflowError:           # an int beyond any float
            return "a finite number"
    if isinstance(value, float) and not value.is_integer():
        return _describe(int)
    return None if -INT64 <= value < INT64 else "an integer in [-2**63, 2**63)"


def build(cls, data: dict, path: str = "", noun: str = "config key"):
    """A `cls` from a mapping: unknown keys refused, missing keys take the field's default. A
    class that checks its own values has `problems()`, yielding (field, what is wrong): the
    first is raised, the field named in full."""
    if not isinstance(data, dict):
        raise ConfigError(f"'{path.rstrip('.') or cls.__name__}' must be {_describe(cls)}, got {shown(data)}")
    kinds = field_types(cls)
    for key in data:
        if key not in kinds:
            raise unknown_key(path, key, kinds, noun)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            values[f.name] = coerce(path + f.name, kinds[f.name], data[f.name], noun)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"'{path}{f.name}' is required")
    made = cls(**values)
    for name, problem in made.problems() if hasattr(made, "problems") else ():
        raise ConfigError(f"'{path}{name}' {problem}")
    return made


def merged(base: dict, update: dict) -> dict:
    """`base` with `update` laid over it, nested mappings merged key by key."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out
