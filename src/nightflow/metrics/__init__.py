"""Image-quality metrics with the field's conventions named explicitly so numbers compare with papers.

Every function takes N×3×H×W (or 3×H×W) tensors in [0, 1], or H×W×3 uint8/uint16/float numpy arrays, and
returns one value per image; :func:`compute_metrics` is what ``nightflow eval`` calls. LPIPS and NIQE read
their weights from the cache that ``python -m nightflow.metrics.assets`` fills.
"""

from __future__ import annotations

from .cache import cache_dir
from .gtmean import gt_mean_rescale
from .lpips import LPIPS, lpips
from .niqe import niqe
from .psnr import lr_psnr, psnr
from .registry import METRICS, compute_metrics, list_metrics
from .resize import imresize
from .ssim import ssim

__all__ = [
    "LPIPS",
    "METRICS",
    "cache_dir",
    "compute_metrics",
    "gt_mean_rescale",
    "imresize",
    "list_metrics",
    "lpips",
    "lr_psnr",
    "niqe",
    "psnr",
    "ssim",
]
