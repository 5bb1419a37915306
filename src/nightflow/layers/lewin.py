"""Uformer's locally-enhanced window (LeWin) transformer block, as UPT-Flow's released local branch runs it.

Why a block of its own rather than an option of :class:`~nightflow.layers.attention.WindowAttention`: its
projections are depthwise 3×3 convs applied to each window *by itself* (zero-padded at every window border), it
adds a Swin relative-position bias and a per-head temperature, alternates shifted windows with a −100 region
mask, pads the image with zeros *before* its LayerNorm (so padded tokens hold the norm's bias) and ends in a
LeFF feed-forward with ECA channel attention. None of that can be expressed by the whole-map projection and
key masking of ``WindowAttention``; converting the released checkpoints needs it op for op.

Guided: queries and keys come from ``guide`` (UPT-Flow: the unbalanced-point map carried through the
encoder's resampling convs), values from the normalised features. Channels-last inside, N×C×H×W outside.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ECA(nn.Module):
    """Efficient channel attention: global mean → Conv1d(k) across channels (no bias) → sigmoid gate."""

    def __init__(self, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 1, kernel_size, padding=(kernel_size - 1) // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x.mean(dim=(2, 3))[:, None, :])  # N×1×C
        return x * torch.sigmoid(y)[:, 0, :, None, None]


class LeFF(nn.Module):
    """1×1 conv (no activation after it, as released) → depthwise 3×3 + GELU → 1×1 conv → ECA."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(dim, hidden, 1)
        self.dwconv = nn.Sequential(nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden), nn.GELU())
        self.conv2 = nn.Conv2d(hidden, dim, 1)
        self.eca = ECA()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.eca(self.conv2(self.dwconv(self.conv1(x))))


def relative_position_index(window: int) -> torch.Tensor:
    """Swin's ws²×ws² index into the (2·ws − 1)² relative-position bias table."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def _windows(t: torch.Tensor, ws: int) -> torch.Tensor:
    """N×H×W×C (H, W multiples of ws) → (N·windows)×C×ws×ws, windows in row-major order per image."""
    n, h, w, c = t.shape
    t = t.reshape(n, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 5, 2, 4)
    return t.reshape(-1, c, ws, ws)


def shift_mask(height: int, width: int, window: int, shift: int) -> torch.Tensor:
    """windows×ws²×ws² additive mask of a cyclic shift: 0 inside a region, −100 across regions (Swin)."""
    region = torch.zeros(1, height, width, 1)
    cuts = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    for i, (hs, wsl) in enumerate((a, b) for a in cuts for b in cuts):
        region[:, hs, wsl, :] = i
    flat = _windows(region, window).reshape(-1, window * window)
    diff = flat[:, None, :] - flat[:, :, None]
    return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)


class LeWinBlock(nn.Module):
    """Guided (shifted-)window attention + LeFF, each with a residual (UPT-Flow's ``LeWinTransformerBlock``)."""

    def __init__(self, dim: int, heads: int, window: int, shift: int = 0, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"LeWin block: dim {dim} is not divisible by heads {heads}")
        if not 0 <= shift < window:
            raise ValueError(f"LeWin block: shift must be in [0, {window}), got {shift}")
        self.heads, self.window, self.shift = heads, window, shift
        self.scale = (dim // heads) ** -0.5
        self.norm1 = nn.LayerNorm(dim)
        self.to_q = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.to_k = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.to_v = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = LeFF(dim, int(dim * mlp_ratio))

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, c, ws, _ = t.shape
        return t.reshape(b, self.heads, c // self.heads, ws * ws).transpose(-2, -1)

    def forward(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        if guide.shape != x.shape:
            raise ValueError(
                f"LeWin block: guide {tuple(guide.shape)} must match the features {tuple(x.shape)}"
            )
        n, c, h, w = x.shape
        ws, s = self.window, self.shift
        shortcut = x.permute(0, 2, 3, 1)
        pad_b, pad_r = (-h) % ws, (-w) % ws
        feats = self.norm1(F.pad(shortcut, (0, 0, 0, pad_r, 0, pad_b)))  # padded before the norm, as released
        g = F.pad(guide.permute(0, 2, 3, 1), (0, 0, 0, pad_r, 0, pad_b))
        hp, wp = h + pad_b, w + pad_r
        if s:
            feats = torch.roll(feats, (-s, -s), dims=(1, 2))
            g = torch.roll(g, (-s, -s), dims=(1, 2))
        fw, gw = _windows(feats, ws), _windows(g, ws)
        q = self._heads(self.to_q(gw)) * self.scale
        k, v = self._heads(self.to_k(gw)), self._heads(self.to_v(fw))
        attn = (q @ k.transpose(-2, -1)) * self.temperature
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        attn = attn + bias.reshape(ws * ws, ws * ws, -1).permute(2, 0, 1)[None]
        if s:
            mask = shift_mask(hp, wp, ws, s).to(attn)
            attn = (attn.reshape(n, -1, self.heads, ws * ws, ws * ws) + mask[None, :, None]).flatten(0, 1)
        out = self.proj((attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(-1, ws * ws, c))
        out = out.reshape(n, hp // ws, wp // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(n, hp, wp, c)
        if s:
            out = torch.roll(out, (s, s), dims=(1, 2))
        y = shortcut + out[:, :h, :w]
        return y.permute(0, 3, 1, 2) + self.mlp(self.norm2(y).permute(0, 3, 1, 2))
