"""Is the exposure head's estimate the one that scores best, or would a fixed EV offset score better?

Scenes of the *training* photos are restored at the estimate of a head that never saw their photo (the K-fold
fits of ``scripts/fit_exposure_head.py --cv-folds``, whole photos held out), shifted by a few EV offsets; the
table is the mean PSNR per offset.

Why: the head is fitted to a squared error in EV, which is symmetric, while PSNR is not (a too-bright output
clips and shows more noise, a too-dark one loses less in sRGB). If a darker or brighter offset scored better on
photos the head did not see, it would be the honest correction to ship: no validation photo is involved. The
validation photos' own bias (``benchmarks/exposure_decomposition``) must not be used to choose it.

    python -m benchmarks.exposure_offset lolisrflow-x2 --scenes 48

Writes results/exposure_offset.json. Not part of `make bench` (a few minutes a model on one thread).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
from pathlib import Path

import torch

import nightflow
from nightflow import inference
from nightflow.data.datasets import SyntheticDataset
from nightflow.encoders.exposure import exposure_features
from nightflow.metrics.psnr import psnr

from .common import ROOT, save

SCENE_SEED = 123  # the seed scripts/fit_exposure_head.py draws its training scenes with


def _fit_script():
    path = ROOT / "scripts" / "fit_exposure_head.py"
    spec = importlib.util.spec_from_file_location("fit_exposure_head", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def offset_scores(
    spec: str, photos: Path, scenes: int, fit_scenes: int, folds: int, steps: int, offsets: list[float]
) -> dict:
    """Mean PSNR of ``scenes`` training scenes restored at the held-out estimate + each offset."""
    fe = _fit_script()
    model = nightflow.load(spec)
    head = getattr(model.restorer.encoder, "exposure_head", None)
    if head is None:
        raise SystemExit(f"{spec}: this model has no exposure head")
    head = head.float()
    thumbs, gains, photo = fe.scenes(photos, "train", model.scale, fit_scenes, seed=SCENE_SEED)
    feats = exposure_features(thumbs)
    held_out = fe.held_out_estimates(head, feats, gains, photo, folds, steps, lr=3e-3)
    with torch.no_grad():
        shipped = head.from_features(*feats).float()
    pairs = SyntheticDataset(
        photos,
        split="train",
        scale=model.scale,
        patch_size=None,
        length=fit_scenes,
        seed=SCENE_SEED,
        train=True,
        augment=False,
    )
    restorer = model.inference_restorer
    per_offset: dict[float, list[float]] = {o: [] for o in offsets}
    for i in range(min(scenes, fit_scenes)):
        item = pairs[i]
        lq, hq = item["lq"].unsqueeze(0), item["hq"].unsqueeze(0)
        shift = float(held_out[i] - shipped[i])  # the API's exposure is relative to the shipped head
        for o in offsets:
            with torch.no_grad():
                out = inference.restore(restorer, lq, tile=0, exposure=shift + o)
            per_offset[o].append(float(psnr(out, hq)))
    errors = held_out[: len(per_offset[offsets[0]])] - gains[: len(per_offset[offsets[0]])]
    return {
        "spec": spec,
        "scenes": len(per_offset[offsets[0]]),
        "held_out_error_mean_ev": round(float(errors.mean()), 3),
        "held_out_error_median_abs_ev": round(float(errors.abs().median()), 3),
        "psnr_by_offset": {f"{o:+.2f}": round(statistics.fmean(v), 3) for o, v in per_offset.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("models", nargs="+", help="zoo names or weights files (models with an exposure head)")
    parser.add_argument("--photos", type=Path, default=ROOT / "data" / "photos", help="holds train/")
    parser.add_argument("--scenes", type=int, default=48, help="training scenes restored (default 48)")
    parser.add_argument(
        "--fit-scenes", type=int, default=3000, help="scenes the held-out heads are fitted on"
    )
    parser.add_argument("--folds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=1000, help="Adam steps of each held-out fit")
    parser.add_argument("--offsets", default="-0.75,-0.5,-0.25,0,0.25", help="EV offsets, comma-separated")
    args = parser.parse_args(argv)
    if not (args.photos / "train").is_dir():
        raise SystemExit(f"{args.photos / 'train'}: no photos (run `make photos`)")
    offsets = [float(x) for x in args.offsets.split(",")]
    rows = []
    for spec in args.models:
        row = offset_scores(spec, args.photos, args.scenes, args.fit_scenes, args.folds, args.steps, offsets)
        rows.append(row)
        best = max(row["psnr_by_offset"], key=row["psnr_by_offset"].get)
        print(f"{spec}: mean PSNR by EV offset {row['psnr_by_offset']} (best {best})")
    save("exposure_offset", {"models": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
