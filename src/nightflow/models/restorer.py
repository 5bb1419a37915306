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

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..context import ImageContext
from ..encoders import EncoderOutput, build_encoder
from ..flow import ConditionalGlow, GlowConfig, bits_per_dim, dequantize, squeeze2d, standard_normal_log_prob
from ..losses import ForwardOutputs, LossSet
from ..maps import color_ratio_map
from .base import SAMPLE_TEMPERATURE, SizeSpec, TilingSpec, tiling_for
from .config import ModelConfig
from .sizes import check_pair, crop_to, pad_pair, pad_to, pad_to_multiple


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
        """The LR batch padded to :attr:`pad_multiple` (``models.sizes``) and its original (H, W)."""
        return pad_to_multiple(lq, self.pad_multiple)

    def _pad_hq(self, hq: Tensor, lq_size: tuple[int, int], padded_lq: Tensor) -> Tensor:
        """The HR target (``scale``× ``lq_size``) padded as :meth:`_pad_lq` padded its LR input."""
        check_pair(hq, padded_lq, self.scale, size=lq_size)
        return pad_to(hq, self.scale * padded_lq.shape[-2], self.scale * padded_lq.shape[-1])

    @property
    def sizes(self) -> SizeSpec:
        return SizeSpec(multiple=self.pad_multiple, min_size=1)

    @property
    def tiling(self) -> TilingSpec:
        """Tiles agree with the whole image unless the flow pools globally (subnet "cbam", as UPT-Flow was
        released: its channel gate averages the half-decoded latent over the whole tile)."""
        tileable = self.cfg.flow.subnet != "cbam"
        margin = self.cfg.tile_margin or self.encoder.tile_margin
        return tiling_for(self.pad_multiple, margin, tileable=tileable)

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
        hq_p, lq_p, _ = pad_pair(hq, lq, self.scale, self.pad_multiple)
        cond = self.condition(lq_p, ctx)
        return self.flow.encode(hq_p, cond.features, self._prior(cond.color_map))

    def decode(self, latents: list[Tensor], lq: Tensor, context: ImageContext | None = None) -> Tensor:
        """Latents (from :meth:`encode` on the same LR input) → HR image; the exact inverse of encode."""
        ctx = self._context_for(lq, context)
        lq_p, size = self._pad_lq(lq)
        cond = self.condition(lq_p, ctx)
        out = self.flow.decode(latents, cond.features, self._prior(cond.color_map))
        return crop_to(out, size, self.scale)

    def nll_bits_per_dim(self, hq: Tensor, lq: Tensor, context: ImageContext | None = None) -> Tensor:
        """Negative log-likelihood of the HR image given the LR one, in bits per dimension, shape (N,); a
        *positive* number, lower is better (the flow core's ``log_prob`` is the log-density in nats).

        Normalisation: the likelihood is that of the HR image padded to the model's multiple (replicate, as the
        encoder sees it), so it is divided by the dimensions it was computed over, 3·(padded H)·(padded W);
        dividing by the unpadded size would inflate it (a 37×53 input at ×1 reported 28.85 instead of 26.25
        bits/dim). For sizes that are already multiples of :attr:`pad_multiple` nothing is padded and the two
        agree. With ``quant`` > 0 the discretisation term log2(quant) is included (no dequantisation noise).
        """
        latents, logdet = self.encode(hq, lq, context)
        log_p = logdet + sum(standard_normal_log_prob(z) for z in latents)
        dims = sum(z[0].numel() for z in latents)  # = 3·(padded sH)·(padded sW): the flow keeps dimensions
        return bits_per_dim(log_p, dims, self.cfg.quant)

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

    def _decode_from(
        self,
        cond: EncoderOutput,
        size: tuple[int, int],
        temperature: float,
        noise: Tensor | None,
        generator: torch.Generator | None,
    ) -> Tensor:
        feats, prior = cond.features, self._prior(cond.color_map)
        shape = self.flow.noise_shape(feats, prior)  # the padded HR size, N×3×sH_p×sW_p
        n, c, hp, wp = shape
        ref = next(f for f in feats if f is not None)
        if temperature == 0.0:
            noise = ref.new_zeros(shape)
        elif noise is None:
            noise = torch.randn(shape, generator=generator, device=ref.device, dtype=ref.dtype)
        else:
            if noise.shape[0] != n or noise.shape[1] != c:
                raise ValueError(
                    f"noise: expected shape ({n}, {c}, {self.scale * size[0]}, {self.scale * size[1]}), "
                    f"got {tuple(noise.shape)}"
                )
            noise = F.pad(noise, (0, wp - noise.shape[3], 0, hp - noise.shape[2]))  # zeros: mean path there
        out = self.flow.sample(feats, prior, temperature, noise=noise)
        return crop_to(out, size, self.scale).clamp(0.0, 1.0)

    def sample(
        self,
        lq: Tensor,
        n: int = 4,
        temperature: float = SAMPLE_TEMPERATURE,
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
        """The terms of ``cfg.losses`` (``nightflow.losses``), by default LoLiSRFlow's: NLL (bits/dim,
        dequantised) + γ·L1 of the reverse pass at the prior mean (+ colour-map L1) (+ the exposure head's
        squared error in EV against the oracle gain); ``total`` is their weighted sum."""
        return LossSet(self.cfg.losses)(self.loss_outputs(batch, generator), batch)

    def loss_outputs(self, batch: dict, generator: torch.Generator | None = None) -> ForwardOutputs:
        """What the loss terms read (``nightflow.losses.ForwardOutputs``), each computed on first use, all on
        the padded HR grid: ``nll`` (the forward pass; draws the GT-prior coin and the dequantisation noise
        from ``generator``), ``prediction`` (the reverse pass at the prior mean: run only if a term reads it),
        ``target`` (padded hq), ``color_map``, ``exposure_estimate``, ``log2_gain``."""
        lq, hq = batch["lq"], batch.get("hq")
        lq_p, size = self._pad_lq(lq)
        hq_p = self._pad_hq(hq, size, lq_p) if hq is not None else None
        ctx = functools.cache(lambda: self.encoder.batch_context(batch))
        cond = functools.cache(lambda: self.condition(lq_p, ctx()))
        encoded: list[list[Tensor]] = []  # the NLL pass's latents, once computed

        def nll() -> Tensor:
            c = cond()
            use_gt = False
            if self.cfg.prior == "color_map" and self.cfg.train_gt_ratio > 0:
                coin = torch.rand((), generator=generator, device=generator.device if generator else None)
                use_gt = bool(coin < self.cfg.train_gt_ratio)
            nll_map = color_ratio_map(hq_p) if use_gt else c.color_map
            x = dequantize(hq_p, self.cfg.quant, generator)
            latents, logdet = self.flow.encode(x, c.features, self._prior(nll_map))
            encoded.append(latents)
            log_p = logdet + sum(standard_normal_log_prob(z) for z in latents)
            return bits_per_dim(log_p, hq_p[0].numel(), self.cfg.quant).mean()

        def mean_path() -> Tensor:
            c = cond()
            if encoded:
                zeros = [torch.zeros_like(z) for z in encoded[0]]
            else:
                n, _, h, w = lq_p.shape
                shapes = self.flow.latent_shapes(self.scale * h, self.scale * w)
                zeros = [lq_p.new_zeros(n, *shape) for shape in shapes]
            return self.flow.decode(zeros, c.features, self._prior(c.color_map))

        return ForwardOutputs(
            batch,
            {
                "nll": nll,
                "prediction": mean_path,
                "target": lambda: hq_p,
                "color_map": lambda: cond().color_map,
                "exposure_estimate": lambda: ctx().estimate,
                "log2_gain": lambda: ctx().log2_gain,
            },
        )


def build_model(cfg: ModelConfig) -> FlowRestorer:
    """Build a FlowRestorer with reproducible initial weights (seeded by ``cfg.seed``)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return FlowRestorer(cfg)
