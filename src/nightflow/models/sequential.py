"""Sequential learned cascade: a small low-light enhancement net at LR, then a small EDSR-like SR net.

Why: RELLISUR (Table 7) asks whether enhancing first and super-resolving second ("sequential") is worse than one
joint model. Here both stages live in one module so the zoo, the trainer and ``nightflow.load`` handle the cascade
like any model, but each stage is trained on *its own* task, as two separately trained published models would be:

    loss = w_e · L1(enh(lq), area↓(hq))  +  w_s · L1(sr(area↓(hq)), hq)

The SR net sees the clean area-downscaled target in training, never the enhancer's output, so the gradient of each
term reaches only its own network; at inference the cascade is ``sr(clamp(enh(lq)))`` (the clamp is the image
hand-off between two models). The reported ``"l1"`` is the cascade's L1 against the target, computed without
gradient: it is what evaluation sees, and it shows the train/test mismatch that the per-stage terms hide.
Sizes are chosen so the whole cascade matches the tiny LoLiSRFlow's parameters and FLOPs within about ±30 %.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..maps import color_ratio_map, histogram_equalize
from .regression import DeterministicRestorer, ResBlock, check_pair, pad_to_multiple


@dataclass
class EnhanceSpec:
    """The LR enhancement U-Net: level k runs at LR/2^k with ``channels[k]`` channels."""

    channels: list[int] = field(default_factory=lambda: [32, 64, 128])
    blocks: int = 2  # residual blocks per level on each side of the U (the bottleneck gets 2× as many)
    priors: bool = (
        True  # also feed the histogram-equalised copy and the colour-ratio map, as the MPCT encoder gets
    )


@dataclass
class SRSpec:
    """The EDSR-like SR net: ``blocks`` residual blocks at LR, pixel-shuffle ×2 stages, bilinear global skip."""

    channels: int = 64
    blocks: int = 8
    res_scale: float = 1.0


@dataclass
class SequentialConfig:
    """Enhancement net then SR net, each trained on its own task (L1), cascaded at inference."""

    kind: Literal["sequential"] = "sequential"  # which builder in nightflow.models.MODEL_KINDS rebuilds it
    name: str = "custom-sequential"
    description: str = ""
    task: str = "low-light enhancement, then super-resolution"
    scale: int = 2
    enhance: EnhanceSpec = field(default_factory=EnhanceSpec)
    sr: SRSpec = field(default_factory=SRSpec)
    enhance_weight: float = 1.0
    sr_weight: float = 1.0
    seed: int = 0  # initialisation seed

    def __post_init__(self) -> None:
        if self.scale not in (2, 4):
            raise ConfigError(
                f"a sequential cascade needs scale 2 or 4, got {self.scale}; at ×1 there is no SR stage "
                "(use an enhancement model, e.g. a regression or flow config with scale: 1)"
            )
        if not self.enhance.channels or any(c < 1 for c in self.enhance.channels):
            raise ConfigError(f"enhance.channels must be positive widths, got {self.enhance.channels}")
        if self.enhance.blocks < 0 or self.sr.blocks < 0 or self.sr.channels < 1:
            raise ConfigError("enhance.blocks and sr.blocks must be >= 0 and sr.channels >= 1")
        if self.enhance_weight <= 0 or self.sr_weight <= 0:
            raise ConfigError("enhance_weight and sr_weight must be > 0: each trains one of the two networks")


class GlobalContext(nn.Module):
    """Adds a per-image vector computed from the global mean of the features: exposure is a global property,
    and a small U-Net's receptive field does not see the whole frame."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels, 1)
        self.fc2 = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        g = x.mean(dim=(2, 3), keepdim=True)
        return x + self.fc2(F.leaky_relu(self.fc1(g), 0.2))


