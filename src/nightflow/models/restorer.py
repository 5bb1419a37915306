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

from ..context import ImageContext, apply_gain, auto_log2_gain
from ..encoders import EncoderOutput, build_encoder
from ..flow import ConditionalGlow, GlowConfig, bits_per_dim, dequantize, squeeze2d, standard_normal_log_prob
from ..losses import ForwardOutputs, LossSet
from ..losses.selfsup import neighbour_indices, take_cells
from ..maps import color_ratio_map
from .base import SizeSpec, TilingSpec, temperature_for, tiling_for
from .config import ModelConfig
from .sizes import check_pair, crop_even, crop_to, pad_pair, pad_to, pad_to_multiple


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
                straddle=spec.straddle,
                straddle_at=spec.straddle_at,
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
        released: its channel gate averages the half-decoded latent over the whole tile) or the encoder does
        (SSFlow's released ``image`` pooling)."""
        tileable = self.cfg.flow.subnet not in ("cbam", "cbam-released") and self.encoder.tileable
        margin = self.cfg.tile_margin or self.encoder.tile_margin
        return tiling_for(self.pad_multiple, margin, tileable=tileable)

    @property
    def dtypes(self) -> tuple[torch.dtype, ...]:
        return (torch.float32,)

    @property
    def sample_temperature(self) -> float:
        """Temperature of samples when none is given: measured on these weights (``ModelConfig``)."""
        return self.cfg.sample_temperature

    @property
    def precisions(self) -> tuple[str, ...]:
        """fp32, plus bf16 where the encoder was measured safe under bf16 autocast (``Encoder.bf16_inference``)
        and these weights were too (``ModelConfig.bf16_inference``); the flow's invertible arithmetic is float32
        either way (:mod:`nightflow.precision`)."""
        safe = self.encoder.bf16_inference and self.cfg.bf16_inference
        return ("fp32", "bf16") if safe else ("fp32",)

    @property
    def channels_last_inference(self) -> bool:
        """Whether inference on the CPU was measured faster with this model in channels_last memory
        (``Encoder.channels_last_inference``); :attr:`nightflow.api.Model.inference_restorer` reads it."""
        return self.encoder.channels_last_inference

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
        temperature: float | None = None,
        generator: torch.Generator | None = None,
        context: ImageContext | None = None,
    ) -> Tensor:
        """``n`` samples per input at ``temperature`` (None: :attr:`sample_temperature`), shape n×N×3×sH×sW;
        the encoder runs once."""
        temperature = temperature_for(self, temperature)
        ctx = self._context_for(lq, context)
        lq_p, size = self._pad_lq(lq)
        cond = self.condition(lq_p, ctx)
        return torch.stack([self._decode_from(cond, size, temperature, None, generator) for _ in range(n)])

    # ----- training ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def initialize(self, batch: dict) -> None:
        """Data-dependent ActNorm initialisation on one batch, explicitly (DDP runs it on the global batch).
        Without targets (self-supervised training) the flow is initialised on the batch's neighbour
        pseudo-pairs (``losses.selfsup``), the only HR images such a run ever encodes."""
        was_training = self.training
        self.train()
        ctx = self.encoder.batch_context(batch)
        if batch.get("hq") is not None:
            self.encode(batch["hq"], batch["lq"], ctx)
        else:
            first, target, _ = self._pseudo_pair(batch["lq"], ctx, None)
            self.encode(target, first, ctx)
        self.train(was_training)

    def _pseudo_pair(
        self, lq: Tensor, ctx: ImageContext, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor]]:
        """Neighbour sub-images of the (unpadded) LR batch: the first as input, the second brightened by the
        scene's auto exposure as its target (``losses.selfsup``), and the cell choices that made them."""
        even = crop_even(lq)
        index = neighbour_indices(even, generator)
        first, second = take_cells(even, index[0]), take_cells(even, index[1])
        return first, apply_gain(second, auto_log2_gain(ctx.thumb)), index

    def loss(self, batch: dict, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """The terms of ``cfg.losses`` (``nightflow.losses``), by default LoLiSRFlow's: NLL (bits/dim,
        dequantised) + γ·L1 of the reverse pass at the prior mean (+ colour-map L1) (+ the exposure head's
        squared error in EV against the oracle gain); ``total`` is their weighted sum."""
        return LossSet(self.cfg.losses)(self.loss_outputs(batch, generator), batch)

    def loss_outputs(self, batch: dict, generator: torch.Generator | None = None) -> ForwardOutputs:
        """What the loss terms read (``nightflow.losses.ForwardOutputs``), each computed on first use, all on
        the padded HR grid: ``nll`` (the forward pass; draws the GT-prior coin and the dequantisation noise
        from ``generator``), ``prediction`` (the reverse pass at the prior mean: run only if a term reads it),
        ``target`` (padded hq), ``input`` (padded lq), ``color_map``, ``exposure_estimate``, ``log2_gain``,
        ``auto_log2_gain``, and the self-supervised ``pseudo_*`` fields (``losses.selfsup``), which read no
        target."""
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
            value, latents = self._train_nll(hq_p, c, nll_map, generator)
            encoded.append(latents)
            return value

        @functools.cache  # read by the prediction field and by pseudo_gap: one reverse pass
        def mean_path() -> Tensor:
            return self._mean_path(cond(), lq_p, encoded[0] if encoded else None)

        # self-supervised pseudo-pairs (losses.selfsup): drawn once per batch, on the padded grid of the first
        pseudo = functools.cache(lambda: self._pseudo_pair(lq, ctx(), generator))

        @functools.cache
        def pseudo_cond() -> tuple[EncoderOutput, Tensor, Tensor]:
            first, target, _ = pseudo()
            first_p, first_size = self._pad_lq(first)
            return self.condition(first_p, ctx()), first_p, self._pad_hq(target, first_size, first_p)

        pseudo_latents: list[list[Tensor]] = []

        def pseudo_nll() -> Tensor:
            c, _, target_p = pseudo_cond()
            value, latents = self._train_nll(target_p, c, c.color_map, generator)
            pseudo_latents.append(latents)
            return value

        def pseudo_prediction() -> Tensor:
            c, first_p, _ = pseudo_cond()
            return self._mean_path(c, first_p, pseudo_latents[0] if pseudo_latents else None)

        def pseudo_gap() -> Tensor:
            # the full-size restoration's own neighbour difference, in the pseudo-pair's cells
            h, w = lq.shape[-2:]
            full = crop_even(mean_path()[..., : self.scale * h, : self.scale * w])
            first_idx, second_idx = pseudo()[2]
            return take_cells(full, first_idx) - take_cells(full, second_idx)

        return ForwardOutputs(
            batch,
            {
                "nll": nll,
                "prediction": mean_path,
                "target": lambda: hq_p,
                "input": lambda: lq_p,
                "color_map": lambda: cond().color_map,
                "exposure_estimate": lambda: ctx().estimate,
                "log2_gain": lambda: ctx().log2_gain,
                "auto_log2_gain": lambda: auto_log2_gain(ctx().thumb),
                "pseudo_nll": pseudo_nll,
                "pseudo_prediction": pseudo_prediction,
                "pseudo_target": lambda: pseudo_cond()[2],
                "pseudo_gap": pseudo_gap,
            },
        )

    def _train_nll(
        self,
        target_p: Tensor,
        cond: EncoderOutput,
        prior_map: Tensor | None,
        generator: torch.Generator | None,
    ) -> tuple[Tensor, list[Tensor]]:
        """Mean NLL (bits/dim) of the dequantised padded target, and its latents (for the mean path's shapes)."""
        x = dequantize(target_p, self.cfg.quant, generator)
        latents, logdet = self.flow.encode(x, cond.features, self._prior(prior_map))
        log_p = logdet + sum(standard_normal_log_prob(z) for z in latents)
        return bits_per_dim(log_p, target_p[0].numel(), self.cfg.quant).mean(), latents

    def _mean_path(self, cond: EncoderOutput, lq_p: Tensor, like: list[Tensor] | None) -> Tensor:
        """The reverse pass at the prior mean on the padded grid of ``lq_p`` (``like``: latents to copy shapes)."""
        if like is not None:
            zeros = [torch.zeros_like(z) for z in like]
        else:
            n, _, h, w = lq_p.shape
            shapes = self.flow.latent_shapes(self.scale * h, self.scale * w)
            zeros = [lq_p.new_zeros(n, *shape) for shape in shapes]
        return self.flow.decode(zeros, cond.features, self._prior(cond.color_map))


def build_model(cfg: ModelConfig) -> FlowRestorer:
    """Build a FlowRestorer with reproducible initial weights (seeded by ``cfg.seed``)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return FlowRestorer(cfg)
