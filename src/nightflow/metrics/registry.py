"""Named metrics for ``nightflow eval`` and ``nightflow benchmark``: one name = one fixed convention.

Why: a column called "SSIM" is meaningless across papers; every name here pins the convention, and
``list_metrics()`` gives the one-line description that reports should print next to the numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import UserError
from ..registry import Registry
from ._convert import as_batch
from .gtmean import gt_mean_rescale
from .lpips import lpips
from .niqe import niqe
from .psnr import lr_psnr, psnr
from .ssim import ssim


@dataclass(frozen=True)
class Metric:
    """A metric with its convention fixed; ``fn(pred, gt, crop_border, scale)`` returns per-image values."""

    description: str
    fn: Callable[..., torch.Tensor]
    full_reference: bool = True  # needs the ground truth
    higher_is_better: bool = True
    gt_mean: bool = True  # gets a ``_gtmean`` column when GT-mean rescaling is asked for


def _fr(func: Callable[..., torch.Tensor], **kw: object) -> Callable[..., torch.Tensor]:
    def run(pred: torch.Tensor, gt: torch.Tensor, crop_border: int, scale: int) -> torch.Tensor:
        return func(pred, gt, crop_border=crop_border, **kw)

    return run


def _niqe(channel: str) -> Callable[..., torch.Tensor]:
    def run(pred: torch.Tensor, gt: torch.Tensor | None, crop_border: int, scale: int) -> torch.Tensor:
        return niqe(pred, channel=channel, crop_border=crop_border)

    return run


def _ev_error(pred: torch.Tensor, gt: torch.Tensor, crop_border: int, scale: int) -> torch.Tensor:
    from ..context import oracle_log2_gain

    return oracle_log2_gain(pred, gt).abs()


def _lr_psnr(pred: torch.Tensor, gt: torch.Tensor, crop_border: int, scale: int) -> torch.Tensor:
    return lr_psnr(pred, gt, scale)


# name → Metric; a new metric is its function plus one line here
METRICS: Registry[Metric] = Registry("metric")
METRICS.add("psnr", Metric("PSNR (dB) on RGB, skimage convention", _fr(psnr)))
METRICS.add("psnr_y", Metric("PSNR (dB) on Y of YCbCr (BT.601), BasicSR convention", _fr(psnr, channel="y")))
METRICS.add("ssim", Metric("SSIM, skimage convention (7x7 uniform window), RGB channels averaged", _fr(ssim)))
METRICS.add(
    "ssim_skimage_gray",
    Metric(
        "SSIM, skimage convention (7x7 uniform window) on BT.601 grey (LLFlow/SSFlow)",
        _fr(ssim, channel="gray"),
    ),
)
METRICS.add(
    "ssim_matlab_y",
    Metric(
        "SSIM, MATLAB/BasicSR convention (11x11 Gaussian, sigma 1.5) on Y of YCbCr",
        _fr(ssim, convention="matlab", channel="y"),
    ),
)
METRICS.add(
    "ssim_matlab_rgb",
    Metric(
        "SSIM, MATLAB/BasicSR convention (11x11 Gaussian, sigma 1.5), RGB channels averaged",
        _fr(ssim, convention="matlab", channel="rgb"),
    ),
)
METRICS.add(
    "ssim_pyiqa",
    Metric(
        "SSIM as IQA-PyTorch computes it: MATLAB convention on 8-bit BT.601 grey",
        _fr(ssim, convention="matlab", channel="gray", quantize=True),
    ),
)
METRICS.add(
    "lpips", Metric("LPIPS v0.1, AlexNet backbone (lower is better)", _fr(lpips), higher_is_better=False)
)
METRICS.add(
    "lpips_vgg",
    Metric("LPIPS v0.1, VGG16 backbone (lower is better)", _fr(lpips, net="vgg"), higher_is_better=False),
)
METRICS.add(
    "niqe",
    Metric(
        "NIQE, official MATLAB release (rgb2gray, 96x96 blocks; lower is better; no reference)",
        _niqe("gray"),
        full_reference=False,
        higher_is_better=False,
        gt_mean=False,
    ),
)
METRICS.add(
    "niqe_y",
    Metric(
        "NIQE on Y of YCbCr, BasicSR default (lower is better; no reference)",
        _niqe("y"),
        full_reference=False,
        higher_is_better=False,
        gt_mean=False,
    ),
)
METRICS.add(
    "lr_psnr",
    Metric(
        "LR-PSNR (dB): output and GT both downscaled by the scale with MATLAB bicubic",
        _lr_psnr,
        gt_mean=False,
    ),
)
METRICS.add(
    "ev_error",
    Metric(
        "exposure error |log2(mean luminance of output / of GT)| in EV, linear light (lower is better)",
        _ev_error,
        higher_is_better=False,
        gt_mean=False,
    ),
)


def list_metrics() -> dict[str, str]:
    """Metric name → one-line description of its convention."""
    return {name: m.description for name, m in METRICS.items()}


def _parse(names: list[str] | str) -> list[str]:
    if isinstance(names, str):
        names = names.split(",")
    out = [n.strip().lower() for n in names if n.strip()]
    unknown = [n for n in out if n not in METRICS]
    if unknown:
        raise UserError(f"unknown metric '{unknown[0]}'; choose from {', '.join(METRICS)}")
    if not out:
        raise UserError(f"no metric named; choose from {', '.join(METRICS)}")
    return out


def compute_metrics(
    pred: torch.Tensor | np.ndarray,
    gt: torch.Tensor | np.ndarray | None,
    names: list[str] | str,
    *,
    crop_border: int = 0,
    gt_mean: bool = False,
    gt_mean_variant: str = "bt601",
    scale: int = 1,
) -> dict[str, float]:
    """Mean over the batch of each named metric; ``gt_mean`` adds ``<name>_gtmean`` for full-reference ones.

    ``names``: a list or a comma-separated string of :data:`METRICS` keys. ``gt`` may be None when only
    no-reference metrics (NIQE) are asked for. ``scale`` is used by ``lr_psnr`` only.
    """
    wanted = _parse(names)
    p = as_batch(pred, "prediction")
    g = as_batch(gt, "ground truth").to(p.device) if gt is not None else None
    needs_gt = [n for n in wanted if METRICS[n].full_reference]
    if needs_gt and g is None:
        raise UserError(f"metric '{needs_gt[0]}' needs ground truth; use niqe for unpaired data")
    rescaled = gt_mean_rescale(p, g, variant=gt_mean_variant) if gt_mean and g is not None else None
    results: dict[str, float] = {}
    for name in wanted:
        metric = METRICS[name]
        results[name] = float(metric.fn(p, g, crop_border, scale).mean())
        if rescaled is not None and metric.full_reference and metric.gt_mean:
            results[f"{name}_gtmean"] = float(metric.fn(rescaled, g, crop_border, scale).mean())
    return results
