"""ESRGAN's residual-in-residual dense blocks, as LLFlow's encoder trunk uses them."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3×3 convs (growth ``gc``), residual scaled by 0.2: ESRGAN/LLFlow's RDB."""

    def __init__(self, nf: int, gc: int, res_scale: float = 0.2) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(nf + i * gc, gc, 3, padding=1) for i in range(4))
        self.last = nn.Conv2d(nf + 4 * gc, nf, 3, padding=1)
        self.res_scale = res_scale
        for conv in [*self.convs, self.last]:  # small init keeps the deep residual stack near identity
            nn.init.kaiming_normal_(conv.weight, a=0.0, mode="fan_in")
            conv.weight.data.mul_(0.1)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for conv in self.convs:
            feats.append(F.leaky_relu(conv(torch.cat(feats, dim=1)), 0.2))
        return x + self.res_scale * self.last(torch.cat(feats, dim=1))


class RRDB(nn.Module):
    """Residual-in-residual dense block: three RDBs, outer residual scaled by 0.2."""

    def __init__(self, nf: int, gc: int, res_scale: float = 0.2) -> None:
        super().__init__()
        self.body = nn.Sequential(*(ResidualDenseBlock(nf, gc, res_scale) for _ in range(3)))
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res_scale * self.body(x)
