"""SSFlow's conditional encoder: the orthogonal-channel-attention U-Net with filter-adaptive convolutions.

Structure as released (``../shared/reference/upstream-ssflow.md`` §2), widths ``channels`` = [c1, c2, c3, c4]
([32, 64, 128, 128] in the paper):
conv3×3 (3 → c1) on x + 1e-3 → [conv3×3 + PReLU, encoder block ↓] → orthogonal attention → pyramid pooling:
e1 (c2 @ ½) → encoder block ↓ + PPM: e2 (c3 @ ¼) → encoder block ↓ + PPM: e3 (c4 @ ⅛) → two middle blocks →
decoder block + FAC(kernels from e3): d3 (c4 @ ⅛) → ↑ block + FAC(e2): d2 (c3 @ ¼) → ↑ block + FAC(e1): d1
(c2 @ ½) → ↑ block + conv3×3 → ``out`` (3 @ 1/1, unconstrained: the flow's prior mean, squeezed).
The flow is conditioned on [d1, conv22(d2), conv33(d3)] (conv3×3 → ``cond_channels`` + leaky ReLU 0.2 on the two
coarse ones), finest first: 3 levels at ×1, exactly what SSFlow's CCD flow reads.

Left out of the released network because they never run: the histogram-equalised input copy (ignored by the
network), the side output, the unused OrthoNet-18 backbone, the curve layers and FFT attention (the weights
converter lists them). Our option: ``pooling: context`` takes the two global statistics (the orthogonal
attention's summary and the pyramid's bin-1 mean) from the whole-image thumbnail pass and turns pyramid bins
2, 3, 6 into local windows, so tiles and crops agree with the whole image (the released ``image`` pooling pools
each tile on its own: ``tileable`` is False then).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..config import check_literals
from ..context import AttentionStore, ImageContext, apply_gain, auto_log2_gain
from ..errors import ConfigError
from ..layers.attention import OrthogonalChannelAttention
from ..layers.fac import FilterAdaptiveConv
from ..layers.unet import (
    DecoderBlock,
    EncoderBlock,
    PyramidPooling,
    ResidualDownSample,
    ResidualUnit,
    ResidualUpSample,
)
from .base import Encoder, EncoderOutput


@dataclass
class OAttUNetConfig:
    """SSFlow encoder sizes. ``ortho_size``: side of the fixed Gram–Schmidt filters (features are pooled to it);
    ``pooling``: ``image`` (as released: pools each input itself) or ``context`` (global statistics from the
    whole-image thumbnail, local windows ``ppm_windows`` for the pyramid bins other than 1: tileable)."""

    channels: list[int] = field(default_factory=lambda: [32, 64, 128, 128])
    cond_channels: int = 64
    fac_kernel: int = 5
    fac_hidden_layers: int = 3
    ortho_size: int = 64
    ortho_reduction: int = 16
    ortho_norm: Literal["batch", "none"] = "batch"
    ppm_bins: list[int] = field(default_factory=lambda: [1, 2, 3, 6])
    pooling: Literal["image", "context"] = "image"
    ppm_windows: list[int] = field(default_factory=lambda: [15, 9, 5])
    # auto: the input is first brightened by the scene's auto exposure (context.auto_log2_gain of the whole
    # image's thumbnail, linear light), so the encoder works on a well-exposed signal whatever the darkness
    # (the network is near-linear in its input at init: a 10× darker input gives 10× weaker features); none: as
    # released
    input_gain: Literal["none", "auto"] = "none"

    def __post_init__(self) -> None:
        check_literals(self, "oatt_unet")
        if len(self.channels) != 4 or min(self.channels) < 1:
            raise ConfigError(
                f"oatt_unet: channels must be 4 positive widths [c1, c2, c3, c4], got {self.channels}"
            )
        if self.cond_channels < 1:
            raise ConfigError(f"oatt_unet: cond_channels must be >= 1, got {self.cond_channels}")
        if self.fac_kernel < 1 or self.fac_kernel % 2 == 0:
            raise ConfigError(f"oatt_unet: fac_kernel must be odd, got {self.fac_kernel}")
        if self.ortho_size**2 < self.channels[1]:
            raise ConfigError(
                f"oatt_unet: ortho_size {self.ortho_size} gives {self.ortho_size**2} dimensions, fewer than the "
                f"{self.channels[1]} orthonormal filters level 1 needs; raise ortho_size"
            )
        for c in self.channels[1:]:
            if c % len(self.ppm_bins):
                raise ConfigError(
                    f"oatt_unet: width {c} does not split into {len(self.ppm_bins)} pyramid bins"
                )
        if self.pooling == "context":
            if 1 not in self.ppm_bins:
                raise ConfigError(
                    "oatt_unet: context pooling takes bin 1 from the whole image; include bin 1"
                )
            if len(self.ppm_windows) != len(self.ppm_bins) - 1 or any(
                w % 2 == 0 or w < 1 for w in self.ppm_windows
            ):
                raise ConfigError(
                    f"oatt_unet: ppm_windows needs {len(self.ppm_bins) - 1} odd sizes (one per bin other than 1), "
                    f"got {self.ppm_windows}"
                )


class OAttUNetEncoder(Encoder):
    """LR image → SSFlow conditioning at ½, ¼, ⅛ + the full-resolution prior-mean image (×1 only)."""

    supported_scales = (1,)
    input_multiple = 8
    grid_multiple = 8  # three stride-2 blur-pools: features are shift-consistent on an 8 px grid
    # bundled ssflow-tiny on the CPU: 1.47x faster in channels_last (bench_optimizations layout_rows)
    channels_last_inference = True

    def __init__(self, cfg: OAttUNetConfig, scale: int, levels: int) -> None:
        super().__init__(scale, levels)  # ×1 only (supported_scales)
        if levels != 3:
            raise ConfigError(f"oatt_unet feeds exactly 3 flow levels (½, ¼, ⅛), got flow.levels {levels}")
        self.cfg = cfg
        c1, c2, c3, c4 = cfg.channels
        ctx = cfg.pooling == "context"
        windows = cfg.ppm_windows if ctx else None

        def ppm(c: int) -> PyramidPooling:
            return PyramidPooling(c, cfg.ppm_bins, cfg.pooling, windows)

        self.conv_first = nn.Conv2d(3, c1, 3, padding=1)
        self.e_stem = nn.Sequential(nn.Conv2d(c1, c1, 3, padding=1), nn.PReLU())
        self.e_block1 = EncoderBlock(c1, c2, down=True)
        self.ortho = OrthogonalChannelAttention(c2, cfg.ortho_size, cfg.ortho_reduction, cfg.ortho_norm)
        self.ppm1 = ppm(c2)
        self.e_block2 = EncoderBlock(c2, c3, down=True)
        self.ppm2 = ppm(c3)
        self.e_block3 = EncoderBlock(c3, c4, down=True)
        self.ppm3 = ppm(c4)
        self.m_block1 = EncoderBlock(c4)
        self.m_block2 = EncoderBlock(c4)
        self.d_block3 = DecoderBlock(c4)
        self.fac3 = FilterAdaptiveConv(c4, cfg.fac_kernel, cfg.fac_hidden_layers)
        self.d_block2 = DecoderBlock(c4, c3, up=True)
        self.fac2 = FilterAdaptiveConv(c3, cfg.fac_kernel, cfg.fac_hidden_layers)
        self.d_block1 = DecoderBlock(c3, c2, up=True)
        self.fac1 = FilterAdaptiveConv(c2, cfg.fac_kernel, cfg.fac_hidden_layers)
        self.d_block0 = DecoderBlock(c2, c1, up=True)
        self.out_conv = nn.Conv2d(c1, 3, 3, padding=1)
        self.conv22 = nn.Conv2d(c3, cfg.cond_channels, 3, padding=1)
        self.conv33 = nn.Conv2d(c4, cfg.cond_channels, 3, padding=1)
        self.out_channels = [c2, cfg.cond_channels, cfg.cond_channels]
        self._init_weights()
        # receptive field at ⅛ scale plus the local pyramid windows, measured on the bundled ssflow-tiny with
        # scripts/measure_tiling.py ssflow --tile 400 --crop 256: a crop edge moves the output < 1/255 beyond
        # 72 LR px (0.23/255 at 96); tiled vs whole at 400-px tiles: 0.03/255
        self.tile_margin = 96
        self.tileable = self.onnx_exportable = ctx  # ``image`` pooling adapts to every input's own size

    @torch.no_grad()
    def _init_weights(self) -> None:
        """He (fan-in) init for PReLU(0.25) on every conv, zero biases; FAC predictors start as the identity.
        Why: with PyTorch's default init each conv shrinks the signal (gain ~1/√3) and after the ~20 convs to ½
        scale the input barely reaches e1 (one-off probe during development); the released
        code trains 20k steps past that, a CPU budget cannot."""
        for mod in self.modules():
            if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(mod.weight, a=0.25, mode="fan_in", nonlinearity="leaky_relu")
                if mod.bias is not None:
                    mod.bias.zero_()
        # residual branches start small (Fixup-style), so each block is near its shortcut and the ~15 residual
        # sums on the way to the output do not compound (unscaled, the decoder's features grow block by block)
        for mod in self.modules():
            if isinstance(mod, (EncoderBlock, ResidualUnit)):
                branch = mod.body1 if isinstance(mod, EncoderBlock) else mod.body
                branch[-1].weight.mul_(0.1)
            elif isinstance(mod, (ResidualDownSample, ResidualUpSample)):
                mod.top[-1].weight.mul_(0.1)
        for fac in (self.fac1, self.fac2, self.fac3):
            fac.reset_to_identity()
        nn.init.normal_(self.out_conv.weight, 0.0, 1e-3)  # the prior mean starts near 0 (the flow's own init)

    @property
    def uses_context_pooling(self) -> bool:
        return self.cfg.pooling == "context"

    def _gained(self, lq: torch.Tensor, thumb: torch.Tensor) -> torch.Tensor:
        """``lq`` brightened by the auto exposure of the whole image whose thumbnail is ``thumb`` (input_gain)."""
        if self.cfg.input_gain == "none":
            return lq
        return apply_gain(lq, auto_log2_gain(thumb))

    def _encode(self, lq: torch.Tensor, store: AttentionStore | None) -> list[torch.Tensor]:
        """e1, e2, e3 (the encoder half); ``store``: the context pass's global statistics (context pooling)."""
        x = self.conv_first(lq + 1e-3)  # SSFlow: exp(log(max(x + 1e-3, 1e-3))) = x + 1e-3 for x >= 0
        x = self.e_block1(self.e_stem(x))
        e1 = self.ppm1(self.ortho(x, store), store)
        e2 = self.ppm2(self.e_block2(e1), store)
        e3 = self.ppm3(self.e_block3(e2), store)
        return [e1, e2, e3]

    def _context_pass(self, ctx: ImageContext, store: AttentionStore) -> None:
        """Context pooling: run the encoder half on the whole image's thumbnail, recording the orthogonal
        attention gate and the three pyramid means in call order (the image pass replays them)."""
        if self.uses_context_pooling:
            thumb = ctx.thumb.to(self.conv_first.weight.dtype)
            self._encode(self._gained(thumb, ctx.thumb), store)

    def forward(self, lq: torch.Tensor, context: ImageContext | None = None) -> EncoderOutput:
        self.check_input(lq)
        ctx = self.resolve_context(lq, context)
        store = AttentionStore(ctx.attention) if self.uses_context_pooling else None
        e1, e2, e3 = self._encode(self._gained(lq, ctx.thumb), store)
        x = self.m_block2(self.m_block1(e3))
        d3 = self.fac3(self.d_block3(x), e3)
        d2 = self.fac2(self.d_block2(d3), e2)
        d1 = self.fac1(self.d_block1(d2), e1)
        out = self.out_conv(self.d_block0(d1))
        features = [d1, F.leaky_relu(self.conv22(d2), 0.2), F.leaky_relu(self.conv33(d3), 0.2)]
        return EncoderOutput(features=features, color_map=out)
