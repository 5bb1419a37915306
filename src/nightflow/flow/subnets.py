"""Subnetworks that predict coupling/injector parameters (shift and raw scale). They need not be invertible.

Why zero-initialised output: every coupling starts as the identity (scale = sigmoid(2) + eps ≈ 0.88, shift 0
after the learned output gain), which keeps early training stable, as in Glow/SRFlow/LLFlow.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .actnorm import ActNorm

SubnetKind = Literal["conv", "cbam"]


class ZeroConv2d(nn.Module):
    """3×3 conv initialised to zero, with a learned per-channel output gain exp(3·log_gain) (Glow's Conv2dZeros)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, gain_factor: float = 3.0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        self.log_gain = nn.Parameter(torch.zeros(1, out_channels, 1, 1))
        self.gain_factor = gain_factor

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x) * torch.exp(self.log_gain * self.gain_factor)


class ConvNormAct(nn.Module):
    """conv (no bias) → ActNorm → ReLU: the hidden layers of LLFlow's coupling subnets."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.norm = ActNorm(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.norm(self.conv(x))[0])


class ChannelGate(nn.Module):
    """CBAM channel attention: shared MLP on average- and max-pooled descriptors, sigmoid gate."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        mid = max(1, channels // reduction)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, mid, 1), nn.ReLU(inplace=True), nn.Conv2d(mid, channels, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        avg = self.mlp(F.adaptive_avg_pool2d(x, 1))
        mx = self.mlp(F.adaptive_max_pool2d(x, 1))
        return x * torch.sigmoid(avg + mx)


class SpatialGate(nn.Module):
    """CBAM spatial attention: 7×7 conv over channel-wise mean and max maps, sigmoid gate."""

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, x: Tensor) -> Tensor:
        desc = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(desc))


class ConvSubnet(nn.Module):
    """conv3×3 → ReLU → conv1×1 → ReLU → zero conv3×3 (LLFlow's coupling net), optionally with CBAM before the end."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int, kind: SubnetKind = "conv"):
        super().__init__()
        if kind not in ("conv", "cbam"):
            raise ValueError(f"subnet kind must be 'conv' or 'cbam', got {kind!r}")
        layers: list[nn.Module] = [ConvNormAct(in_channels, hidden, 3), ConvNormAct(hidden, hidden, 1)]
        if kind == "cbam":
            layers += [ChannelGate(hidden), SpatialGate()]
        self.body = nn.Sequential(*layers)
        self.out = ZeroConv2d(hidden, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.body(x))
