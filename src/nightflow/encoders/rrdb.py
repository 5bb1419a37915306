"""LLFlow's conditional encoder ("ConEncoder"): RRDB trunk on log input, HE copy, colour and noise maps.

Why: this is the baseline every low-light flow compares against. Faithful parts: 12-channel input
(log(x+1e-3), HE copy, colour map C = x/(Σx+1e-4), noise map of C), conv → lrelu → conv → max-pool 2 → nb
RRDBs → conv + skip, levels below the trunk made by "bilinear ½ + conv", selected RRDB block outputs resized
and concatenated onto every level (64 + 4·64 = 320 channels for the large net, 32 + 32 = 64 for the small
one), colour head (upsample, 1×1 conv, sigmoid).
Our changes: (1) for ×2/×4 the max-pool is dropped (the trunk runs on the LR grid, already ≤ HR/2) and levels
finer than the trunk are made by "nearest ×2 + conv" (×4 needs one such stage); (2) the colour head upsamples
bilinearly to HR and the sigmoid output is normalised to sum to 1 over channels (the prior mean is a colour
*ratio*); (3) block outputs are resized with area/bilinear instead of nearest; (4) the colour map fed to
the first conv is that of x (the release: of x + 1e-3) and the noise map replicates the border (the release pads
with zeros); (5) the HE table comes from the whole image's 48 px thumbnail (the release: ``cv2.equalizeHist`` of
the whole full-size 8-bit image); (6) the release's in-place leaky ReLU also activates the level feature
that feeds the next down step.
Each change has a config switch that restores the release (``RRDBConfig.released()``: what ``nightflow convert
--arch llflow`` writes, equal to the official network to float precision; ``docs/checkpoints.md``); the
defaults keep nightflow's behaviour and state-dict keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..config import check_literals
from ..context import ImageContext, apply_lut, histogram_lut
from ..errors import ConfigError
from ..layers import RRDB, FeatureLevels, resize
from ..maps import color_ratio_map, log_input, noise_map
from .base import Encoder, EncoderOutput


@dataclass
class RRDBConfig:
    """ConEncoder sizes: ``nf`` trunk channels, ``nb`` RRDBs of growth ``gc``; outputs of the RRDBs listed in
    ``stack_blocks`` (0-based) are concatenated onto every level, so each level has nf·(1+len(stack_blocks))
    channels."""

    nf: int = 64
    nb: int = 24
    gc: int = 32
    stack_blocks: list[int] = field(default_factory=lambda: [1, 3, 5, 7])
    # the released LLFlow's choices (RRDBConfig.released() sets them all; the defaults are nightflow's):
    # input maps: "released" = colour map of exp(log input) = x + 1e-3 and zero-padded noise-map borders
    input_maps: Literal["nightflow", "released"] = "nightflow"
    # HE table: of the 48 px thumbnail (tiles and training crops agree) or of the whole full-size image rounded
    # to 8 bits as cv2.equalizeHist (the release; whole-image only: ONNX export then refuses)
    he_lut: Literal["thumbnail", "image"] = "thumbnail"
    # stacked block outputs onto the levels: area/bilinear, or nearest (the release)
    stack_resize: Literal["area", "nearest"] = "area"
    # colour head: bilinear to HR, sigmoid, normalised to sum 1 ("ratio"); or nearest ×s, 1×1 conv, sigmoid,
    # unnormalised (the release's fine_tune_color_map)
    color_head: Literal["ratio", "released"] = "ratio"
    # the release's in-place leaky ReLU (ConEncoder1: ``fea = self.lrelu(fea_down4)``, inplace=True): a level
    # feature that feeds the next down step reaches the flow activated too (the trunk part, not the stacked one)
    level_lrelu: bool = False

    @classmethod
    def released(cls, **sizes) -> RRDBConfig:
        """The configuration that computes what the released LLFlow ConEncoder1 computes."""
        return cls(
            **sizes,
            input_maps="released",
            he_lut="image",
            stack_resize="nearest",
            color_head="released",
            level_lrelu=True,
        )

    def __post_init__(self) -> None:
        check_literals(self, "rrdb")
        for name in ("nf", "nb", "gc"):
            if getattr(self, name) < 1:
                raise ConfigError(f"rrdb: {name} must be >= 1, got {getattr(self, name)}")
        bad = [b for b in self.stack_blocks if not 0 <= b < self.nb]
        if bad:
            last = self.nb - 1
            raise ConfigError(f"rrdb: stack_blocks {bad} out of range for nb={self.nb}; use 0..{last}")


class RRDBEncoder(Encoder):
    """LR image → LLFlow-style conditioning features per flow level + predicted HR colour-ratio map."""

    # llflow-small at 400×600 on the CPU: 1.27x over the folded NCHW twin (python -m benchmarks.bench_llflow_official)
    channels_last_inference = True

    def __init__(self, cfg: RRDBConfig, scale: int, levels: int) -> None:
        super().__init__(scale, levels)
        self.cfg = cfg
        nf = cfg.nf
        self.conv_first = nn.Conv2d(12, nf, 3, padding=1)
        self.conv_second = nn.Conv2d(nf, nf, 3, padding=1)
        self.trunk = nn.ModuleList(RRDB(nf, cfg.gc) for _ in range(cfg.nb))
        self.trunk_conv = nn.Conv2d(nf, nf, 3, padding=1)
        # one trunk grid: LR/2 for ×1 (max-pool), LR for ×2 and ×4 (HR/2 for ×1 and ×2, HR/4 for ×4); finer
        # levels by learned up steps, coarser ones by learned down steps (layers.FeatureLevels)
        self.level_map = FeatureLevels(scale, levels, scales=1, stride=2 if scale == 1 else 1)
        self.ups = nn.ModuleList(nn.Conv2d(nf, nf, 3, padding=1) for _ in range(self.level_map.n_up))
        self.downs = nn.ModuleList(nn.Conv2d(nf, nf, 3, padding=1) for _ in range(self.level_map.n_down))
        self.color_head = nn.Conv2d(nf, 3, 1)
        self.out_channels = [nf * (1 + len(cfg.stack_blocks))] * levels
        # the HE table of the full image is computed outside the ONNX graph's inputs (lq, thumb)
        self.onnx_exportable = cfg.he_lut == "thumbnail"

    def he_table(self, lq: torch.Tensor | None, thumb: torch.Tensor) -> torch.Tensor:
        """``he_lut: image``: the table of the whole image ``lq`` (when given: the context of a whole image),
        rounded to 8 bits as ``cv2.equalizeHist``; else (and for training crops) that of the thumbnail."""
        if self.cfg.he_lut == "image" and lq is not None:
            return torch.round(histogram_lut(lq.float()) * 255.0) / 255.0
        return super().he_table(lq, thumb)

    def _inputs(self, lq: torch.Tensor, ctx: ImageContext) -> torch.Tensor:
        he = apply_lut(lq, ctx.he_lut)  # the whole image's HE table (LLFlow equalises the whole image too)
        logx = log_input(lq)
        if self.cfg.input_maps == "released":  # ConEncoder1: maps of exp(log input) = x + 1e-3, zero borders
            cmap = color_ratio_map(logx.exp())
            return torch.cat([logx, he, cmap, noise_map(cmap, border="zeros")], dim=1)
        cmap = color_ratio_map(lq)
        return torch.cat([logx, he, cmap, noise_map(cmap)], dim=1)

    def _stack(self, concat: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if self.cfg.stack_resize == "nearest":
            return concat if tuple(concat.shape[-2:]) == tuple(size) else F.interpolate(concat, size=size)
        return resize(concat, size)

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

        # finer levels: nearest ×2 + conv; coarser: area ½ + conv; lrelu between consecutive steps; the
        # stacked block outputs are resized onto every level and concatenated
        def up(y: torch.Tensor, i: int) -> torch.Tensor:
            src = y if i == 0 else F.leaky_relu(y, 0.2)
            return self.ups[i](F.interpolate(src, scale_factor=2, mode="nearest"))

        def down(y: torch.Tensor, i: int) -> torch.Tensor:
            src = y if i == 0 else F.leaky_relu(y, 0.2)
            return self.downs[i](resize(src, ((src.shape[-2] + 1) // 2, (src.shape[-1] + 1) // 2)))

        concat = torch.cat(stacked, dim=1) if stacked else None
        extra = None if concat is None else (lambda src, size: self._stack(concat, size))
        features = self.level_map([base], up=up, down=down, extra=extra)
        if self.cfg.level_lrelu:
            nf, last = self.cfg.nf, self.level_map.n_down
            features = [
                torch.cat([F.leaky_relu(f[:, :nf], 0.2), f[:, nf:]], dim=1) if 1 <= src.down < last else f
                for f, src in zip(features, self.level_map.sources)
            ]

        hr = (self.scale * lq.shape[-2], self.scale * lq.shape[-1])
        if (
            self.cfg.color_head == "released"
        ):  # fine_tune_color_map(nearest ×2 of fea_down2): no normalisation
            return EncoderOutput(
                features=features, color_map=torch.sigmoid(self.color_head(F.interpolate(base, size=hr)))
            )
        color = torch.sigmoid(resize(self.color_head(base), hr))  # 1×1 conv commutes with the resize
        color_map = color / color.sum(dim=1, keepdim=True)
        return EncoderOutput(features=features, color_map=color_map)
