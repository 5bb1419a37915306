"""PSNR (RGB by default, or Y) and LR-PSNR, per image.

Why: PSNR on RGB over [0, 1] equals skimage's ``peak_signal_noise_ratio`` on [0, 255] data (the field's
default); the Y variant is BasicSR's (MATLAB YCbCr). LR-PSNR checks that an SR output, downscaled again,
agrees with the low-resolution reference (SRFlow's consistency measure).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import UserError
from ._convert import as_batch, check_pair, crop, select_channel
from .resize import imresize


def psnr(
    pred: torch.Tensor | np.ndarray,
    gt: torch.Tensor | np.ndarray,
    *,
    channel: str = "rgb",
    crop_border: int = 0,
) -> torch.Tensor:
    """Per-image PSNR in dB (shape N) of [0, 1] images; ``channel`` = ``rgb`` or ``y``; inf when identical."""
    if channel not in ("rgb", "y"):
        raise UserError(f"psnr: channel must be rgb or y, got '{channel}'")
    p = as_batch(pred, "prediction")
    g = as_batch(gt, "ground truth").to(p.device)
    check_pair(p, g)
    p, g = select_channel(crop(p, crop_border), channel), select_channel(crop(g, crop_border), channel)
    mse = ((p - g) ** 2).mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(1.0 / mse)


def lr_psnr(
    pred: torch.Tensor | np.ndarray,
    reference: torch.Tensor | np.ndarray,
    scale: int,
    *,
    channel: str = "rgb",
) -> torch.Tensor:
    """PSNR between ``pred`` (s·H×s·W) downscaled by MATLAB bicubic and a low-resolution reference.

    ``reference`` is either already low-resolution (H×W: e.g. the brightened input, as in SRFlow) or the
    high-resolution ground truth (s·H×s·W), which is then downscaled the same way; for low-light SR compare
    against the downscaled GT, since the dark input is not a brightness reference.
    """
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise UserError(f"lr_psnr: scale must be a positive integer, got {scale}")
    p = as_batch(pred, "prediction")
    r = as_batch(reference, "reference").to(device=p.device)
    h, w = p.shape[-2:]
    if h % scale or w % scale:
        raise UserError(f"lr_psnr: prediction {h}×{w} is not divisible by scale {scale}")
    lr_size = (h // scale, w // scale)
    if r.shape[-2:] == p.shape[-2:]:
        r = imresize(r, size=lr_size)
    elif tuple(r.shape[-2:]) != lr_size:
        raise UserError(
            f"lr_psnr: reference is {r.shape[-2]}×{r.shape[-1]}, expected {h}×{w} (GT) or "
            f"{lr_size[0]}×{lr_size[1]} (low-res); check --scale"
        )
    p_lr = imresize(p, size=lr_size).clamp(0, 1)
    return psnr(p_lr, r.clamp(0, 1), channel=channel)
