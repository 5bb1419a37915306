"""Classical baselines usable anywhere a model is: ``get_baseline("clahe+bicubic", scale=2).restore(lq)``.

Why: RELLISUR asks whether enhancing then upscaling beats upscaling then enhancing; names joined by ``+`` run
left to right, so ``clahe+bicubic`` enhances then upscales and ``bicubic+clahe`` upscales then enhances.
Enhancers: gamma, he, clahe, lime, auto, oracle (scale 1); denoise/deblur steps (``CLEANERS``): nlm, rl. Interpolators: bicubic, lanczos, area (take the scale).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import UserError
from ..registry import Registry
from .base import Baseline
from .enhance import CLAHE, AutoGamma, HistogramEqualization, LIMEStyle, OracleExposure
from .interp import INTERPOLATORS, Interpolation
from .restore import AutoExposure, NonLocalMeans, RichardsonLucy

# name → (class, description); a new enhancer is its class plus one line here (interpolators: ``interp.py``)
ENHANCERS: Registry[tuple[type[Baseline], str]] = Registry("enhancer")
ENHANCERS.add("gamma", (AutoGamma, "auto-gamma: per-image gamma so the mean pixel value is 0.4"))
ENHANCERS.add(
    "he", (HistogramEqualization, "global histogram equalisation of HSV value, hue and saturation kept")
)
ENHANCERS.add("clahe", (CLAHE, "CLAHE (OpenCV, clip 2.0, 8x8 tiles) on HSV value, hue and saturation kept"))
ENHANCERS.add(
    "lime",
    (LIMEStyle, "LIME-style retinex: max-RGB illumination, guided-filter refinement, gamma 0.8, division"),
)
ENHANCERS.add("auto", (AutoExposure, "auto exposure: linear-light gain to 18 % grey mean luminance"))
ENHANCERS.add(
    "oracle",
    (
        OracleExposure,
        "ORACLE (reads the ground truth): linear-light gain matching the target's mean luminance",
    ),
)


# denoising/deblurring steps for cascades after an enhancer (``auto+nlm+rl``): they do not brighten, so they are
# not enhancers on their own
CLEANERS: Registry[tuple[type[Baseline], str]] = Registry("denoise/deblur step")
CLEANERS.add("nlm", (NonLocalMeans, "non-local means denoising (scikit-image), noise level estimated"))
CLEANERS.add(
    "rl",
    (
        RichardsonLucy,
        "Richardson-Lucy deblurring (scikit-image), fixed Gaussian PSF sigma 1.5, 10 iterations",
    ),
)
STEPS = (ENHANCERS, CLEANERS)  # the registries of parameter-free ×1 steps


class Cascade(Baseline):
    """Baselines run in order; its scale is the interpolator's."""

    def __init__(self, steps: list[Baseline]) -> None:
        scale = 1
        for step in steps:
            scale *= step.scale
        super().__init__(scale)
        self.steps = nn.ModuleList(steps)
        self.name = "+".join(s.name for s in steps)
        self.needs_target = any(s.needs_target for s in steps)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        for step in self.steps:
            x = step._run(x).clamp(0, 1)
        return x


def list_baselines() -> dict[str, str]:
    """Single baseline names → description; cascade them with ``+`` (e.g. ``lime+bicubic``)."""
    return {name: item[1] for registry in (*STEPS, INTERPOLATORS) for name, item in registry.items()}


def get_baseline(name: str, scale: int = 1) -> Baseline:
    """Build a baseline or a ``+``-cascade (at most one interpolator, which gets ``scale``)."""
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise UserError(f"scale must be a positive integer, got {scale!r}")
    parts = [p.strip().lower() for p in name.split("+")]
    unknown = [p for p in parts if not any(p in r for r in STEPS) and p not in INTERPOLATORS]
    if unknown:
        raise UserError(f"unknown baseline '{unknown[0]}'; choose from {', '.join(list_baselines())}")
    interps = [p for p in parts if p in INTERPOLATORS]
    if len(interps) > 1:
        raise UserError(f"baseline '{name}' has {len(interps)} interpolators; use at most one")
    if scale > 1 and not interps:
        raise UserError(
            f"baseline '{name}' cannot upscale x{scale}; add an interpolator, e.g. '{name}+bicubic'"
        )

    def step(p: str) -> Baseline:
        if p in INTERPOLATORS:
            return Interpolation(p, scale)
        return next(r for r in STEPS if p in r).get(p)[0]()

    steps = [step(p) for p in parts]
    return steps[0] if len(steps) == 1 else Cascade(steps)


def is_baseline(name: str) -> bool:
    """True if ``name`` parses as a baseline or cascade (for callers that also accept zoo names and paths)."""
    parts = [p.strip().lower() for p in name.split("+")]
    return all(any(p in r for r in STEPS) or p in INTERPOLATORS for p in parts)


__all__ = [
    "CLAHE",
    "CLEANERS",
    "ENHANCERS",
    "INTERPOLATORS",
    "AutoGamma",
    "Baseline",
    "Cascade",
    "HistogramEqualization",
    "Interpolation",
    "LIMEStyle",
    "OracleExposure",
    "get_baseline",
    "is_baseline",
    "list_baselines",
]
