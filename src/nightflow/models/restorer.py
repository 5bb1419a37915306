"""FlowRestorer: encoder + ConditionalGlow + colour-map prior — likelihood, restoration, sampling and losses.

Direction: training encodes the normal-light HR image given the low-light LR one (image → latents → NLL);
restoration decodes latents at the prior mean (temperature 0) or sampled latents (temperature > 0).
Sizes: every entry point pads the LR input (replicate) to the multiple the encoder and flow need and crops back,
so callers never see a size error.
Context: every entry point takes an optional ``context`` (``nightflow.context.ImageContext``) with the global
statistics of the *whole* image; without one it is computed from the given ``lq``. Tiled inference computes it
once from the full photo (:meth:`FlowRestorer.context`) and hands it to every tile; training batches carry the
thumbnail and oracle exposure of the whole image each crop came from.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..context import ImageContext
from ..encoders import EncoderOutput, build_encoder
from ..flow import ConditionalGlow, GlowConfig, bits_per_dim, dequantize, squeeze2d, standard_normal_log_prob
from ..maps import color_map_l1, color_ratio_map
from .config import ModelConfig
from .base import SizeSpec, TilingSpec, tiling_for


class FlowRestorer(nn.Module):
    """P(normal-light HR | low-light LR) as a conditional normalizing flow (a ``models.base.Trainable``)."""

    stochastic = True
    needs_target = False

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.scale = cfg.scale
        self.levels = cfg.flow.levels
        self.encoder = build_encoder(cfg.encoder, cfg.encoder_config, cfg.scale, cfg.flow.levels)
        top_colour_channels = 3 * 4**self.levels
        use_prior = cfg.prior == "color_map"
        spec = cfg.flow
        self.flow = ConditionalGlow(
            GlowConfig(
                in_channels=3,
                levels=spec.levels,
                steps=spec.steps,
                hidden=spec.hidden,
                cond_channels=list(self.encoder.out_channels),
                split=spec.split,
                coupling=spec.coupling,
                subnet=spec.subnet,
                injector=spec.injector,
                transitions=spec.transitions,
                scale_eps=spec.scale_eps,
                scale_floor=spec.scale_floor,
                top_prior="learned" if spec.split and use_prior else "fixed",
                prior_channels=top_colour_channels if use_prior else 0,
            )
        )
        self.pad_multiple = math.lcm(
            self.encoder.size_multiple(), self.encoder.grid_multiple, max(1, 2**self.levels // self.scale)
        )

    # ----- sizes ------------------------------------------------------------------------------------------------
    def _pad_lq(self, lq: Tensor) -> tuple[Tensor, tuple[int, int]]:
        if lq.dim() != 4 or lq.shape[1] != 3:
            raise ValueError(f"lq: expected shape (N, 3, H, W), got {tuple(lq.shape)}")
        h, w = lq.shape[-2:]
        if h == 0 or w == 0:
            raise ValueError(f"lq: empty image of shape {tuple(lq.shape)}")
        m = self.pad_multiple
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            lq = F.pad(lq, (0, pw, 0, ph), mode="replicate")
        return lq, (h, w)

    def _pad_hq(self, hq: Tensor, lq_size: tuple[int, int], padded_lq: Tensor) -> Tensor:
        s = self.scale
        expected = (hq.shape[0], 3, s * lq_size[0], s * lq_size[1])
        if tuple(hq.shape) != expected:
            raise ValueError(f"hq: expected shape {expected} (×{s} the lq size), got {tuple(hq.shape)}")
        ph = s * padded_lq.shape[2] - hq.shape[2]
        pw = s * padded_lq.shape[3] - hq.shape[3]
        return F.pad(hq, (0, pw, 0, ph), mode="replicate") if ph or pw else hq

    @property
    def sizes(self) -> SizeSpec:
        return SizeSpec(multiple=self.pad_multiple, min_size=1)

    @property
    def tiling(self) -> TilingSpec:
        return tiling_for(self.pad_multiple, self.encoder.tile_margin)

    @property
    def dtypes(self) -> tuple[torch.dtype, ...]:
        return (torch.float32,)

    # ----- conditioning and prior -------------------------------------------------------------------------------
    @property
    def has_exposure(self) -> bool:
        """Whether the model estimates an exposure and honours ``exposure`` shifts (EV)."""
        return self.encoder.has_exposure

    def context(self, lq: Tensor, exposure: float = 0.0, *, thumb: Tensor | None = None) -> ImageContext:
        """Whole-image context of the (unpadded) LR batch ``lq`` (or of the whole images' ready ``thumb``nails,
        when ``lq`` is a crop); ``exposure`` shifts the estimated EV."""
        if lq.dim() != 4 or lq.shape[1] != 3:
            raise ValueError(f"lq: expected shape (N, 3, H, W), got {tuple(lq.shape)}")
        return self.encoder.make_context(lq, exposure, thumb=thumb)

    def condition(self, lq: Tensor, context: ImageContext | None = None) -> EncoderOutput:
        """Encoder output for an already padded LR batch (``context``: of the whole image, else of ``lq``)."""
        return self.encoder(lq, context)

    def _context_for(self, lq: Tensor, context: ImageContext | None) -> ImageContext:
        return self.context(lq) if context is None else context

    def _prior(self, color_map: Tensor | None) -> Tensor | None:
        if self.cfg.prior != "color_map":
            return None
        if color_map is None:
            raise ValueError("prior 'color_map' needs an encoder that predicts a colour map")
        return squeeze2d(color_map.float(), 2**self.levels)

    # ----- the flow in both directions --------------------------------------------------------------------------
    def encode(
        self, hq: Tensor, lq: Tensor, context: ImageContext | None = None
    ) -> tuple[list[Tensor], Tensor]:
        """(HR, LR) → standardised latents and log-det (prior mean = predicted colour map)."""
        ctx = self._context_for(lq, context)
        lq_p, size = self._pad_lq(lq)
        hq_p = self._pad_hq(hq, size, lq_p)
        cond = self.condition(lq_p, ctx)
        return self.flow.encode(hq_p, cond.features, self._prior(cond.color_map))

    def decode(self, latents: list[Tensor], lq: Tensor, context: ImageContext | None = None) -> Tensor:
        """Latents (from :meth:`encode` on the same LR input) → HR image; the exact inverse of encode."""
        ctx = self._context_for(lq, context)
        lq_p, (h, w) = self._pad_lq(lq)
        cond = self.condition(lq_p, ctx)
        out = self.flow.decode(latents, cond.features, self._prior(cond.color_map))
        return out[:, :, : self.scale * h, : self.scale * w]

    def log_prob(self, hq: Tensor, lq: Tensor, context: ImageContext | None = None) -> Tensor:
        """NLL of the HR image given the LR one, in bits per dimension (no dequantisation noise), shape (N,)."""
        latents, logdet = self.encode(hq, lq, context)
        log_p = logdet + sum(standard_normal_log_prob(z) for z in latents)
        return bits_per_dim(log_p, hq[0].numel(), self.cfg.quant)

    def restore(
        self,
        lq: Tensor,
        temperature: float = 0.0,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
        context: ImageContext | None = None,
        target: Tensor | None = None,
    ) -> Tensor:
        """Restored HR image in [0, 1]: the mean path at temperature 0, a sample otherwise (``target`` is
        accepted for the contract and never read: only oracles read it).

        ``noise`` (image layout, N×3×sH×sW, standard normal) fixes the sample; tiled inference crops one global
        noise tensor per tile so overlapping tiles agree, and passes the whole image's ``context``.
        """
        ctx = self._context_for(lq, context)
        lq_p, (h, w) = self._pad_lq(lq)
        cond = self.condition(lq_p, ctx)
        return self._decode_from(cond, (h, w), temperature, noise, generator)

    def _decode_from(self, cond, size, temperature, noise, generator) -> Tensor:
        feats = cond.features
        ref = feats[0]
        n, hp, wp = ref.shape[0], ref.shape[2] * 2, ref.shape[3] * 2
        if temperature == 0.0:
            noise = ref.new_zeros(n, 3, hp, wp)
        elif noise is None:
            noise = torch.randn((n, 3, hp, wp), generator=generator, device=ref.device, dtype=ref.dtype)
        else:
            if noise.shape[0] != n or noise.shape[1] != 3:
                raise ValueError(
                    f"noise: expected shape ({n}, 3, {self.scale * size[0]}, {self.scale * size[1]}), got {tuple(noise.shape)}"
                )
            noise = F.pad(noise, (0, wp - noise.shape[3], 0, hp - noise.shape[2]))
        out = self.flow.sample(feats, self._prior(cond.color_map), temperature, noise=noise)
        return out[:, :, : self.scale * size[0], : self.scale * size[1]].clamp(0.0, 1.0)

    def sample(
        self,
        lq: Tensor,
        n: int = 4,
        temperature: float = 0.8,
        generator: torch.Generator | None = None,
        context: ImageContext | None = None,
    ) -> Tensor:
        """``n`` samples per input, shape n×N×3×sH×sW; the encoder runs once."""
        ctx = self._context_for(lq, context)
        lq_p, size = self._pad_lq(lq)
        cond = self.condition(lq_p, ctx)
        return torch.stack([self._decode_from(cond, size, temperature, None, generator) for _ in range(n)])

    # ----- training ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def initialize(self, batch: dict) -> None:
        """Data-dependent ActNorm initialisation on one batch, explicitly (DDP runs it on the global batch)."""
        was_training = self.training
        self.train()
        self.encode(batch["hq"], batch["lq"], self.encoder.batch_context(batch))
        self.train(was_training)

    def loss(self, batch: dict, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """NLL (bits/dim, dequantised) + γ·L1 of the reverse pass at the prior mean (+ colour-map L1)
        (+ the exposure head's squared error in EV against the oracle gain)."""
        hq, lq = batch["hq"], batch["lq"]
        ctx = self.encoder.batch_context(batch)
        lq_p, size = self._pad_lq(lq)
        hq_p = self._pad_hq(hq, size, lq_p)
        cond = self.condition(lq_p, ctx)
        use_gt = False
        if self.cfg.prior == "color_map" and self.cfg.train_gt_ratio > 0:
            coin = torch.rand((), generator=generator, device=generator.device if generator else None)
            use_gt = bool(coin < self.cfg.train_gt_ratio)
        nll_map = color_ratio_map(hq_p) if use_gt else cond.color_map
        x = dequantize(hq_p, self.cfg.quant, generator)
        latents, logdet = self.flow.encode(x, cond.features, self._prior(nll_map))
        log_p = logdet + sum(standard_normal_log_prob(z) for z in latents)
        nll = bits_per_dim(log_p, hq_p[0].numel(), self.cfg.quant).mean()
        terms = {"nll": nll}
        total = nll
        if self.cfg.l1_weight > 0:
            zeros = [torch.zeros_like(z) for z in latents]
            mean_path = self.flow.decode(zeros, cond.features, self._prior(cond.color_map))
            l1 = (mean_path - hq_p).abs().mean()
            terms["l1"] = l1
            total = total + self.cfg.l1_weight * l1
        if self.cfg.color_weight > 0 and cond.color_map is not None:
            color = color_map_l1(cond.color_map, hq_p)
            terms["color"] = color
            total = total + self.cfg.color_weight * color
        exposure = ctx.exposure_loss()
        if exposure is not None:
            terms["exposure"] = exposure
            total = total + self.cfg.exposure_weight * exposure
        terms["total"] = total
        return terms


def build_model(cfg: ModelConfig) -> FlowRestorer:
    """Build a FlowRestorer with reproducible initial weights (seeded by ``cfg.seed``)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return FlowRestorer(cfg)
