"""Resampling: exact-size resize, 2×2 halving, and the pixel-(un)shuffle steps of the encoders and baselines.

Why one module: every encoder has to land its features on the exact flow-level grid whatever the input size,
and the ×2 steps (learned or not) are the same few layers everywhere.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resample ``x`` to exactly ``size``: area averaging when shrinking, bilinear when enlarging.

    Why: features must land on the exact level grid whatever the input size; area (not nearest) avoids
    aliasing when a block output is shrunk by 4 or 8.
    """
    h, w = x.shape[-2:]
    if (h, w) == tuple(size):
        return x
    if size[0] <= h and size[1] <= w:
        if h % size[0] == 0 and w % size[1] == 0:  # plain average pooling: cheaper and exports to ONNX
            return F.avg_pool2d(x, (h // size[0], w // size[1]))
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def halve(x: torch.Tensor) -> torch.Tensor:
    """2×2 average pooling to ⌈H/2⌉×⌈W/2⌉ (partial windows at odd edges average only real pixels)."""
    return F.avg_pool2d(x, kernel_size=2, stride=2, ceil_mode=True)


class PixelShuffleUp(nn.Module):
    """×2 upsampling keeping C: conv to 4·C channels, pixel shuffle, leaky ReLU (no transposed-conv
    checkerboard)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 4 * channels, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.shuffle(self.conv(x)), 0.2)


class PixelShuffleUpsampler(nn.Sequential):
    """×``factor`` (a power of two) keeping C: log2(factor) × (conv3×3 to 4·C → pixel shuffle), no activation
    (EDSR's upsampler; a ``Sequential``, so its parameters are ``0.*``, ``2.*``, …)."""

    def __init__(self, channels: int, factor: int) -> None:
        if factor < 1 or factor & (factor - 1):
            raise ValueError(f"pixel-shuffle upsampler: factor must be a power of two, got {factor}")
        stages: list[nn.Module] = []
        for _ in range(factor.bit_length() - 1):
            stages += [nn.Conv2d(channels, 4 * channels, 3, padding=1), nn.PixelShuffle(2)]
        super().__init__(*stages)


class UnshuffleDown(nn.Module):
    """C → 2C at half resolution: conv3×3 (no bias) to C/2, pixel-unshuffle (Restormer's downsample)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(dim, dim // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class ShuffleUp(nn.Module):
    """C → C/2 at double resolution: conv3×3 (no bias) to 2C, pixel-shuffle (Restormer's upsample)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(dim, 2 * dim, 3, padding=1, bias=False), nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)
