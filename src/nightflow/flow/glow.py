"""ConditionalGlow: L levels × K conditional steps, per-level conditioning, optional splits, Gaussian prior.

Level l: squeeze ×2 → ``transitions`` × (ActNorm, 1×1 conv) → K_l steps of (ActNorm, 1×1 conv, injector,
coupling) or (ActNorm, 1×1 conv, cross-coupling) → optional Split. ``straddle`` × StraddleCoupling (additive
couplings on the level's squeeze grid moved by one finer pixel, across its block edges; none by default) sit
after the steps (``straddle_at="end"``) or before them, after the transitions (``"start"``). Level l therefore
runs at (H/2^(l+1), W/2^(l+1)) and takes a conditioning tensor of that size.

Every latent is returned *standardised* (N(0, I) under the model), so sampling at temperature T is decoding
T·noise, and the mean path (temperature 0) decodes all-zero latents, i.e. the top latent equals the prior mean.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from ..config import check_literals
from .actnorm import ActNorm
from .base import FlowLayer, FlowSequence, check_4d, check_finite, sum_except_batch
from .coupling import AffineInjector, ConditionalAffineCoupling, CrossCoupling
from .invconv import InvConv1x1
from .likelihood import standard_normal_log_prob
from .reshape import ConditionalGaussian, Split, Squeeze, squeeze2d, unsqueeze2d
from .straddle import StraddleCoupling


@dataclass
class GlowConfig:
    """Structure of a ConditionalGlow. ``steps`` and ``cond_channels`` take one value or one per level."""

    in_channels: int = 3
    levels: int = 3
    steps: int | list[int] = 4
    hidden: int = 64
    cond_channels: int | list[int] = 64
    split: bool = False
    coupling: Literal["affine", "cross"] = "affine"
    subnet: Literal["conv", "cbam", "cbam-local", "cbam-released"] = "conv"
    injector: bool = True
    transitions: int = 2
    scale_eps: float = 1e-4
    scale_floor: float = 0.0  # lower bound of every coupling scale (0 = LLFlow's form; see flow.coupling)
    top_prior: Literal["fixed", "learned"] = "fixed"
    prior_channels: int = 0
    straddle: int | list[int] = 0  # StraddleCouplings per level (one value or one per level)
    # where: "end" after the level's steps; "start" before them (after the transitions), so that in decoding they run
    # after the level's own couplings and injectors, just before its blocks are written into the finer grid
    straddle_at: Literal["start", "end"] = "end"
    _steps: list[int] = field(init=False, repr=False)
    _cond: list[int] = field(init=False, repr=False)
    _straddle: list[int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.levels < 1:
            raise ValueError(f"levels must be ≥ 1, got {self.levels}")
        self._steps = self._per_level("steps", self.steps)
        self._cond = self._per_level("cond_channels", self.cond_channels)
        self._straddle = self._per_level("straddle", self.straddle)
        if (
            any(k < 0 for k in self._steps)
            or any(c < 0 for c in self._cond)
            or any(k < 0 for k in self._straddle)
        ):
            raise ValueError("steps, cond_channels and straddle must be ≥ 0")
        if not 0.0 <= self.scale_floor < 1.0:
            raise ValueError(f"scale_floor must be in [0, 1), got {self.scale_floor}")
        check_literals(self)  # coupling, subnet, top_prior: a typo from Python is never a silent default
        if self.coupling == "cross" and 0 in self._cond:
            raise ValueError("cross coupling needs conditioning at every level (cond_channels > 0)")

    def _per_level(self, name: str, value: int | list[int]) -> list[int]:
        if isinstance(value, int):
            return [value] * self.levels
        if len(value) != self.levels:
            raise ValueError(f"{name}: expected 1 or {self.levels} values (one per level), got {len(value)}")
        return list(value)

    @property
    def steps_per_level(self) -> list[int]:
        return self._steps

    @property
    def cond_per_level(self) -> list[int]:
        return self._cond

    @property
    def straddle_per_level(self) -> list[int]:
        return self._straddle


def _conditional_step(cfg: GlowConfig, channels: int, cond: int) -> FlowLayer:
    layers: list[FlowLayer] = [ActNorm(channels), InvConv1x1(channels)]
    if cfg.coupling == "cross":
        layers.append(CrossCoupling(channels, cond, cfg.hidden, cfg.subnet, cfg.scale_eps, cfg.scale_floor))
    elif cfg.coupling == "affine":
        args = (channels, cond, cfg.hidden, cfg.subnet, cfg.scale_eps)
        if cfg.injector and cond > 0:
            layers.append(AffineInjector(*args, floor=cfg.scale_floor))
        layers.append(ConditionalAffineCoupling(*args, floor=cfg.scale_floor))
    else:  # GlowConfig refuses it already; kept so a mutated config cannot fall back silently
        raise ValueError(f"coupling must be 'affine' or 'cross', got {cfg.coupling!r}")
    return FlowSequence(layers)


def _followed_by(slot: FlowLayer, extra: list[FlowLayer]) -> FlowLayer:
    """``slot`` then ``extra``, nested under ``slot``'s own name: every other layer keeps the name it has in a flow
    without ``extra``, so weights trained without straddle couplings load into a flow with them."""
    if not extra:
        return slot
    if isinstance(slot, FlowSequence):
        slot.layers.extend(extra)
        return slot
    # only a stateless layer (the Squeeze) is wrapped: its name holds no tensor that would move
    if slot.state_dict():
        raise ValueError(f"cannot nest layers after a {type(slot).__name__} without renaming its tensors")
    return FlowSequence([slot, *extra])


class ConditionalGlow(nn.Module):
    """Multi-level conditional Glow with exact encode/decode and log-determinants."""

    def __init__(self, cfg: GlowConfig):
        super().__init__()
        self.cfg = cfg
        self.levels = cfg.levels
        self.level_flows = nn.ModuleList()
        self.level_channels: list[int] = []  # channels the steps of each level run at
        self.split_keep: list[int | None] = []
        c = cfg.in_channels
        for level in range(cfg.levels):
            c *= 4
            cond = cfg.cond_per_level[level]
            layers: list[FlowLayer] = [Squeeze()]
            layers += [FlowSequence([ActNorm(c), InvConv1x1(c)]) for _ in range(cfg.transitions)]
            straddle = [
                StraddleCoupling(c, cond, cfg.hidden, cfg.subnet)
                for _ in range(cfg.straddle_per_level[level])
            ]
            if cfg.straddle_at == "start":
                layers[-1] = _followed_by(layers[-1], straddle)
            layers += [_conditional_step(cfg, c, cond) for _ in range(cfg.steps_per_level[level])]
            if cfg.straddle_at == "end":
                layers[-1] = _followed_by(layers[-1], straddle)
            is_split = cfg.split and level < cfg.levels - 1
            if is_split:
                layers.append(Split(c, cond))
            self.level_flows.append(FlowSequence(layers))
            self.level_channels.append(c)
            self.split_keep.append(c // 2 if is_split else None)
            if is_split:
                c = c // 2
        self.top_channels = c
        self.top_prior: ConditionalGaussian | None = None
        if cfg.top_prior == "learned":
            self.top_prior = ConditionalGaussian(cfg.cond_per_level[-1] + cfg.prior_channels, c)
        elif cfg.prior_channels not in (0, c):
            raise ValueError(
                f"prior_channels: a fixed prior mean must have the top latent's {c} channels, got {cfg.prior_channels}"
            )

    # ----- shapes and validation -------------------------------------------------------------------------------
    @property
    def multiple(self) -> int:
        """Spatial size multiple the input must have."""
        return 2**self.levels

    def latent_shapes(self, height: int, width: int) -> list[tuple[int, int, int]]:
        """(C, h, w) of each latent of an H×W flow input, split-off ones first, the top latent last.

        The one place latent sizes are derived; :meth:`noise_shape` gives the image-layout noise that
        :meth:`latents_from_image` maps onto exactly these shapes."""
        if height % self.multiple or width % self.multiple:
            raise ValueError(
                f"latent_shapes: expected H and W divisible by {self.multiple} (2^levels), got {height}×{width}"
            )
        shapes = []
        for level, keep in enumerate(self.split_keep):
            c, s = self.level_channels[level], 2 ** (level + 1)
            if keep is not None:
                shapes.append((c - keep, height // s, width // s))
        shapes.append((self.top_channels, height // self.multiple, width // self.multiple))
        return shapes

    def input_size(self, conds: list[Tensor | None], prior: Tensor | None = None) -> tuple[int, int, int]:
        """(N, H, W) of the flow input that per-level conditioning ``conds`` (level l at H/2^(l+1)) and the
        prior mean (at H/2^levels) belong to, read from the first tensor given, whatever its level."""
        for level, cond in enumerate(conds):
            if cond is not None:
                s = 2 ** (level + 1)
                return cond.shape[0], cond.shape[2] * s, cond.shape[3] * s
        if prior is not None:
            return prior.shape[0], prior.shape[2] * self.multiple, prior.shape[3] * self.multiple
        raise ValueError("this flow has no conditioning or prior to read the size from; pass noise")

    def noise_shape(
        self, conds: list[Tensor | None], prior: Tensor | None = None
    ) -> tuple[int, int, int, int]:
        """N×C×H×W of the image-layout noise (:meth:`latents_from_image`) that decodes with ``conds``."""
        n, h, w = self.input_size(conds, prior)
        return n, self.cfg.in_channels, h, w

    def _check(self, x: Tensor, conds: list[Tensor | None], prior: Tensor | None, what: str) -> None:
        n, _, h, w = x.shape
        if h % self.multiple or w % self.multiple:
            raise ValueError(
                f"{what}: expected H and W divisible by {self.multiple} (2^levels), got shape {tuple(x.shape)}"
            )
        if len(conds) != self.levels:
            raise ValueError(
                f"conditioning: expected a list of {self.levels} tensors (one per level), got {len(conds)}"
            )
        for level, cond in enumerate(conds):
            ch, s = self.cfg.cond_per_level[level], 2 ** (level + 1)
            name = f"conditioning[{level}]"
            if ch == 0:
                if cond is not None:
                    raise ValueError(
                        f"{name}: this level takes no conditioning, got shape {tuple(cond.shape)}"
                    )
                continue
            expected = (n, ch, h // s, w // s)
            if cond is None or tuple(cond.shape) != expected:
                raise ValueError(
                    f"{name}: expected shape {expected}, got {None if cond is None else tuple(cond.shape)}"
                )
            check_finite(name, cond)
        if self.cfg.prior_channels:
            expected = (n, self.cfg.prior_channels, h // self.multiple, w // self.multiple)
            if prior is None or tuple(prior.shape) != expected:
                got = None if prior is None else tuple(prior.shape)
                raise ValueError(f"prior: expected shape {expected}, got {got}")
            check_finite("prior", prior)
        elif prior is not None:
            raise ValueError(
                f"prior: this flow takes no prior input (prior_channels=0), got {tuple(prior.shape)}"
            )

    def _top_stats(
        self, conds: list[Tensor | None], prior: Tensor | None
    ) -> tuple[Tensor | None, Tensor | None]:
        if self.top_prior is not None:
            inputs = [t for t in (conds[-1], prior) if t is not None]
            return self.top_prior(torch.cat(inputs, dim=1))
        return prior, None

    # ----- encode / decode --------------------------------------------------------------------------------------
    def encode(
        self, x: Tensor, conds: list[Tensor | None], prior: Tensor | None = None
    ) -> tuple[list[Tensor], Tensor]:
        """x → standardised latents (split-off ones first, top last) and the log-det of the whole map."""
        check_4d("flow input", x, self.cfg.in_channels)
        self._check(x, conds, prior, "flow input")
        check_finite("flow input", x)
        latents, logdet = [], x.new_zeros(x.shape[0])
        for level, flow in enumerate(self.level_flows):
            x, ld = flow(x, conds[level])
            logdet = logdet + ld
            keep = self.split_keep[level]
            if keep is not None:
                latents.append(x[:, keep:])
                x = x[:, :keep]
        mean, log_std = self._top_stats(conds, prior)
        if mean is not None:
            x = x - mean
        if log_std is not None:
            x = x * torch.exp(-log_std)
            logdet = logdet - sum_except_batch(log_std)
        latents.append(x)
        return latents, logdet

    def decode(
        self, latents: list[Tensor], conds: list[Tensor | None], prior: Tensor | None = None
    ) -> Tensor:
        """Standardised latents → x; the exact inverse of :meth:`encode`."""
        n_expected = sum(k is not None for k in self.split_keep) + 1
        if len(latents) != n_expected:
            raise ValueError(f"latents: expected a list of {n_expected} tensors, got {len(latents)}")
        top = latents[-1]
        check_4d("top latent", top, self.top_channels)
        h, w = top.shape[2] * self.multiple, top.shape[3] * self.multiple
        ref = top.new_empty(top.shape[0], self.cfg.in_channels, h, w)
        self._check(ref, conds, prior, "top latent (×2^levels)")
        for i, (z, shape) in enumerate(zip(latents, self.latent_shapes(h, w))):
            if tuple(z.shape) != (top.shape[0], *shape):
                raise ValueError(
                    f"latents[{i}]: expected shape {(top.shape[0], *shape)}, got {tuple(z.shape)}"
                )
        mean, log_std = self._top_stats(conds, prior)
        x = top
        if log_std is not None:
            x = x * torch.exp(log_std)
        if mean is not None:
            x = x + mean
        split_idx = len(latents) - 1
        for level in reversed(range(self.levels)):
            if self.split_keep[level] is not None:
                split_idx -= 1
                x = torch.cat([x, latents[split_idx]], dim=1)
            x = self.level_flows[level].inverse(x, conds[level])
        return x

    def log_prob(self, x: Tensor, conds: list[Tensor | None], prior: Tensor | None = None) -> Tensor:
        """Continuous log-density log p(x | cond) in nats per sample, shape (N,)."""
        latents, logdet = self.encode(x, conds, prior)
        return logdet + sum(standard_normal_log_prob(z) for z in latents)

    # ----- latents in image layout (for seamless tiled sampling) ----------------------------------------------
    def latents_from_image(self, noise: Tensor) -> list[Tensor]:
        """Map an image-shaped tensor N×C×H×W onto the latent list by the flow's own squeeze/split pattern.

        Squeezes and channel splits are local, so a crop of one global noise image gives the same latents as
        the corresponding crop of the latents: overlapping tiles then draw identical noise where they overlap.
        """
        latents = []
        for keep in self.split_keep:
            noise = squeeze2d(noise)
            if keep is not None:
                latents.append(noise[:, keep:])
                noise = noise[:, :keep]
        latents.append(noise)
        return latents

    def latents_to_image(self, latents: list[Tensor]) -> Tensor:
        """Inverse of :meth:`latents_from_image`."""
        x = latents[-1]
        idx = len(latents) - 1
        for keep in reversed(self.split_keep):
            if keep is not None:
                idx -= 1
                x = torch.cat([x, latents[idx]], dim=1)
            x = unsqueeze2d(x)
        return x

    def sample(
        self,
        conds: list[Tensor | None],
        prior: Tensor | None = None,
        temperature: float = 0.8,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
    ) -> Tensor:
        """Decode latents T·ε; ε ~ N(0, I) drawn with ``generator`` or given in image layout as ``noise``."""
        if noise is None:
            shape = self.noise_shape(conds, prior)
            ref = next(c for c in [*conds, prior] if c is not None)
            noise = torch.randn(shape, generator=generator, device=ref.device, dtype=ref.dtype)
        latents = [z * temperature for z in self.latents_from_image(noise)]
        return self.decode(latents, conds, prior)
