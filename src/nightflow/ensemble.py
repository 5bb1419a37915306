"""Geometric self-ensemble: the mean path averaged over rotated, flipped and shifted copies of the input.

Why: a restorer is not exactly equivariant to rotations and flips (its convolutions, squeezes and attention
windows have an orientation), so each orientation makes slightly different errors. Restoring turned copies,
turning the outputs back and averaging them cancels part of those errors, as EDSR's "+" results do for
super-resolution, at n times the cost. Measured on the bundled ×2 LoLiSRFlow (`docs/training.md`, "Self-ensemble"),
most of the gain comes from the four rotations, so the members are ordered rotations first:

    k = 0 identity, 1 rot90, 2 rot180, 3 rot270, 4–7 the same after a left-right flip.

Odd members also have their block grid one input pixel off the others'. Why: the flows draw a block grid at
every second input pixel, counted from their input's top-left corner (`benchmarks/grid_periodicity.py`). Turning an
image whose sides are even maps block edges onto block edges, so turned copies alone keep the grid; on a side of
odd length a turn that reverses it moves the grid by one pixel. :func:`padding` adds one reflected pixel at the top
or left of a member where that is needed to put the member's grid where it should be: on the identity's for even
members, between its edges for odd ones. So the average has no block edge that all members share, whatever the
image's size, at no extra cost (numbers in `docs/training.md`, "Self-ensemble").

An ensemble of ``n`` uses members 0..n-1 (``SIZES``: 1, 2, 4 or 8). Only the deterministic output is averaged:
samples at a temperature above 0 are draws from a distribution, and their average scores below the mean path
(``benchmarks/sample_mean.py``: no average of 4 or 8 samples at T 0.4–0.8 beat it on either test set).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

SIZES = (1, 2, 4, 8)
# what the members are, recorded beside an ensemble above 1 (enhance's records, suite cell fingerprints), so that
# outputs averaged over other members (before the shift existed: rotations and flips only) count as different
SCHEME = "rotations and flips; block grid of odd members one input pixel off the others'"
GRID = 2  # input pixels: the period of the flows' block grid (benchmarks/grid_periodicity.py)


def shifted(k: int) -> bool:
    """Whether member ``k``'s block grid lies one input pixel off the identity's (odd members) or on it."""
    return k % 2 == 1


def _check_member(k: int) -> None:
    if not 0 <= k < 8:
        raise ValueError(f"ensemble member must be 0..7, got {k}")


def _turn(x: torch.Tensor, k: int) -> torch.Tensor:
    y = torch.flip(x, dims=(-1,)) if k >= 4 else x
    return torch.rot90(y, k % 4, dims=(-2, -1))


def _unturn(y: torch.Tensor, k: int) -> torch.Tensor:
    x = torch.rot90(y, -(k % 4), dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if k >= 4 else x


def padding(k: int, size: tuple[int, int]) -> tuple[int, int]:
    """Input pixels added before the top and the left of member ``k`` of an input of ``size`` (H, W), after turning.

    A restorer's block grid starts at its own input's origin, so after a turn that reverses an axis of odd length
    it falls one pixel off the identity's. Each member axis gets the padding (0 or 1) that puts its grid on the
    identity's for even members and one pixel off it for odd ones.
    """
    _check_member(k)
    h, w = size
    probe = torch.stack(
        torch.meshgrid(torch.arange(2), torch.arange(3), indexing="ij")
    )  # each pixel's (row, col)
    turned = _turn(probe, k)
    pads = []
    for step in ((1, 0), (0, 1)):  # one step down a member's rows, then along its columns
        delta = turned[:, step[0], step[1]] - turned[:, 0, 0]
        axis = 0 if delta[0] != 0 else 1  # the original axis this member axis runs along
        reversed_ = bool(delta[axis] < 0)
        length = (h, w)[axis]
        phase = 1 if shifted(k) else 0
        pads.append((phase + length) % GRID if reversed_ else phase)
    return pads[0], pads[1]


def forward(x: torch.Tensor, k: int, scale: int = 1) -> torch.Tensor:
    """Member ``k`` (0–7) of N×C×H×W ``x``: the k-th rotation/flip (H and W swap for odd rotations), reflect-padded
    at the top and left by :func:`padding` (times ``scale``: 1 for an input, the model's scale for an image on the
    output grid, such as a target)."""
    _check_member(k)
    y = _turn(x, k)
    top, left = (scale * p for p in padding(k, (x.shape[-2] // scale, x.shape[-1] // scale)))
    if top or left:
        # reflect needs more pixels than it adds; a one-pixel side repeats its edge instead
        mode = "reflect" if min(y.shape[-2:]) > max(top, left) else "replicate"
        y = F.pad(y, (left, 0, top, 0), mode=mode)
    return y


def inverse(y: torch.Tensor, k: int, size: tuple[int, int], scale: int = 1) -> torch.Tensor:
    """Undo :func:`forward` for an input of ``size`` (H, W) on an image at ``scale`` times its grid, such as the
    restored output of member k: crop the padding and turn back. ``inverse(forward(x, k, s), k, x's size / s, s)
    == x``."""
    top, left = (scale * p for p in padding(k, size))
    rows, cols = (size[0], size[1]) if k % 2 == 0 else (size[1], size[0])
    y = y[..., top : top + scale * rows, left : left + scale * cols]
    return _unturn(y, k)


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
    run: Callable[[torch.Tensor, torch.Tensor | None, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    n: int,
    target: torch.Tensor | None = None,
    scale: int = 1,
) -> torch.Tensor:
    """The mean over members k < ``n`` of ``inverse(run(forward(x, k), forward(target, k, scale), turned), k,
    size, scale)``, in float32, for a ``run`` whose output is ``scale`` times its input.

    ``run`` restores one member's input (and its target, for oracles that read it); ``turned`` is the member before
    its padding, the picture whose whole-image statistics (exposure, tone table, attention pools) it should use,
    so that members differ in geometry only. Outputs are summed as they come, so only one extra output-sized
    buffer is held.
    """
    check_size(n)
    size = (x.shape[-2], x.shape[-1])
    total: torch.Tensor | None = None
    for k in range(n):
        member_target = None if target is None else forward(target, k, scale)
        y = run(forward(x, k), member_target, _turn(x, k))
        y = inverse(y, k, size, scale).to(torch.float32)
        total = y.clone() if total is None else total.add_(y)
    assert total is not None
    return total.div_(n)
