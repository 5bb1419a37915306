"""One training run from a recipe: check the run directory, build model and data, then create the directory
and train.

Why separate from the trainer: the rules about run directories (never reuse a non-empty one, resume only with
the recipe it was started with, create nothing until the recipe has proved buildable) and the model/data
factories are front-end concerns; ``Trainer`` only trains.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.data import Dataset

from ..atomic import write_text_atomic
from ..config import load_yaml
from ..errors import UserError
from .config import RunConfig, diff_keys, load_run_config, run_config_from_dict, run_config_to_dict
from .distributed import DistContext, init_distributed, shutdown_distributed
from .logging import message
from .trainer import StepCallback, Trainer

CONFIG_NAME = "config.yaml"
RECIPES_DIR = Path(__file__).resolve().parents[1] / "configs" / "train"


def recipe_names() -> list[str]:
    """Training recipes shipped with nightflow (``nightflow train NAME`` finds them)."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def recipe_path(config: str | Path) -> Path:
    """A recipe file path, or the bundled recipe of that name."""
    path = Path(config).expanduser()
    if path.is_file():
        return path
    bundled = RECIPES_DIR / f"{Path(config).name.removesuffix('.yaml')}.yaml"
    if bundled.is_file() and not path.parent.name:
        return bundled
    known = ", ".join(recipe_names()) or "none"
    raise UserError(f"recipe not found: {config} (not a file; bundled recipes: {known})")


