"""Interpolation baselines: bicubic, Lanczos and area resampling (MATLAB ``imresize`` conventions).

Why: "bicubic" is the SR field's reference point, and its definition matters (MATLAB/PIL use a = -0.5,
PyTorch/OpenCV a = -0.75); all three kernels come from :mod:`nightflow.metrics.resize`.

``area`` is exact area-overlap resampling. It is the antialiased choice when *shrinking* (each output pixel
is the mean of the input area it covers). When *enlarging* by an integer factor, each output pixel lies inside
one input pixel, so it reduces to pixel replication: no new detail and no ringing, the "do nothing clever"
upscaler. Antialiasing has nothing to remove when enlarging, so bicubic and Lanczos are plain interpolation
there (and widen their kernels, MATLAB-style, only when shrinking).
"""

from __future__ import annotations

import torch

from ..metrics.resize import imresize
from ..registry import Registry
from .base import Baseline

# name → (imresize kernel, description); a new interpolator is one line here
INTERPOLATORS: Registry[tuple[str, str]] = Registry("interpolator")
INTERPOLATORS.add("bicubic", ("cubic", "bicubic interpolation (Keys a=-0.5, as MATLAB imresize)"))
INTERPOLATORS.add("lanczos", ("lanczos3", "Lanczos-3 interpolation"))
INTERPOLATORS.add(
    "area",
    ("area", "area resampling (box averaging when shrinking, pixel replication for integer enlargement)"),
)


class Interpolation(Baseline):
    """Resize by ``scale`` with one of :data:`INTERPOLATORS`; output exactly (s·H)×(s·W)."""

    def __init__(self, method: str = "bicubic", scale: int = 2) -> None:
        super().__init__(scale)
        self.name = method
        self.kernel = INTERPOLATORS.get(method, "baseline")[0]

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale == 1:
            return x
        h, w = x.shape[-2:]
        return imresize(x, size=(h * self.scale, w * self.scale), kernel=self.kernel)
