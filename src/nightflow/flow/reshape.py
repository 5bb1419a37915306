"""Squeeze (space-to-depth) and Split with a learned conditional Gaussian prior.

Split is written as a bijection of the whole tensor: the split-off half z2 is standardised with its conditional
prior, eps = (z2 − μ(z1, u)) / σ(z1, u), and returned in place, so every latent a ConditionalGlow emits is N(0, I)
and the layer keeps the ``forward(x, cond) -> (y, logdet)`` contract (log-det = −Σ log σ).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import FlowLayer, check_4d, check_cond, sum_except_batch
from .subnets import ZeroConv2d


def squeeze2d(x: Tensor, factor: int = 2) -> Tensor:
    """N×C×H×W → N×(C·f²)×(H/f)×(W/f); channel order (c, dy, dx) as in Glow/SRFlow."""
    n, c, h, w = x.shape
    if h % factor or w % factor:
        raise ValueError(f"squeeze input: expected H and W divisible by {factor}, got shape {tuple(x.shape)}")
    x = x.view(n, c, h // factor, factor, w // factor, factor)
    return x.permute(0, 1, 3, 5, 2, 4).reshape(n, c * factor * factor, h // factor, w // factor)


def unsqueeze2d(x: Tensor, factor: int = 2) -> Tensor:
    """Inverse of :func:`squeeze2d`."""
    n, c, h, w = x.shape
    if c % (factor * factor):
        raise ValueError(
            f"unsqueeze input: expected C divisible by {factor * factor}, got shape {tuple(x.shape)}"
        )
    x = x.view(n, c // (factor * factor), factor, factor, h, w)
    return x.permute(0, 1, 4, 2, 5, 3).reshape(n, c // (factor * factor), h * factor, w * factor)


class Squeeze(FlowLayer):
    """×2 space-to-depth; volume preserving (log-det 0)."""

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_4d("Squeeze input", x)
        return squeeze2d(x), x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> Tensor:
        check_4d("Squeeze input", y)
        return unsqueeze2d(y)


class ConditionalGaussian(torch.nn.Module):
    """μ and log σ of a Gaussian from a conditioning tensor, by a zero-initialised conv (starts as N(0, I))."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = ZeroConv2d(in_channels, 2 * out_channels)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        out = self.conv(h).float()  # the conv may run in bf16; the prior's parameters are float32
        return out[:, 0::2], out[:, 1::2]


class Split(FlowLayer):
    """Keep the first ``channels - split_channels`` channels; standardise the rest with a learned prior.

    The prior's parameters come from [kept half, conditioning]. Output shape = input shape; the caller peels
    ``y[:, keep:]`` off as a finished standard-normal latent.
    """

    def __init__(self, channels: int, cond_channels: int = 0):
        super().__init__()
        self.channels, self.cond_channels = channels, cond_channels
        self.keep = channels // 2
        self.prior = ConditionalGaussian(self.keep + cond_channels, channels - self.keep)

    def _stats(self, kept: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        return self.prior(kept if cond is None else torch.cat([kept, cond], dim=1))

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_4d("Split input", x, self.channels)
        cond = cond if self.cond_channels else None
        check_cond("Split conditioning", cond, x, self.cond_channels)
        kept, z2 = x[:, : self.keep], x[:, self.keep :]
        mean, log_std = self._stats(kept, cond)
        eps = (z2 - mean) * torch.exp(-log_std)
        return torch.cat([kept, eps], dim=1), -sum_except_batch(log_std)

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> Tensor:
        check_4d("Split input", y, self.channels)
        cond = cond if self.cond_channels else None
        check_cond("Split conditioning", cond, y, self.cond_channels)
        kept, eps = y[:, : self.keep], y[:, self.keep :]
        mean, log_std = self._stats(kept, cond)
        return torch.cat([kept, mean + eps * torch.exp(log_std)], dim=1)
