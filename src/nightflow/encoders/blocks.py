"""Convolutional building blocks shared by the encoders: norms, resampling, residual dense blocks, upsamplers.

Why here: RRDB (LLFlow) and the MPCT heads both need exact-size resampling and ×2 upsampling; keeping them in
one small module makes the two encoders differ only in what they are, not in plumbing.
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


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3×3 convs (growth ``gc``), residual scaled by 0.2: ESRGAN/LLFlow's RDB."""

    def __init__(self, nf: int, gc: int, res_scale: float = 0.2) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(nf + i * gc, gc, 3, padding=1) for i in range(4))
        self.last = nn.Conv2d(nf + 4 * gc, nf, 3, padding=1)
        self.res_scale = res_scale
        for conv in [*self.convs, self.last]:  # small init keeps the deep residual stack near identity
            nn.init.kaiming_normal_(conv.weight, a=0.0, mode="fan_in")
            conv.weight.data.mul_(0.1)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for conv in self.convs:
            feats.append(F.leaky_relu(conv(torch.cat(feats, dim=1)), 0.2))
        return x + self.res_scale * self.last(torch.cat(feats, dim=1))


class RRDB(nn.Module):
    """Residual-in-residual dense block: three RDBs, outer residual scaled by 0.2."""

    def __init__(self, nf: int, gc: int, res_scale: float = 0.2) -> None:
        super().__init__()
        self.body = nn.Sequential(*(ResidualDenseBlock(nf, gc, res_scale) for _ in range(3)))
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res_scale * self.body(x)


class PixelShuffleUp(nn.Module):
    """×2 upsampling: conv to 4·C channels, pixel shuffle, leaky ReLU (no transposed-conv checkerboard)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 4 * channels, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.shuffle(self.conv(x)), 0.2)
