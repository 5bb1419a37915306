"""The interface every baseline shares with the flow models: ``scale`` and ``restore(lq, temperature)``.

Why: evaluation and benchmarking treat a classical method exactly like a trained model, so a baseline is a
parameter-free ``torch.nn.Module`` with the same call signature.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from ..errors import UserError
from ..models.base import SAMPLE_TEMPERATURE, SizeSpec, TilingSpec, copies


class Baseline(nn.Module):
    """A deterministic, parameter-free restorer: N×3×H×W in [0, 1] → N×3×(s·H)×(s·W) in [0, 1]."""

    name: str = "baseline"
    needs_target: bool = False  # oracles (e.g. the target's exposure) read the ground truth: labelled as such
    stochastic = False
    precisions: tuple[str, ...] = ("fp32",)  # classical steps run in float32 only (nothing to gain from bf16)
    sample_temperature = SAMPLE_TEMPERATURE  # recorded with the samples; a deterministic method ignores it
    has_exposure = False
    # global statistics (auto-gamma, histogram equalisation) differ per tile: classical methods run whole-image
    sizes = SizeSpec()
    tiling = TilingSpec(tileable=False)
    dtypes = (torch.float32, torch.float64)

    def __init__(self, scale: int = 1) -> None:
        super().__init__()
        if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
            raise UserError(f"scale must be a positive integer, got {scale!r}")
        self.scale = scale

    def context(self, lq: torch.Tensor, exposure: float = 0.0) -> None:
        """No learned context; a non-zero exposure shift is refused (no exposure control)."""
        if exposure:
            raise UserError(f"{self.name} has no exposure control; leave exposure at 0")
        return None

    def restore(
        self,
        lq: torch.Tensor,
        temperature: float = 0.0,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        context: Any = None,
        target: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Restore ``lq``; ``temperature``, ``noise``, ``generator`` and ``context`` are accepted for the restorer
        contract and ignored. ``target`` (the ground truth) is read only by oracle baselines (``needs_target``)."""
        single = lq.dim() == 3
        x = lq.unsqueeze(0) if single else lq
        if x.dim() != 4 or x.shape[1] != 3 or not x.is_floating_point():
            raise UserError(f"{self.name}: expected a float N×3×H×W tensor in [0, 1], got {tuple(lq.shape)}")
        if self.needs_target and target is None:
            raise UserError(
                f"{self.name} is an oracle: it needs the ground-truth target (use it in eval only)"
            )
        oracles = [m for m in self.modules() if isinstance(m, Baseline) and type(m).needs_target]
        for m in oracles:
            m._target = None if target is None else (target.unsqueeze(0) if single else target)
        try:
            with torch.no_grad():
                y = self._run(x.clamp(0, 1)).clamp(0, 1).to(lq.dtype)
        finally:
            for m in oracles:
                m._target = None
        return y[0] if single else y

    def sample(
        self,
        lq: torch.Tensor,
        n: int = 4,
        temperature: float | None = None,
        generator: torch.Generator | None = None,
        context: Any = None,
    ) -> torch.Tensor:
        """``n`` identical copies of :meth:`restore` (a classical method has no distribution)."""
        return copies(self.restore(lq), n)

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        return self.restore(lq)

    def _run(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"name={self.name!r}, scale={self.scale}"
