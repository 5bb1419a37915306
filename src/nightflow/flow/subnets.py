"""Subnetworks that predict coupling/injector parameters (shift and raw scale). They need not be invertible.

The flow's own pieces live here (zero-initialised output conv, ActNorm hidden layers, the subnet builder); the
CBAM gates come from the shared layer library (:mod:`nightflow.layers.attention`).

Why zero-initialised output: every coupling starts as the identity (scale = sigmoid(2) + eps ≈ 0.88, shift 0
after the learned output gain), which keeps early training stable, as in Glow/SRFlow/LLFlow.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers.attention import CBAM, ChannelGate, SpatialGate
from .actnorm import ActNorm

SubnetKind = Literal["conv", "cbam", "cbam-local", "cbam-released"]
SUBNET_KINDS: tuple[str, ...] = ("conv", "cbam", "cbam-local", "cbam-released")
# "cbam-local": CBAM whose channel gate pools over LOCAL_POOL×LOCAL_POOL px (at the level's resolution) instead
# of the whole map, so the flow has no global statistic and tiles agree with the whole image
# "cbam-released": UPT-Flow's released NN_F: conv1×1 → conv3×3 → CBAM with an outer residual → zero conv 1×1
LOCAL_POOL = 15


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


class ConvSubnet(nn.Module):
    """conv3×3 → ReLU → conv1×1 → ReLU → zero conv3×3 (LLFlow's coupling net), optionally with CBAM before the end.

    ``cbam-released`` is UPT-Flow's released subnet instead: conv1×1 → ReLU → conv3×3 → ReLU → CBAM + input →
    zero conv 1×1 (the kernel order is the other way round, so the first layer is 9× smaller at 288 inputs)."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int, kind: SubnetKind = "conv"):
        super().__init__()
        if kind not in SUBNET_KINDS:
            raise ValueError(f"subnet kind must be one of {list(SUBNET_KINDS)}, got {kind!r}")
        if kind == "cbam-released":
            self.body = nn.Sequential(
                ConvNormAct(in_channels, hidden, 1), ConvNormAct(hidden, hidden, 3), CBAM(hidden)
            )
            self.out = ZeroConv2d(hidden, out_channels, kernel_size=1)
            return
        layers: list[nn.Module] = [ConvNormAct(in_channels, hidden, 3), ConvNormAct(hidden, hidden, 1)]
        if kind != "conv":
            layers += [ChannelGate(hidden, window=LOCAL_POOL if kind == "cbam-local" else 0), SpatialGate()]
        self.body = nn.Sequential(*layers)
        self.out = ZeroConv2d(hidden, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.body(x))
