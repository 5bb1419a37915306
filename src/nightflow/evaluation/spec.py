"""Model specs for evaluation: a zoo name, a checkpoint path, or a classical baseline, resolved to one restorer.

Why one resolver: ``nightflow eval`` and ``nightflow benchmark`` treat a trained flow, a learned regression
baseline and ``clahe+bicubic`` alike, so a table row is comparable whatever produced it. Baselines are written
``baseline:NAME`` (``baseline:clahe+bicubic``); a bare baseline name works too when it is not a zoo name or an
existing path. A baseline takes the data's scale; a trained model has its own and refuses data of another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from ..errors import UserError
from ..models import count_params  # the one count (re-exported as nightflow.evaluation.count_params)

BASELINE_PREFIX = "baseline:"


@dataclass
class ResolvedModel:
    """A restorer ready to run, with what a report needs to say about it."""

    spec: str
    kind: Literal["baseline", "zoo", "checkpoint"]
    restorer: torch.nn.Module
    scale: int
    params: int
    path: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """Plain-data summary for JSON reports."""
        return {
            "spec": self.spec,
            "kind": self.kind,
            "scale": self.scale,
            "params": self.params,
            "path": self.path,
        }


def _baseline(name: str, spec: str, scale: int | None) -> ResolvedModel:
    from ..baselines import get_baseline

    restorer = get_baseline(name, scale or 1)
    return ResolvedModel(spec, "baseline", restorer, restorer.scale, count_params(restorer))


def _unknown(spec: str) -> UserError:
    return UserError(
        f"unknown model '{spec}': not a zoo name (see `nightflow models`), an existing checkpoint path, or a "
        f"baseline such as 'baseline:clahe+bicubic'; check the spelling or the path"
    )


@dataclass(frozen=True)
class SpecInfo:
    """What a spec names, found without loading weights: its kind, scale (None for baselines) and weights file."""

    spec: str
    kind: Literal["baseline", "zoo", "checkpoint"]
    scale: int | None
    weights: Path | None = None

    @property
    def available(self) -> bool:
        """Baselines always are; models when their weights file exists."""
        return self.weights is None or self.weights.is_file()


def inspect_spec(spec: str) -> SpecInfo:
    """Classify ``spec`` and read its scale cheaply (zoo config or weights-file metadata); unknown → UserError."""
    from ..baselines import get_baseline, is_baseline
    from ..models import checkpoint, zoo

    text = spec.strip()
    if not text:
        raise UserError("empty model spec; give a zoo name, a checkpoint path or baseline:NAME")
    if text.lower().startswith(BASELINE_PREFIX):
        get_baseline(text[len(BASELINE_PREFIX) :], 1)  # validates the name
        return SpecInfo(text, "baseline", None)
    path = Path(text).expanduser()
    if path.exists():
        weights = zoo._resolve_checkpoint(path)
        return SpecInfo(text, "checkpoint", int(checkpoint.load_config(weights).scale), weights)
    if zoo.canonical(text) in zoo.config_names():
        return SpecInfo(text, "zoo", int(zoo.get_config(text).scale), zoo.weights_path(text))
    if is_baseline(text):
        return SpecInfo(f"{BASELINE_PREFIX}{text}", "baseline", None)
    if text.lower().endswith(".safetensors") or "/" in text or "\\" in text:
        # a checkpoint or run folder that is not there (yet): suites may list runs the user trains first, so
        # this is "missing weights" (skippable with --skip-missing), and loading it says "checkpoint not found"
        return SpecInfo(text, "checkpoint", None, path)
    raise _unknown(text)


def resolve_model(spec: str, scale: int | None = None, device: str | torch.device = "cpu") -> ResolvedModel:
    """Load ``spec`` on ``device``; ``scale`` (the data's) sizes a baseline and is checked against a model's."""
    from ..models import zoo

    info = inspect_spec(spec)
    if info.kind == "baseline":
        return _baseline(info.spec[len(BASELINE_PREFIX) :], info.spec, scale)
    if not info.available:
        raise UserError(f"checkpoint not found: {info.spec}; check the path")
    if scale is not None and info.scale != scale:
        raise UserError(
            f"model '{info.spec}' restores ×{info.scale} but the data is ×{scale}; "
            f"pick a ×{scale} model or evaluate on ×{info.scale} data"
        )
    restorer, meta = zoo.load_restorer(info.spec, device)
    return ResolvedModel(
        info.spec, info.kind, restorer, int(restorer.scale), count_params(restorer), meta.get("path"), meta
    )
