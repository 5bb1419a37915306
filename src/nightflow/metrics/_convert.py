"""Input normalisation and colour conversions shared by every metric.

Why: each metric must see the same thing (N×3×H×W float64 in [0, 1]) whatever the caller hands in, and the
grey/Y conversions must be written once, with the exact weights each convention uses.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import UserError

# BT.601 luma weights on RGB (what cv2.COLOR_RGB2GRAY and MATLAB's rgb2gray use, up to rounding).
GRAY_WEIGHTS_BT601 = (0.299, 0.587, 0.114)
# MATLAB rgb2ycbcr / BasicSR "Y": studio-swing BT.601, Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255.
Y_OFFSET = 16.0 / 255.0
Y_WEIGHTS = (65.481 / 255.0, 128.553 / 255.0, 24.966 / 255.0)


def as_batch(
    x: torch.Tensor | np.ndarray, name: str = "image", dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """Return ``x`` as an N×3×H×W tensor in [0, 1] (float64 by default).

    Accepts tensors N×C×H×W or C×H×W (C = 1 or 3) with values in [0, 1], and numpy arrays H×W×3 / H×W
    (uint8, uint16 or float in [0, 1]). A grey image is repeated to three channels.
    """
    if isinstance(x, np.ndarray):
        x = _numpy_to_chw(x, name)
    if not isinstance(x, torch.Tensor):
        raise UserError(f"{name}: expected a torch.Tensor or numpy array, got {type(x).__name__}")
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise UserError(f"{name}: expected N×3×H×W or 3×H×W, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise UserError(
            f"{name}: tensors must be float in [0, 1], got {x.dtype}; convert with .float() / 255"
        )
    x = x.to(dtype)
    if x.numel() and float(x.max()) > 2.0:
        raise UserError(
            f"{name}: values up to {float(x.max()):.1f} but metrics expect [0, 1]; divide 0-255 data by 255"
        )
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x


def _numpy_to_chw(a: np.ndarray, name: str) -> torch.Tensor:
    if a.dtype == np.uint8:
        f = a.astype(np.float64) / 255.0
    elif a.dtype == np.uint16:
        f = a.astype(np.float64) / 65535.0
    elif np.issubdtype(a.dtype, np.floating):
        f = a.astype(np.float64)
    else:
        raise UserError(f"{name}: unsupported array dtype {a.dtype}; use uint8, uint16 or float in [0, 1]")
    if f.ndim == 2:
        f = f[:, :, None]
    if f.ndim != 3 or f.shape[2] not in (1, 3):
        raise UserError(f"{name}: expected an H×W×3 or H×W array, got shape {a.shape}")
    return torch.from_numpy(np.ascontiguousarray(f.transpose(2, 0, 1)))


def check_pair(pred: torch.Tensor, gt: torch.Tensor) -> None:
    """Raise a UserError unless ``pred`` and ``gt`` have the same shape (after :func:`as_batch`)."""
    if pred.shape != gt.shape:
        raise UserError(
            f"prediction {tuple(pred.shape)} and ground truth {tuple(gt.shape)} differ in shape; "
            "check --scale and that the right files are paired"
        )


def crop(x: torch.Tensor, border: int) -> torch.Tensor:
    """Drop ``border`` pixels on every side (the SR papers' ``crop_border``, usually = scale)."""
    if border < 0:
        raise UserError(f"crop_border must be >= 0, got {border}")
    if border == 0:
        return x
    if 2 * border >= min(x.shape[-2:]):
        raise UserError(f"crop_border {border} leaves nothing of a {x.shape[-2]}×{x.shape[-1]} image")
    return x[..., border:-border, border:-border]


def rgb_to_gray(x: torch.Tensor, weights: tuple[float, float, float] = GRAY_WEIGHTS_BT601) -> torch.Tensor:
    """Weighted sum over the channel axis of N×3×H×W → N×1×H×W (BT.601 luma by default)."""
    w = torch.tensor(weights, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
    """MATLAB/BasicSR Y of YCbCr (studio swing, in [16/255, 235/255]) of N×3×H×W → N×1×H×W."""
    return rgb_to_gray(x, Y_WEIGHTS) + Y_OFFSET


def select_channel(x: torch.Tensor, channel: str) -> torch.Tensor:
    """``rgb`` (unchanged), ``y`` (BT.601 YCbCr Y, BasicSR) or ``gray`` (BT.601 luma, cv2 RGB2GRAY)."""
    if channel == "rgb":
        return x
    if channel == "y":
        return rgb_to_y(x)
    if channel == "gray":
        return rgb_to_gray(x)
    raise UserError(f"unknown channel '{channel}'; use rgb, y or gray")
