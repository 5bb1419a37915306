"""The restorer contract: what every restorable thing in nightflow states and does.

Flows (:class:`~nightflow.models.restorer.FlowRestorer`), learned baselines (regression, sequential) and classical
baselines (:class:`~nightflow.baselines.base.Baseline`) all implement :class:`Restorer`; the trainable ones also
:class:`Trainable`. The API, inference, evaluation, the trainer, the exporter and the CLI use only these names,
never ``hasattr``/``getattr`` probes or ``is_baseline`` branches.

What a restorer states (plain attributes, read before any work):

- ``scale``: the upscaling factor s (1, 2 or 4); the output of an N×3×H×W input is N×3×sH×sW.
- ``sizes``: a :class:`SizeSpec`: inputs of any size ≥ ``min_size`` are accepted; the model pads internally
  (replicate) to a multiple of ``multiple`` LR pixels and crops back, so callers never pad.
- ``tiling``: a :class:`TilingSpec`: whether tiled inference reproduces the whole image (``tileable``), the LR
  grid tile origins must sit on (``grid``), the LR margin each tile discards at inner edges (``margin``) and the
  smallest tile it accepts (``min_tile``).
- ``dtypes``: input dtypes it accepts (float32 always; others where it was measured to work).
- ``stochastic``: whether it has a distribution (``temperature`` and ``noise`` change the output).
- ``has_exposure``: whether ``context(lq, exposure)`` honours an EV shift (others refuse a non-zero one).
- ``needs_target``: oracles read the ground truth (``restore(..., target=hq)``); labelled as such everywhere.
- ``precisions``: inference precisions measured to keep the mean path within 1/255 of float32 (``"fp32"`` always;
  ``"bf16"`` where bf16 autocast was measured safe); ``--precision auto`` picks bf16 only from these
  (:mod:`nightflow.precision`).
- ``sample_temperature``: the temperature ``sample`` (and every sample or spread a caller asks for without one)
  uses: a fact measured on the weights (``ModelConfig.sample_temperature``; ``SAMPLE_TEMPERATURE`` otherwise).

What it does (every tensor N×3×H×W float in [0, 1], outputs clamped to [0, 1]):

- ``context(lq, exposure=0.0)``: the whole-image context (:class:`~nightflow.context.ImageContext`) of the
  full LR image, or None for models without global statistics; pass it to every tile and sample.
- ``restore(lq, *, temperature=0.0, noise=None, generator=None, context=None, target=None)``: the mean path
  at temperature 0, a sample otherwise; ``noise`` (N×3×sH×sW, standard normal) fixes the sample so tiles agree.
- ``sample(lq, n, *, temperature=None, generator=None, context=None)``: n samples at ``temperature`` (None:
  ``sample_temperature``), n×N×3×sH×sW (deterministic models return n copies of ``restore``).
- Trainable only: ``loss(batch, generator=None)`` over the whole batch dict (keys such as ``lq``, ``hq``,
  ``ctx_thumb``, ``log2_gain``; a term declares which it needs) returning a dict of scalar tensors with a
  ``total``; ``initialize(batch)`` for data-dependent layers (ActNorm), a no-op elsewhere.

Likelihoods: ``nll_bits_per_dim(hq, lq)`` on flows is a *positive* negative log-likelihood in bits per dimension
of the image it was computed over (the pair padded to ``sizes.multiple``); the flow core's ``log_prob`` is a
log-density in nats. The names say which.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

# Default temperature of samples and uncertainty maps for a model whose weights set none (``ModelConfig.
# sample_temperature``, a weight fact: each model's card says which it uses). Measured on the weights of 2026-12-07
# (synthetic suite, LPIPS of one seeded sample, T = 0 / 0.2 / 0.4 / 0.6 / 0.8; benchmarks/suites/temperature.yaml):
# LoLiSRFlow ×1 0.333/0.331/0.326/0.325/0.336, ×2 0.563/0.554/0.538/0.532/0.550, ×4 0.693/0.686/0.672/0.670/0.677,
# UPT-Flow ×1 0.477/0.471/0.484/0.531/0.592. LoLiSRFlow's weights set their own 0.6 (better than 0.4 on the foreign
# pairs too: benchmarks/suites/temperature-foreign.yaml); UPT-Flow's 0.2 was not confirmed there, so it keeps this.
# The papers' 0.8 adds noise rather than detail on the synthetic pairs at this training budget (issue 11, item 5).
SAMPLE_TEMPERATURE = 0.4
# Sampling temperatures above this are far outside the latent's N(0, 1) support: the flow decodes saturated noise.
MAX_TEMPERATURE = 2.0


@dataclass(frozen=True)
class SizeSpec:
    """Input sizes a restorer accepts: any H, W ≥ ``min_size``; padded internally to ``multiple``."""

    multiple: int = 1
    min_size: int = 1


@dataclass(frozen=True)
class TilingSpec:
    """How tiled inference must cut this model's input so that tiles agree with the whole image.

    ``grid``: tile origins are multiples of it (LR px; windows and downsampling stay aligned);
    ``margin``: LR px of every inner tile edge that the blend discards (beyond the receptive field's reach);
    ``min_tile``: the smallest tile side accepted (smaller ones are refused, not silently blocky)."""

    tileable: bool = True
    grid: int = 1
    margin: int = 0
    min_tile: int = 1


@runtime_checkable
class Restorer(Protocol):
    """Anything nightflow can run on an image: flows, learned baselines, classical baselines."""

    scale: int
    stochastic: bool
    needs_target: bool
    precisions: tuple[str, ...]
    # the temperature of samples and spreads when the caller gives none (measured on the weights: a flow's
    # ``ModelConfig.sample_temperature``; deterministic restorers keep SAMPLE_TEMPERATURE, which they ignore)
    sample_temperature: float

    @property
    def sizes(self) -> SizeSpec: ...

    @property
    def tiling(self) -> TilingSpec: ...

    @property
    def dtypes(self) -> tuple[torch.dtype, ...]: ...

    @property
    def has_exposure(self) -> bool: ...

    def context(self, lq: Tensor, exposure: float = 0.0) -> Any: ...

    def restore(
        self,
        lq: Tensor,
        *,
        temperature: float = 0.0,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
        context: Any = None,
        target: Tensor | None = None,
    ) -> Tensor: ...

    def sample(
        self,
        lq: Tensor,
        n: int = 4,
        *,
        temperature: float | None = None,
        generator: torch.Generator | None = None,
        context: Any = None,
    ) -> Tensor: ...


@runtime_checkable
class Trainable(Restorer, Protocol):
    """A restorer with parameters that the trainer can optimise."""

    def loss(self, batch: dict[str, Any], generator: torch.Generator | None = None) -> dict[str, Tensor]: ...

    def initialize(self, batch: dict[str, Any]) -> None: ...


def tiling_for(multiple: int, margin: int, tileable: bool = True) -> TilingSpec:
    """The tiling rule of an encoder-based model: origins on its pad grid, ``margin`` LR px discarded per inner
    edge, and tiles of at least twice the default overlap (2·margin + 8 px), on the grid."""
    least = max(2 * (2 * margin + 8), multiple)
    return TilingSpec(tileable, grid=multiple, margin=margin, min_tile=-(-least // multiple) * multiple)


def temperature_for(restorer: Restorer, temperature: float | None) -> float:
    """``temperature``, or the restorer's own sampling default when it is None."""
    return float(restorer.sample_temperature if temperature is None else temperature)


def copies(out: Tensor, n: int) -> Tensor:
    """``sample`` of a deterministic restorer: ``n`` independent copies of its one output, n×N×3×sH×sW."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a whole number >= 1, got {n!r}")
    return out.unsqueeze(0).expand(n, *out.shape).clone()


def is_trainable(restorer: object) -> bool:
    """True for restorers the trainer can optimise (they define ``loss`` and ``initialize``)."""
    return isinstance(restorer, Trainable)
