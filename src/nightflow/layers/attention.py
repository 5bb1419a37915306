"""Attention and gating blocks that work on images of any size at a cost linear in the pixel count.

Why: a photo can be 24 MP; attention over all pixels (quadratic) is out of the question. Two kinds are
offered:
- ``ChannelAttention`` (Restormer's "transposed" attention): heads attend across channels, the C×C map
  summarises the whole image, so it gives global context for O(C²·HW). Being global, the map is taken from
  the whole-image context pass when an ``AttentionStore`` is given (tiles and crops then use the map of the
  whole image, see ``nightflow.context``).
- ``WindowAttention``: ordinary self-attention inside non-overlapping ws×ws windows; the image is padded to a
  multiple of ws inside and padded pixels are masked out as keys, so results do not depend on the padding.
  Its guided form (``guide_channels > 0``, UPT-Flow's local branch) takes queries and keys from a guide map
  and values from the features.
Both derive q, k, v with a 1×1 conv followed by a depthwise 3×3 conv, which also gives the window attention a
sense of position inside its window.

Also here: CBAM's channel and spatial gates (used by the flow's coupling subnets) and ``GlobalContext`` (a
per-image vector from the global mean, used by the sequential baseline's enhancer). Both pool over whatever
they are given (a tile, a crop), not over the whole-image context.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torch import nn

from .conv import LayerNorm2d

if TYPE_CHECKING:  # annotations only: the layer library (and so the flow's subnets) imports no image code
    from ..context import AttentionStore

AttentionKind = Literal["channel", "window"]


class _QKV(nn.Module):
    """1×1 conv to parts·C then depthwise 3×3: local context in q, k, v (``parts`` of them, from ``in_dim``
    input channels; the guided window attention takes q, k from its guide and v from the features)."""

    def __init__(self, dim: int, parts: int = 3, in_dim: int | None = None) -> None:
        super().__init__()
        self.parts = parts
        self.point = nn.Conv2d(dim if in_dim is None else in_dim, parts * dim, 1, bias=False)
        self.depth = nn.Conv2d(parts * dim, parts * dim, 3, padding=1, groups=parts * dim, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.depth(self.point(x)).chunk(self.parts, dim=1)


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
    """Multi-head self-attention inside ws×ws windows, with internal padding and masking of padded keys.

    Guided variant (``guide_channels > 0``, UPT-Flow's local branch): queries and keys come from a guide map
    (N×guide_channels×H×W, e.g. an embedded unbalanced-point map resampled to this level), values from the
    features, so *which* pixels a pixel gathers from is decided by the guide. The same code path otherwise:
    with the guide equal to the features and the q/k/v weights split accordingly it *is* plain window
    attention; with an all-zero guide every window averages its (real) values uniformly.
    """

    def __init__(self, dim: int, heads: int, window: int, guide_channels: int = 0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"window attention: dim {dim} is not divisible by heads {heads}")
        if window < 1:
            raise ValueError(f"window attention: window must be >= 1, got {window}")
        self.heads = heads
        self.window = window
        self.guide_channels = guide_channels
        if guide_channels > 0:
            self.qk = _QKV(dim, parts=2, in_dim=guide_channels)
            self.v = _QKV(dim, parts=1)
        else:
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

    def forward(
        self, x: torch.Tensor, store: AttentionStore | None = None, guide: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``store`` is accepted for a common signature: window attention is local and records nothing.
        ``guide`` (same H×W as ``x``) is required exactly when the layer was built with guide channels."""
        n, c, h, w = x.shape
        ws = self.window
        pad_h, pad_w = (-h) % ws, (-w) % ws
        if self.guide_channels > 0:
            if guide is None or guide.shape[-2:] != x.shape[-2:]:
                got = None if guide is None else tuple(guide.shape)
                raise ValueError(f"guided window attention needs a guide of size {h}×{w}, got {got}")
            qkv = (*self.qk(guide), *self.v(x))
        elif guide is not None:
            raise ValueError("this window attention was built without guide channels; pass no guide")
        else:
            qkv = self.qkv(x)
        q, k, v = (self._to_windows(t, pad_h, pad_w) for t in qkv)
        mask = self._key_mask(n, h, w, pad_h, pad_w, x.device) if pad_h or pad_w else None
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        gh, gw = (h + pad_h) // ws, (w + pad_w) // ws
        out = out.reshape(n, gh, gw, self.heads, ws, ws, c // self.heads).permute(0, 3, 6, 1, 4, 2, 5)
        out = out.reshape(n, c, gh * ws, gw * ws)[..., :h, :w]
        return self.proj(out)


class GatedFeedForward(nn.Module):
    """Restormer's gated depthwise-conv feed-forward: GELU(a)·b with a, b from a 1×1 + depthwise 3×3 conv.

    ``hidden_rounding``: the hidden width is round(dim·expansion) (nightflow's own models) or, as Restormer and
    UPT-Flow's release compute it, int(dim·expansion) (48·2.66 → 127, not 128)."""

    def __init__(
        self, dim: int, expansion: float, hidden_rounding: Literal["round", "floor"] = "round"
    ) -> None:
        super().__init__()
        if hidden_rounding not in ("round", "floor"):
            raise ValueError(f"hidden_rounding must be 'round' or 'floor', got {hidden_rounding!r}")
        width = dim * expansion
        hidden = max(1, int(round(width)) if hidden_rounding == "round" else int(width))
        self.inp = nn.Conv2d(dim, 2 * hidden, 1, bias=False)
        self.depth = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden, bias=False)
        self.out = nn.Conv2d(hidden, dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.depth(self.inp(x)).chunk(2, dim=1)
        return self.out(F.gelu(a) * b)


class TransformerBlock(nn.Module):
    """Pre-norm transformer block on N×C×H×W: x + attn(norm(x)), then x + ffn(norm(x))."""

    def __init__(
        self,
        dim: int,
        heads: int,
        expansion: float,
        attention: AttentionKind = "channel",
        window: int = 8,
        hidden_rounding: Literal["round", "floor"] = "round",
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
        self.ffn = GatedFeedForward(dim, expansion, hidden_rounding)

    def forward(self, x: torch.Tensor, store: AttentionStore | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), store)
        return x + self.ffn(self.norm2(x))


class ChannelGate(nn.Module):
    """CBAM channel attention: shared MLP on average- and max-pooled descriptors, sigmoid gate.

    ``window`` 0 pools over the whole map (CBAM, UPT-Flow as released). A window > 0 pools over a
    ``window``×``window`` neighbourhood of each pixel instead: the gate then sees the same statistics in a
    96 px training crop, in a tile and in the whole photo, so tiled output can match whole-image output (a
    global pool inside the flow cannot come from a thumbnail: its input is the half-decoded latent)."""

    def __init__(self, channels: int, reduction: int = 16, window: int = 0):
        super().__init__()
        if window < 0 or (window and window % 2 == 0):
            raise ValueError(f"ChannelGate window must be 0 (global) or odd, got {window}")
        mid = max(1, channels // reduction)
        self.window = window
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, mid, 1), nn.ReLU(inplace=True), nn.Conv2d(mid, channels, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.window:
            k, p = self.window, self.window // 2
            avg_d = F.avg_pool2d(x, k, stride=1, padding=p, count_include_pad=False)
            max_d = F.max_pool2d(x, k, stride=1, padding=p)
        else:
            avg_d, max_d = F.adaptive_avg_pool2d(x, 1), F.adaptive_max_pool2d(x, 1)
        return x * torch.sigmoid(self.mlp(avg_d) + self.mlp(max_d))


class SpatialGate(nn.Module):
    """CBAM spatial attention: 7×7 conv over channel-wise mean and max maps, sigmoid gate."""

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        desc = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(desc))


class CBAM(nn.Module):
    """Channel gate then spatial gate, plus the input (the outer residual UPT-Flow's released subnets add to
    CBAM). Global pooling, as released; the released spatial conv has no bias and reads [max, mean]: a
    converter swaps the two input channels of its weight and zeroes ``spatial.conv.bias``."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.channel = ChannelGate(channels, reduction)
        self.spatial = SpatialGate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.channel(x)) + x


class GlobalContext(nn.Module):
    """Adds a per-image vector computed from the global mean of the features: exposure is a global property,
    and a small U-Net's receptive field does not see the whole frame."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels, 1)
        self.fc2 = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = x.mean(dim=(2, 3), keepdim=True)
        return x + self.fc2(F.leaky_relu(self.fc1(g), 0.2))


def adaptive_mean_matrix(n: int, size: int) -> torch.Tensor:
    """The size×n matrix of ``F.adaptive_avg_pool1d`` from n to ``size`` (row i averages [⌊i·n/size⌋,
    ⌈(i+1)·n/size⌉)), so adaptive pooling of a map becomes M_h·x·M_wᵀ."""
    m = torch.zeros(size, n)
    for i in range(size):
        a, b = (i * n) // size, -((-(i + 1) * n) // size)
        m[i, a:b] = 1.0 / (b - a)
    return m


def gram_schmidt_filters(channels: int, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``channels`` orthonormal size×size filters (OrthoNets): classical Gram–Schmidt, in float64, on uniform
    random vectors of R^(size²); needs size² ≥ channels."""
    dims = size * size
    if dims < channels:
        raise ValueError(
            f"orthogonal attention: {channels} orthonormal filters need size² >= {channels}, got {size}²"
        )
    vecs = torch.rand(channels, dims, generator=generator, dtype=torch.float64)
    basis: list[torch.Tensor] = []
    for v in vecs:
        for b in basis:
            v = v - (v @ b) * b
        basis.append(v / v.norm())
    return torch.stack(basis).view(channels, size, size).float()


class OrthogonalChannelAttention(nn.Module):
    """OrthoNets' block as SSFlow runs it: out = BN(conv3(ReLU(BN(conv3(x))))); each channel of ``out`` is
    summarised by its projection onto a fixed orthonormal Gram–Schmidt filter (``filters``, C×S×S, a
    persistent buffer: it is part of the weights and never re-drawn) after average-pooling to S×S, instead of
    squeeze-excitation's global mean; FC (C → round(C/reduction)) → ReLU → FC → sigmoid gates ``out``;
    y = ReLU(gate·out + x).

    The summary is global. With a ``store`` (the whole-image context pass) the gate is computed on the
    whole image's thumbnail and replayed for crops and tiles; without, on the map itself (as released).
    ``norm="none"`` drops the two BatchNorms (the tiny config: no train/eval statistics gap at batch 8).
    """

    def __init__(self, channels: int, size: int = 64, reduction: int = 16, norm: str = "batch") -> None:
        super().__init__()
        hidden = max(1, round(channels / reduction))

        def bn() -> nn.Module:
            return nn.BatchNorm2d(channels) if norm == "batch" else nn.Identity()

        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = bn()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = bn()
        self.size = size
        self.register_buffer("filters", gram_schmidt_filters(channels, size))
        self.excite = nn.Sequential(
            nn.Linear(channels, hidden, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, channels, bias=False),
            nn.Sigmoid(),
        )

    def gate(self, out: torch.Tensor) -> torch.Tensor:
        """N×C×1×1 sigmoid gate from the orthogonal projections of ``out`` (average-pooled to S×S: adaptive
        average pooling written as two fixed matrices, M_h·out·M_wᵀ, so it exports to ONNX)."""
        h, w = int(out.shape[-2]), int(out.shape[-1])
        m_h = adaptive_mean_matrix(h, self.size).to(out.device)
        m_w = adaptive_mean_matrix(w, self.size).to(out.device)
        pooled = m_h @ out.float() @ m_w.T
        summary = (pooled * self.filters).sum(dim=(2, 3))
        return self.excite(summary.to(out.dtype))[:, :, None, None]

    def forward(self, x: torch.Tensor, store: AttentionStore | None = None) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        gate = self.gate(out) if store is None else store.take(lambda: self.gate(out))
        return F.relu(gate.to(out.dtype) * out + x)
