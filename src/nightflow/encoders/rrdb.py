"""LLFlow's conditional encoder ("ConEncoder"): RRDB trunk on log input, HE copy, colour and noise maps.

Why: this is the baseline every low-light flow compares against. Faithful parts: 12-channel input
(log(x+1e-3), HE copy, colour map C = x/(Σx+1e-4), noise map of C), conv → lrelu → conv → max-pool 2 → nb
RRDBs → conv + skip, levels below the trunk made by "bilinear ½ + conv", selected RRDB block outputs resized
and concatenated onto every level (64 + 4·64 = 320 channels for the large net, 32 + 32 = 64 for the small
one), colour head (upsample, 1×1 conv, sigmoid).
Our changes: (1) for ×2/×4 the max-pool is dropped (the trunk runs on the LR grid, already ≤ HR/2) and levels
finer than the trunk are made by "nearest ×2 + conv" (×4 needs one such stage); (2) the colour head upsamples
bilinearly to HR and the sigmoid output is normalised to sum to 1 over channels (the prior mean is a colour
*ratio*); (3) block outputs are resized with area/bilinear instead of nearest.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..context import ImageContext, apply_lut
from ..errors import ConfigError
from ..maps import color_ratio_map, log_input, noise_map
from .base import Encoder, EncoderOutput
from .blocks import RRDB, resize


@dataclass
class RRDBConfig:
    """ConEncoder sizes: ``nf`` trunk channels, ``nb`` RRDBs of growth ``gc``; outputs of the RRDBs listed in
    ``stack_blocks`` (0-based) are concatenated onto every level, so each level has nf·(1+len(stack_blocks))
    channels."""

    nf: int = 64
    nb: int = 24
    gc: int = 32
    stack_blocks: list[int] = field(default_factory=lambda: [1, 3, 5, 7])

    def __post_init__(self) -> None:
        for name in ("nf", "nb", "gc"):
            if getattr(self, name) < 1:
                raise ConfigError(f"rrdb: {name} must be >= 1, got {getattr(self, name)}")
        bad = [b for b in self.stack_blocks if not 0 <= b < self.nb]
        if bad:
            last = self.nb - 1
            raise ConfigError(f"rrdb: stack_blocks {bad} out of range for nb={self.nb}; use 0..{last}")

    @classmethod
    def llflow(cls) -> RRDBConfig:
        """LLFlow large as released (LOL config): nf 64, nb 24, gc 32, blocks [1,3,5,7] → 320 channels."""
        return cls(nf=64, nb=24, gc=32, stack_blocks=[1, 3, 5, 7])

    @classmethod
    def llflow_small(cls) -> RRDBConfig:
        """LLFlow small as released: nf 32, nb 4, gc 32, block [1] → 64 channels."""
        return cls(nf=32, nb=4, gc=32, stack_blocks=[1])

    @classmethod
    def tiny(cls) -> RRDBConfig:
        """CPU-trainable size for tests and quick runs: nf 32, nb 2, gc 16, block [1] → 64 channels."""
        return cls(nf=32, nb=2, gc=16, stack_blocks=[1])


class RRDBEncoder(Encoder):
    """LR image → LLFlow-style conditioning features per flow level + predicted HR colour-ratio map."""

    def __init__(self, cfg: RRDBConfig, scale: int, levels: int) -> None:
        super().__init__(scale, levels)
        self.cfg = cfg
        nf = cfg.nf
        self.conv_first = nn.Conv2d(12, nf, 3, padding=1)
        self.conv_second = nn.Conv2d(nf, nf, 3, padding=1)
        self.trunk = nn.ModuleList(RRDB(nf, cfg.gc) for _ in range(cfg.nb))
        self.trunk_conv = nn.Conv2d(nf, nf, 3, padding=1)
        # trunk grid relative to HR, as a power of two: HR/2 for ×1 (max-pool) and ×2, HR/4 for ×4
        self.trunk_exp = -1 if scale <= 2 else -(scale.bit_length() - 1)
        offsets = [-(l + 1) - self.trunk_exp for l in range(levels)]
        self.n_up = max(0, max(offsets))
        self.n_down = max(0, -min(offsets))
        self.ups = nn.ModuleList(nn.Conv2d(nf, nf, 3, padding=1) for _ in range(self.n_up))
        self.downs = nn.ModuleList(nn.Conv2d(nf, nf, 3, padding=1) for _ in range(self.n_down))
        self.offsets = offsets
        self.color_head = nn.Conv2d(nf, 3, 1)
        self.out_channels = [nf * (1 + len(cfg.stack_blocks))] * levels

    def _inputs(self, lq: torch.Tensor, ctx: ImageContext) -> torch.Tensor:
        cmap = color_ratio_map(lq)
        he = apply_lut(lq, ctx.he_lut)  # the whole image's HE table (LLFlow equalises the whole image too)
        return torch.cat([log_input(lq), he, cmap, noise_map(cmap)], dim=1)

    def forward(self, lq: torch.Tensor, context: ImageContext | None = None) -> EncoderOutput:
        self.check_input(lq)
        ctx = self.resolve_context(lq, context)
        fea = self.conv_second(F.leaky_relu(self.conv_first(self._inputs(lq, ctx)), 0.2))
        head = F.max_pool2d(fea, 2) if self.scale == 1 else fea
        x = head
        stacked = []
        for idx, block in enumerate(self.trunk):
            x = block(x)
            if idx in self.cfg.stack_blocks:
                stacked.append(x)
        base = head + self.trunk_conv(x)

        # finer levels: nearest ×2 + conv; coarser: bilinear ½ + conv; lrelu between consecutive stages
        by_offset = {0: base}
        y = base
        for i, conv in enumerate(self.ups):
            y = conv(F.interpolate(y if i == 0 else F.leaky_relu(y, 0.2), scale_factor=2, mode="nearest"))
            by_offset[i + 1] = y
        y = base
        for i, conv in enumerate(self.downs):
            src = y if i == 0 else F.leaky_relu(y, 0.2)
            y = conv(resize(src, ((src.shape[-2] + 1) // 2, (src.shape[-1] + 1) // 2)))
            by_offset[-(i + 1)] = y

        sizes = self.level_sizes(lq.shape[-2], lq.shape[-1])
        concat = torch.cat(stacked, dim=1) if stacked else None
        features = []
        for off, size in zip(self.offsets, sizes):
            f = by_offset[off]
            if concat is not None:
                f = torch.cat([f, resize(concat, size)], dim=1)
            features.append(f)

        hr = (self.scale * lq.shape[-2], self.scale * lq.shape[-1])
        color = torch.sigmoid(resize(self.color_head(base), hr))  # 1×1 conv commutes with the resize
        color_map = color / color.sum(dim=1, keepdim=True)
        return EncoderOutput(features=features, color_map=color_map)
