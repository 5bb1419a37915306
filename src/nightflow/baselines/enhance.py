"""Classical low-light enhancement baselines (scale 1): auto-gamma, HE, CLAHE and a LIME-style method.

Why: a learned model is only interesting if it beats these; they need no training and run anywhere.

Colour handling: HE and CLAHE equalise the HSV value V = max(R, G, B) and scale R, G, B by V'/V, which keeps
hue and saturation exactly and cannot overflow (the largest channel becomes V' ≤ 1); equalising R, G, B
separately would shift colours.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..context import apply_gain, oracle_log2_gain
from ..errors import UserError
from .base import Baseline


def _apply_value_map(x: torch.Tensor, v: torch.Tensor, v_new: torch.Tensor) -> torch.Tensor:
    """Scale RGB by V'/V (HSV value replaced, hue and saturation kept)."""
    return x * (v_new / v.clamp_min(1e-6))


class AutoGamma(Baseline):
    """Per-image gamma x^γ with γ chosen (bisection) so the mean of all pixel values equals ``target``."""

    name = "gamma"

    def __init__(self, target: float = 0.4, iterations: int = 40) -> None:
        super().__init__(1)
        self.target = target
        self.iterations = iterations

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        t = x.clamp(1e-6, 1.0)
        lo = torch.full((x.shape[0], 1, 1, 1), -5.0, dtype=x.dtype, device=x.device)  # log γ bounds
        hi = torch.full_like(lo, 3.0)
        for _ in range(self.iterations):  # mean(x^γ) falls as γ grows: a monotone bisection in log γ
            mid = (lo + hi) / 2
            too_bright = t.pow(mid.exp()).mean(dim=(1, 2, 3), keepdim=True) > self.target
            lo = torch.where(too_bright, mid, lo)
            hi = torch.where(too_bright, hi, mid)
        return t.pow(((lo + hi) / 2).exp()) * (x > 0)


class HistogramEqualization(Baseline):
    """Global histogram equalisation of V (256 levels), colours kept."""

    name = "he"

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        v = x.amax(dim=1, keepdim=True)
        levels = (v * 255).round().long().flatten(1)  # N × HW
        hist = torch.zeros(x.shape[0], 256, dtype=x.dtype, device=x.device)
        hist.scatter_add_(1, levels, torch.ones_like(levels, dtype=x.dtype))
        cdf = hist.cumsum(1)
        cdf_min = torch.where(hist > 0, cdf, torch.full_like(cdf, float("inf"))).amin(1, keepdim=True)
        total = cdf[:, -1:]
        lut = ((cdf - cdf_min) / (total - cdf_min).clamp_min(1)).clamp(0, 1)
        v_new = torch.gather(lut, 1, levels).view_as(v)
        return _apply_value_map(x, v, v_new)


class CLAHE(Baseline):
    """Contrast-limited adaptive HE (OpenCV, 8-bit V, ``clip_limit``, ``tiles``×``tiles`` grid), colours kept."""

    name = "clahe"

    def __init__(self, clip_limit: float = 2.0, tiles: int = 8) -> None:
        super().__init__(1)
        self.clip_limit = clip_limit
        self.tiles = tiles

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        clahe = cv2.createCLAHE(clipLimit=self.clip_limit, tileGridSize=(self.tiles, self.tiles))
        v = x.amax(dim=1, keepdim=True)
        v8 = (v * 255).round().to(torch.uint8).cpu().numpy()
        v_new = np.stack([clahe.apply(np.ascontiguousarray(im[0]))[None] for im in v8])
        v_new = torch.from_numpy(v_new).to(device=x.device, dtype=x.dtype) / 255
        return _apply_value_map(x, v, v_new)


def _box(t: torch.Tensor, r: int) -> torch.Tensor:
    return F.avg_pool2d(t, 2 * r + 1, stride=1, padding=r, count_include_pad=False)


def guided_filter(guide: torch.Tensor, src: torch.Tensor, radius: int, eps: float) -> torch.Tensor:
    """He et al.'s guided filter (single-channel guide): edge-preserving smoothing of ``src``."""
    mean_i, mean_p = _box(guide, radius), _box(src, radius)
    cov_ip = _box(guide * src, radius) - mean_i * mean_p
    var_i = _box(guide * guide, radius) - mean_i**2
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return _box(a, radius) * guide + _box(b, radius)


class LIMEStyle(Baseline):
    """Retinex enhancement with an illumination map, after LIME (Guo et al., TIP 2017), simplified.

    T₀ = max(R, G, B); LIME refines T₀ by solving a structure-aware TV problem, here a guided filter (guide and
    input T₀) stands in for it (it likewise smooths texture while keeping strong edges); T = max(T, floor)^γ with
    LIME's γ = 0.8; output = input / T. LIME's optional BM3D denoising step is left out.
    """

    name = "lime"

    def __init__(self, gamma: float = 0.8, eps: float = 1e-3, floor: float = 0.02) -> None:
        super().__init__(1)
        self.gamma = gamma
        self.eps = eps
        self.floor = floor

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        t0 = x.amax(dim=1, keepdim=True)
        radius = max(2, min(x.shape[-2:]) // 40)
        t = guided_filter(t0, t0, radius, self.eps).clamp(self.floor, 1.0) ** self.gamma
        return x / t


class OracleExposure(Baseline):
    """Multiplies the input, in linear light, by the gain that makes its mean luminance the target's: an
    *oracle* (it reads the ground truth) that shows what exposure alone is worth, and, followed by bicubic, an
    honest ceiling for structure that an estimated exposure has to beat."""

    name = "oracle"
    needs_target = True
    _target: torch.Tensor | None = None

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        if self._target is None:
            raise UserError("oracle: no ground-truth target given")
        return apply_gain(x, oracle_log2_gain(x, self._target.to(x)))
