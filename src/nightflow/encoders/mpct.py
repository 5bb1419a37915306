"""LoLiSRFlow's encoder: a multi-resolution parallel cross-scale transformer (MPCT).

Why this shape: a dark, small input has to condition a flow that works on the *HR* grid. Parallel branches
at LR/1, LR/2, LR/4 (HRNet-style) keep fine detail and wide context at once; transformer blocks inside each
branch mix information (channel attention = global, window attention = local, both linear in pixels); repeated
cross-scale fusion lets every branch receive the resampled sum of the others. The features for flow level l
(HR/2^(l+1)) are then taken from the branch at that resolution, or pixel-shuffle-upsampled from the finest one
when the level is finer than the LR grid (×2, ×4).

Input: LR image (gained by the exposure in EV when ``exposure`` is on) + its histogram-equalised copy + its
colour-ratio map (+ log input if ``log_input``). Global parts (the HE table, the exposure gain, the channel-
attention maps) come from the whole-image context (``nightflow.context``), so tiles and crops agree.
Colour map: the input's colour-ratio map, upsampled to HR, corrected by a learned residual in log space
(zero-initialised, so at init the prediction *is* the upsampled input ratio), then a softmax over channels.
No code of the paper has been released; sizes here are our choices, documented in ``MPCTConfig``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..context import AttentionStore, ImageContext, apply_gain, apply_lut
from ..errors import ConfigError
from ..layers import ConvHead, FeatureLevels, PixelShuffleUp, TransformerBlock, halve, resize
from ..maps import color_ratio_map, log_input
from .base import Encoder, EncoderOutput
from .exposure import ExposureHead


@dataclass
class MPCTConfig:
    """MPCT sizes. Branch k runs at LR/2^k with ``dims[k]`` channels and ``heads[k]`` attention heads."""

    dims: list[int] = field(default_factory=lambda: [32, 64, 96])
    heads: list[int] = field(default_factory=lambda: [1, 2, 4])
    stages: int = 2  # rounds of (transformer blocks in every branch → cross-scale fusion)
    blocks: int = 1  # transformer blocks per branch per stage
    ffn_expansion: float = 2.0
    attention: Literal["channel", "window", "alternate"] = "channel"  # alternate: window, channel, window, …
    window: int = 8
    cond_channels: int = 64  # conditioning channels handed to every flow level
    log_input: bool = False  # also feed log(lq + 1e-3) (LLFlow's input domain)
    exposure: bool = False  # estimate an exposure gain from the whole image and apply it to the input

    def __post_init__(self) -> None:
        if not self.dims or len(self.dims) != len(self.heads):
            raise ConfigError(f"mpct: dims {self.dims} and heads {self.heads} must be equally long")
        for d, h in zip(self.dims, self.heads):
            if d < 1 or h < 1 or d % h:
                raise ConfigError(f"mpct: each dim must be a positive multiple of its heads, got {d}, {h}")
        for name in ("stages", "blocks", "window", "cond_channels"):
            if getattr(self, name) < 1:
                raise ConfigError(f"mpct: {name} must be >= 1, got {getattr(self, name)}")
        if self.ffn_expansion <= 0:
            raise ConfigError(f"mpct: ffn_expansion must be > 0, got {self.ffn_expansion}")


class CrossScaleFusion(nn.Module):
    """Every target branch i receives Σ_j resample(x_j): finer branches are 2×2-average-pooled then projected
    (1×1 conv), coarser ones projected then bilinearly upsampled; both run at the cheaper resolution."""

    def __init__(self, dims: list[int], targets: list[int]) -> None:
        super().__init__()
        self.targets = sorted(targets)
        pairs = [(j, i) for i in self.targets for j in range(len(dims)) if j != i]
        self.links = nn.ModuleDict({f"{j}_{i}": nn.Conv2d(dims[j], dims[i], 1) for j, i in pairs})

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        out = list(xs)
        for i in self.targets:
            acc = xs[i]
            for j, x in enumerate(xs):
                if j < i:
                    for _ in range(i - j):
                        x = halve(x)
                    acc = acc + self.links[f"{j}_{i}"](x)
                elif j > i:
                    acc = acc + resize(self.links[f"{j}_{i}"](x), xs[i].shape[-2:])
            out[i] = acc
        return out


class _Stage(nn.Module):
    """Transformer blocks in each branch, then one cross-scale fusion."""

    def __init__(self, cfg: MPCTConfig, first_block: int, targets: list[int]) -> None:
        super().__init__()
        self.branches = nn.ModuleList()
        for d, h in zip(cfg.dims, cfg.heads):
            blocks = []
            for b in range(cfg.blocks):
                kind = cfg.attention
                if kind == "alternate":
                    kind = "window" if (first_block + b) % 2 == 0 else "channel"
                blocks.append(TransformerBlock(d, h, cfg.ffn_expansion, kind, cfg.window))
            self.branches.append(nn.Sequential(*blocks))
        self.fusion = CrossScaleFusion(cfg.dims, targets)

    def forward(self, xs: list[torch.Tensor], store: AttentionStore | None = None) -> list[torch.Tensor]:
        out = []
        for branch, x in zip(self.branches, xs):
            for block in branch:
                x = block(x, store)
            out.append(x)
        return self.fusion(out)


class MPCTEncoder(Encoder):
    """LR image → conditioning features on the HR grid for each flow level + predicted HR colour-ratio map."""

    # bundled x1/x2 under bf16 autocast: within 1/255 of float32 (pytest -s tests/test_precision.py); the bundled
    # x4 is not (1.01/255), and its config turns bf16 off (ModelConfig.bf16_inference)
    bf16_inference = True
    # bundled x1/x2/x4 on the CPU in channels_last: 1.18x / 1.10x / 1.02x (bench_optimizations layout_rows)
    channels_last_inference = True

    def __init__(self, cfg: MPCTConfig, scale: int, levels: int) -> None:
        super().__init__(scale, levels)
        self.cfg = cfg
        dims, nb = cfg.dims, len(cfg.dims)
        # branch k runs at LR/2^k: tile origins on that grid, so a tile's coarse branches see the same pixel
        # grid as the whole image's (a 2 px offset at LR/4 changes every feature); any input size still works
        self.grid_multiple = 2 ** (nb - 1)
        in_ch = 12 if cfg.log_input else 9
        d0 = dims[0]
        self.stem = nn.Sequential(
            nn.Conv2d(in_ch, d0, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(d0, d0, 3, padding=1)
        )
        self.down = nn.ModuleList(
            nn.Conv2d(dims[k - 1], dims[k], 3, stride=2, padding=1) for k in range(1, nb)
        )

        # Where each level's features come from (layers.FeatureLevels): the finest branch after learned
        # pixel-shuffle ×2 steps (levels finer than LR), a branch as it is, or the coarsest branch 2×2-average
        # pooled (levels coarser than the last branch). Only the branches read are fused in the last stage.
        self.level_map = FeatureLevels(scale, levels, scales=nb)
        needed = self.level_map.used_scales
        self.stages = nn.ModuleList(
            _Stage(cfg, s * cfg.blocks, needed if s == cfg.stages - 1 else list(range(nb)))
            for s in range(cfg.stages)
        )
        self.ups = nn.ModuleList(PixelShuffleUp(dims[0]) for _ in range(self.level_map.n_up))

        src_ch = [dims[src.scale] for src in self.level_map.sources]
        cond = cfg.cond_channels
        self.heads = nn.ModuleList(ConvHead(c, cond) for c in src_ch)
        self.out_channels = [cond] * levels
        # colour residual from the level-0 source (HR/2) to HR by pixel shuffle; zero init = input ratio
        self.color_head = nn.Conv2d(src_ch[0], 12, 3, padding=1)
        nn.init.zeros_(self.color_head.weight)
        nn.init.zeros_(self.color_head.bias)
        if cfg.exposure:
            self.exposure_head = ExposureHead()

    def _inputs(self, lq: torch.Tensor, ctx: ImageContext) -> tuple[torch.Tensor, torch.Tensor]:
        cr = color_ratio_map(lq)
        shown = lq if ctx.log2_gain is None else apply_gain(lq, ctx.log2_gain)
        parts = [shown, apply_lut(lq, ctx.he_lut), cr]
        if self.cfg.log_input:
            parts.append(log_input(shown))
        return torch.cat(parts, dim=1), cr

    def _trunk(self, x: torch.Tensor, store: AttentionStore) -> list[torch.Tensor]:
        xs = [self.stem(x)]
        for conv in self.down:
            xs.append(conv(F.leaky_relu(xs[-1], 0.2)))
        for stage in self.stages:
            xs = stage(xs, store)
        return xs

    def _context_pass(self, ctx: ImageContext, store: AttentionStore) -> None:
        """Run the trunk on the thumbnail (with the same gain and HE table) to record the channel-attention
        maps; the window attention is local and the thumbnail's features are not used otherwise."""
        if self.cfg.attention == "window":
            return
        x, _ = self._inputs(ctx.thumb, ctx)
        self._trunk(x, store)

    def forward(self, lq: torch.Tensor, context: ImageContext | None = None) -> EncoderOutput:
        self.check_input(lq)
        ctx = self.resolve_context(lq, context)
        x, cr = self._inputs(lq, ctx)
        xs = self._trunk(x, AttentionStore(ctx.attention))
        sources = self.level_map(xs, up=lambda y, i: self.ups[i](y))  # down steps: halve
        features = [head(y) for head, y in zip(self.heads, sources)]

        hr = (self.scale * lq.shape[-2], self.scale * lq.shape[-1])
        prior = torch.log(resize(cr, hr).clamp_min(0.0) + 1e-4)
        delta = F.pixel_shuffle(self.color_head(sources[0]), 2)
        color_map = torch.softmax(prior + delta, dim=1)
        return EncoderOutput(features=features, color_map=color_map)
