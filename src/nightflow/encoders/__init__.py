"""Conditional encoders: low-light LR image → per-level conditioning features + predicted HR colour map.

``build_encoder(name, cfg, scale, levels)`` is what FlowRestorer and the zoo call; ``ENCODERS`` (a
:class:`~nightflow.registry.Registry`) maps each name to its (module class, config dataclass). A new encoder is
its own file (an ``Encoder`` subclass and a config dataclass) plus one ``ENCODERS.add`` line here; model configs
then accept its name and parse its ``encoder_config`` strictly into its config dataclass.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping

from ..config import from_dict, typed_by
from ..errors import ConfigError
from ..registry import Registry
from .base import Encoder, EncoderOutput
from .mpct import MPCTConfig, MPCTEncoder
from .msformer import MSFormerConfig, MSFormerEncoder
from .oatt_unet import OAttUNetConfig, OAttUNetEncoder
from .rrdb import RRDBConfig, RRDBEncoder

ENCODERS: Registry[tuple[type[Encoder], type]] = Registry("encoder")
ENCODERS.add("mpct", (MPCTEncoder, MPCTConfig))
ENCODERS.add("msformer", (MSFormerEncoder, MSFormerConfig))
ENCODERS.add("rrdb", (RRDBEncoder, RRDBConfig))
ENCODERS.add("oatt_unet", (OAttUNetEncoder, OAttUNetConfig))

# the type of ``ModelConfig.encoder_config``: one of the registered config dataclasses (which one: ``encoder``)
EncoderConfig = typing.Union[tuple(cfg for _, (_, cfg) in ENCODERS.items())]  # noqa: UP007

DEFAULT_ENCODER = "mpct"  # the ``encoder`` default of every model config


def _config_class(parent: Mapping[str, object], value: object, key_path: str) -> type:
    """The dataclass an ``encoder_config`` mapping parses into: the config of the sibling ``encoder`` name."""
    name = parent.get("encoder", DEFAULT_ENCODER)
    where = key_path.rsplit(".", 1)[0] + ".encoder" if "." in key_path else "encoder"
    return ENCODERS.get(name, where)[1]  # type: ignore[arg-type]


def encoder_config_field() -> typing.Any:
    """``encoder_config: EncoderConfig | None = encoder_config_field()`` in a model config: strict YAML parsing
    into the dataclass the ``encoder`` name chooses (None: that encoder's defaults; ``__post_init__`` calls
    `parse_encoder_config` so a Python-built config is as strict)."""
    return dataclasses.field(default=None, metadata=typed_by(_config_class))


__all__ = [
    "ENCODERS",
    "Encoder",
    "EncoderConfig",
    "EncoderOutput",
    "MPCTConfig",
    "MPCTEncoder",
    "MSFormerConfig",
    "MSFormerEncoder",
    "OAttUNetConfig",
    "OAttUNetEncoder",
    "RRDBConfig",
    "RRDBEncoder",
    "build_encoder",
    "encoder_config_field",
    "parse_encoder_config",
]


def parse_encoder_config(
    name: str,
    cfg: Mapping[str, object] | object | None = None,
    path: str = "encoder",
    name_key: str = "encoder",
) -> object:
    """The config dataclass of encoder ``name`` from None (its defaults), a mapping (strict: an unknown key is a
    ConfigError naming ``path.key``) or an instance of that very dataclass (returned as is). ``name_key``: where
    the name came from, for the unknown-name error."""
    _, cfg_cls = ENCODERS.get(name, name_key)
    if cfg is None:
        return cfg_cls()
    if isinstance(cfg, Mapping):
        return from_dict(cfg_cls, cfg, path=path)
    if dataclasses.is_dataclass(cfg) and isinstance(cfg, cfg_cls):
        return cfg
    raise ConfigError(
        f"{path}: encoder '{name}' needs a {cfg_cls.__name__} or a mapping, got {type(cfg).__name__}"
    )


def build_encoder(name: str, cfg: Mapping[str, object] | object | None, scale: int, levels: int) -> Encoder:
    """Build encoder ``name`` from its config dataclass or a plain dict (strict: unknown keys are errors)."""
    cls, _ = ENCODERS.get(name, "encoder")
    return cls(parse_encoder_config(name, cfg), scale, levels)
