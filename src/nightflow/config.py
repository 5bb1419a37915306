"""Strict loading of typed dataclass configs from YAML/dicts.

Why: a misspelt key must be an error that names the key's full path, never a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import ConfigError

T = TypeVar("T")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, path: str) -> Any:
    """Convert ``value`` to type ``tp`` or raise ConfigError naming ``path``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, path)
            except ConfigError:
                pass
        raise ConfigError(f"{path}: {value!r} does not match {tp}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{path}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):  # already typed (a config built in Python, or parsed by a caller)
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping for {_type_name(tp)}, got {value!r}")
        return from_dict(tp, value, path)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{path}: expected {len(args)} items, got {len(value)}")
            return tuple(_convert(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        out = [_convert(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        kt, vt = args if args else (Any, Any)
        return {_convert(k, kt, path): _convert(v, vt, f"{path}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML reads "1e-4" as a string
            except ValueError:
                pass
        raise ConfigError(f"{path}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{path}: expected a string, got {value!r}")
    return value


TYPE_FROM = "nightflow_type_from"


def typed_by(choose: Callable[[Mapping[str, Any], Any, str], Any]) -> dict[str, Any]:
    """Field metadata for a tagged union: ``field(default=None, metadata=typed_by(fn))`` where
    ``fn(parent, value, key_path)`` returns the dataclass to parse the field's ``value`` into, from a sibling key
    of the ``parent`` mapping (the encoder's config class, chosen by ``encoder``) or a tag inside the value (a
    model config's ``kind``), or raises ConfigError naming ``key_path``. Without it a union of dataclasses would
    take the first member whose keys happen to fit."""
    return {TYPE_FROM: choose}


def from_dict(cls: type[T], data: Mapping[str, Any], path: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise ConfigError with the key path.

    A dataclass whose stored form changed may define ``upgrade_config(data, path) -> data`` (a staticmethod) to
    map retired keys of configs written by older versions onto current ones before the strict parse."""
    upgrade = getattr(cls, "upgrade_config", None)
    if upgrade is not None:
        data = upgrade(data, path)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    retired = getattr(cls, "retired_keys", {})  # removed key → (the value now always in force, why)
    for key, value in data.items():
        key_path = f"{path}.{key}" if path else str(key)
        if key not in fields and key in retired:
            accepted, why = retired[key]
            if value == accepted:
                continue  # an old file spelling out what is now the only behaviour: tolerated
            raise ConfigError(f"{key_path}: this setting was removed ({why}); delete the key")
        if key not in fields:
            close = _closest(str(key), fields)
            hint = f" (did you mean '{close}'?)" if close else ""
            raise ConfigError(
                f"unknown config key '{key_path}'{hint}; valid keys: {', '.join(sorted(fields))}"
            )
        choose = fields[key].metadata.get(TYPE_FROM)
        tp = choose(data, value, key_path) if choose is not None else hints[key]
        kwargs[key] = _convert(value, tp, key_path)
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        where = f" in '{path}'" if path else ""
        raise ConfigError(f"missing config key(s){where}: {', '.join(missing)}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{path or _type_name(cls)}: {exc}") from exc


@functools.cache
def _literal_fields(cls: type) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    return tuple(
        (f.name, typing.get_args(hints[f.name]))
        for f in fields
        if typing.get_origin(hints[f.name]) is typing.Literal
    )


def check_literals(obj: Any, path: str = "") -> None:
    """Every ``Literal``-typed field of dataclass ``obj`` holds one of its values: YAML parsing checks this, and
    calling it from ``__post_init__`` makes a config built in Python as strict (a typo is never a silent default)."""
    for name, choices in _literal_fields(type(obj)):
        value = getattr(obj, name)
        if value not in choices:
            where = f"{path}.{name}" if path else name
            raise ConfigError(f"{where}: {value!r} is not one of {list(choices)}")


def to_dict(obj: Any) -> Any:
    """Plain-data view of a (nested) dataclass, suitable for YAML/JSON."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _closest(key: str, options: Mapping[str, Any]) -> str | None:
    import difflib

    match = difflib.get_close_matches(key, list(options), n=1, cutoff=0.6)
    return match[0] if match else None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with a one-line error for a missing or malformed file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping, got {type(data).__name__}")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got '{item}'")
        key, raw = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {key}: '{part}' is not a section")
            node = nxt
        node[parts[-1]] = yaml.safe_load(raw)
    return data


def load_config(cls: type[T], path: str | Path, overrides: list[str] | None = None) -> T:
    """Load YAML ``path`` into dataclass ``cls`` strictly, after applying ``--set`` overrides."""
    data = apply_overrides(load_yaml(path), overrides or [])
    try:
        return from_dict(cls, data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
