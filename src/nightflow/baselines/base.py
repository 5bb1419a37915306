"""The interface every baseline shares with the flow models: ``scale`` and ``restore(lq, temperature)``.

Why: evaluation and benchmarking treat a classical method exactly like a trained model, so a baseline is a
parameter-free ``torch.nn.Module`` with the same call signature.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import UserError


class Baseline(nn.Module):
    """A deterministic, parameter-free restorer: N×3×H×W in [0, 1] → N×3×(s·H)×(s·W) in [0, 1]."""

    name: str = "baseline"
    needs_target: bool = False  # oracles (e.g. the target's exposure) read the ground truth: labelled as such

    def __init__(self, scale: int = 1) -> None:
        super().__init__()
        if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
            raise UserError(f"scale must be a positive integer, got {scale!r}")
        self.scale = scale

    def restore(
        self, lq: torch.Tensor, temperature: float = 0.0, target: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Restore ``lq``; ``temperature`` is accepted for interface parity with flow models and ignored.
        ``target`` (the ground truth) is read only by oracle baselines (``needs_target``)."""
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

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        return self.restore(lq)

    def _run(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"name={self.name!r}, scale={self.scale}"
