"""Aligned crops and augmentations for image pairs whose sizes differ by the scale factor.

Why: a low-quality crop at (y, x) of size p must match the high-quality crop at (s·y, s·x) of size s·p, and a
flip or rotation must hit both identically, or the model learns misregistration. Randomness comes from a
per-item ``torch.Generator`` seeded by (seed, epoch, index), so a resumed run sees exactly the same crops.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import UserError


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A generator whose stream depends only on (seed, epoch, index): reproducible in any worker, any order."""
    state = np.random.SeedSequence(
        [seed & 0xFFFFFFFF, epoch & 0xFFFFFFFF, index & 0xFFFFFFFF]
    ).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def crop_multiple(scale: int, flow_multiple: int) -> int:
    """The number every HR crop side must be divisible by: lcm(scale, flow's 2^L)."""
    return scale * flow_multiple // math.gcd(scale, flow_multiple)


def check_patch_size(patch_size: int, scale: int, flow_multiple: int) -> None:
    """UserError unless the HR patch divides by the scale and by the flow's multiple."""
    m = crop_multiple(scale, flow_multiple)
    if patch_size <= 0 or patch_size % m:
        raise UserError(
            f"patch_size {patch_size} must be a positive multiple of {m} (scale ×{scale} and the flow's "
            f"multiple {flow_multiple}); try {max(m, round(patch_size / m) * m)}"
        )


def crop_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Drop trailing rows/columns so H and W divide by ``multiple`` (top-left anchored, like RELLISUR's 624)."""
    h, w = x.shape[-2:]
    return x[..., : h - h % multiple, : w - w % multiple]


def _randint(generator: torch.Generator, high: int) -> int:
    return int(torch.randint(0, high, (), generator=generator)) if high > 1 else 0


def paired_crop(
    lq: torch.Tensor,
    hq: torch.Tensor | None,
    hq_patch: int,
    scale: int,
    generator: torch.Generator | None,
    name: str = "",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Crop an HR patch of ``hq_patch`` pixels and the LQ patch that covers the same scene area.

    ``generator`` None → centre crop (validation); otherwise a uniformly random position on the LQ grid.
    ``hq`` may be None (unpaired data): only the LQ patch (``hq_patch // scale``) is cut.
    """
    p = hq_patch // scale
    h, w = lq.shape[-2:]
    if h < p or w < p:
        raise UserError(
            f"{name or 'image'}: low-quality image is {w}×{h}, smaller than the {p}×{p} crop that patch_size "
            f"{hq_patch} needs at ×{scale}; lower patch_size"
        )
    if generator is None:
        y, x = (h - p) // 2, (w - p) // 2
    else:
        y, x = _randint(generator, h - p + 1), _randint(generator, w - p + 1)
    lq_c = lq[..., y : y + p, x : x + p]
    hq_c = None if hq is None else hq[..., scale * y : scale * (y + p), scale * x : scale * (x + p)]
    return lq_c, hq_c


def augment(
    tensors: list[torch.Tensor], generator: torch.Generator, rotate: bool = True
) -> list[torch.Tensor]:
    """Apply one random horizontal flip, vertical flip and 90° rotation to every tensor in the list alike.

    ``rotate`` False (non-square images that must keep their shape) limits rotations to 0° and 180°.
    """
    hflip = _randint(generator, 2) == 1
    vflip = _randint(generator, 2) == 1
    k = _randint(generator, 4)
    if not rotate:
        k = 2 * (k % 2)
    out = []
    for t in tensors:
        if hflip:
            t = t.flip(-1)
        if vflip:
            t = t.flip(-2)
        if k:
            t = torch.rot90(t, k, dims=(-2, -1))
        out.append(t.contiguous())
    return out
