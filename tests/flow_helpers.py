"""Shared helpers for the flow-core tests: brute-force Jacobians and a short optimisation that moves every
parameter away from its (often identity) initial value."""

from __future__ import annotations

import torch
from torch import Tensor


def brute_force_logdet(fn, x: Tensor) -> float:
    """log|det J| of ``fn`` at ``x`` (one sample), from the full autograd Jacobian in float64."""
    assert x.dtype == torch.float64 and x.shape[0] == 1
    jac = torch.autograd.functional.jacobian(lambda t: fn(t).reshape(-1), x)
    jac = jac.reshape(x.numel(), x.numel())
    sign, logabs = torch.linalg.slogdet(jac)
    assert sign != 0
    return float(logabs)


def train_a_bit(module: torch.nn.Module, make_batch, steps: int = 20, lr: float = 1e-2) -> None:
    """Maximise a Gaussian log-likelihood of the layer's output for a few Adam steps (non-identity weights)."""
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        return
    opt = torch.optim.Adam(params, lr=lr)
    module.train()
    for _ in range(steps):
        x, cond = make_batch()
        y, logdet = module(x, cond)
        y = torch.cat([t.reshape(t.shape[0], -1) for t in y], 1) if isinstance(y, list) else y
        loss = (0.5 * (y**2).reshape(y.shape[0], -1).sum(1) - logdet).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    module.eval()


def moved_from_init(module: torch.nn.Module, before: dict[str, Tensor]) -> bool:
    """True if every floating-point parameter changed during training."""
    return all(not torch.equal(before[n], p.detach()) for n, p in module.named_parameters())
