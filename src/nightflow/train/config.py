"""Training configs: ``TrainConfig`` (optimiser, schedule, logging, checkpoints) and ``RunConfig`` (everything
a run needs: model + data + validation data + training settings), loaded strictly from YAML.

Why one file: a run directory stores exactly one resolved ``RunConfig`` so that a resumed or reproduced run
uses the very same settings.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..config import apply_overrides, check_literals, from_dict, load_yaml, to_dict, typed_by
from ..data.datasets import DataConfig
from ..errors import ConfigError
from ..models import AnyModelConfig, choose_model_config


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping of one training run (steps count optimiser updates)."""

    seed: int = 0
    max_steps: int = 1000
    batch_size: int = 8  # global batch, split over DDP ranks: a recipe trains alike on 1 or N GPUs
    num_workers: int = 0
    optimizer: Literal["adam", "adamw"] = "adam"
    lr: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])  # Adam (beta1, beta2)
    eps: float = 1e-8
    weight_decay: float = 0.0
    schedule: Literal["constant", "multistep", "cosine"] = "multistep"
    warmup_steps: int = 0  # linear warm-up from lr/warmup_steps to lr
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75, 0.9, 0.95])  # fractions of max_steps
    gamma: float = 0.5  # multistep decay factor at each milestone
    min_lr_ratio: float = 0.0  # cosine floor as a fraction of lr
    grad_clip: float | None = None  # max gradient L2 norm; None = no clipping
    # autocast dtype: bf16 on CUDA or CPU, fp16 on CUDA only; auto = bf16 where it runs faster than float32 (CUDA
    # with bf16, CPUs with AMX, AMD CPUs with avx512_bf16: nightflow.precision.fast_bf16), else none. The flow's arithmetic stays float32.
    amp: Literal["none", "auto", "bf16", "fp16"] = "none"
    ema_decay: float | None = None  # e.g. 0.999; None = no EMA of weights
    log_every: int = 10
    val_every: int = 1000
    val_max_images: int = 16
    val_save_images: int = 4
    val_temperature: float = 0.0
    checkpoint_every: int = 1000
    keep_last: int = 3
    device: Literal["auto", "cpu", "cuda"] = "auto"
    progress: bool = True
    ddp_find_unused_parameters: bool = True  # a head may sit out a step (GT colour-map coin flip)
    # fine-tune: start from these weights (zoo name, weights file or run folder) instead of a fresh init; every
    # tensor must match the recipe's model by name and shape (other settings, e.g. flow.scale_floor, may differ)
    init_weights: str | None = None
    # train only the parameters whose names match these glob patterns (fnmatch), the rest frozen, e.g.
    # ["*.net_first.*", "*.net_second.*"] for straddle couplings added to init_weights; null = train everything
    trainable: list[str] | None = None
    # stop once the training steps (data, forward, backward, update; not validation or checkpoints) have taken
    # this many seconds, summed over resumes, then validate and save as at max_steps: for comparisons at a fixed
    # CPU budget (benchmarks/settings_study.py). max_steps still applies, and so does its lr schedule
    time_budget_s: float | None = None
    # what time_budget_s counts: wall-clock seconds, or this process's CPU seconds (all its threads; not
    # DataLoader workers), which a busy machine inflates far less: a fair budget when runs share cores
    time_budget_clock: Literal["wall", "cpu"] = "wall"

    def __post_init__(self) -> None:
        check_literals(self, "train")
        positive = ("max_steps", "batch_size", "log_every", "val_every", "checkpoint_every", "keep_last")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        if self.warmup_steps < 0 or self.num_workers < 0:
            raise ConfigError("train.warmup_steps and train.num_workers must be >= 0")
        bad = [m for m in self.milestones if not 0.0 < m < 1.0]
        if bad:
            raise ConfigError(
                f"train.milestones are fractions of max_steps in (0, 1), got {bad}; e.g. [0.5, 0.75, 0.9]"
            )
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"train.betas must be two numbers in [0, 1), got {self.betas}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ConfigError(f"train.ema_decay must be in (0, 1) or null, got {self.ema_decay}")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise ConfigError(f"train.time_budget_s must be > 0 seconds or null, got {self.time_budget_s}")
        if self.trainable is not None and not self.trainable:
            raise ConfigError("train.trainable: give at least one pattern, or null to train every parameter")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ConfigError(f"train.grad_clip must be > 0 or null, got {self.grad_clip}")


@dataclass
class RunConfig:
    """A complete training run: what to train (model), on what (data, val) and how (train)."""

    # a model config of any registered kind (flow, regression, sequential): its ``kind`` picks the dataclass
    model: AnyModelConfig = field(metadata=typed_by(choose_model_config))
    data: DataConfig
    val: DataConfig | None = None
    train: TrainConfig = field(default_factory=TrainConfig)


def _resolve_model_name(data: dict[str, Any]) -> dict[str, Any]:
    """Allow ``model: lolisrflow-x2-tiny`` (a zoo name) as shorthand for that named config."""
    if isinstance(data.get("model"), str):
        from ..models import zoo

        data["model"] = to_dict(zoo.get_config(data["model"]))  # ConfigError naming the known models
    return data


def run_config_from_dict(data: dict[str, Any], overrides: list[str] | None = None) -> RunConfig:
    """RunConfig from plain data: ``--set model=NAME`` first, then zoo names resolved, then the other ``--set``
    overrides (so ``model.flow.hidden=64`` applies to the named config), then strict typing."""
    overrides = list(overrides or [])
    whole_model = [o for o in overrides if o.split("=", 1)[0].strip() == "model"]
    rest = [o for o in overrides if o not in whole_model]
    data = apply_overrides(dict(data), whole_model)
    data = apply_overrides(_resolve_model_name(data), rest)
    return from_dict(RunConfig, data)


def load_run_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a run recipe from YAML, with a one-line error naming the file and the offending key."""
    try:
        return run_config_from_dict(load_yaml(path), overrides)
    except ConfigError as exc:
        msg = str(exc)
        raise ConfigError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from exc


def run_config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    """Plain-data view for config.yaml (tuples become lists so YAML stays readable)."""
    return to_dict(cfg)


def diff_keys(a: Any, b: Any, path: str = "") -> list[str]:
    """Key paths where two plain-data configs differ (to refuse resuming with a silently changed recipe)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for key in sorted(set(a) | set(b)):
            out += diff_keys(a.get(key), b.get(key), f"{path}.{key}" if path else str(key))
        return out
    if dataclasses.is_dataclass(a) or dataclasses.is_dataclass(b):
        return diff_keys(to_dict(a), to_dict(b), path)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return [] if list(a) == list(b) else [path]
    return [] if a == b else [path]
