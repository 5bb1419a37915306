"""Classical exposure, denoising and deblurring steps for cascades (``auto+nlm+rl``): the target-free
counterparts a self-supervised restorer has to beat.

- ``auto``: the scene's auto exposure (``context.auto_log2_gain``: mean linear luminance to 18 % grey), a gain
  in linear light; the brightness rule the self-supervised losses use, so the comparison is about restoration.
- ``nlm``: scikit-image's non-local means, its noise level estimated per image (Immerkær's fast estimate:
  mean |Laplacian-difference| · √(π/2)/6, averaged over channels).
- ``rl``: scikit-image's Richardson–Lucy deconvolution in linear light with a fixed isotropic Gaussian PSF
  (σ 1.5 px, 10 iterations): a generic blur estimate, not the true camera shake (blind kernel estimation is
  not attempted).
scikit-image is an optional dependency (``pip install nightflow[classical]``); a missing one is a one-line error.
"""

from __future__ import annotations

import numpy as np
import torch

from ..context import apply_gain, auto_log2_gain, linear_to_srgb, srgb_to_linear, thumbnail
from ..errors import UserError
from .base import Baseline


def _skimage_restoration():
    try:
        from skimage import restoration
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise UserError("this baseline needs scikit-image: pip install 'nightflow[classical]'") from exc
    return restoration


def _per_image(x: torch.Tensor, fn) -> torch.Tensor:
    out = []
    for img in x:
        arr = img.permute(1, 2, 0).double().cpu().numpy()
        out.append(torch.from_numpy(np.ascontiguousarray(fn(arr))).permute(2, 0, 1))
    return torch.stack(out).to(x)


class AutoExposure(Baseline):
    """Linear-light gain bringing the whole image's mean luminance to 18 % grey (never darkens)."""

    name = "auto"

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        return apply_gain(x, auto_log2_gain(thumbnail(x)))


def noise_sigma(arr: np.ndarray) -> float:
    """Immerkær (1996) noise estimate of an H×W×C image: the mask [[1,-2,1],[-2,4,-2],[1,-2,1]] cancels smooth
    content; σ = √(π/2)/6 · mean |response|, averaged over channels."""
    a = arr
    resp = (
        a[:-2, :-2]
        - 2 * a[:-2, 1:-1]
        + a[:-2, 2:]
        - 2 * a[1:-1, :-2]
        + 4 * a[1:-1, 1:-1]
        - 2 * a[1:-1, 2:]
        + a[2:, :-2]
        - 2 * a[2:, 1:-1]
        + a[2:, 2:]
    )
    return float(np.sqrt(np.pi / 2) / 6 * np.abs(resp).mean())


class NonLocalMeans(Baseline):
    """Non-local means (5×5 patches, 13×13 search, h = 0.8σ) with σ estimated per image."""

    name = "nlm"

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        restoration = _skimage_restoration()

        def denoise(arr: np.ndarray) -> np.ndarray:
            sigma = noise_sigma(arr)
            return restoration.denoise_nl_means(
                arr,
                h=0.8 * sigma,
                sigma=sigma,
                patch_size=5,
                patch_distance=6,
                channel_axis=-1,
                fast_mode=True,
            )

        return _per_image(x, denoise)


def gaussian_psf(sigma: float = 1.5) -> np.ndarray:
    r = int(np.ceil(3 * sigma))
    t = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-(t**2) / (2 * sigma**2))
    psf = np.outer(g, g)
    return psf / psf.sum()


class RichardsonLucy(Baseline):
    """Richardson–Lucy deconvolution per channel, linear light, Gaussian PSF σ 1.5 px, 10 iterations."""

    name = "rl"

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        restoration = _skimage_restoration()
        psf = gaussian_psf(1.5)

        pad = 3 * (psf.shape[0] // 2)  # reflect-padded first: RL's zero-padded borders would ring inwards

        def deblur(arr: np.ndarray) -> np.ndarray:
            padded = np.pad(arr, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
            chans = [
                restoration.richardson_lucy(padded[..., c], psf, num_iter=10, clip=True) for c in range(3)
            ]
            return np.stack(chans, axis=-1)[pad:-pad, pad:-pad]

        lin = srgb_to_linear(x.clamp(0, 1))
        return linear_to_srgb(_per_image(lin, deblur).clamp(0, 1))
