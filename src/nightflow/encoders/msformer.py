"""UPT-Flow's encoder: MSFormer, a U-shaped multi-scale transformer guided by the unbalanced-point map.

Why this shape: the flow wants conditioning at H/2, H/4 and H/8; a 4-level U-Net (Restormer-style pixel-(un)
shuffle resampling, skip connections) gives exactly that pyramid with wide context at the bottom. Every level
block sums two branches on the same input:
- global: a channel-attention transformer block with gated FFN (the layer library's ``TransformerBlock``);
  its C×C maps summarise the whole image, so they come from the whole-image context (``nightflow.context``);
- local: window attention whose queries and keys come from the unbalanced-point map (UPM, 1 = every channel
  share > 0.1) resampled to the level (area average, then a small conv embedding), values from the features:
  pixels gather from neighbours of similar colour balance, which is where low-light colour casts differ.
Refinement blocks at full resolution follow the decoder. Flow level l (HR/2^(l+1)) reads the decoder level at
its resolution concatenated with the area-pooled refinement output (pixel-shuffle upsampled for ×2, ×4).

Sizes and tiling: any input size (padded by replication to the U-Net's multiple 2^(depth−1), cropped back).
Windows are anchored at the image origin at every level, so a tile only sees the same windows as the whole
image when its origin is a multiple of window·2^(depth−1) LR pixels: that is ``grid_multiple`` (64 px at the
paper's window 8), coarser than the downsampling alone (8 px).
Departures from the released code (``../shared/reference/upstream-uptflow.md``): one window size per model,
no shifted windows, the map is embedded per level rather than passed through the feature convs, the skip
connections carry the summed block output, both branches run in parallel at every level.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..context import AttentionStore, ImageContext, apply_gain
from ..errors import ConfigError
from ..layers import (
    ConvHead,
    FeatureLevels,
    LayerNorm2d,
    LevelSource,
    PixelShuffleUp,
    ShuffleUp,
    TransformerBlock,
    UnshuffleDown,
    WindowAttention,
    halve,
)
from ..maps import unbalanced_point_map
from .base import Encoder, EncoderOutput
from .exposure import ExposureHead


@dataclass
class MSFormerConfig:
    """MSFormer sizes. Level k runs at LR/2^k with dim·2^k channels (the decoder's level 0 at 2·dim, as in
    Restormer); ``blocks[k]`` level blocks per encoder level (mirrored in the decoder), ``heads[k]`` heads."""

    dim: int = 48
    heads: list[int] = field(default_factory=lambda: [2, 2, 4, 8])
    blocks: list[int] = field(default_factory=lambda: [2, 2, 2, 2])
    refine_blocks: int = 2
    ffn_expansion: float = 2.66
    window: int = 8
    guide_channels: int = 16  # channels of the embedded unbalanced-point map that gives queries and keys
    # where the local branch's queries and keys come from: the unbalanced-point map (UPT-Flow), or the image
    # features themselves (ordinary window attention: the ablation that asks whether the prior helps)
    guide: Literal["upm", "features"] = "upm"
    cond_channels: int = 288  # conditioning channels handed to every flow level (upstream: 192 + 96)
    exposure: bool = False  # estimate an exposure gain from the whole image and apply it to the input

    def __post_init__(self) -> None:
        if len(self.heads) < 2 or len(self.heads) != len(self.blocks):
            raise ConfigError(
                f"msformer: heads {self.heads} and blocks {self.blocks} must be equally long (≥ 2 levels)"
            )
        for k, h in enumerate(self.heads):
            if h < 1 or (self.dim * 2**k) % h or (k == 0 and (2 * self.dim) % h):
                raise ConfigError(
                    f"msformer: level {k} width {self.dim * 2**k} is not divisible by heads {h}"
                )
        for name in ("dim", "window", "guide_channels", "cond_channels"):
            if getattr(self, name) < 1:
                raise ConfigError(f"msformer: {name} must be >= 1, got {getattr(self, name)}")
        if any(b < 1 for b in self.blocks) or self.refine_blocks < 0:
            raise ConfigError("msformer: blocks must be >= 1 and refine_blocks >= 0")
        if self.ffn_expansion <= 0:
            raise ConfigError(f"msformer: ffn_expansion must be > 0, got {self.ffn_expansion}")

    @property
    def depth(self) -> int:
        return len(self.heads)


class _LevelBlock(nn.Module):
    """Global branch (channel-attention transformer block) + local branch (UPM-guided window attention)."""

    def __init__(self, dim: int, heads: int, cfg: MSFormerConfig) -> None:
        super().__init__()
        self.glob = TransformerBlock(dim, heads, cfg.ffn_expansion, "channel")
        self.norm = LayerNorm2d(dim)
        guided = cfg.guide == "upm"
        self.local = WindowAttention(
            dim, heads, cfg.window, guide_channels=cfg.guide_channels if guided else 0
        )

    def forward(self, x: torch.Tensor, guide: torch.Tensor | None, store: AttentionStore) -> torch.Tensor:
        return self.glob(x, store) + self.local(self.norm(x), guide=guide)


class _Level(nn.Module):
    """A run of level blocks sharing one guide embedding of the map at this resolution."""

    def __init__(self, dim: int, heads: int, n: int, cfg: MSFormerConfig) -> None:
        super().__init__()
        self.guide = (
            nn.Sequential(nn.Conv2d(1, cfg.guide_channels, 3, padding=1), nn.GELU())
            if cfg.guide == "upm"
            else None
        )
        self.blocks = nn.ModuleList(_LevelBlock(dim, heads, cfg) for _ in range(n))

    def forward(self, x: torch.Tensor, upm: torch.Tensor, store: AttentionStore) -> torch.Tensor:
        guide = self.guide(upm) if self.guide is not None else None
        for block in self.blocks:
            x = block(x, guide, store)
        return x


class MSFormerEncoder(Encoder):
    """LR image → one conditioning map per flow level (no colour map: UPT-Flow uses a zero-mean prior)."""

    def __init__(self, cfg: MSFormerConfig, scale: int, levels: int) -> None:
        super().__init__(scale, levels)
        if cfg.dim % 2:
            raise ConfigError(f"msformer: dim must be even (pixel-unshuffle halves it), got {cfg.dim}")
        self.cfg = cfg
        depth, d = cfg.depth, cfg.dim
        self.unet_multiple = 2 ** (depth - 1)
        # windows are anchored at the origin of every level: tiles must start on the coarsest level's windows
        self.grid_multiple = cfg.window * self.unet_multiple
        widths = [d * 2**k for k in range(depth)]
        self.embed = nn.Conv2d(3, d, 3, padding=1, bias=False)
        self.enc = nn.ModuleList(
            _Level(widths[k], cfg.heads[k], cfg.blocks[k], cfg) for k in range(depth - 1)
        )
        self.down = nn.ModuleList(UnshuffleDown(widths[k]) for k in range(depth - 1))
        self.latent = _Level(widths[-1], cfg.heads[-1], cfg.blocks[-1], cfg)
        self.up = nn.ModuleList(ShuffleUp(widths[k + 1]) for k in range(depth - 1))
        # decoder level k (k ≥ 1): concat skip → 1×1 reduce to widths[k]; level 0 keeps 2·dim (Restormer)
        self.reduce = nn.ModuleList(
            nn.Conv2d(2 * widths[k], widths[k], 1, bias=False) for k in range(1, depth - 1)
        )
        self.dec = nn.ModuleList(
            _Level(2 * d if k == 0 else widths[k], cfg.heads[k], cfg.blocks[k], cfg) for k in range(depth - 1)
        )
        self.refine = _Level(2 * d, cfg.heads[0], cfg.refine_blocks, cfg) if cfg.refine_blocks else None
        pyramid = [2 * d] + widths[1:-1] + [widths[-1]]  # channels of the decoder output at LR/2^k

        # flow level l sits at LR/2^k with k = l + 1 − log2(s) (layers.FeatureLevels over the decoder's
        # pyramid); k < 0: the refined map upsampled −k times; k > 0: concatenated with the refined map pooled
        self.level_map = FeatureLevels(scale, levels, scales=depth)
        self.ups = nn.ModuleList(PixelShuffleUp(2 * d) for _ in range(self.level_map.n_up))
        cond = cfg.cond_channels
        src = [2 * d if s.k <= 0 else pyramid[s.scale] + 2 * d for s in self.level_map.sources]
        self.heads = nn.ModuleList(ConvHead(c, cond) for c in src)
        self.out_channels = [cond] * levels
        if cfg.exposure:
            self.exposure_head = ExposureHead()

    def _pyramid(self, lq: torch.Tensor, ctx: ImageContext, store: AttentionStore) -> list[torch.Tensor]:
        """Decoder outputs at LR/2^k, k = 0 … depth−1 (level 0 refined), for an input already padded."""
        upm = [unbalanced_point_map(lq)]  # from the un-gained input: the map is a property of the capture
        for _ in range(self.cfg.depth - 1):
            upm.append(halve(upm[-1]))
        x = lq if ctx.log2_gain is None else apply_gain(lq, ctx.log2_gain)
        x = self.embed(x)
        skips = []
        for k, (level, down) in enumerate(zip(self.enc, self.down)):
            x = level(x, upm[k], store)
            skips.append(x)
            x = down(x)
        x = self.latent(x, upm[-1], store)
        out = [x]
        for k in reversed(range(self.cfg.depth - 1)):
            x = torch.cat([self.up[k](x), skips[k]], dim=1)
            if k > 0:
                x = self.reduce[k - 1](x)
            x = self.dec[k](x, upm[k], store)
            out.insert(0, x)
        if self.refine is not None:
            out[0] = self.refine(out[0], upm[0], store)
        return out

    def _pad(self, lq: torch.Tensor) -> torch.Tensor:
        m = self.unet_multiple
        ph, pw = (-lq.shape[-2]) % m, (-lq.shape[-1]) % m
        return F.pad(lq, (0, pw, 0, ph), mode="replicate") if ph or pw else lq

    def _context_pass(self, ctx: ImageContext, store: AttentionStore) -> None:
        """Run the whole U-Net on the (gained) thumbnail to record every channel-attention map in call order;
        the image pass replays them, so tiles and crops use the whole image's global statistics."""
        self._pyramid(self._pad(ctx.thumb), ctx, store)

    def forward(self, lq: torch.Tensor, context: ImageContext | None = None) -> EncoderOutput:
        self.check_input(lq)
        ctx = self.resolve_context(lq, context)
        h, w = lq.shape[-2:]
        pyr = self._pyramid(self._pad(lq), ctx, AttentionStore(ctx.attention))

        def refined(src: LevelSource, size: tuple[int, int]) -> torch.Tensor | None:
            # coarser levels also get the refined level-0 map, pooled by 2^k in one step (k halvings would
            # weight odd edges differently and round differently); finer levels are the refined map itself
            return F.avg_pool2d(pyr[0], 2**src.k, ceil_mode=True) if src.k > 0 else None

        # the padded maps are pooled (so partial blocks at odd edges average real and replicated pixels exactly
        # as the whole image does), then cropped to each level's size; the up chain starts from the crop
        sources = self.level_map(
            pyr, up=lambda y, i: self.ups[i](y), extra=refined, lr_size=(h, w), crop=True
        )  # down steps: halve
        return EncoderOutput(features=[head(y) for head, y in zip(self.heads, sources)], color_map=None)
