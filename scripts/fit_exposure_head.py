"""Fit a bundled model's exposure head on many more scenes than its training run showed it, in place.

Why a second stage: the exposure head (nightflow.encoders.exposure) reads only the whole image's thumbnail and
is trained against the oracle gain, while the rest of the model is conditioned on the *oracle* gain in training.
So the head can be fitted on its own, on thousands of fresh synthetic scenes (a few CPU minutes), without
touching anything the flow learned. Its squared-EV loss is the same as in the joint training run.

The scenes are made by the model's own training synthesis (SyntheticDataset: 384 px scenes of the training
photos, random resize, the preset's degradation); the errors before and after are measured on scenes of the
held-out validation photos and stored in the weights' metadata (``nightflow_exposure_fit``) for the model card.

    python scripts/fit_exposure_head.py src/nightflow/weights/lolisrflow-x2-tiny.safetensors --photos data/photos
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from nightflow.data.datasets import SyntheticDataset
from nightflow.encoders.exposure import exposure_features
from nightflow.models.checkpoint import load_model, read_metadata

PREFIX = "encoder.exposure_head."


def scenes(photos: Path, split: str, scale: int, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(thumbnails N×3×48×48, oracle gains N) of ``count`` synthetic scenes."""
    ds = SyntheticDataset(
        photos, split=split, scale=scale, patch_size=None, length=count, seed=seed, train=True, augment=False
    )
    items = [ds[i] for i in range(count)]
    return torch.stack([it["ctx_thumb"] for it in items]), torch.stack([it["log2_gain"] for it in items])


def errors(
    head: torch.nn.Module, feats: tuple[torch.Tensor, torch.Tensor], gains: torch.Tensor
) -> dict[str, float]:
    """Median absolute and RMS error in EV of the head on precomputed ``exposure_features``."""
    with torch.no_grad():
        e = head.from_features(*feats).float() - gains
    return {
        "median_abs_ev": round(float(e.abs().median()), 4),
        "rms_ev": round(float(e.pow(2).mean().sqrt()), 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("weights", type=Path)
    parser.add_argument("--photos", type=Path, default=Path("data/photos"))
    parser.add_argument("--scenes", type=int, default=1500, help="training scenes (default 1500)")
    parser.add_argument("--val-scenes", type=int, default=200)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="keep the synthesised scenes in this file (reused when present)",
    )
    args = parser.parse_args(argv)

    model = load_model(args.weights)
    head = model.encoder.exposure_head
    if head is None:
        print(f"{args.weights}: this model has no exposure head", file=sys.stderr)
        return 2
    head = head.float().train()
    torch.manual_seed(0)
    if args.cache is not None and args.cache.is_file():
        data = torch.load(args.cache, weights_only=True)
    else:
        data = {
            "train": scenes(args.photos, "train", model.scale, args.scenes, seed=123),
            "val": scenes(args.photos, "val", model.scale, args.val_scenes, seed=7),
        }
        if args.cache is not None:
            torch.save(data, args.cache)
    (train_t, train_g), (val_t, val_g) = data["train"], data["val"]
    with torch.no_grad():  # the features hold no parameters: computed once, not at every step
        train_f, val_f = exposure_features(train_t), exposure_features(val_t)
    before = errors(head, val_f, val_g)
    opt = torch.optim.Adam(head.parameters(), lr=args.lr, weight_decay=1e-4)
    for _ in range(args.steps):
        idx = torch.randint(0, len(train_t), (256,))
        loss = (head.from_features(train_f[0][idx], train_f[1][idx]) - train_g[idx]).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    after = errors(head, val_f, val_g)
    print(f"{args.weights.name}: validation scenes, before {before}, after {after}")
    if after["median_abs_ev"] > before["median_abs_ev"]:
        print("the fitted head is worse on the validation scenes: weights left unchanged")
        return 0

    tensors = load_file(str(args.weights))
    for name, value in head.state_dict().items():
        key = PREFIX + name
        tensors[key] = value.to(tensors[key].dtype)
    meta = read_metadata(args.weights)
    meta["nightflow_exposure_fit"] = json.dumps(
        {
            "scenes": args.scenes,
            "steps": args.steps,
            "lr": args.lr,
            "validation_scenes": args.val_scenes,
            "before": before,
            "after": after,
        }
    )
    tmp = args.weights.with_name(f".{args.weights.name}.tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, args.weights)
    return 0


if __name__ == "__main__":
    sys.exit(main())
