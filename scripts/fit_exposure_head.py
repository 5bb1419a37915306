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
import copy
import functools
import json
import math
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from nightflow.data.datasets import SyntheticDataset
from nightflow.data.degrade import DegradeConfig
from nightflow.encoders.exposure import exposure_features
from nightflow.models.checkpoint import load_model, read_metadata

PREFIX = "encoder.exposure_head."
# the synthesis shares a fit's scenes are made with; a cache written before a share existed holds the default
SHARE_DEFAULTS = {
    k: getattr(DegradeConfig(), k) for k in ("jpeg_prob", "tone_curve_prob", "power_curve_prob")
}


def cached_shares(data: dict) -> dict[str, float]:
    """The synthesis shares a scene cache was made with (a share it predates: its default)."""
    return {key: float(data.get(key, torch.tensor(default))) for key, default in SHARE_DEFAULTS.items()}


def same_shares(a: dict[str, float], b: dict[str, float]) -> bool:
    """Equal shares up to float32 rounding: caches before 2026-12-07 stored them as float32 tensors, so a share
    of 0.3 came back as 0.30000001192..."""
    return a.keys() == b.keys() and all(math.isclose(a[k], b[k], rel_tol=1e-6, abs_tol=1e-9) for k in a)


def scenes(
    photos: Path,
    split: str,
    scale: int,
    count: int,
    seed: int,
    jpeg_prob: float = 0.0,
    tone_curve_prob: float = 1.0,
    power_curve_prob: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(thumbnails N×3×48×48, oracle gains N, photo index N) of ``count`` synthetic scenes, a ``jpeg_prob``
    share of them saved as JPEGs, a ``tone_curve_prob`` share developed with the tone curve and a
    ``power_curve_prob`` share encoded with a power law instead of the sRGB curve; the photo index
    (position of the source photo in sorted order) lets a cross-validation hold whole photos out."""
    ds = SyntheticDataset(
        photos,
        split=split,
        scale=scale,
        patch_size=None,
        length=count,
        seed=seed,
        train=True,
        augment=False,
        jpeg_prob=jpeg_prob,
        tone_curve_prob=tone_curve_prob,
        power_curve_prob=power_curve_prob,
    )
    items = [ds[i] for i in range(count)]
    stems = [it["name"].split("#")[0] for it in items]
    order = sorted(set(stems))
    return (
        torch.stack([it["ctx_thumb"] for it in items]),
        torch.stack([it["log2_gain"] for it in items]),
        torch.tensor([order.index(s) for s in stems]),
    )


def fit(
    head: torch.nn.Module,
    feats: tuple[torch.Tensor, torch.Tensor],
    gains: torch.Tensor,
    steps: int,
    lr: float,
    seed: int = 0,
) -> torch.nn.Module:
    """A copy of ``head`` fitted by Adam on precomputed features (squared EV error, batches of 256)."""
    head = copy.deepcopy(head).float().train()
    generator = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=1e-4)
    for _ in range(steps):
        idx = torch.randint(0, len(gains), (256,), generator=generator)
        loss = (head.from_features(feats[0][idx], feats[1][idx]) - gains[idx]).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return head.eval()


def held_out_estimates(
    head: torch.nn.Module,
    feats: tuple[torch.Tensor, torch.Tensor],
    gains: torch.Tensor,
    photo: torch.Tensor,
    folds: int,
    steps: int,
    lr: float,
) -> torch.Tensor:
    """Each scene's estimate by a fit that never saw its photo: the training photos in ``folds`` groups, each
    group estimated by a head fitted on the others. Their errors (``--cv-folds``) choose ``--steps`` without
    looking at the validation photos."""
    order = torch.randperm(int(photo.max()) + 1, generator=torch.Generator().manual_seed(0))
    estimates = torch.zeros_like(gains)
    for k in range(folds):
        held = torch.isin(photo, order[k::folds])
        rest = ~held
        fitted = fit(head, (feats[0][rest], feats[1][rest]), gains[rest], steps, lr, seed=k)
        with torch.no_grad():
            estimates[held] = fitted.from_features(feats[0][held], feats[1][held]).float()
    return estimates


def errors(
    head: torch.nn.Module, feats: tuple[torch.Tensor, torch.Tensor], gains: torch.Tensor
) -> dict[str, float]:
    """Median absolute, RMS and mean (signed: > 0 too bright) error in EV of the head on precomputed
    ``exposure_features``."""
    with torch.no_grad():
        return error_summary(head.from_features(*feats).float() - gains)


def error_summary(e: torch.Tensor) -> dict[str, float]:
    return {
        "median_abs_ev": round(float(e.abs().median()), 4),
        "rms_ev": round(float(e.pow(2).mean().sqrt()), 4),
        "mean_ev": round(float(e.mean()), 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("weights", type=Path)
    parser.add_argument("--photos", type=Path, default=Path("data/photos"))
    parser.add_argument("--scenes", type=int, default=1500, help="training scenes (default 1500)")
    parser.add_argument("--val-scenes", type=int, default=200)
    parser.add_argument(
        "--steps",
        type=int,
        default=1000,
        help="Adam steps (default 1000: better than 3000 in a 6-fold --cv-folds run for every bundled head)",
    )
    parser.add_argument(
        "--cv-folds",
        type=int,
        default=0,
        help="also report a K-fold cross-validation that holds whole training photos out (0: off)",
    )
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument(
        "--jpeg-prob",
        type=float,
        default=0.0,
        help="share of the scenes saved as JPEGs (default 0; use the weights' training share, data.jpeg_prob)",
    )
    parser.add_argument(
        "--tone-curve-prob",
        type=float,
        default=1.0,
        help="share of the scenes developed with the tone curve (default 1; use the weights' training share, "
        "data.tone_curve_prob)",
    )
    parser.add_argument(
        "--power-curve-prob",
        type=float,
        default=0.0,
        help="share of the scenes encoded with a power law instead of the sRGB curve (default 0; use the "
        "weights' training share, data.power_curve_prob)",
    )
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
    shares = {key: float(getattr(args, key)) for key in SHARE_DEFAULTS}
    if args.cache is not None and args.cache.is_file():
        data = torch.load(args.cache, weights_only=True)
        if len(data["train"]) != 3:
            print(f"{args.cache}: written by an older version of this script (no photo index); delete it")
            return 2
        made_with = cached_shares(data)
        if not same_shares(made_with, shares):
            print(f"{args.cache}: its scenes have shares {made_with}, not {shares}; use another file")
            return 2
    else:
        synthesise = functools.partial(
            scenes,
            args.photos,
            scale=model.scale,
            **shares,
        )
        data = {
            "train": synthesise("train", count=args.scenes, seed=123),
            "val": synthesise("val", count=args.val_scenes, seed=7),
            **{key: torch.tensor(value, dtype=torch.float64) for key, value in shares.items()},
        }
        if args.cache is not None:
            torch.save(data, args.cache)
    (train_t, train_g, train_photo), (val_t, val_g, _) = data["train"], data["val"]
    with torch.no_grad():  # the features hold no parameters: computed once, not at every step
        train_f, val_f = exposure_features(train_t), exposure_features(val_t)
    before = errors(head, val_f, val_g)
    cv = None
    if args.cv_folds > 1:
        held_out = held_out_estimates(head, train_f, train_g, train_photo, args.cv_folds, args.steps, args.lr)
        cv = error_summary(held_out - train_g)
        print(f"{args.weights.name}: {args.cv_folds}-fold cross-validation over the training photos: {cv}")
    head = fit(head, train_f, train_g, args.steps, args.lr)
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
            "photos": int(train_photo.max()) + 1,
            "steps": args.steps,
            "lr": args.lr,
            "validation_scenes": args.val_scenes,
            **shares,
            "before": before,
            "after": after,
            **({"cross_validation": {"folds": args.cv_folds, **cv}} if cv else {}),
        }
    )
    tmp = args.weights.with_name(f".{args.weights.name}.tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, args.weights)
    return 0


if __name__ == "__main__":
    sys.exit(main())
