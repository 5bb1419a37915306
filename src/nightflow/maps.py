"""Image priors computed from an sRGB image: colour-ratio map, noise map, histogram equalisation, UPM.

Why: the conditional flows do not see the dark image alone. LLFlow and LoLiSRFlow feed the encoder an
exposure-invariant colour-ratio map, a noise map and a histogram-equalised copy, and use the colour-ratio map
as the prior mean; UPT-Flow's attention takes its queries and keys from the unbalanced-point map. All
functions take tensors N×C×H×W (or C×H×W for a single image) in [0, 1], work batched and keep the input's
device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import ImageValueError

__all__ = [
    "ImageValueError",
    "color_map_l1",
    "color_ratio_map",
    "histogram_equalize",
    "log_input",
    "noise_map",
    "unbalanced_point_map",
]


def _check_rank(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        got = type(x).__name__
        raise ImageValueError(f"{name}: expected a torch.Tensor, got {got}; convert the image first")
    if x.dim() not in (3, 4):
        raise ImageValueError(
            f"{name}: expected an image tensor N×C×H×W or C×H×W, got shape {tuple(x.shape)}; "
            "add or drop a batch dim"
        )


def color_ratio_map(x: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Per-pixel share of each channel, x / (Σc x + eps): exposure-invariant, so dark and bright shots agree.

    Shape is kept (N×3×H×W → N×3×H×W). The channel dim is dim -3. Values sum to Σx / (Σx + eps) ≈ 1 except in
    black pixels, where they are 0.
    """
    _check_rank(x, "color_ratio_map")
    return x / (x.sum(dim=-3, keepdim=True) + eps)


def color_map_l1(predicted: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Mean L1 between a predicted colour-ratio map and ``image``'s own (the optional colour loss of the models)."""
    return (predicted - color_ratio_map(image)).abs().mean()


def noise_map(color_map: torch.Tensor, border: str = "replicate") -> torch.Tensor:
    """LLFlow's noise map: per pixel and channel, max(|∂x C|, |∂y C|) with central differences.

    Keeps all channels (N×3×H×W → N×3×H×W), as LLFlow does. Central difference = (C[i+1] − C[i−1]) / 2; at the
    border the image is replicated (a one-sided half difference there), unlike upstream's zero padding, which
    fakes an edge along every border (``border="zeros"`` reproduces upstream, for converted checkpoints).
    Noise in a dark image makes the colour-ratio map jumpy; this says where.
    """
    _check_rank(color_map, "noise_map")
    if border not in ("replicate", "zeros"):
        raise ImageValueError(f"noise_map: border must be 'replicate' or 'zeros', got {border!r}")
    c = color_map if color_map.dim() == 4 else color_map.unsqueeze(0)
    padded = F.pad(c, (1, 1, 1, 1), mode="replicate") if border == "replicate" else F.pad(c, (1, 1, 1, 1))
    dx = 0.5 * (padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2])
    dy = 0.5 * (padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1])
    out = torch.maximum(dx.abs(), dy.abs())
    return out if color_map.dim() == 4 else out.squeeze(0)


@torch.no_grad()
def histogram_equalize(x: torch.Tensor, bins: int = 256) -> torch.Tensor:
    """Histogram-equalise each channel of each image separately (batched); output in [0, 1], same shape.

    Convention = OpenCV's ``cv2.equalizeHist`` (what LLFlow applies to its 8-bit input), without its final
    rounding: values are quantised to ``bins`` levels, q = round(x·(bins−1)), and mapped to
    (cdf(q) − cdf_min) / (N − cdf_min), so the darkest level goes to 0 and the brightest to 1. A constant
    channel is returned as its quantised value (cv2 does the same). For 8-bit data (x = k/255, bins = 256) the
    result differs from ``cv2.equalizeHist(k) / 255`` by at most 0.5/255 (cv2 rounds to integers).
    ``skimage.exposure.equalize_hist`` on the same integer data gives cdf(q)/N instead (no shift of the
    darkest level to 0); ours = (skimage − cdf_min/N) / (1 − cdf_min/N) exactly. No gradient flows through
    this (it is a fixed pre-processing of the input image).
    """
    _check_rank(x, "histogram_equalize")
    if bins < 2:
        raise ImageValueError(f"histogram_equalize: bins must be >= 2, got {bins}")
    if x.numel() == 0:
        shape = tuple(x.shape)
        raise ImageValueError(f"histogram_equalize: empty image of shape {shape}; pass a non-empty image")
    if not bool(torch.isfinite(x).all()):
        raise ImageValueError("histogram_equalize: image contains NaN or inf values; clean the input first")
    from .context import (  # one implementation: the whole-image context uses the table
        apply_lut,
        histogram_lut,
    )

    shape = x.shape
    x4 = x.reshape(-1, shape[-3], shape[-2], shape[-1]) if x.dim() == 4 else x.unsqueeze(0)
    return apply_lut(x4, histogram_lut(x4, bins)).reshape(shape).to(x.dtype)


def unbalanced_point_map(x: torch.Tensor, threshold: float = 0.1, eps: float = 1e-4) -> torch.Tensor:
    """UPT-Flow's unbalanced-point map: 1 where every channel's share exceeds ``threshold``, else 0.

    Shares are x / (Σc x + eps); a share ≤ threshold marks the pixel unbalanced (a saturated colour or a black
    pixel, whose shares are all 0). Output N×1×H×W (1×H×W for a single image), same dtype as x.
    """
    _check_rank(x, "unbalanced_point_map")
    shares = color_ratio_map(x, eps)
    return (shares > threshold).all(dim=-3, keepdim=True).to(x.dtype)


def log_input(x: torch.Tensor, offset: float = 1e-3) -> torch.Tensor:
    """log(max(x, 0) + offset): LLFlow's log-domain input, spreading the few dark levels of a night shot."""
    return torch.log(x.clamp_min(0.0) + offset)
