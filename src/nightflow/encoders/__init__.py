"""Conditional encoders: low-light LR image → per-level conditioning features + predicted HR colour map.

``build_encoder(name, cfg, scale, levels)`` is what FlowRestorer and the zoo call; ``ENCODERS`` maps each name
to its (module class, config dataclass).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ..config import from_dict
from ..errors import ConfigError
from .base import Encoder, EncoderOutput
from .mpct import MPCTConfig, MPCTEncoder
from .msformer import MSFormerConfig, MSFormerEncoder
from .rrdb import RRDBConfig, RRDBEncoder

ENCODERS: dict[str, tuple[type[Encoder], type]] = {
    "mpct": (MPCTEncoder, MPCTConfig),
    "msformer": (MSFormerEncoder, MSFormerConfig),
    "rrdb": (RRDBEncoder, RRDBConfig),
}

__all__ = [
    "ENCODERS",
    "Encoder",
    "EncoderOutput",
    "MPCTConfig",
    "MPCTEncoder",
    "MSFormerConfig",
    "MSFormerEncoder",
    "RRDBConfig",
    "RRDBEncoder",
    "build_encoder",
]


def build_encoder(name: str, cfg: Mapping[str, Any] | Any, scale: int, levels: int) -> Encoder:
    """Build encoder ``name`` from a config dataclass or a plain dict (strict: unknown keys are errors)."""
    if name not in ENCODERS:
        raise ConfigError(f"unknown encoder '{name}'; choose one of: {', '.join(sorted(ENCODERS))}")
    cls, cfg_cls = ENCODERS[name]
    if cfg is None:
        cfg = cfg_cls()
    elif isinstance(cfg, Mapping):
        cfg = from_dict(cfg_cls, cfg, path="encoder")
    elif not (dataclasses.is_dataclass(cfg) and isinstance(cfg, cfg_cls)):
        got = type(cfg).__name__
        raise ConfigError(f"encoder '{name}' needs a {cfg_cls.__name__} or a mapping, got {got}")
    return cls(cfg, scale, levels)
