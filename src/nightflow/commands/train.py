"""Train a model from a YAML recipe (single process, or many with torchrun).

A run directory gets config.yaml (the resolved recipe), log.csv / log.jsonl / val.csv,
checkpoints/step_XXXXXXX/ (model.safetensors loadable by `nightflow enhance --model`, state.json +
state.safetensors for resuming: no pickle),
checkpoints/best/ and samples/.

examples:
  nightflow train recipe.yaml --out runs/x2 --set train.max_steps=2000 --set train.lr=1e-4
  nightflow train --resume runs/x2                      # continue from the latest checkpoint
  nightflow train --resume runs/x2 --set train.max_steps=4000
  torchrun --standalone --nproc_per_node=4 -m nightflow.cli train recipe.yaml --out runs/x2-ddp
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "config", nargs="?", metavar="CONFIG.yaml", help="training recipe (optional with --resume)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe value, e.g. train.lr=1e-4 (repeatable)",
    )
    parser.add_argument("--out", metavar="RUN_DIR", help="new run directory (default: runs/CONFIG-TIMESTAMP)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue that run from its latest checkpoint")


def run(args: argparse.Namespace) -> int:
    from ..train.run import train_run

    train_run(args.config, args.overrides, out=args.out, resume=args.resume)
    return 0
