"""NIQE (Mittal et al., 2013), following the official MATLAB release, per image.

Why: unpaired low-light sets (LIME, MEF, DICM, NPE) have no ground truth, so papers report NIQE; its value
depends on details (8-bit grey input, 96×96 blocks without overlap, MATLAB's antialiased bicubic for the second
scale, the pristine model), so this port follows ``computequality.m`` step by step with the pristine
parameters shipped in BasicSR 1.4.2 (cached by ``python -m nightflow.metrics.assets``):

1. luminance rounded to integers in [0, 255] (``gray``: MATLAB ``rgb2gray``, what the official code uses,
   ≈ BT.601 luma = YIQ's Y as IQA-PyTorch computes it; ``y``: YCbCr Y in [16, 235], BasicSR's default);
   crop to whole blocks;
2. at two scales (96×96 and 48×48 blocks; the second scale is ``imresize(im, 0.5)``): MSCN coefficients
   (x - μ) / (σ + 1) with the 7×7 Gaussian window and replicated borders; per block, an asymmetric generalised
   Gaussian fit of the coefficients and of their products with the four neighbours (circular shift in the
   block): 18 features;
3. distance between the pristine MVG and the image's MVG (mean, covariance of the block features):
   sqrt((μp - μd)ᵀ pinv((Σp + Σd) / 2) (μp - μd)). Lower is better.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from scipy.ndimage import correlate
from scipy.special import gamma as gamma_fn

from ..errors import UserError
from ._convert import as_batch, crop, rgb_to_gray, rgb_to_y
from .cache import niqe_file, require
from .resize import imresize

BLOCK = 96
# MATLAB rgb2gray: the first row of inv(YIQ→RGB); differs from (0.299, 0.587, 0.114) in the 4th decimal, which
# changes the rounding of a few pixels (I03 of the calibration set: 15.694 vs 15.763, official 15.754).
MATLAB_GRAY_WEIGHTS = (0.298936021293775, 0.587043074451121, 0.114020904255103)
SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))  # horizontal, vertical, main and anti diagonal neighbours
_ALPHAS = np.arange(0.2, 10.001, 0.001)  # MATLAB's 0.2:0.001:10 search grid for the shape parameter
_R_ALPHAS = gamma_fn(2 / _ALPHAS) ** 2 / (gamma_fn(1 / _ALPHAS) * gamma_fn(3 / _ALPHAS))


@lru_cache(maxsize=1)
def pristine_model() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mu (36,), cov (36, 36), 7×7 window) of the pristine natural-image model."""
    with np.load(require(niqe_file())) as d:
        return d["mu_pris_param"].reshape(-1), d["cov_pris_param"], d["gaussian_window"]


def _aggd(v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Moment-matching AGGD fit per row of ``v`` (blocks × samples): (alpha, beta_left, beta_right)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        neg, pos = v < 0, v > 0
        left = np.sqrt((v**2 * neg).sum(1) / neg.sum(1))
        right = np.sqrt((v**2 * pos).sum(1) / pos.sum(1))
        g = left / right
        r = np.abs(v).mean(1) ** 2 / (v**2).mean(1)
        r_norm = r * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2
        diff = (_R_ALPHAS[None, :] - r_norm[:, None]) ** 2
        # MATLAB's min() over an all-NaN row (a flat block) returns index 1: alpha = 0.2, not NaN.
        alpha = _ALPHAS[np.argmin(np.nan_to_num(diff, nan=np.inf), axis=1)]
        k = np.sqrt(gamma_fn(1 / alpha) / gamma_fn(3 / alpha))
    return alpha, left * k, right * k


def _block_features(mscn: np.ndarray, block: int) -> np.ndarray:
    """18 features for each non-overlapping block×block tile of ``mscn``: (n_blocks, 18)."""
    h, w = mscn.shape
    tiles = mscn.reshape(h // block, block, w // block, block).transpose(0, 2, 1, 3).reshape(-1, block, block)
    flat = tiles.reshape(len(tiles), -1)
    alpha, bl, br = _aggd(flat)
    feats = [alpha, (bl + br) / 2]
    for shift in SHIFTS:
        prod = (tiles * np.roll(tiles, shift, axis=(1, 2))).reshape(len(tiles), -1)
        alpha, bl, br = _aggd(prod)
        with np.errstate(invalid="ignore"):
            mean = (br - bl) * gamma_fn(2 / alpha) / gamma_fn(1 / alpha)
        feats += [alpha, mean, bl, br]
    return np.stack(feats, axis=1)


def niqe_luma(img: np.ndarray) -> float:
    """NIQE of one 2-D luminance image with integer values in [0, 255] (float64)."""
    h, w = img.shape
    nh, nw = h // BLOCK, w // BLOCK
    if nh * nw < 2:
        raise UserError(f"NIQE needs at least two {BLOCK}×{BLOCK} blocks (e.g. 96×192 px), got {h}×{w}")
    mu_p, cov_p, window = pristine_model()
    im = img[: nh * BLOCK, : nw * BLOCK].astype(np.float64)
    per_scale = []
    for scale in (1, 2):
        mu = correlate(im, window, mode="nearest")
        sigma = np.sqrt(np.abs(correlate(im * im, window, mode="nearest") - mu * mu))
        per_scale.append(_block_features((im - mu) / (sigma + 1), BLOCK // scale))
        if scale == 1:
            im = imresize(torch.from_numpy(im)[None, None], scale=0.5)[0, 0].numpy()
    feats = np.concatenate(per_scale, axis=1)
    mu_d = np.nanmean(feats, axis=0)
    cov_d = np.cov(feats[~np.isnan(feats).any(axis=1)], rowvar=False)
    d = mu_p - mu_d
    return float(np.sqrt(d @ np.linalg.pinv((cov_p + cov_d) / 2) @ d))


def niqe(img: torch.Tensor | np.ndarray, *, channel: str = "gray", crop_border: int = 0) -> torch.Tensor:
    """Per-image NIQE (shape N, lower is better) of [0, 1] RGB images.

    ``channel``: ``gray`` (MATLAB ``rgb2gray``, as the official NIQE release and IQA-PyTorch) or ``y``
    (YCbCr Y, BasicSR's ``calculate_niqe`` default).
    """
    x = crop(as_batch(img, "image"), crop_border).cpu()
    if channel == "gray":
        lum = rgb_to_gray(x, MATLAB_GRAY_WEIGHTS)
    elif channel == "y":
        lum = rgb_to_y(x)
    else:
        raise UserError(f"niqe: channel must be gray or y, got '{channel}'")
    lum = torch.round(lum.clamp(0, 1) * 255)[:, 0].numpy()
    return torch.tensor([niqe_luma(a) for a in lum], dtype=torch.float64)
