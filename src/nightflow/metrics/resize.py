"""MATLAB-compatible ``imresize`` (separable kernels, antialiased when shrinking) in PyTorch.

Why: SR papers define bicubic degradation, LR-PSNR and NIQE's second scale with MATLAB's ``imresize``, whose
cubic kernel (a = -0.5), antialiasing (kernel widened by 1/scale) and symmetric border handling differ from
``torch.nn.functional.interpolate`` (a = -0.75, no antialias by default). Each axis is resampled by a dense
out×in weight matrix built exactly as MATLAB's ``contributions`` does, so any size and scale work.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from ..errors import UserError


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys cubic with a = -0.5 (MATLAB, PIL)."""
    ax = np.abs(x)
    ax2, ax3 = ax**2, ax**3
    return (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1) + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * (
        (ax > 1) & (ax <= 2)
    )


def _lanczos3(x: np.ndarray) -> np.ndarray:
    """sinc(x)·sinc(x/3) on |x| < 3 (MATLAB 'lanczos3', PIL LANCZOS)."""
    return np.sinc(x) * np.sinc(x / 3.0) * (np.abs(x) < 3)


def _box(x: np.ndarray) -> np.ndarray:
    return ((x >= -0.5) & (x < 0.5)).astype(np.float64)


KERNELS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], float]] = {
    "cubic": (_cubic, 4.0),
    "lanczos3": (_lanczos3, 6.0),
    "box": (_box, 1.0),
}


def _kernel_matrix(in_len: int, out_len: int, scale: float, kernel: str, antialias: bool) -> np.ndarray:
    """out_len×in_len weights; MATLAB's contributions() with mirrored (symmetric) indices."""
    func, width = KERNELS[kernel]
    if scale < 1 and antialias:

        def h(t: np.ndarray) -> np.ndarray:
            return scale * func(scale * t)

        width = width / scale
    else:
        h = func
    x = np.arange(1, out_len + 1, dtype=np.float64)[:, None]
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    taps = int(math.ceil(width)) + 2
    idx = left + np.arange(taps)[None, :]
    w = h(u - idx)
    w = w / w.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len)[::-1]])
    cols = mirror[np.mod(idx.astype(np.int64) - 1, 2 * in_len)]
    m = np.zeros((out_len, in_len), dtype=np.float64)
    rows = np.repeat(np.arange(out_len), taps)
    np.add.at(m, (rows, cols.ravel()), w.ravel())
    return m


def _area_matrix(in_len: int, out_len: int) -> np.ndarray:
    """Exact area-overlap weights: output pixel i covers [i, i+1)·in/out of the input axis."""
    edges_out = np.arange(out_len + 1, dtype=np.float64) * (in_len / out_len)
    lo = np.maximum(edges_out[:-1, None], np.arange(in_len)[None, :])
    hi = np.minimum(edges_out[1:, None], np.arange(1, in_len + 1)[None, :])
    m = np.clip(hi - lo, 0, None)
    return m / m.sum(axis=1, keepdims=True)


def resize_matrix(
    in_len: int, out_len: int, kernel: str = "cubic", antialias: bool = True, scale: float | None = None
) -> np.ndarray:
    """The out_len×in_len matrix that resamples one axis (``kernel`` = cubic, lanczos3, box or area).

    ``scale`` defaults to out_len / in_len; MATLAB uses the requested scale when one is given.
    """
    if kernel == "area":
        return _area_matrix(in_len, out_len)
    if kernel not in KERNELS:
        raise UserError(f"unknown resize kernel '{kernel}'; use one of {', '.join([*KERNELS, 'area'])}")
    return _kernel_matrix(in_len, out_len, scale or out_len / in_len, kernel, antialias)


def imresize(
    x: torch.Tensor,
    scale: float | None = None,
    size: tuple[int, int] | None = None,
    kernel: str = "cubic",
    antialias: bool = True,
) -> torch.Tensor:
    """Resize N×C×H×W like MATLAB ``imresize(x, scale)`` (output ceil(H·scale)) or to ``size`` = (H', W').

    ``kernel``: ``cubic`` (MATLAB bicubic), ``lanczos3``, ``box`` or ``area`` (exact area overlap: box
    averaging when shrinking, pixel replication for integer enlargement). ``antialias`` widens the kernel
    when shrinking, as MATLAB does by default. Computed in the input's dtype on the input's device.
    """
    if (scale is None) == (size is None):
        raise UserError("imresize: give exactly one of scale and size")
    h, w = x.shape[-2:]
    if size is None:
        if scale <= 0:
            raise UserError(f"imresize: scale must be > 0, got {scale}")
        size = (int(math.ceil(h * scale)), int(math.ceil(w * scale)))
    mh = resize_matrix(h, size[0], kernel, antialias, scale)
    mw = resize_matrix(w, size[1], kernel, antialias, scale)
    dtype = x.dtype if x.is_floating_point() else torch.float32
    th = torch.from_numpy(mh).to(device=x.device, dtype=dtype)
    tw = torch.from_numpy(mw).to(device=x.device, dtype=dtype)
    return torch.matmul(torch.matmul(th, x.to(dtype)), tw.transpose(0, 1))
