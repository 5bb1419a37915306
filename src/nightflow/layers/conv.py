"""Convolutional blocks: per-pixel LayerNorm, EDSR's residual block, the conditioning head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of each pixel (N×C×H×W), as transformer blocks on images need."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # one fused kernel on a channels-last view: ~4× faster on CPU than mean/var/scale by hand; the shape
        # comes from the weight (a constant), so the ONNX exporter does not see a traced size
        y = F.layer_norm(x.permute(0, 2, 3, 1), self.weight.shape, self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


class ResBlock(nn.Module):
    """conv3×3 → leaky ReLU → conv3×3, added back with ``res_scale`` (EDSR's block, no batch norm)."""

    def __init__(self, channels: int, res_scale: float = 1.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res_scale * self.conv2(F.leaky_relu(self.conv1(x), 0.2))


class ConvHead(nn.Sequential):
    """conv3×3 → leaky ReLU(0.2) → conv1×1: the per-level conditioning head of the MPCT and MSFormer
    encoders (a ``Sequential``, so its parameters are ``0.*`` and ``2.*`` as they always were)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(out_channels, out_channels, 1),
        )
