"""Training engine: ``Trainer`` (single process or torchrun DDP), checkpoints, schedules, EMA and run logs.

``nightflow train CONFIG.yaml`` is the command-line front end; ``train_run`` is the same thing from Python.
"""

from __future__ import annotations

from .config import RunConfig, TrainConfig, load_run_config
from .trainer import Trainer, TrainingDiverged

__all__ = ["RunConfig", "TrainConfig", "Trainer", "TrainingDiverged", "load_run_config", "train_run"]


def __getattr__(name: str):  # the run orchestration imports models and data lazily
    if name == "train_run":
        from .run import train_run

        return train_run
    raise AttributeError(name)
