"""Interpolate two weights files of one model: (1 - alpha) * BEFORE + alpha * AFTER, every float tensor.

Why: a fine-tuning round moves a model toward what its last steps favoured. A point between the weights before and
after the round (weight-space ensembling, Wortsman et al. 2022, "Robust fine-tuning of zero-shot models") often keeps
much of the gain with less of the loss. A flow made this way is still an exact flow: its log-determinants are
computed from the interpolated weights, as from any others.

The output takes AFTER's metadata (its config, weight facts and training facts), and its training facts say that
the weights were interpolated, with which file and how far, so that a card built from it cannot pass for a plain
training run. A head fit that AFTER recorded (``nightflow_exposure_fit``, from ``scripts/fit_exposure_head.py``)
no longer describes the mixed head, so it is dropped: refit the head to record one.

    python scripts/interpolate_weights.py BEFORE.safetensors AFTER.safetensors --alpha 0.5 -o OUT.safetensors
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from nightflow.atomic import atomic_path
from nightflow.models.checkpoint import CONFIG_KEY
from nightflow.models.zoo import WEIGHT_FACTS

TRAINING_KEY = "nightflow_training"
HEAD_FIT_KEY = "nightflow_exposure_fit"


def _load(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _architecture(meta: dict[str, str]) -> dict:
    """The stored config without the weight facts, which may differ between the two files."""
    config = json.loads(meta.get(CONFIG_KEY, "{}") or "{}")
    return {k: v for k, v in config.items() if k not in WEIGHT_FACTS}


def interpolate(
    before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """(1 - alpha) * before + alpha * after for float tensors; other tensors (flags, counters) must be equal."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if before.keys() != after.keys():
        only = sorted(before.keys() ^ after.keys())
        raise ValueError(f"the two files hold different tensors, e.g. {only[:3]}")
    out = {}
    for name, a in before.items():
        b = after[name]
        if a.shape != b.shape or a.dtype != b.dtype:
            raise ValueError(f"{name}: {tuple(a.shape)} {a.dtype} against {tuple(b.shape)} {b.dtype}")
        if a.is_floating_point():
            mixed = torch.lerp(a.double(), b.double(), alpha)
            out[name] = mixed.to(a.dtype).contiguous()
        elif torch.equal(a, b):
            out[name] = b.clone()
        else:
            raise ValueError(
                f"{name}: a {a.dtype} tensor that differs between the files cannot be interpolated"
            )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path, help="the weights before the round (alpha 0)")
    parser.add_argument(
        "after", type=Path, help="the weights after it (alpha 1); the output takes its metadata"
    )
    parser.add_argument("--alpha", type=float, required=True, help="how far toward AFTER, in [0, 1]")
    parser.add_argument(
        "-o", "--out", type=Path, required=True, help="output weights file (never overwritten)"
    )
    args = parser.parse_args(argv)
    if args.out.exists():
        print(f"{args.out} exists; refusing to overwrite it", file=sys.stderr)
        return 2
    for path in (args.before, args.after):
        if not path.is_file():
            print(f"{path}: no such weights file", file=sys.stderr)
            return 2
    before, before_meta = _load(args.before)
    after, meta = _load(args.after)
    if _architecture(before_meta) != _architecture(meta):
        print("the two files store different model configs (another architecture)", file=sys.stderr)
        return 2
    try:
        tensors = interpolate(before, after, args.alpha)
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    training = json.loads(meta.get(TRAINING_KEY, "{}") or "{}")
    training["interpolation"] = {
        "alpha": args.alpha,
        "before": args.before.name,
        "before_sha256": _sha256(args.before),
        "after_sha256": _sha256(args.after),
    }
    meta[TRAINING_KEY] = json.dumps(training)
    meta.pop(HEAD_FIT_KEY, None)
    with atomic_path(args.out) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    print(
        f"{args.out}: {args.alpha:g} of the way from {args.before.name} to {args.after.name}, {len(tensors)} tensors"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
