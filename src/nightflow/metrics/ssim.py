"""SSIM in the two conventions papers use, per image.

Why: the same image pair scores differently under the two conventions, so the convention is an argument,
never implicit:

- ``skimage``: scikit-image's ``structural_similarity`` defaults: 7×7 uniform window, sample covariance
  (N/(N-1)), mean over the region not touched by the image border; RGB channels averaged (UPT-Flow) or on a
  BT.601 grey image (LLFlow/SSFlow use cv2 RGB→GRAY).
- ``matlab``: Wang et al.'s ``ssim.m`` as BasicSR ports it: 11×11 Gaussian window σ = 1.5, population
  statistics, 'valid' region; on the Y channel of YCbCr or per RGB channel, averaged.

Both use C1 = (0.01·L)², C2 = (0.03·L)² with L = 1 on [0, 1] data (identical to L = 255 on [0, 255] data).
``quantize=True`` rounds the compared channel(s) to 8-bit levels first, as MATLAB does on uint8 images
(``rgb2gray`` of a uint8 image is uint8): ``matlab`` + ``gray`` + ``quantize`` is IQA-PyTorch's default SSIM
and reproduces its published calibration values.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import UserError
from ._convert import as_batch, check_pair, crop, select_channel

CONVENTIONS = ("skimage", "matlab")
K1, K2 = 0.01, 0.03


def _window_1d(convention: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The separable 1-D factor of the 2-D window (both windows are outer products)."""
    if convention == "skimage":
        return torch.full((7,), 1.0 / 7.0, dtype=dtype, device=device)
    r = torch.arange(11, dtype=dtype, device=device) - 5
    g = torch.exp(-(r**2) / (2 * 1.5**2))
    return g / g.sum()


def _valid_filter_matrix(win: torch.Tensor, n: int) -> torch.Tensor:
    """(n-k+1)×n matrix M with (M @ x)[i] = Σ_j win[j]·x[i+j]: 1-D 'valid' correlation along an axis."""
    k = win.numel()
    m = torch.zeros(n - k + 1, n, dtype=win.dtype, device=win.device)
    for j in range(k):
        m.diagonal(j).fill_(float(win[j]))
    return m


def ssim(
    pred: torch.Tensor | np.ndarray,
    gt: torch.Tensor | np.ndarray,
    *,
    convention: str = "skimage",
    channel: str = "rgb",
    crop_border: int = 0,
    quantize: bool = False,
) -> torch.Tensor:
    """Per-image SSIM (shape N) of [0, 1] images.

    ``convention``: ``skimage`` or ``matlab`` (see module docstring); ``channel``: ``rgb`` (channels averaged),
    ``y`` (BT.601 YCbCr Y, BasicSR) or ``gray`` (BT.601 luma, cv2 RGB2GRAY); ``quantize``: round the compared
    channel(s) to 8-bit levels.
    """
    if convention not in CONVENTIONS:
        raise UserError(f"ssim: unknown convention '{convention}'; use skimage or matlab")
    p = as_batch(pred, "prediction")
    g = as_batch(gt, "ground truth").to(p.device)
    check_pair(p, g)
    p, g = select_channel(crop(p, crop_border), channel), select_channel(crop(g, crop_border), channel)
    if quantize:
        p, g = torch.round(p * 255) / 255, torch.round(g * 255) / 255
    k = _window_1d(convention, p.dtype, p.device).numel()
    if min(p.shape[-2:]) < k:
        raise UserError(
            f"ssim ({convention}) needs images of at least {k}×{k} px, got {p.shape[-2]}×{p.shape[-1]}"
        )
    return local_ssim(p, g, convention)


def local_ssim(p: torch.Tensor, g: torch.Tensor, convention: str = "skimage") -> torch.Tensor:
    """Per-image mean SSIM (shape N) of two N×C×H×W tensors as they are: no conversion, range or size checks,
    differentiable, in their own dtype. :func:`ssim` (the metric) and the ``ssim`` loss term share it, so the
    loss optimises exactly what the benchmark scores."""
    win = _window_1d(convention, p.dtype, p.device)
    k = win.numel()
    # the five local moments, filtered in one separable 'valid' pass (banded matrices: fast in float64)
    stack = torch.cat([p, g, p * p, g * g, p * g], dim=1)
    rows, cols = _valid_filter_matrix(win, p.shape[-2]), _valid_filter_matrix(win, p.shape[-1])
    stack = rows @ stack @ cols.transpose(0, 1)
    mu_x, mu_y, exx, eyy, exy = stack.chunk(5, dim=1)
    sxx, syy, sxy = exx - mu_x**2, eyy - mu_y**2, exy - mu_x * mu_y
    if convention == "skimage":
        n = k * k
        sxx, syy, sxy = (t * (n / (n - 1)) for t in (sxx, syy, sxy))
    c1, c2 = K1**2, K2**2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return s.mean(dim=(1, 2, 3))
