"""GT-mean brightness rescaling (KinD, LLFlow): an explicit, never-default evaluation variant.

Why: some low-light papers rescale each output so its mean grey level equals the ground truth's before
measuring, which removes the (ill-posed) global exposure from the score; LLFlow's 25.19 dB on LOL is 21.15 dB
without it. nightflow reports it only on request and in separate columns (``psnr_gtmean`` …).

out ← clamp(out · mean(gray(gt)) / mean(gray(out)), 0, 1), per image.

Grey weights: ``bt601`` (default) uses the BT.601 luma weights on RGB (0.299 R + 0.587 G + 0.114 B).
``llflow`` reproduces LLFlow's evaluation code, which applies cv2's BGR→GRAY to RGB arrays and so weights
0.114 R + 0.587 G + 0.299 B (red and blue swapped); use it only to reproduce LLFlow-style numbers.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import UserError
from ._convert import GRAY_WEIGHTS_BT601, as_batch, check_pair, rgb_to_gray

GRAY_VARIANTS = {"bt601": GRAY_WEIGHTS_BT601, "llflow": GRAY_WEIGHTS_BT601[::-1]}


def gt_mean_rescale(
    pred: torch.Tensor | np.ndarray, gt: torch.Tensor | np.ndarray, *, variant: str = "bt601"
) -> torch.Tensor:
    """Return ``pred`` (N×3×H×W, float64) rescaled per image to the GT's mean grey level, clamped to [0, 1]."""
    if variant not in GRAY_VARIANTS:
        raise UserError(f"unknown GT-mean variant '{variant}'; use {' or '.join(GRAY_VARIANTS)}")
    p = as_batch(pred, "prediction")
    g = as_batch(gt, "ground truth").to(p.device)
    check_pair(p, g)
    w = GRAY_VARIANTS[variant]
    mean_p = rgb_to_gray(p, w).mean(dim=(1, 2, 3))
    mean_g = rgb_to_gray(g, w).mean(dim=(1, 2, 3))
    factor = mean_g / mean_p.clamp_min(1e-12)
    return (p * factor.view(-1, 1, 1, 1)).clamp(0, 1)
