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

``layout: released`` (:meth:`MSFormerConfig.released`, what ``nightflow convert --arch uptflow`` builds) is
the authors' network op for op instead: each level runs a run of global blocks and a run of Uformer LeWin
blocks (``layers.lewin``: shifted windows, relative-position bias, LeFF + ECA) side by side and sums them,
level 2's local run reads the global run's output, the skips carry the global outputs only, the map (repeated
to the width) goes through the same learned down/up convs as the features, and flow level l gets the decoder
output at its size concatenated with the refined full-size map resized bilinearly (192 + 96 = 288 channels at
dim 48). Its global attention is computed on the image itself (no context replay), so it is not tileable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..config import check_literals
from ..context import AttentionStore, ImageContext, apply_gain
from ..errors import ConfigError
from ..layers import (
    ConvHead,
    FeatureLevels,
    LayerNorm2d,
    LevelSource,
    LeWinBlock,
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
    # "released": the authors' wiring and blocks (module docstring; :meth:`released`); "nightflow": ours
    layout: Literal["nightflow", "released"] = "nightflow"
    # released layout only: heads of the seven LeWin runs (encoder 1-3, bottleneck, decoder 3-1)
    local_heads: list[int] = field(default_factory=list)

    @classmethod
    def released(
        cls,
        dim: int = 48,
        window: int = 5,
        blocks: list[int] | None = None,
        refine_blocks: int = 2,
        heads: list[int] | None = None,
        local_heads: list[int] | None = None,
    ) -> MSFormerConfig:
        """The released MSFormer (``Lowlight_Encoder.py`` defaults: dim 48, window 5 for LOL, 8 for the other
        sets); conditioning is the decoder's 4·dim plus the refined 2·dim channels."""
        return cls(
            dim=dim,
            heads=list(heads or [2, 2, 4, 8]),
            blocks=list(blocks or [2, 2, 2, 2]),
            refine_blocks=refine_blocks,
            ffn_expansion=2.66,
            window=window,
            cond_channels=6 * dim,
            exposure=False,
            layout="released",
            local_heads=list(local_heads or [1, 2, 4, 8, 8, 4, 2]),
        )

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
        check_literals(self, "msformer")
        if self.layout == "released":
            self._check_released()
        elif self.local_heads:
            raise ConfigError("msformer: local_heads is only read by layout 'released'")

    def _check_released(self) -> None:
        if self.depth != 4 or len(self.local_heads) != 7:
            raise ConfigError(
                f"msformer layout 'released': 4 levels and 7 local_heads, got heads {self.heads} and "
                f"local_heads {self.local_heads}"
            )
        d = self.dim
        widths = [d, 2 * d, 4 * d, 8 * d, 4 * d, 4 * d, 2 * d]
        for w, h in zip(widths, self.local_heads):
            if h < 1 or w % h:
                raise ConfigError(
                    f"msformer layout 'released': local width {w} is not divisible by heads {h}"
                )
        if (4 * d) % self.heads[1]:
            raise ConfigError(
                f"msformer layout 'released': width {4 * d} is not divisible by heads {self.heads[1]}"
            )
        if self.cond_channels != 6 * d:
            raise ConfigError(
                f"msformer layout 'released': cond_channels is 4·dim + 2·dim = {6 * d}, got {self.cond_channels}"
            )
        if self.exposure or self.guide != "upm":
            raise ConfigError("msformer layout 'released': no exposure head, guide 'upm' (as released)")

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


def _run(blocks: nn.ModuleList, x: torch.Tensor, guide: torch.Tensor | None = None) -> torch.Tensor:
    for block in blocks:
        x = block(x) if guide is None else block(x, guide)
    return x


class _ReleasedUNet(nn.Module):
    """The released MSFormer's U-Net (``layout: released``): padded image and map → (fea_up0, fea_up1,
    fea_up2, cat_f), the decoder outputs at H/8, H/4, H/2 and the refined full-size map."""

    def __init__(self, cfg: MSFormerConfig) -> None:
        super().__init__()
        d, gh, lh, nb = cfg.dim, cfg.heads, cfg.local_heads, cfg.blocks
        self.dim = d

        def glob(width: int, heads: int, n: int) -> nn.ModuleList:
            return nn.ModuleList(
                TransformerBlock(width, heads, cfg.ffn_expansion, "channel", hidden_rounding="floor")
                for _ in range(n)
            )

        def local(width: int, heads: int, n: int) -> nn.ModuleList:
            return nn.ModuleList(
                LeWinBlock(width, heads, cfg.window, 0 if i % 2 == 0 else cfg.window // 2) for i in range(n)
            )

        self.embed = nn.Conv2d(3, d, 3, padding=1, bias=False)
        self.enc_glob = nn.ModuleList(glob(d * 2**k, gh[k], nb[k]) for k in range(3))
        self.enc_local = nn.ModuleList(local(d * 2**k, lh[k], nb[k]) for k in range(3))
        self.down = nn.ModuleList(UnshuffleDown(d * 2**k) for k in range(3))
        self.latent_glob = glob(8 * d, gh[3], nb[3])
        self.latent_local = local(8 * d, lh[3], nb[3])
        self.reduce_latent = nn.Conv2d(8 * d, 4 * d, 1, bias=False)
        # decoder stage j = 0, 1, 2 runs at H/4, H/2, H with 4d, 4d, 2d channels
        self.up = nn.ModuleList(ShuffleUp(w) for w in (8 * d, 4 * d, 4 * d))
        self.reduce = nn.ModuleList(
            nn.Conv2d(a, b, 1, bias=False) for a, b in ((8 * d, 4 * d), (4 * d, 4 * d), (3 * d, 2 * d))
        )
        widths, dec_blocks = (4 * d, 4 * d, 2 * d), (nb[2], nb[1], nb[0])
        self.dec_glob = nn.ModuleList(
            glob(w, gh[2 - j], n) for j, (w, n) in enumerate(zip(widths, dec_blocks))
        )
        self.dec_local = nn.ModuleList(
            local(w, lh[4 + j], n) for j, (w, n) in enumerate(zip(widths, dec_blocks))
        )
        self.refine = glob(2 * d, gh[0], cfg.refine_blocks)

    def forward(self, img: torch.Tensor, upm: torch.Tensor) -> list[torch.Tensor]:
        pe = self.embed(img)
        m = upm.repeat(1, self.dim, 1, 1)
        skips = []
        x, inp = pe, pe
        for k in range(3):
            if k:
                inp, m = self.down[k - 1](x), self.down[k - 1](m)
            e = _run(self.enc_glob[k], inp)
            skips.append(e)
            # level 2's local run reads the global run's output; levels 1 and 3 read the level input
            x = e + _run(self.enc_local[k], e if k == 1 else inp, m)
        inp, m = self.down[2](x), self.down[2](m)
        x = _run(self.latent_glob, inp) + _run(self.latent_local, inp, m)
        out = [self.reduce_latent(x)]
        for j in range(3):
            m = self.up[j](m)
            if j == 1:
                m = m.repeat(1, 2, 1, 1)  # the map's 2d channels repeated to the decoder's 4d
            inp = self.reduce[j](torch.cat([self.up[j](x), skips[2 - j]], dim=1))
            x = _run(self.dec_glob[j], inp) + _run(self.dec_local[j], inp, m)
            out.append(x)
        out[-1] = _run(self.refine, x)
        return out


class MSFormerEncoder(Encoder):
    """LR image → one conditioning map per flow level (no colour map: UPT-Flow uses a zero-mean prior)."""

    # the architecture is bf16-safe (the first bundled uptflow-tiny weights: 0.67/255 from float32 under bf16
    # autocast); the weights of December 2026's third round move 1.15/255, so their config turns it off
    # (ModelConfig.bf16_inference; pytest -s tests/test_precision.py)
    bf16_inference = True
    # bundled uptflow-tiny on the CPU: 2.4x faster in channels_last (bench_optimizations layout_rows)
    channels_last_inference = True

    def __init__(self, cfg: MSFormerConfig, scale: int, levels: int) -> None:
        super().__init__(scale, levels)
        if cfg.dim % 2:
            raise ConfigError(f"msformer: dim must be even (pixel-unshuffle halves it), got {cfg.dim}")
        self.cfg = cfg
        if cfg.layout == "released":
            if scale != 1 or levels != 3:
                raise ConfigError(
                    f"msformer layout 'released' feeds a ×1 flow of 3 levels, got ×{scale} with {levels}"
                )
            self.unet_multiple = self.grid_multiple = 8  # the windows pad themselves; 3 pixel-unshuffles
            self.released_unet = _ReleasedUNet(cfg)
            self.out_channels = [cfg.cond_channels] * levels
            self.tileable = False  # global attention on the image itself, as released
            self.onnx_exportable = False  # the shifted windows' region mask is built from the input size
            return
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
        if self.cfg.layout == "released":
            return  # the release computes its channel attention on the image itself
        self._pyramid(self._pad(ctx.thumb), ctx, store)

    def _released(self, lq: torch.Tensor) -> EncoderOutput:
        """fea_up2, fea_up1, fea_up0 (flow levels 0, 1, 2), each with the refined map resized bilinearly to it
        and concatenated after it (as released), cropped to the input's level sizes."""
        padded = self._pad(lq)
        f0, f1, f2, refined = self.released_unet(padded, unbalanced_point_map(padded))
        feats = []
        for y, (h, w) in zip((f2, f1, f0), self.level_sizes(*lq.shape[-2:])):
            up = F.interpolate(refined, size=y.shape[-2:], mode="bilinear", align_corners=False)
            feats.append(torch.cat([y, up], dim=1)[..., :h, :w])
        return EncoderOutput(features=feats, color_map=None)

    def forward(self, lq: torch.Tensor, context: ImageContext | None = None) -> EncoderOutput:
        self.check_input(lq)
        ctx = self.resolve_context(lq, context)
        if self.cfg.layout == "released":
            return self._released(lq)
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
