"""Attention blocks that work on images of any size at a cost linear in the pixel count.

Why: a photo can be 24 MP; attention over all pixels (quadratic) is out of the question. Two kinds are
offered:
- ``ChannelAttention`` (Restormer's "transposed" attention): heads attend across channels, the C×C map
  summarises the whole image, so it gives global context for O(C²·HW). Being global, the map is taken from
  the whole-image context pass when an ``AttentionStore`` is given (tiles and crops then use the map of the
  whole image, see ``nightflow.context``).
- ``WindowAttention``: ordinary self-attention inside non-overlapping ws×ws windows; the image is padded to a
  multiple of ws inside and padded pixels are masked out as keys, so results do not depend on the padding.
Both derive q, k, v with a 1×1 conv followed by a depthwise 3×3 conv, which also gives the window attention a
sense of position inside its window.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..context import AttentionStore
from .blocks import LayerNorm2d

AttentionKind = Literal["channel", "window"]


class _QKV(nn.Module):
    """1×1 conv to 3·C then depthwise 3×3: local context in q, k, v."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.point = nn.Conv2d(dim, 3 * dim, 1, bias=False)
        self.depth = nn.Conv2d(3 * dim, 3 * dim, 3, padding=1, groups=3 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v = self.depth(self.point(x)).chunk(3, dim=1)
        return q, k, v


class ChannelAttention(nn.Module):
    """Multi-head attention across channels: q and k are L2-normalised over pixels, a learned temperature per
    head sharpens the C/h × C/h map."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"channel attention: dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = _QKV(dim)
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.proj = nn.Conv2d(dim, dim, 1, bias=False)

    def forward(self, x: torch.Tensor, store: AttentionStore | None = None) -> torch.Tensor:
        n, c, h, w = x.shape
        q, k, v = (t.reshape(n, self.heads, c // self.heads, h * w) for t in self.qkv(x))

        def attention() -> torch.Tensor:
            qn, kn = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
            return torch.softmax((qn @ kn.transpose(-2, -1)) * self.temperature, dim=-1)

        attn = attention() if store is None else store.take(attention)
        return self.proj((attn.to(v.dtype) @ v).reshape(n, c, h, w))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside ws×ws windows, with internal padding and masking of padded keys."""

    def __init__(self, dim: int, heads: int, window: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"window attention: dim {dim} is not divisible by heads {heads}")
        if window < 1:
            raise ValueError(f"window attention: window must be >= 1, got {window}")
        self.heads = heads
        self.window = window
        self.qkv = _QKV(dim)
        self.proj = nn.Conv2d(dim, dim, 1, bias=False)

    def _to_windows(self, t: torch.Tensor, pad_h: int, pad_w: int) -> torch.Tensor:
        """N×C×H×W → (N·windows)×heads×ws²×(C/heads)."""
        n, c, h, w = t.shape
        ws, hd = self.window, c // self.heads
        t = F.pad(t, (0, pad_w, 0, pad_h))
        gh, gw = (h + pad_h) // ws, (w + pad_w) // ws
        t = t.reshape(n, self.heads, hd, gh, ws, gw, ws).permute(0, 3, 5, 1, 4, 6, 2)
        return t.reshape(n * gh * gw, self.heads, ws * ws, hd)

    def _key_mask(self, n: int, h: int, w: int, pad_h: int, pad_w: int, device: torch.device) -> torch.Tensor:
        """Boolean mask (N·windows)×1×1×ws², True for real pixels, so padding never takes part as a key."""
        ws = self.window
        valid = F.pad(torch.ones(1, 1, h, w, device=device), (0, pad_w, 0, pad_h))
        gh, gw = (h + pad_h) // ws, (w + pad_w) // ws
        valid = valid.reshape(gh, ws, gw, ws).permute(0, 2, 1, 3).reshape(gh * gw, 1, 1, ws * ws)
        return (valid > 0.5).repeat(n, 1, 1, 1)

    def forward(self, x: torch.Tensor, store: AttentionStore | None = None) -> torch.Tensor:
        """``store`` is accepted for a common signature: window attention is local and records nothing."""
        n, c, h, w = x.shape
        ws = self.window
        pad_h, pad_w = (-h) % ws, (-w) % ws
        q, k, v = (self._to_windows(t, pad_h, pad_w) for t in self.qkv(x))
        mask = self._key_mask(n, h, w, pad_h, pad_w, x.device) if pad_h or pad_w else None
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        gh, gw = (h + pad_h) // ws, (w + pad_w) // ws
        out = out.reshape(n, gh, gw, self.heads, ws, ws, c // self.heads).permute(0, 3, 6, 1, 4, 2, 5)
        out = out.reshape(n, c, gh * ws, gw * ws)[..., :h, :w]
        return self.proj(out)


class GatedFeedForward(nn.Module):
    """Restormer's gated depthwise-conv feed-forward: GELU(a)·b with a, b from a 1×1 + depthwise 3×3 conv."""

    def __init__(self, dim: int, expansion: float) -> None:
        super().__init__()
        hidden = max(1, int(round(dim * expansion)))
        self.inp = nn.Conv2d(dim, 2 * hidden, 1, bias=False)
        self.depth = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden, bias=False)
        self.out = nn.Conv2d(hidden, dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.depth(self.inp(x)).chunk(2, dim=1)
        return self.out(F.gelu(a) * b)


class TransformerBlock(nn.Module):
    """Pre-norm transformer block on N×C×H×W: x + attn(norm(x)), then x + ffn(norm(x))."""

    def __init__(
        self, dim: int, heads: int, expansion: float, attention: AttentionKind = "channel", window: int = 8
    ) -> None:
        super().__init__()
        self.norm1 = LayerNorm2d(dim)
        if attention == "channel":
            self.attn: nn.Module = ChannelAttention(dim, heads)
        elif attention == "window":
            self.attn = WindowAttention(dim, heads, window)
        else:
            raise ValueError(f"unknown attention kind {attention!r}; use 'channel' or 'window'")
        self.norm2 = LayerNorm2d(dim)
        self.ffn = GatedFeedForward(dim, expansion)

    def forward(self, x: torch.Tensor, store: AttentionStore | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), store)
        return x + self.ffn(self.norm2(x))
