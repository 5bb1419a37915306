"""Models: FlowRestorer (encoder + conditional flow), named configurations, weights files.

``MODEL_KINDS`` maps the kind recorded in a weights file to (config dataclass, builder), so ``load_model`` can
rebuild flows and the learned non-flow baselines alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .config import FlowSpec, ModelConfig
from .regression import JointRegressor, RegressionConfig, build_regression
from .restorer import FlowRestorer, build_model
from .sequential import SequentialCascade, SequentialConfig, build_sequential

MODEL_KINDS: dict[str, tuple[type, Callable[[Any], Any]]] = {
    "flow": (ModelConfig, build_model),
    "regression": (RegressionConfig, build_regression),  # learned non-flow baselines (issue 6)
    "sequential": (SequentialConfig, build_sequential),
}


def build_any(config: Any) -> Any:
    """Build the model of any registered kind from its config dataclass."""
    for cfg_cls, builder in MODEL_KINDS.values():
        if isinstance(config, cfg_cls):
            return builder(config)
    raise TypeError(f"no model kind registered for config type {type(config).__name__}")


__all__ = [
    "MODEL_KINDS",
    "FlowRestorer",
    "FlowSpec",
    "JointRegressor",
    "ModelConfig",
    "RegressionConfig",
    "SequentialCascade",
    "SequentialConfig",
    "build_any",
    "build_model",
]
