"""Strict typed configs: unknown keys, wrong types and overrides fail with the key's path."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from nightflow.config import apply_overrides, from_dict, load_config, to_dict
from nightflow.errors import ConfigError


@dataclass
class Inner:
    size: int = 3
    ratio: float = 0.5
    pair: tuple[float, float] = (1.0, 2.0)


@dataclass
class Outer:
    mode: Literal["a", "b"] = "a"
    steps: int | list[int] = 4
    inner: Inner = field(default_factory=Inner)
    tag: str | None = None


def test_round_trip_and_types():
    cfg = from_dict(Outer, {"mode": "b", "steps": [1, 2], "inner": {"pair": [3, 4.5], "ratio": "1e-4"}})
    assert cfg.inner.pair == (3.0, 4.5) and cfg.inner.ratio == 1e-4 and cfg.steps == [1, 2]
    assert from_dict(Outer, to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    "data, message",
    [
        ({"inner": {"sise": 3}}, r"unknown config key 'inner.sise' \(did you mean 'size'\?\)"),
        ({"mode": "c"}, r"mode: 'c' is not one of \['a', 'b'\]"),
        ({"inner": {"size": 2.5}}, "inner.size: expected an integer"),
        ({"inner": {"pair": [1]}}, r"inner.pair: expected 2 items, got 1"),
        ({"steps": "many"}, "steps: 'many' does not match"),
        ({"inner": 3}, "inner: expected a mapping"),
    ],
)
def test_errors_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Outer, data)


def test_overrides_and_yaml_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("mode: a\ninner:\n  size: 5\n")
    cfg = load_config(Outer, path, ["inner.ratio=0.25", "tag=hello"])
    assert cfg.inner.size == 5 and cfg.inner.ratio == 0.25 and cfg.tag == "hello"
    with pytest.raises(ConfigError, match="--set expects key=value"):
        apply_overrides({}, ["oops"])
    with pytest.raises(ConfigError, match=r"c.yaml: unknown config key 'inner.colour'"):
        load_config(Outer, path, ["inner.colour=1"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(Outer, tmp_path / "missing.yaml")
