"""The residual U-Net blocks of LEDNet/SSFlow's encoder: blur-pool, residual down/up-sampling, encoder and decoder
blocks, pyramid pooling.

Why blur-pool: a stride-2 binomial [1,2,1]²/16 filter before decimation keeps the features shift-stable (the
aliasing of strided convs makes them depend on where a crop or tile starts). All PReLUs have one parameter.
Pyramid pooling pools the map itself (bins 1, 2, 3, 6, as released) or, with ``pooling="context"``, takes the
global (bin 1) statistic from the whole-image context pass (``AttentionStore``) and replaces the other bins by
local average windows, so tiles and crops see what the whole image sees (``nightflow.context``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from ..context import AttentionStore


class BlurPool(nn.Module):
    """Depthwise [1,2,1]ᵀ[1,2,1]/16 filter, reflect padding 1, stride 2 (buffer ``filt``, C×1×3×3)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        a = torch.tensor([1.0, 2.0, 1.0])
        filt = (a[:, None] * a[None, :]) / 16.0
        self.register_buffer("filt", filt.expand(channels, 1, 3, 3).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(
            F.pad(x, (1, 1, 1, 1), mode="reflect"), self.filt.to(x.dtype), stride=2, groups=x.shape[1]
        )


class ResidualDownSample(nn.Module):
    """½ size, C → C_out: (1×1, PReLU, 3×3, PReLU, blur-pool, 1×1) + (blur-pool, 1×1), bias-free."""

    def __init__(self, channels: int, out_channels: int) -> None:
        super().__init__()
        c = channels
        self.top = nn.Sequential(
            nn.Conv2d(c, c, 1, bias=False),
            nn.PReLU(),
            nn.Conv2d(c, c, 3, padding=1, bias=False),
            nn.PReLU(),
            BlurPool(c),
            nn.Conv2d(c, out_channels, 1, bias=False),
        )
        self.bot = nn.Sequential(BlurPool(c), nn.Conv2d(c, out_channels, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.top(x) + self.bot(x)


class ResidualUpSample(nn.Module):
    """2× size, C → C_out: (1×1, PReLU, 3×3 transposed stride 2, PReLU, 1×1) + (bilinear ×2, 1×1), bias-free."""

    def __init__(self, channels: int, out_channels: int) -> None:
        super().__init__()
        c = channels
        self.top = nn.Sequential(
            nn.Conv2d(c, c, 1, bias=False),
            nn.PReLU(),
            nn.ConvTranspose2d(c, c, 3, stride=2, padding=1, output_padding=1, bias=False),
            nn.PReLU(),
            nn.Conv2d(c, out_channels, 1, bias=False),
        )
        self.bot = nn.Conv2d(c, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return self.top(x) + self.bot(up)


class EncoderBlock(nn.Module):
    """y = body2(x + body1(x)), then (``down``) a residual ½ step to ``out_channels``."""

    def __init__(self, channels: int, out_channels: int | None = None, down: bool = False) -> None:
        super().__init__()
        c = channels
        self.body1 = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.PReLU(), nn.Conv2d(c, c, 3, padding=1))
        self.body2 = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.PReLU())
        if not down and out_channels not in (None, channels):
            raise ValueError("EncoderBlock: a block without down-sampling keeps its channel count")
        self.down = ResidualDownSample(c, out_channels or c) if down else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body2(x + self.body1(x))
        return y if self.down is None else self.down(y)


class ResidualUnit(nn.Module):
    """x + conv3×3 → PReLU → conv3×3."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.PReLU(), nn.Conv2d(c, c, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class DecoderBlock(nn.Module):
    """(``up``: a residual 2× step to ``out_channels``) then two residual units."""

    def __init__(self, channels: int, out_channels: int | None = None, up: bool = False) -> None:
        super().__init__()
        out = out_channels or channels
        if not up and out != channels:
            raise ValueError("DecoderBlock: a block without up-sampling keeps its channel count")
        self.up = ResidualUpSample(channels, out) if up else None
        self.res1, self.res2 = ResidualUnit(out), ResidualUnit(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.up is not None:
            x = self.up(x)
        return self.res2(self.res1(x))


class PyramidPooling(nn.Module):
    """PSPNet pyramid pooling: x ⊕ [pool(bin) → 1×1 (C → C/4) → PReLU → upsample] per bin → 3×3 (2C → C) → PReLU.

    ``pooling="image"``: adaptive pools of the map itself (bins as given; global, so not tileable).
    ``pooling="context"``: the bin-1 (global mean) statistic comes from the whole-image context pass through
    ``store``; every other bin is a stride-1 local average over ``windows[i]`` px (replicate edges).
    """

    def __init__(
        self,
        channels: int,
        bins: list[int],
        pooling: str = "image",
        windows: list[int] | None = None,
    ) -> None:
        super().__init__()
        if channels % len(bins):
            raise ValueError(f"pyramid pooling: {channels} channels do not split into {len(bins)} bins")
        branch = channels // len(bins)
        self.bins, self.pooling = list(bins), pooling
        if pooling == "context":
            locals_ = [b for b in bins if b != 1]
            if windows is None or len(windows) != len(locals_) or any(w < 1 or w % 2 == 0 for w in windows):
                raise ValueError(
                    f"pyramid pooling: context mode needs {len(locals_)} odd windows, got {windows}"
                )
        self.windows = list(windows or [])
        self.features = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, branch, 1, bias=False), nn.PReLU()) for _ in bins
        )
        self.bottleneck = nn.Sequential(
            nn.Conv2d(channels + branch * len(bins), channels, 3, padding=1, bias=False), nn.PReLU()
        )

    def forward(self, x: torch.Tensor, store: AttentionStore | None = None) -> torch.Tensor:
        h, w = x.shape[-2:]
        outs = [x]
        local = iter(self.windows)
        for b, branch in zip(self.bins, self.features):
            if self.pooling == "image":
                pooled = branch(F.adaptive_avg_pool2d(x, b))
                outs.append(F.interpolate(pooled, size=(h, w), mode="bilinear", align_corners=True))
            elif b == 1:
                if store is None:
                    raise ValueError("pyramid pooling in context mode needs the whole-image context store")
                mean = store.take(lambda: x.float().mean(dim=(2, 3), keepdim=True))
                outs.append(branch(mean.to(x.dtype)).expand(-1, -1, h, w))
            else:
                win = next(local)
                r = win // 2
                avg = F.avg_pool2d(F.pad(x, (r, r, r, r), mode="replicate"), win, stride=1)
                outs.append(branch(avg))
        return self.bottleneck(torch.cat(outs, dim=1))
