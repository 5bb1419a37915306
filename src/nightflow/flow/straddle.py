"""StraddleCoupling: additive couplings on a squeeze grid moved by one pixel of the finer grid.

Why: a squeeze-based flow writes each position of a level into a 2×2 block of the grid below it, and within a
level nothing sees the inside of two neighbouring blocks at once except the subnets' 3×3 convolutions on the
coarse grid. The bundled flows draw a faint grid at those block edges (``benchmarks/grid_periodicity.py``). This
layer undoes the level's squeeze, leaves a one-pixel border, squeezes the interior again, so that each of its
blocks straddles four of the level's, and applies two additive couplings there (each half of the channels in
turn, from the other half and the conditioning averaged onto the moved grid). The border (one pixel of the finer
grid on each side) passes unchanged; nothing wraps around, so tiles see what the whole image sees.

Additive (NICE) couplings preserve volume (log-det exactly 0), and with the subnets' zero-initialised outputs the
layer starts as the exact identity: it can be added to trained weights (``starts_as_identity``, read by
``train.init_weights``) without changing what they compute.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import FlowLayer, check_4d, check_cond
from .reshape import squeeze2d, unsqueeze2d
from .subnets import ConvSubnet, SubnetKind


class StraddleCoupling(FlowLayer):
    """Two additive couplings on the level's squeeze grid moved by one finer pixel; log-det 0."""

    # zero-initialised outputs: weights without this layer, loaded into a flow with it, compute what they did
    starts_as_identity = True

    def __init__(self, channels: int, cond_channels: int, hidden: int, subnet: SubnetKind = "conv"):
        super().__init__()
        if channels < 8 or channels % 4:
            raise ValueError(
                f"StraddleCoupling needs a squeezed tensor (channels a multiple of 4, ≥ 8), got {channels}"
            )
        self.channels, self.cond_channels = channels, cond_channels
        self.half = channels // 2
        self.net_first = ConvSubnet(self.half + cond_channels, channels - self.half, hidden, subnet)
        self.net_second = ConvSubnet(channels - self.half + cond_channels, self.half, hidden, subnet)

    @staticmethod
    def moved_cond(cond: Tensor | None) -> Tensor | None:
        """The conditioning on the moved grid: block (i, j) there covers the corners of blocks (i..i+1, j..j+1)."""
        return None if cond is None else F.avg_pool2d(cond, 2, stride=1)

    def _shift(self, net: ConvSubnet, keep: Tensor, cond: Tensor | None) -> Tensor:
        inp = keep if cond is None else torch.cat([keep, cond.to(keep.dtype)], dim=1)
        # the subnet may run in bf16 (autocast); the invertible arithmetic stays float32
        return net(inp).float()

    def _couple(self, x: Tensor, cond: Tensor | None, sign: float) -> Tensor:
        if x.shape[2] < 2 or x.shape[3] < 2:
            return x  # no moved block fits inside one block: nothing to couple
        fine = unsqueeze2d(x)
        inner = squeeze2d(fine[:, :, 1:-1, 1:-1])
        c = self.moved_cond(cond)
        a, b = inner[:, : self.half], inner[:, self.half :]
        if sign > 0:
            b = b + self._shift(self.net_first, a, c)
            a = a + self._shift(self.net_second, b, c)
        else:
            a = a - self._shift(self.net_second, b, c)
            b = b - self._shift(self.net_first, a, c)
        out = fine.clone()
        out[:, :, 1:-1, 1:-1] = unsqueeze2d(torch.cat([a, b], dim=1))
        return squeeze2d(out)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_4d("StraddleCoupling input", x, self.channels)
        check_cond("StraddleCoupling conditioning", cond, x, self.cond_channels)
        return self._couple(x, cond, 1.0), x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> Tensor:
        check_4d("StraddleCoupling input", y, self.channels)
        check_cond("StraddleCoupling conditioning", cond, y, self.cond_channels)
        return self._couple(y, cond, -1.0)
