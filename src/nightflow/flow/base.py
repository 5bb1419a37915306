"""The invertible-layer contract and the shape checks every layer uses.

Why: every layer maps ``forward(x, cond) -> (y, logdet[N])`` and ``inverse(y, cond) -> x``; bad shapes must fail
at the layer's door with a message naming the tensor, never as a broadcast error deep inside a convolution.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class FlowLayer(nn.Module):
    """Base class of invertible layers. Subclasses implement ``forward`` and ``inverse``."""

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:  # pragma: no cover
        raise NotImplementedError

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> Tensor:  # pragma: no cover
        raise NotImplementedError


def check_4d(name: str, t: Tensor, channels: int | None = None) -> None:
    """Raise ValueError unless ``t`` is N×C×H×W (with C == ``channels`` when given)."""
    if not isinstance(t, Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 4:
        raise ValueError(f"{name}: expected shape (N, C, H, W), got {tuple(t.shape)}")
    if channels is not None and t.shape[1] != channels:
        exp = f"(N, {channels}, H, W)"
        raise ValueError(f"{name}: expected shape {exp}, got {tuple(t.shape)}")


def check_cond(name: str, cond: Tensor | None, x: Tensor, channels: int) -> None:
    """Raise ValueError unless ``cond`` is N×channels×H×W matching ``x``'s batch and spatial size."""
    if channels == 0:
        if cond is not None:
            raise ValueError(
                f"{name}: this layer takes no conditioning, got a tensor of shape {tuple(cond.shape)}"
            )
        return
    expected = (x.shape[0], channels, x.shape[2], x.shape[3])
    if cond is None:
        raise ValueError(f"{name}: conditioning required with shape {expected}, got None")
    if not isinstance(cond, Tensor) or tuple(cond.shape) != expected:
        got = tuple(cond.shape) if isinstance(cond, Tensor) else type(cond).__name__
        raise ValueError(f"{name}: expected shape {expected}, got {got}")


def check_finite(name: str, t: Tensor) -> None:
    """Raise ValueError if ``t`` holds NaN or inf (a flow would silently propagate them)."""
    if not torch.isfinite(t).all():
        raise ValueError(f"{name}: contains NaN or inf values (shape {tuple(t.shape)})")


def sum_except_batch(t: Tensor) -> Tensor:
    """Sum over all dimensions but the first: per-sample totals of shape (N,)."""
    return t.reshape(t.shape[0], -1).sum(dim=1)


class FlowSequence(FlowLayer):
    """Layers applied in order; log-determinants add up; the inverse runs them backwards."""

    def __init__(self, layers: list[FlowLayer]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        logdet = x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, ld = layer(x, cond)
            logdet = logdet + ld
        return x, logdet

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> Tensor:
        for layer in reversed(self.layers):
            y = layer.inverse(y, cond)
        return y
