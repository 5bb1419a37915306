"""Conditional affine layers: AffineInjector, ConditionalAffineCoupling and UPT-Flow's CrossCoupling.

All use scale = floor + (1 − floor)·sigmoid(raw + 2) + eps, which bounds the scale in (floor + eps, 1 + eps):
log-dets stay finite and the inverse never divides by zero (LLFlow's NaNs came from unbounded scales).

Why a floor: with floor 0 (LLFlow's form) a trained flow drives scales to eps on inputs it never saw (uniform
noise, checkerboards), and the inverse then expands 1/eps = 10⁴× per layer: decode(encode(x)) reached 1e33.
A floor bounds that expansion to 1/floor per layer; 0.3 (bundled LoLiSRFlow; 0.25 for UPT-Flow) keeps any input in [0, 1] invertible to 1e-3
(``scripts/flow_stability.py``, ``docs/reliability.md``). Floor 0 reproduces the old form exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import FlowLayer, FlowSequence, check_4d, check_cond, sum_except_batch
from .subnets import ConvSubnet, SubnetKind


def shift_and_scale(h: Tensor, eps: float, floor: float = 0.0) -> tuple[Tensor, Tensor]:
    """Split subnet output interleaved (even channels shift, odd channels raw scale), as LLFlow does.

    The subnet may run in bf16 (autocast); the affine parameters and log-dets are always float32."""
    h = h.float()
    shift = h[:, 0::2]
    gate = torch.sigmoid(h[:, 1::2] + 2.0)
    scale = (gate if floor == 0.0 else floor + (1.0 - floor) * gate) + eps
    return shift, scale


def check_floor(floor: float) -> float:
    if not 0.0 <= floor < 1.0:
        raise ValueError(f"scale floor must be in [0, 1), got {floor}")
    return float(floor)


class AffineInjector(FlowLayer):
    """z ← (z + shift(u))·scale(u): an affine map whose parameters come from the conditioning alone."""

    def __init__(
        self,
        channels: int,
        cond_channels: int,
        hidden: int,
        subnet: SubnetKind = "conv",
        eps: float = 1e-4,
        floor: float = 0.0,
    ):
        super().__init__()
        if cond_channels <= 0:
            raise ValueError("AffineInjector needs conditioning channels > 0")
        self.channels, self.cond_channels, self.eps = channels, cond_channels, eps
        self.floor = check_floor(floor)
        self.net = ConvSubnet(cond_channels, 2 * channels, hidden, subnet)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_4d("AffineInjector input", x, self.channels)
        check_cond("AffineInjector conditioning", cond, x, self.cond_channels)
        shift, scale = shift_and_scale(self.net(cond), self.eps, self.floor)
        return (x + shift) * scale, sum_except_batch(torch.log(scale))

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> Tensor:
        check_4d("AffineInjector input", y, self.channels)
        check_cond("AffineInjector conditioning", cond, y, self.cond_channels)
        shift, scale = shift_and_scale(self.net(cond), self.eps, self.floor)
        return y / scale - shift


class ConditionalAffineCoupling(FlowLayer):
    """Affine coupling: one channel half is transformed with parameters from [the other half, conditioning].

    ``transform_first=False`` (default) keeps z1 = x[:, :c1] and transforms z2; ``True`` does the mirror image,
    which CrossCoupling uses for its second half-step.
    """

    def __init__(
        self,
        channels: int,
        cond_channels: int,
        hidden: int,
        subnet: SubnetKind = "conv",
        eps: float = 1e-4,
        transform_first: bool = False,
        floor: float = 0.0,
    ):
        super().__init__()
        if channels < 2:
            raise ValueError(f"coupling needs at least 2 channels, got {channels}")
        self.channels, self.cond_channels, self.eps = channels, cond_channels, eps
        self.floor = check_floor(floor)
        self.c1 = channels // 2
        self.transform_first = transform_first
        n_in = (channels - self.c1 if transform_first else self.c1) + cond_channels
        n_out = self.c1 if transform_first else channels - self.c1
        self.net = ConvSubnet(n_in, 2 * n_out, hidden, subnet)

    def _params(self, keep: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        inp = keep if cond is None else torch.cat([keep, cond], dim=1)
        return shift_and_scale(self.net(inp), self.eps, self.floor)

    def _halves(self, t: Tensor) -> tuple[Tensor, Tensor]:
        a, b = t[:, : self.c1], t[:, self.c1 :]
        return (b, a) if self.transform_first else (a, b)  # (kept, transformed)

    def _join(self, keep: Tensor, changed: Tensor) -> Tensor:
        return torch.cat([changed, keep] if self.transform_first else [keep, changed], dim=1)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_4d("ConditionalAffineCoupling input", x, self.channels)
        check_cond("ConditionalAffineCoupling conditioning", cond, x, self.cond_channels)
        keep, change = self._halves(x)
        shift, scale = self._params(keep, cond)
        return self._join(keep, (change + shift) * scale), sum_except_batch(torch.log(scale))

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> Tensor:
        check_4d("ConditionalAffineCoupling input", y, self.channels)
        check_cond("ConditionalAffineCoupling conditioning", cond, y, self.cond_channels)
        keep, change = self._halves(y)
        shift, scale = self._params(keep, cond)
        return self._join(keep, change / scale - shift)


class CrossCoupling(FlowSequence):
    """UPT-Flow's cross-coupling: injector → z2 ← f(z1, u) → injector → z1 ← f(z2, u).

    Both halves are updated in one step. The log-det adds each half-step once (upstream's reverse pass
    subtracted one log-scale twice, which left images right but NLL wrong).
    """

    def __init__(
        self,
        channels: int,
        cond_channels: int,
        hidden: int,
        subnet: SubnetKind = "cbam",
        eps: float = 3e-4,
        floor: float = 0.0,
    ):
        if cond_channels <= 0:
            raise ValueError("CrossCoupling needs conditioning channels > 0")
        args = (channels, cond_channels, hidden, subnet, eps)
        super().__init__(
            [
                AffineInjector(*args, floor=floor),
                ConditionalAffineCoupling(*args, transform_first=False, floor=floor),
                AffineInjector(*args, floor=floor),
                ConditionalAffineCoupling(*args, transform_first=True, floor=floor),
            ]
        )
        self.channels, self.cond_channels = channels, cond_channels

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_4d("CrossCoupling input", x, self.channels)
        check_cond("CrossCoupling conditioning", cond, x, self.cond_channels)
        return super().forward(x, cond)
