"""Evaluation: resolve a model spec, score it on a dataset (``engine``), and run benchmark suites (``suite``).

``nightflow eval`` is :func:`evaluate` over one model and one dataset; ``nightflow benchmark`` runs a YAML
suite of models × datasets through the same function and writes tables and a figure.
"""

from __future__ import annotations

from .engine import EvalOptions, EvalResult, device_description, evaluate, image_seed
from .spec import BASELINE_PREFIX, ResolvedModel, count_params, resolve_model

__all__ = [
    "BASELINE_PREFIX",
    "EvalOptions",
    "EvalResult",
    "ResolvedModel",
    "count_params",
    "device_description",
    "evaluate",
    "image_seed",
    "resolve_model",
]
