"""The one adapter from an encoder's scales to the flow levels.

Geometry: the flow's level l works at HR/2^(l+1) (finest first); the encoder sees the LR input (LR = HR/s) and
produces features at scales j = 0 … n−1, scale j at LR/(stride·2^j) (``stride`` > 1 when the encoder's finest
map is already below LR, as LLFlow's ×1 trunk behind its max-pool). So level l sits ``k = l + 1 − log2(s) −
log2(stride)`` halvings below the encoder's finest scale, and reads:

- k < 0 (finer than anything the encoder has, ×2 and ×4): the finest scale after −k up steps;
- 0 ≤ k < n: scale k as it is;
- k ≥ n (coarser than the coarsest scale): the coarsest scale after k − n + 1 down steps.

What an up or down step *is* belongs to the encoder (MPCT and MSFormer: a learned ``PixelShuffleUp``, plain
``halve`` down; LLFlow: nearest ×2 + conv up, area ½ + conv down, with a leaky ReLU between steps), so
:class:`FeatureLevels` takes them as callables; it owns the plan (which scale, how many steps, the chains'
lengths, which scales are read at all), the level sizes, optional extra maps concatenated per level and the
crop of a padded pyramid. It holds no parameters: the encoders keep their step and head modules under the
attribute names of their checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .resample import halve

Step = Callable[[torch.Tensor, int], torch.Tensor]  # (features, step index) → features one step finer/coarser
Extra = Callable[["LevelSource", tuple[int, int]], "torch.Tensor | None"]


@dataclass(frozen=True)
class LevelSource:
    """Where flow level ``level`` comes from: ``k`` halvings below the encoder's finest scale (negative:
    finer), read from encoder scale ``scale`` after ``up`` up steps (from scale 0) or ``down`` down steps
    (from the coarsest scale); at most one of the two is non-zero."""

    level: int
    k: int
    scale: int
    up: int
    down: int


class FeatureLevels:
    """Maps an encoder's multi-scale features (finest first) onto ``levels`` flow levels at ×``scale``.

    ``scales``: how many scales the encoder produces (scale j at LR/(stride·2^j)); ``stride``: a power of two,
    the finest scale's stride with respect to the LR input.
    """

    def __init__(self, scale: int, levels: int, scales: int = 1, stride: int = 1) -> None:
        for name, v in (("scale", scale), ("stride", stride)):
            if v < 1 or v & (v - 1):
                raise ValueError(f"feature levels: {name} must be a power of two, got {v}")
        if levels < 1 or scales < 1:
            raise ValueError(f"feature levels: levels and scales must be >= 1, got {levels}, {scales}")
        self.scale, self.levels, self.scales, self.stride = scale, levels, scales, stride
        self._log_s, self._log_stride = scale.bit_length() - 1, stride.bit_length() - 1
        self.sources: list[LevelSource] = []
        for l in range(levels):
            k = l + 1 - self._log_s - self._log_stride
            self.sources.append(
                LevelSource(
                    level=l, k=k, scale=min(max(k, 0), scales - 1), up=max(0, -k), down=max(0, k - scales + 1)
                )
            )

    @property
    def n_up(self) -> int:
        """Length of the up chain (learned up steps the encoder must provide)."""
        return max(s.up for s in self.sources)

    @property
    def n_down(self) -> int:
        """Length of the down chain from the coarsest scale."""
        return max(s.down for s in self.sources)

    @property
    def used_scales(self) -> list[int]:
        """Encoder scales read by some level (the up chain starts from scale 0), ascending."""
        return sorted({s.scale for s in self.sources})

    def size_at(self, k: int, lr_size: tuple[int, int]) -> tuple[int, int]:
        """Size of a map ``k`` halvings below the finest encoder scale, for an LR input of ``lr_size``."""
        e = self._log_stride + k  # halvings below LR
        h, w = lr_size
        return (h >> e, w >> e) if e >= 0 else (h << -e, w << -e)

    def sizes(self, lr_size: tuple[int, int]) -> list[tuple[int, int]]:
        """Size of every flow level (HR/2^(l+1) with HR = scale·LR, as ``Encoder.level_sizes``)."""
        return [self.size_at(s.k, lr_size) for s in self.sources]

    def __call__(
        self,
        feats: Sequence[torch.Tensor],
        *,
        up: Step | None = None,
        down: Step | None = None,
        extra: Extra | None = None,
        crop: bool = False,
        lr_size: tuple[int, int] | None = None,
    ) -> list[torch.Tensor]:
        """One map per flow level, finest first.

        ``feats``: the encoder's scales, finest first (``scales`` of them). ``up(y, i)`` / ``down(y, i)``: the
        i-th step of the up chain (from scale 0) and of the down chain (from the coarsest scale; default
        ``halve``). ``extra(source, size)``: a map of ``size`` (the level map's) concatenated after the
        level's own channels, or None. ``crop``: the scales are of a padded input whose real LR size is
        ``lr_size``: the up chain starts from scale 0 cropped to its real size and every level is cropped to
        its size after the concat (so maps pooled from the padded input average real and replicated pixels
        at odd edges exactly as the whole image does).
        """
        if len(feats) != self.scales:
            raise ValueError(f"feature levels: expected {self.scales} encoder scales, got {len(feats)}")
        if crop and lr_size is None:
            raise ValueError("feature levels: crop needs the real LR input size (lr_size)")
        top = feats[0]
        if crop:
            h0, w0 = self.size_at(0, lr_size)
            top = top[..., :h0, :w0]
        ups = [top]
        if self.n_up:
            if up is None:
                raise ValueError(f"feature levels: ×{self.scale} needs {self.n_up} up step(s); pass up=")
            for i in range(self.n_up):
                ups.append(up(ups[-1], i))
        downs = [feats[-1]]
        for i in range(self.n_down):
            downs.append(halve(downs[-1]) if down is None else down(downs[-1], i))

        out = []
        for src in self.sources:
            if src.k <= 0:
                y = ups[src.up]
            elif src.down:
                y = downs[src.down]
            else:
                y = feats[src.scale]
            more = extra(src, (y.shape[-2], y.shape[-1])) if extra is not None else None
            if more is not None:
                y = torch.cat([y, more], dim=1)
            if crop:
                h, w = self.size_at(src.k, lr_size)
                y = y[..., :h, :w]
            out.append(y)
        return out
