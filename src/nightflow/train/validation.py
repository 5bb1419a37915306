"""Validation during training: restore a fixed validation set at a fixed temperature, score it, save a few
images.

Why fixed: the same images, the same order and (for temperature > 0) the same noise every round, so the curve
in val.csv moves only because the weights moved.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from ..data.io import write_image
from ..evaluation.engine import EvalOptions, restore_item, score_item

METRICS = ("psnr", "ssim")  # the evaluation engine's names: RGB PSNR and SSIM, skimage convention


def _safe_name(index: int, name: object) -> str:
    stem = Path(str(name)).stem if name else "image"
    return f"{index:03d}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', stem)}.png"


@torch.no_grad()
def validate(
    model: nn.Module,
    dataset: Dataset,
    device: torch.device,
    max_images: int,
    save_images: int,
    samples_dir: Path,
    temperature: float = 0.0,
    seed: int = 0,
) -> dict[str, float]:
    """Mean PSNR and SSIM over the first ``max_images`` items, one at a time since validation images may differ
    in size; the first ``save_images`` outputs go to ``samples_dir``.

    Restoring and scoring are the evaluation engine's (:func:`~nightflow.evaluation.engine.restore_item`,
    :func:`~nightflow.evaluation.engine.score_item`), so a validation score is what ``nightflow eval`` reports
    for the same image: the mean path (or, at ``temperature`` > 0, noise seeded by (``seed``, index)), untiled,
    with the whole image's context (the item's ``ctx_thumb`` when it carries one)."""
    model.eval()
    count = min(len(dataset), max_images)  # type: ignore[arg-type]
    options = EvalOptions(metrics=list(METRICS), temperature=temperature, seed=seed, tile=0)
    scores: dict[str, list[float]] = {m: [] for m in METRICS}
    for i in range(count):
        item = dataset[i]
        lq = item["lq"].unsqueeze(0).to(device)
        hq = item["hq"].unsqueeze(0).to(device)
        # the whole image's context, with the model's own exposure estimate (as a user would get it)
        thumb = item.get("ctx_thumb")
        context = None if thumb is None else model.context(lq, thumb=thumb.unsqueeze(0).to(device))
        out = restore_item(model, lq, options, i, hq, context=context, name=type(model).__name__)
        out = out.float().clamp(0, 1).cpu()
        row = score_item(out, hq.float().cpu(), options, int(model.scale), str(item.get("name", i)))
        for key in METRICS:
            scores[key].append(row[key])
        if i < save_images and bool(torch.isfinite(out).all()):
            # a resumed run may redo a round: replacing its own sample is intended; NaN output is not written
            write_image(samples_dir / _safe_name(i, item.get("name")), out[0], overwrite=True)
    result = {}
    for key, values in scores.items():
        finite = [v for v in values if np.isfinite(v)]
        result[key] = float(np.mean(finite)) if finite else float("nan")
    result["images"] = float(count)
    return result
