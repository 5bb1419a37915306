"""Log-likelihood bookkeeping: Gaussian log-densities, dequantisation, bits per dimension.

Why both conventions: nightflow reports bits per *dimension* with uniform dequantisation (comparable across
image sizes and with the density-estimation literature); LLFlow's logs report bits per *pixel* without
dequantisation, offered here only under that name.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import sum_except_batch

LOG_2PI = math.log(2.0 * math.pi)


def standard_normal_log_prob(t: Tensor) -> Tensor:
    """Per-sample log N(t; 0, I), shape (N,)."""
    return sum_except_batch(-0.5 * (t * t + LOG_2PI))


def dequantize(x: Tensor, quant: int, generator: torch.Generator | None = None) -> Tensor:
    """Add uniform noise U[0, 1/quant) so a discrete image has a proper continuous density (quant = levels)."""
    if quant <= 0:
        return x
    device = generator.device if generator is not None else x.device
    noise = torch.rand(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)
    return x + noise / quant


def bits_per_dim(log_p: Tensor, num_dims: int, quant: int = 256) -> Tensor:
    """NLL in bits per dimension of a dequantised image: (−log p(x) + D·log quant) / (D·ln 2).

    ``log_p`` is the continuous log-density in nats of the [0, 1]-scaled image; with ``quant`` ≤ 0 no
    discretisation term is added (the continuous NLL, which can be negative).
    """
    discrete = num_dims * math.log(quant) if quant > 0 else 0.0
    return (-log_p + discrete) / (num_dims * math.log(2.0))


def llflow_bits_per_pixel(log_p: Tensor, height: int, width: int) -> Tensor:
    """LLFlow's reported "NLL": −log p / (ln 2 · H·W) — bits per *pixel*, no dequantisation term."""
    return -log_p / (math.log(2.0) * height * width)