class EnhanceNet(nn.Module):
    """LR low-light → LR normal-light: a residual U-Net with a global-context bottleneck."""

    def __init__(self, spec: EnhanceSpec) -> None:
        super().__init__()
        ch = spec.channels
        self.priors = spec.priors
        self.stem = nn.Conv2d(9 if spec.priors else 3, ch[0], 3, padding=1)
        n = len(ch)
        self.enc = nn.ModuleList(nn.Sequential(*(ResBlock(c) for _ in range(spec.blocks))) for c in ch[:-1])
        self.down = nn.ModuleList(nn.Conv2d(ch[k], ch[k + 1], 3, stride=2, padding=1) for k in range(n - 1))
        self.bottleneck = nn.Sequential(
            *(ResBlock(ch[-1]) for _ in range(2 * spec.blocks)), GlobalContext(ch[-1])
        )
        self.up = nn.ModuleList(nn.Conv2d(ch[k + 1], ch[k], 1) for k in range(n - 1))
        self.dec = nn.ModuleList(nn.Sequential(*(ResBlock(c) for _ in range(spec.blocks))) for c in ch[:-1])
        self.out = nn.Conv2d(ch[0], 3, 3, padding=1)
        self.multiple = 2 ** (n - 1)

    def forward(self, lq: Tensor) -> Tensor:
        x = torch.cat([lq, histogram_equalize(lq), color_ratio_map(lq)], dim=1) if self.priors else lq
        y = F.leaky_relu(self.stem(x), 0.2)
        skips = []
        for enc, down in zip(self.enc, self.down):
            y = enc(y)
            skips.append(y)
            y = F.leaky_relu(down(y), 0.2)
        y = self.bottleneck(y)
        for k in range(len(skips) - 1, -1, -1):
            y = F.interpolate(self.up[k](y), size=skips[k].shape[-2:], mode="bilinear", align_corners=False)
            y = self.dec[k](y + skips[k])
        return self.out(y)


class SRNet(nn.Module):
    """EDSR-like ×scale SR: conv → residual blocks → conv (+ long skip) → pixel-shuffle ×2 stages → conv,
    added to the bilinear upsampling of the input (the net only learns the detail)."""

    def __init__(self, spec: SRSpec, scale: int) -> None:
        super().__init__()
        c = spec.channels
        self.scale = scale
        self.head = nn.Conv2d(3, c, 3, padding=1)
        self.body = nn.Sequential(*(ResBlock(c, spec.res_scale) for _ in range(spec.blocks)))
        self.body_out = nn.Conv2d(c, c, 3, padding=1)
        stages: list[nn.Module] = []
        for _ in range(scale.bit_length() - 1):
            stages += [nn.Conv2d(c, 4 * c, 3, padding=1), nn.PixelShuffle(2)]
        self.upsample = nn.Sequential(*stages)
        self.tail = nn.Conv2d(c, 3, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        f = self.head(x)
        f = f + self.body_out(self.body(f))
        base = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return base + self.tail(self.upsample(f))


class SequentialCascade(DeterministicRestorer):
    """sr(enh(lq)) at inference; each net trained on its own task (see the module docstring)."""

    def __init__(self, cfg: SequentialConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.scale = cfg.scale
        self.levels = len(cfg.enhance.channels)
        self.enhance = EnhanceNet(cfg.enhance)
        self.sr = SRNet(cfg.sr, cfg.scale)
        self.pad_multiple = self.enhance.multiple

    def _restore_padded(self, lq_p: Tensor, context: object = None) -> Tensor:
        return self.sr(self.enhance(lq_p).clamp(0.0, 1.0))

    def loss(self, batch: dict, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """{"enhance_l1", "sr_l1", "l1" (cascade, no gradient), "total"}; padding is excluded from every term.

        ``generator`` is accepted for the common interface; the loss draws nothing at random.
        """
        hq, lq = batch["hq"], batch["lq"]
        check_pair(hq, lq, self.scale)
        lq_p, (h, w) = pad_to_multiple(lq, self.pad_multiple)
        lr_target = F.avg_pool2d(hq, self.scale)  # exact area downscaling: hq is scale× lq
        enh = self.enhance(lq_p)[:, :, :h, :w]
        enhance_l1 = (enh - lr_target).abs().mean()
        sr_l1 = (self.sr(lr_target) - hq).abs().mean()
        with torch.no_grad():
            cascade_l1 = (self.sr(enh.detach().clamp(0.0, 1.0)) - hq).abs().mean()
        total = self.cfg.enhance_weight * enhance_l1 + self.cfg.sr_weight * sr_l1
        return {"enhance_l1": enhance_l1, "sr_l1": sr_l1, "l1": cascade_l1, "total": total}


def build_sequential(cfg: SequentialConfig) -> SequentialCascade:
    """Build a SequentialCascade with reproducible initial weights (seeded by ``cfg.seed``)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return SequentialCascade(cfg)
