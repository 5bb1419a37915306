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
from ..metrics.psnr import psnr
from ..metrics.ssim import ssim


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
    """Mean PSNR and SSIM (RGB, skimage convention) over the first ``max_images`` items, one at a time since
    validation images may differ in size; the first ``save_images`` outputs go to ``samples_dir``."""
    model.eval()
    count = min(len(dataset), max_images)  # type: ignore[arg-type]
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    scores: dict[str, list[float]] = {"psnr": [], "ssim": []}
    for i in range(count):
        item = dataset[i]
        lq = item["lq"].unsqueeze(0).to(device)
        hq = item["hq"].unsqueeze(0).to(device)
        # the whole image's context, with the model's own exposure estimate (as a user would get it)
        thumb = item.get("ctx_thumb")
        make_context = getattr(model, "context", None)  # models without global statistics have none
        extra = {}
        if make_context is not None:
            thumb = None if thumb is None else thumb.unsqueeze(0).to(device)
            extra["context"] = make_context(lq, thumb=thumb)
        if temperature > 0:
            out = model.restore(lq, temperature=temperature, generator=generator, **extra)
        else:
            out = model.restore(lq, temperature=0.0, **extra)
        out = out.float().clamp(0, 1).cpu()
        hq = hq.float().cpu()
        scores["psnr"].append(float(psnr(out, hq)[0]))
        scores["ssim"].append(float(ssim(out, hq)[0]))
        if i < save_images:  # a resumed run may redo a round: replacing its own sample is intended
            write_image(samples_dir / _safe_name(i, item.get("name")), out[0], overwrite=True)
    result = {}
    for key, values in scores.items():
        finite = [v for v in values if np.isfinite(v)]
        result[key] = float(np.mean(finite)) if finite else float("nan")
    result["images"] = float(count)
    return result
