"""Sizes: the one pad/crop helper of every restorer (and of anything else that pads as the restorers do).

Why one: the restorers promise that callers never pad (``models.base.SizeSpec``); they replicate-pad the LR
input on the bottom/right to the multiple they need and crop the output back. Tiled inference pads whole images
the same way so one-piece inference equals ``restorer.restore`` exactly; that only holds if every place pads
with the same rule, which is this module.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ..maps import ImageValueError


def check_batch(x: Tensor, name: str = "lq") -> tuple[int, int]:
    """(H, W) of an N×3×H×W batch; one-line ImageValueError for another layout or an empty image."""
    if x.dim() != 4 or x.shape[1] != 3:
        raise ImageValueError(
            f"{name}: expected shape (N, 3, H, W), got {tuple(x.shape)}; pass a batch of RGB images"
        )
    h, w = x.shape[-2:]
    if h == 0 or w == 0:
        raise ImageValueError(f"{name}: empty image of shape {tuple(x.shape)}; pass a non-empty image")
    return int(h), int(w)


def pad_to(x: Tensor, height: int, width: int) -> Tensor:
    """Replicate-pad N×C×h×w on the bottom/right to ``height``×``width`` (``x`` itself when already that size)."""
    ph, pw = height - x.shape[-2], width - x.shape[-1]
    if ph < 0 or pw < 0:
        raise ValueError(f"pad_to: {tuple(x.shape[-2:])} is larger than the target {(height, width)}")
    return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x


def pad_to_multiple(x: Tensor, multiple: int, name: str = "lq") -> tuple[Tensor, tuple[int, int]]:
    """Replicate-pad an N×3×H×W batch on the bottom/right to multiples of ``multiple``; return it and the
    original (H, W) for :func:`crop_to`. No copy when the size is already a multiple."""
    h, w = check_batch(x, name)
    return pad_to(x, h + (-h) % multiple, w + (-w) % multiple), (h, w)


def crop_to(x: Tensor, size: tuple[int, int], scale: int = 1) -> Tensor:
    """The top-left ``scale·H``×``scale·W`` of ``x``: undoes :func:`pad_to_multiple` on an ×``scale`` output."""
    return x[..., : scale * size[0], : scale * size[1]]


def check_pair(hq: Tensor, lq: Tensor, scale: int, size: tuple[int, int] | None = None) -> None:
    """Raise ImageValueError unless ``hq`` is exactly ``scale``× the size of ``lq`` (same batch); ``size``:
    the LR (H, W) to use instead of ``lq``'s own (when ``lq`` is already padded)."""
    h, w = size if size is not None else lq.shape[-2:]
    expected = (lq.shape[0], 3, scale * h, scale * w)
    if tuple(hq.shape) != expected:
        raise ImageValueError(
            f"hq: expected shape {expected} (×{scale} the lq size), got {tuple(hq.shape)}; "
            f"crop the pair so the HR side is exactly {scale}× the LR side"
        )


def pad_pair(hq: Tensor, lq: Tensor, scale: int, multiple: int) -> tuple[Tensor, Tensor, tuple[int, int]]:
    """(padded HR, padded LR, original LR (H, W)): the LR batch padded to ``multiple``, the HR target padded to
    ``scale``× the padded LR size, both with the same replicate rule."""
    lq_p, size = pad_to_multiple(lq, multiple)
    check_pair(hq, lq, scale)
    return pad_to(hq, scale * lq_p.shape[-2], scale * lq_p.shape[-1]), lq_p, size


def crop_even(x: Tensor) -> Tensor:
    """N×C×H×W cropped to an even height and width (drops the last row/column of odd sizes)."""
    h, w = x.shape[-2:]
    return x[..., : h - h % 2, : w - w % 2]
