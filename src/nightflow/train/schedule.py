"""Learning-rate schedules: linear warm-up times a MultiStepLR-style step decay or a cosine decay.

Why a pure function of the step: the learning rate of update ``step`` is then fully determined by the config
and the step counter, so a resumed run gets exactly the same rates without replaying scheduler history.
"""

from __future__ import annotations

import math

import torch

from .config import TrainConfig


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier on ``cfg.lr`` for the update that takes the model from ``step`` to ``step + 1``."""
    warm = 1.0
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        warm = (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        decay = 1.0
    elif cfg.schedule == "multistep":
        passed = sum(1 for m in cfg.milestones if step >= round(m * cfg.max_steps))
        decay = cfg.gamma**passed
    else:  # cosine over the steps after warm-up
        span = max(1, cfg.max_steps - cfg.warmup_steps)
        progress = min(1.0, max(0.0, (step - cfg.warmup_steps) / span))
        decay = cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return warm * decay


class LRSchedule:
    """Sets the optimiser's learning rate before each update; stateless beyond the config (the rate is a pure
    function of the step, which the trainer's checkpoint already holds)."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> None:
        self.optimizer = optimizer
        self.cfg = cfg

    def apply(self, step: int) -> float:
        """Set every parameter group's lr for update ``step`` and return it."""
        lr = self.cfg.lr * lr_factor(step, self.cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def state_dict(self) -> dict[str, str]:
        return {"schedule": self.cfg.schedule}

    def load_state_dict(self, state: dict[str, int | str]) -> None:
        """Nothing to restore (checkpoints written before carry a ``last_step`` entry, which is not needed)."""
