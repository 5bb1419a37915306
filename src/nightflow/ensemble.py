"""Geometric self-ensemble: the mean path averaged over rotated and flipped copies of the input.

Why: a restorer is not exactly equivariant to rotations and flips (its convolutions, squeezes and attention
windows have an orientation), so each orientation makes slightly different errors. Restoring turned copies,
turning the outputs back and averaging them cancels part of those errors, as EDSR's "+" results do for
super-resolution, at n times the cost. Measured on the bundled ×2 LoLiSRFlow (`docs/training.md`, "Self-ensemble"),
most of the gain comes from the four rotations, so the members are ordered rotations first:

    k = 0 identity, 1 rot90, 2 rot180, 3 rot270, 4–7 the same after a left-right flip.

An ensemble of ``n`` uses members 0..n-1 (``SIZES``: 1, 2, 4 or 8). Only the deterministic output is averaged:
samples at a temperature above 0 are draws from a distribution, and their average scores below the mean path
(``benchmarks/sample_mean.py``: no average of 4 or 8 samples at T 0.4–0.8 beat it on either test set).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

SIZES = (1, 2, 4, 8)


def forward(x: torch.Tensor, k: int) -> torch.Tensor:
    """Member ``k`` (0–7) of the eight rotations and flips of N×C×H×W ``x`` (H and W swap for odd rotations)."""
    if not 0 <= k < 8:
        raise ValueError(f"ensemble member must be 0..7, got {k}")
    y = torch.flip(x, dims=(-1,)) if k >= 4 else x
    return torch.rot90(y, k % 4, dims=(-2, -1))


def inverse(y: torch.Tensor, k: int) -> torch.Tensor:
    """Undo :func:`forward`: ``inverse(forward(x, k), k) == x``."""
    if not 0 <= k < 8:
        raise ValueError(f"ensemble member must be 0..7, got {k}")
    x = torch.rot90(y, -(k % 4), dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if k >= 4 else x


def check_size(n: int, name: str = "ensemble") -> int:
    """``n`` as an int if it is one of ``SIZES``, else a ValueError naming them."""
    if isinstance(n, bool) or not isinstance(n, int) or n not in SIZES:
        sizes = ", ".join(map(str, SIZES))
        raise ValueError(f"{name} must be one of {sizes} (1 = no ensemble), got {n!r}")
    return n


def check(n: int, temperature: float = 0.0, name: str = "ensemble") -> int:
    """:func:`check_size`, and above 1 only at temperature 0 (the rule every front end states once, through
    this): the self-ensemble averages the mean path, never samples."""
    check_size(n, name)
    if n > 1 and temperature > 0:
        raise ValueError(
            f"{name} {n} averages the mean path (temperature 0), not samples: an average of samples scores below "
            "the mean path (benchmarks/sample_mean.py); leave the temperature at 0"
        )
    return n


def average(
    run: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
    x: torch.Tensor,
    n: int,
    target: torch.Tensor | None = None,
) -> torch.Tensor:
    """The mean of ``inverse(run(forward(x, k), forward(target, k)), k)`` over members k < ``n``, in float32.

    ``run`` restores one oriented input (and its oriented target, for oracles that read it); outputs are summed as
    they come, so only one extra output-sized buffer is held.
    """
    check_size(n)
    total: torch.Tensor | None = None
    for k in range(n):
        turned_target = None if target is None else forward(target, k)
        y = inverse(run(forward(x, k), turned_target), k).to(torch.float32)
        total = y.clone() if total is None else total.add_(y)
    assert total is not None
    return total.div_(n)
