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

import functools
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..layers import GlobalContext, PixelShuffleUpsampler, ResBlock
from ..losses import ForwardOutputs, LossSet, LossSpec, check_losses, upgrade_loss_weights, weighted
from ..maps import color_ratio_map, histogram_equalize
from .regression import DeterministicRestorer
from .sizes import check_pair, pad_to_multiple


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
    # training loss (nightflow.losses): each net on its own task; the cascade's l1 at weight 0 is logged only
    losses: list[LossSpec] = field(
        default_factory=lambda: [LossSpec("enhance_l1", 1.0), LossSpec("sr_l1", 1.0), LossSpec("l1", 0.0)]
    )
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
        check_losses(self.losses, SEQUENTIAL_OUTPUTS, "sequential")
        if not weighted(self.losses, "enhance_l1", "l1") or not weighted(self.losses, "sr_l1", "l1"):
            raise ConfigError(
                "losses: each of the two networks needs a term with a weight > 0: enhance_l1 trains the "
                "enhancement net, sr_l1 the SR net (l1, the cascade's, trains both end to end)"
            )

    @staticmethod
    def upgrade_config(data, path=""):
        """Stored configs from before ``losses`` (``enhance_weight``, ``sr_weight``): the retired keys become
        the equivalent ``losses`` list (``nightflow.config.from_dict`` calls this)."""
        return upgrade_loss_weights(data, path, SEQUENTIAL_LEGACY_LOSSES)


# what a SequentialCascade computes for its loss terms (nightflow.losses.ForwardOutputs fields)
SEQUENTIAL_OUTPUTS = ("enhanced", "enhance_target", "sr_of_target", "prediction", "target")
# the retired weight keys → losses (term, key, default, kept at weight 0): what the hard-wired loss computed
SEQUENTIAL_LEGACY_LOSSES = (
    ("enhance_l1", "enhance_weight", 1.0, True),
    ("sr_l1", "sr_weight", 1.0, True),
    ("l1", None, 0.0, True),
)


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
        self.upsample = PixelShuffleUpsampler(c, scale)
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
        """The terms of ``cfg.losses``, by default {"enhance_l1", "sr_l1", "l1" (cascade, weight 0: logged
        without gradient), "total"}; padding is excluded from every term.

        ``generator`` is accepted for the common interface; the loss draws nothing at random.
        """
        return LossSet(self.cfg.losses)(self.loss_outputs(batch), batch)

    def loss_outputs(self, batch: dict, generator: torch.Generator | None = None) -> ForwardOutputs:
        """What the loss terms read (``nightflow.losses.ForwardOutputs``), each computed on first use:
        ``enhanced`` (the enhancement net's LR output), ``enhance_target`` (area-downscaled hq),
        ``sr_of_target`` (the SR net on that clean target), ``prediction`` (the cascade ``sr(clamp(enh))``;
        with gradient only when a weighted term reads it) and ``target`` (= hq)."""
        lq, hq = batch["lq"], batch.get("hq")
        if hq is not None:
            check_pair(hq, lq, self.scale)
        lq_p, (h, w) = pad_to_multiple(lq, self.pad_multiple)
        # exact area downscaling: hq is scale× lq
        lr_target = functools.cache(lambda: F.avg_pool2d(batch["hq"], self.scale))
        enhanced = functools.cache(lambda: self.enhance(lq_p)[:, :, :h, :w])
        return ForwardOutputs(
            batch,
            {
                "enhanced": enhanced,
                "enhance_target": lr_target,
                "sr_of_target": lambda: self.sr(lr_target()),
                "prediction": lambda: self.sr(enhanced().clamp(0.0, 1.0)),
                "target": lambda: batch["hq"],
            },
        )


def build_sequential(cfg: SequentialConfig) -> SequentialCascade:
    """Build a SequentialCascade with reproducible initial weights (seeded by ``cfg.seed``)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return SequentialCascade(cfg)
