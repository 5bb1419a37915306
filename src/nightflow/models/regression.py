"""Joint regression baseline: the tiny LoLiSRFlow's MPCT encoder + a convolutional upsampling head, trained with L1.

Why: LoLiSRFlow's claim is that a *flow* beats plain regression on joint low-light enhancement + SR. To test it on
our data the regressor must differ from the flow only in what replaces the flow: it reuses the very same encoder
(same config, same per-level features on the HR grid, same predicted colour-ratio map) and spends roughly the
flow's parameter and FLOP budget on a decoder (coarse → fine fusion of the level features, residual blocks, a
pixel-shuffle ×2 to the HR grid, the colour map as an extra input of the last conv).

It honours the FlowRestorer contract where it makes sense (``scale``, ``levels``, ``pad_multiple``, ``loss``,
``restore``, ``sample``, ``initialize``), so the zoo, the trainer, tiled inference and ``nightflow.load`` treat it
like a flow. A regression model has no distribution: ``restore`` ignores the temperature and ``sample`` returns
identical copies. The contract's sampling and init methods here are shared with :mod:`nightflow.models.sequential`;
the layers (residual block, pixel-shuffle ×2, resize) come from :mod:`nightflow.layers`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import check_literals
from ..context import ImageContext
from ..encoders import (
    DEFAULT_ENCODER,
    EncoderConfig,
    build_encoder,
    encoder_config_field,
    parse_encoder_config,
)
from ..errors import ConfigError
from ..layers import PixelShuffleUp, ResBlock, resize
from ..losses import ForwardOutputs, LossSet, LossSpec, check_losses, upgrade_loss_weights, weighted
from .base import SAMPLE_TEMPERATURE, SizeSpec, TilingSpec, copies, tiling_for
from .sizes import check_pair, crop_to, pad_to_multiple


# ----------------------------------------------------------------------------------------------- shared pieces
class DeterministicRestorer(nn.Module):
    """The FlowRestorer contract for models without a latent distribution.

    Subclasses set ``scale``, ``levels`` and ``pad_multiple`` and implement ``_restore_padded(lq_p)`` on a
    padded batch; everything else (padding, cropping, clamping, sampling, init) lives here once.
    """

    scale: int
    levels: int
    pad_multiple: int

    has_exposure: bool = False
    stochastic = False
    needs_target = False
    precisions: tuple[str, ...] = ("fp32",)  # bf16 not measured for the learned baselines: auto keeps float32
    sample_temperature = SAMPLE_TEMPERATURE  # recorded with the samples; a deterministic model ignores it
    tile_margin = 12  # LR px; models with an encoder report the encoder's

    @property
    def sizes(self) -> SizeSpec:
        return SizeSpec(multiple=self.pad_multiple, min_size=1)

    @property
    def tiling(self) -> TilingSpec:
        encoder = getattr(self, "encoder", None)
        return tiling_for(self.pad_multiple, encoder.tile_margin if encoder is not None else self.tile_margin)

    @property
    def dtypes(self) -> tuple[torch.dtype, ...]:
        return (torch.float32,)

    def _restore_padded(self, lq_p: Tensor, context: ImageContext | None) -> Tensor:
        raise NotImplementedError

    def context(
        self, lq: Tensor, exposure: float = 0.0, *, thumb: Tensor | None = None
    ) -> ImageContext | None:
        """Whole-image context for tiled inference (None: this model uses no global statistics)."""
        if exposure:
            raise ConfigError(f"{type(self).__name__} has no exposure control; leave exposure at 0")
        return None

    def restore(
        self,
        lq: Tensor,
        temperature: float = 0.0,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
        context: ImageContext | None = None,
        target: Tensor | None = None,
    ) -> Tensor:
        """Restored HR image in [0, 1], N×3×sH×sW. Deterministic: ``temperature``, ``noise`` and ``generator``
        are accepted for the common interface and ignored (a regression model has no distribution)."""
        lq_p, size = pad_to_multiple(lq, self.pad_multiple)
        return crop_to(self._restore_padded(lq_p, context), size, self.scale).clamp(0.0, 1.0)

    def sample(
        self,
        lq: Tensor,
        n: int = 4,
        temperature: float | None = None,
        generator: torch.Generator | None = None,
        context: ImageContext | None = None,
    ) -> Tensor:
        """``n`` identical copies of :meth:`restore`, shape n×N×3×sH×sW (no distribution to sample from)."""
        return copies(self.restore(lq, context=context), n)

    @torch.no_grad()
    def initialize(self, batch: dict) -> None:
        """No data-dependent layers: nothing to initialise (kept so the trainer treats every model alike)."""


# ----------------------------------------------------------------------------------------------- config
@dataclass
class RegressionConfig:
    """Joint regression baseline: encoder (as the flow's) + upsampling head; L1 (+ optional colour-map L1)."""

    kind: Literal["regression"] = "regression"  # which builder in nightflow.models.MODEL_KINDS rebuilds it
    name: str = "custom-regression"
    description: str = ""
    task: str = "low-light enhancement + super-resolution"
    scale: int = 2
    encoder: str = DEFAULT_ENCODER  # a name in nightflow.encoders.ENCODERS
    # the encoder's config dataclass, chosen by ``encoder`` and parsed strictly (None = that encoder's defaults)
    encoder_config: EncoderConfig | None = encoder_config_field()
    levels: int = 3  # encoder feature levels (HR/2 … HR/2^levels), as the flow's levels
    head_channels: list[int] = field(
        default_factory=lambda: [64, 96, 128]
    )  # head width per level, finest first
    head_blocks: int = 2  # residual blocks per level
    use_color_map: bool = True  # feed the encoder's predicted HR colour-ratio map to the last conv
    # training loss (nightflow.losses): L1 of the prediction (+ optional color_map_l1) + the exposure head's
    # squared EV error (skipped without a head)
    losses: list[LossSpec] = field(default_factory=lambda: [LossSpec("l1", 1.0), LossSpec("exposure", 0.1)])
    seed: int = 0  # initialisation seed

    def __post_init__(self) -> None:
        check_literals(self)  # kind: as strict from Python as from YAML
        self.encoder_config = parse_encoder_config(self.encoder, self.encoder_config, "encoder_config")
        if self.scale not in (1, 2, 4):
            raise ConfigError(f"scale must be 1, 2 or 4, got {self.scale}")
        if self.levels < 1:
            raise ConfigError(f"levels must be >= 1, got {self.levels}")
        if len(self.head_channels) != self.levels or any(c < 1 for c in self.head_channels):
            raise ConfigError(
                f"head_channels needs one positive width per level ({self.levels}), got {self.head_channels}"
            )
        if self.head_blocks < 0:
            raise ConfigError(f"head_blocks must be >= 0, got {self.head_blocks}")
        check_losses(self.losses, REGRESSION_OUTPUTS, "regression")
        if not weighted(self.losses, "l1"):
            raise ConfigError("losses: a regression model needs l1 with a weight > 0 (it trains the head)")

    @staticmethod
    def upgrade_config(data, path=""):
        """Stored configs from before ``losses`` (``l1_weight``, ``color_weight``, ``exposure_weight``): the
        retired keys become the equivalent ``losses`` list (``nightflow.config.from_dict`` calls this)."""
        return upgrade_loss_weights(data, path, REGRESSION_LEGACY_LOSSES)


# what a JointRegressor computes for its loss terms (nightflow.losses.ForwardOutputs fields)
REGRESSION_OUTPUTS = ("prediction", "target", "color_map", "exposure_estimate", "log2_gain")
# the retired weight keys → losses (term, key, default, kept at weight 0): what the hard-wired loss computed
REGRESSION_LEGACY_LOSSES = (
    ("l1", "l1_weight", 1.0, True),
    ("color_map_l1", "color_weight", 0.0, False),
    ("exposure", "exposure_weight", 0.1, True),
)


# ----------------------------------------------------------------------------------------------- model
class JointRegressor(DeterministicRestorer):
    """Low-light LR → normal-light HR in one network: encoder features fused coarse → fine, then ×2 to HR."""

    def __init__(self, cfg: RegressionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.scale = cfg.scale
        self.levels = cfg.levels
        self.encoder = build_encoder(cfg.encoder, cfg.encoder_config, cfg.scale, cfg.levels)
        self.pad_multiple = math.lcm(self.encoder.size_multiple(), self.encoder.grid_multiple)
        cond, ch = list(self.encoder.out_channels), cfg.head_channels
        top = cfg.levels - 1
        self.stem = nn.Conv2d(cond[top], ch[top], 3, padding=1)
        # fuse[l]: [upsampled level l+1 head features, encoder features of level l] → ch[l]
        self.fuse = nn.ModuleList(
            nn.Conv2d(ch[l + 1] + cond[l], ch[l], 3, padding=1) if l < top else nn.Identity()
            for l in range(cfg.levels)
        )
        self.bodies = nn.ModuleList(nn.Sequential(*(ResBlock(c) for _ in range(cfg.head_blocks))) for c in ch)
        self.up = PixelShuffleUp(ch[0])  # HR/2 → HR
        self.out = nn.Conv2d(ch[0] + (3 if cfg.use_color_map else 0), 3, 3, padding=1)

    @property
    def has_exposure(self) -> bool:  # type: ignore[override]
        return self.encoder.has_exposure

    def context(
        self, lq: Tensor, exposure: float = 0.0, *, thumb: Tensor | None = None
    ) -> ImageContext | None:
        """Whole-image context of the unpadded LR batch (the encoder's global statistics and exposure)."""
        return self.encoder.make_context(lq, exposure, thumb=thumb)

    def predict(self, lq_p: Tensor, context: ImageContext | None = None) -> tuple[Tensor, Tensor | None]:
        """(unclamped HR prediction, predicted HR colour map) for an already padded LR batch."""
        enc = self.encoder(lq_p, context)
        feats = enc.features
        top = self.levels - 1
        y = self.bodies[top](F.leaky_relu(self.stem(feats[top]), 0.2))
        for l in range(top - 1, -1, -1):
            y = resize(y, feats[l].shape[-2:])
            y = F.leaky_relu(self.fuse[l](torch.cat([y, feats[l]], dim=1)), 0.2)
            y = self.bodies[l](y)
        y = self.up(y)
        if self.cfg.use_color_map:
            if enc.color_map is None:
                raise ConfigError(
                    f"encoder '{self.cfg.encoder}' predicts no colour map; set use_color_map: false"
                )
            y = torch.cat([y, enc.color_map], dim=1)
        return self.out(y), enc.color_map

    def _restore_padded(self, lq_p: Tensor, context: ImageContext | None) -> Tensor:
        return self.predict(lq_p, context)[0]

    def loss(self, batch: dict, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """The terms of ``cfg.losses`` (by default {"l1", ["exposure"], "total"}): L1 of the prediction against
        the HR target (padding excluded), optional colour-map L1, the exposure head's squared EV error; the
        encoder's context comes from the whole images as for the flow.

        ``generator`` is accepted for the common interface; the loss draws nothing at random.
        """
        return LossSet(self.cfg.losses)(self.loss_outputs(batch), batch)

    def loss_outputs(self, batch: dict, generator: torch.Generator | None = None) -> ForwardOutputs:
        """What the loss terms read (``nightflow.losses.ForwardOutputs``), each computed on first use, all on
        the unpadded HR grid: ``prediction``, ``target`` (= hq), ``color_map``, ``exposure_estimate``,
        ``log2_gain``."""
        lq, hq = batch["lq"], batch.get("hq")
        if hq is not None:
            check_pair(hq, lq, self.scale)
        lq_p, size = pad_to_multiple(lq, self.pad_multiple)
        ctx = functools.cache(lambda: self.encoder.batch_context(batch))
        predicted = functools.cache(lambda: self.predict(lq_p, ctx()))

        def color_map() -> Tensor | None:
            cmap = predicted()[1]
            return None if cmap is None else crop_to(cmap, size, self.scale)

        return ForwardOutputs(
            batch,
            {
                "prediction": lambda: crop_to(predicted()[0], size, self.scale),
                "target": lambda: batch["hq"],
                "color_map": color_map,
                "exposure_estimate": lambda: ctx().estimate,
                "log2_gain": lambda: ctx().log2_gain,
            },
        )


def build_regression(cfg: RegressionConfig) -> JointRegressor:
    """Build a JointRegressor with reproducible initial weights (seeded by ``cfg.seed``)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return JointRegressor(cfg)