def load_recipe(config: str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    """A recipe with ``--set`` overrides applied; an empty ``val.root`` means "same folder as data.root"."""
    cfg = load_run_config(recipe_path(config), list(overrides))
    return _fill_val_root(cfg)


def _fill_val_root(cfg: RunConfig) -> RunConfig:
    if cfg.val is not None and not cfg.val.root:
        cfg.val.root = cfg.data.root
    return cfg


def _write_config(cfg: RunConfig, run_dir: Path) -> None:
    write_text_atomic(run_dir / CONFIG_NAME, yaml.safe_dump(run_config_to_dict(cfg), sort_keys=False))


def resolve_run(
    config: str | Path | None,
    overrides: Sequence[str],
    out: str | Path | None,
    resume: str | Path | None,
    ctx: DistContext,
) -> tuple[RunConfig, Path, bool]:
    """(config, run directory, resuming?) by the CLI rules, without writing anything."""
    if resume is not None:
        run_dir = Path(resume)
        if out is not None and Path(out).resolve() != run_dir.resolve():
            raise UserError(f"--out {out} and --resume {resume} name different runs; give only --resume")
        saved_path = run_dir / CONFIG_NAME
        if not saved_path.is_file():
            raise UserError(f"--resume {run_dir}: no {CONFIG_NAME} there, so it is not a run directory")
        saved = load_yaml(saved_path)
        if config is not None:
            given = run_config_to_dict(load_recipe(config))
            changed = diff_keys(given, run_config_to_dict(run_config_from_dict(saved)))
            if changed:
                raise UserError(
                    f"{config} differs from {saved_path} at {', '.join(changed[:4])}; "
                    "drop CONFIG to resume with the saved recipe, or change it deliberately with --set"
                )
        return _fill_val_root(run_config_from_dict(saved, list(overrides))), run_dir, True
    if config is None:
        raise UserError("give a recipe CONFIG.yaml to start a run, or --resume RUN_DIR to continue one")
    cfg = load_recipe(config, overrides)
    if out is None:
        stamp = ctx.broadcast_object(time.strftime("%Y%m%d-%H%M%S"))
        run_dir = Path("runs") / f"{Path(config).stem}-{stamp}"
    else:
        run_dir = Path(out)
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise UserError(
            f"run directory {run_dir} already exists and is not empty; choose another --out, "
            f"or continue that run with --resume {run_dir}"
        )
    return cfg, run_dir, False


@dataclass
class RunParts:
    model: nn.Module
    train_set: Dataset
    val_set: Dataset | None


def build_parts(cfg: RunConfig, ctx: DistContext) -> RunParts:
    """Model (seeded identically on every rank) and datasets; scale mismatches fail before any work."""
    from ..data.datasets import build_dataset
    from ..models import build_any

    for name, data_cfg in (("data", cfg.data), ("val", cfg.val)):
        if data_cfg is not None and data_cfg.scale != cfg.model.scale:
            raise UserError(
                f"{name}.scale is {data_cfg.scale} but model {cfg.model.name} upscales x{cfg.model.scale}; "
                f"use --set {name}.scale={cfg.model.scale} or a x{data_cfg.scale} model"
            )
    seed = cfg.train.seed
    torch.manual_seed(seed)
    model = build_any(cfg.model)
    if cfg.train.init_weights:
        load_initial_weights(model, cfg.train.init_weights)
    # per-rank global streams for anything outside data loading that draws from them
    torch.manual_seed(seed + ctx.rank)
    np.random.seed((seed + ctx.rank) % 2**32)
    random.seed(seed + ctx.rank)
    train_set = build_dataset(cfg.data, train=True)
    val_set = build_dataset(cfg.val, train=False) if cfg.val is not None else None
    return RunParts(model, train_set, val_set)


def fresh_identity_keys(model: nn.Module, missing: Sequence[str]) -> list[str]:
    """The ``missing`` state-dict keys that belong to layers which start as the exact identity
    (``starts_as_identity``, e.g. ``flow.straddle.StraddleCoupling``): weights without them compute the same."""
    prefixes = tuple(
        f"{name}." for name, module in model.named_modules() if getattr(module, "starts_as_identity", False)
    )
    return [k for k in missing if prefixes and k.startswith(prefixes)]


def load_initial_weights(model: nn.Module, source: str) -> None:
    """Copy every tensor of ``source`` (zoo name, weights file, run folder) into ``model``; one-line error on any
    missing, extra or differently shaped tensor. Loaded ActNorms are marked initialised by their buffer, so the
    data-dependent init leaves them alone.

    The one exception: tensors of layers that start as the exact identity (``fresh_identity_keys``) may be missing;
    they keep their fresh initialisation (and their ActNorms initialise on the first training batch), so the run
    starts from what ``source`` computes and adds those layers to it."""
    from ..models.zoo import load_restorer

    donor, info = load_restorer(source)
    theirs, ours = donor.state_dict(), model.state_dict()
    missing, extra = sorted(set(ours) - set(theirs)), sorted(set(theirs) - set(ours))
    fresh = fresh_identity_keys(model, missing)
    missing = sorted(set(missing) - set(fresh))
    shapes = [k for k in ours if k in theirs and theirs[k].shape != ours[k].shape]
    if missing or extra or shapes:
        what = (
            (f"missing {missing[:3]} " if missing else "")
            + (f"unexpected {extra[:3]} " if extra else "")
            + (f"shape differs at {shapes[:3]}" if shapes else "")
        )
        raise UserError(f"train.init_weights={source} does not fit the recipe's model: {what.strip()}")
    model.load_state_dict({k: v.to(ours[k].dtype) for k, v in theirs.items()}, strict=not fresh)
    added = f"; {len(fresh)} tensors of layers new to it start as the identity" if fresh else ""
    message(f"initialised the model from {info['path']}{added}", True)


def train_run(
    config: str | Path | None = None,
    overrides: Sequence[str] = (),
    out: str | Path | None = None,
    resume: str | Path | None = None,
    callbacks: Sequence[StepCallback] = (),
) -> dict[str, Any]:
    """``nightflow train`` from Python: returns the trainer's summary (steps, losses, best score, run_dir)."""
    device_pref = "auto"  # the device is in the recipe, and joining the process group needs the device
    if config is not None or resume is not None:
        device_pref = resolve_run(config, overrides, out, resume, DistContext())[0].train.device
    ctx = init_distributed(device_pref)
    try:
        cfg, run_dir, resuming = resolve_run(config, overrides, out, resume, ctx)
        parts = build_parts(cfg, ctx)
        ctx.barrier()  # every rank checked the run directory before rank 0 creates it
        trainer = Trainer(
            parts.model,
            parts.train_set,
            cfg.train,
            run_dir,
            val_set=parts.val_set,
            model_config=cfg.model,
            run_config=run_config_to_dict(cfg),
            ctx=ctx,
            callbacks=callbacks,
        )
        if ctx.is_main and (not resuming or overrides):
            _write_config(cfg, run_dir)
        ctx.barrier()
        if resuming:
            latest = trainer.checkpoints.latest()
            if latest is not None:
                trainer.load_checkpoint(latest)
                message(f"resumed {run_dir} from {latest.name}", ctx.is_main)
            else:
                message(f"no checkpoint in {run_dir} yet: starting it from step 0", ctx.is_main)
            trainer.logger.truncate_after(trainer.step)
        summary = trainer.fit()
        best = summary["best"]
        message(
            f"done: step {summary['step']} in {run_dir}; best {best['metric']} = {best['value']}", ctx.is_main
        )
        return summary
    finally:
        shutdown_distributed(ctx)
