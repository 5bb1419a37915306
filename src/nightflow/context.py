"""Whole-image context: the global statistics an encoder may use, computed once from a thumbnail of the whole image.

Why: anything global (histogram equalisation, the exposure estimate, channel-attention pools) computed on a
training crop sees a 32 px patch, and computed on a tile sees only that tile. Both make the model depend on
where the image was cut. Instead every global quantity comes from one fixed-size thumbnail of the *whole* image
(area-averaged to ``CONTEXT_SIZE``²). Training crops get the thumbnail of the whole degraded image they were
cut from (the dataset makes it with :func:`thumbnail`, the same function inference uses), and tiles all share
the thumbnail of the full photo, so tiled and whole-image outputs agree.

Exposure: ``log2_gain`` is the linear-light gain (in EV) the encoder applies to its input before anything else.
In training it is the *oracle* gain of the pair (:func:`oracle_log2_gain`: target brightness over input
brightness, whole image), so the model learns to follow the gain it is given; at inference the encoder's
exposure head estimates it from the thumbnail and the user may shift it (``exposure`` EV).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from .data.degrade import linear_to_srgb, srgb_to_linear

__all__ = ["linear_to_srgb", "srgb_to_linear"]  # re-exported: the one sRGB curve lives in data.degrade

CONTEXT_SIZE = 48  # thumbnail side in LR pixels
LUT_BINS = 256
_LUMA = (0.2126, 0.7152, 0.0722)


def linear_luminance(x: Tensor) -> Tensor:
    """Rec. 709 luminance of an sRGB batch in linear light: N×3×H×W → N×1×H×W."""
    lin = srgb_to_linear(x.clamp(0.0, 1.0))
    w = torch.tensor(_LUMA, dtype=lin.dtype, device=lin.device).view(1, 3, 1, 1)
    return (lin * w).sum(dim=1, keepdim=True)


def thumbnail(x: Tensor, size: int = CONTEXT_SIZE) -> Tensor:
    """Area-averaged ``size``×``size`` copy of N×3×H×W (or 3×H×W); smaller images are replicated up, never
    interpolated, so the statistics stay those of the real pixels."""
    single = x.dim() == 3
    batch = x.unsqueeze(0) if single else x
    out = F.adaptive_avg_pool2d(batch.float(), (size, size))
    return out.squeeze(0) if single else out


def oracle_log2_gain(lq: Tensor, hq: Tensor, eps: float = 1e-4) -> Tensor:
    """log2(mean linear luminance of the target / that of the input) per image: the exposure that matches the
    target. Works on N×3×H×W or 3×H×W (then a 0-d tensor); the two may differ in size (×s)."""
    single = lq.dim() == 3
    lq4, hq4 = (lq.unsqueeze(0), hq.unsqueeze(0)) if single else (lq, hq)
    num = linear_luminance(hq4.float()).mean(dim=(1, 2, 3)) + eps
    den = linear_luminance(lq4.float()).mean(dim=(1, 2, 3)) + eps
    out = torch.log2(num / den)
    return out[0] if single else out


MIDDLE_GREY = (
    0.18  # linear luminance an auto-exposed scene averages to (18 % grey: what exposure meters aim at)
)


def auto_log2_gain(
    thumb: Tensor, level: float = MIDDLE_GREY, max_ev: float = 10.0, eps: float = 1e-4
) -> Tensor:
    """The target-free exposure of whole images: log2(``level`` / mean linear luminance) per image of N×3×h×w
    thumbnails, clipped to [0, ``max_ev``] (never darkens). What a camera's meter would do; the self-supervised
    losses and the ``auto-exposure`` baseline use it where no normal-light target exists."""
    mean = linear_luminance(thumb.float()).mean(dim=(1, 2, 3)) + eps
    return torch.log2(level / mean).clamp(0.0, max_ev)


def apply_gain(x: Tensor, log2_gain: Tensor) -> Tensor:
    """Multiply an sRGB batch by 2^log2_gain (N values) in linear light and re-encode, clipped to [0, 1]."""
    # 2**x as pow, not exp2: the same value to 1 ulp (equal on the few gains of a batch), and it exports to ONNX
    gain = torch.pow(2.0, log2_gain.float()).view(-1, 1, 1, 1)
    return linear_to_srgb(srgb_to_linear(x.float()) * gain).clamp(0.0, 1.0).to(x.dtype)


def histogram_lut(x: Tensor, bins: int = LUT_BINS) -> Tensor:
    """Per-image, per-channel histogram-equalisation table N×C×bins from N×C×H×W (OpenCV's convention: the
    darkest level present maps to 0, the brightest to 1; a constant channel keeps its quantised value)."""
    n, c, h, w = x.shape
    rows = x.reshape(n * c, h * w).float()
    q = torch.round(rows.clamp(0.0, 1.0) * (bins - 1)).long()
    hist = torch.zeros(n * c, bins, dtype=torch.long, device=x.device)
    hist.scatter_add_(1, q, torch.ones_like(q))
    cdf = hist.cumsum(dim=1)
    total = q.shape[1]
    cdf_min = cdf.gather(1, q.min(dim=1, keepdim=True).values)
    denom = (total - cdf_min).clamp_min(1).to(torch.float32)
    lut = ((cdf - cdf_min).to(torch.float32) / denom).clamp(0.0, 1.0)
    levels = torch.arange(bins, device=x.device, dtype=torch.float32) / (bins - 1)
    lut = torch.where(cdf_min == total, levels.expand_as(lut), lut)
    return lut.reshape(n, c, bins)


def apply_lut(x: Tensor, lut: Tensor) -> Tensor:
    """Map every pixel of N×C×H×W through its image's and channel's table (N×C×bins), nearest level."""
    n, c, h, w = x.shape
    bins = lut.shape[-1]
    q = torch.round(x.detach().float().clamp(0.0, 1.0) * (bins - 1)).long().reshape(n, c, h * w)
    return lut.gather(2, q).reshape(n, c, h, w).to(x.dtype)


@dataclass
class ImageContext:
    """Global statistics of whole images, one entry per image of a batch.

    ``thumb``: N×3×S×S area thumbnail of the (un-gained) input; ``he_lut``: N×3×bins histogram-equalisation
    tables; ``log2_gain``: N exposure gains in EV applied to the input (None: the encoder applies none);
    ``estimate``: the exposure head's own estimate (kept for its training loss and for reports);
    ``attention``: per global-attention layer (in call order), the maps computed on the thumbnail.
    """

    thumb: Tensor
    he_lut: Tensor
    log2_gain: Tensor | None = None
    estimate: Tensor | None = None
    attention: list[Tensor] = field(default_factory=list)

    @property
    def batch(self) -> int:
        return int(self.thumb.shape[0])

    def repeat(self, k: int) -> ImageContext:
        """The context of a batch made of ``k`` stacked copies of this batch (tiles cut from the same images)."""
        if k == 1:
            return self

        def rep(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.repeat(k, *([1] * (t.dim() - 1)))

        return replace(
            self,
            thumb=rep(self.thumb),
            he_lut=rep(self.he_lut),
            log2_gain=rep(self.log2_gain),
            estimate=rep(self.estimate),
            attention=[rep(a) for a in self.attention],  # type: ignore[misc]
        )


class AttentionStore:
    """Hands global-attention maps from the context pass (``record``) to the image pass (``replay``), in order."""

    def __init__(self, maps: list[Tensor] | None = None) -> None:
        self.recording = maps is None
        self.maps: list[Tensor] = [] if maps is None else list(maps)
        self._next = 0

    def take(self, compute: Callable[[], Tensor]) -> Tensor:
        """Record ``compute()`` in the context pass; return the next recorded map in the image pass."""
        if self.recording:
            m = compute()
            self.maps.append(m)
            return m
        if self._next >= len(self.maps):
            raise RuntimeError(
                "attention context has fewer maps than the encoder has global-attention layers"
            )
        m = self.maps[self._next]
        self._next += 1
        return m
