"""Models: FlowRestorer (encoder + conditional flow), named configurations, weights files.

``MODEL_KINDS`` (a :class:`~nightflow.registry.Registry`) maps the kind recorded in a weights file or a config's
``kind`` key to (config dataclass, builder), so ``load_model`` can rebuild flows and the learned non-flow
baselines alike.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ..registry import Registry
from .config import FlowSpec, ModelConfig
from .regression import JointRegressor, RegressionConfig, build_regression
from .restorer import FlowRestorer, build_model
from .sequential import SequentialCascade, SequentialConfig, build_sequential

# kind → (config dataclass, builder); a new model kind is its module plus one line here
MODEL_KINDS: Registry[tuple[type, Callable[[Any], torch.nn.Module]]] = Registry("model kind")
MODEL_KINDS.add("flow", (ModelConfig, build_model))
MODEL_KINDS.add("regression", (RegressionConfig, build_regression))  # learned non-flow baselines (issue 6)
MODEL_KINDS.add("sequential", (SequentialConfig, build_sequential))

# the type of a model config of any registered kind (``RunConfig.model``; which one: its ``kind``)
AnyModelConfig = typing.Union[tuple(cfg for _, (cfg, _) in MODEL_KINDS.items())]  # noqa: UP007


def model_config_class(data: Mapping[str, object], path: str = "") -> type:
    """The config dataclass of the model kind that plain data names (``kind``, default "flow"), strictly."""
    kind = data.get("kind", "flow")
    return MODEL_KINDS.get(kind, f"{path}.kind" if path else "kind")[0]  # type: ignore[arg-type]


def choose_model_config(parent: Mapping[str, object], value: object, key_path: str) -> type:
    """``config.typed_by`` chooser of a field holding a model config of any kind (``RunConfig.model``): a
    mapping's own ``kind`` picks the dataclass; a ready config object keeps its type."""
    if isinstance(value, Mapping):
        return model_config_class(value, key_path)
    registered = tuple(cfg for _, (cfg, _) in MODEL_KINDS.items())
    return type(value) if isinstance(value, registered) else ModelConfig  # else: "expected a mapping" error


def count_params(module: torch.nn.Module) -> int:
    """Number of parameters of ``module`` (every entry, trainable or frozen): the one count the zoo listing,
    evaluation tables and benchmarks report."""
    return sum(p.numel() for p in module.parameters())


def build_any(config: Any) -> Any:
    """Build the model of any registered kind from its config dataclass."""
    for _, (cfg_cls, builder) in MODEL_KINDS.items():
        if isinstance(config, cfg_cls):
            return builder(config)
    raise TypeError(f"no model kind registered for config type {type(config).__name__}")


__all__ = [
    "MODEL_KINDS",
    "AnyModelConfig",
    "FlowRestorer",
    "FlowSpec",
    "JointRegressor",
    "ModelConfig",
    "RegressionConfig",
    "SequentialCascade",
    "SequentialConfig",
    "build_any",
    "count_params",
    "build_model",
    "choose_model_config",
    "model_config_class",
]
