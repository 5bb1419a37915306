"""Filter-adaptive convolution (FAC, LEDNet/SSFlow): a per-pixel, per-channel k×k filter predicted elsewhere.

``kernels`` holds, for every pixel, C·k² weights laid out as ``c·k² + k·ky + kx`` (the released layout), and the
output is the depthwise correlation of the replicate-padded input with that pixel's own kernels, unnormalised.

Why not ``F.unfold``: unfolding materialises an N×C·k²×H×W copy of the input, 25× the feature map for 5×5 (a
64-channel map at ½ scale of a 4 MP photo: 6.4 GB in fp32), and so does the predicted kernel tensor itself.
:class:`FilterAdaptiveConv` never forms either: the kernel predictor's last layer is a 1×1 conv C → C·k², so the
kernels of one offset (ky, kx) are a C → C 1×1 conv of the predictor's hidden map; it walks the k² offsets,
computes that offset's C kernel maps, and accumulates ``kernel · shifted input``. Extra memory at inference: a
few feature maps, whatever k is. :func:`filter_adaptive_conv_unfold` is the textbook version, kept as the
reference the tests and ``benchmarks/bench_fac.py`` compare against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _check(x: torch.Tensor, kernels: torch.Tensor, k: int) -> None:
    if k < 1 or k % 2 == 0:
        raise ValueError(f"filter-adaptive conv: kernel size must be odd and >= 1, got {k}")
    n, c, h, w = x.shape
    if kernels.shape != (n, c * k * k, h, w):
        raise ValueError(
            f"filter-adaptive conv: kernels must be {(n, c * k * k, h, w)} for input {tuple(x.shape)} and "
            f"k={k}, got {tuple(kernels.shape)}"
        )


def filter_adaptive_conv(x: torch.Tensor, kernels: torch.Tensor, k: int = 5) -> torch.Tensor:
    """Per-pixel depthwise k×k correlation of ``x`` (N×C×H×W) with ``kernels`` (N×C·k²×H×W), replicate
    padding, memory O(N·C·H·W) (no unfold)."""
    _check(x, kernels, k)
    n, c, h, w = x.shape
    r = k // 2
    padded = F.pad(x, (r, r, r, r), mode="replicate")
    weights = kernels.view(n, c, k * k, h, w)
    out = torch.zeros_like(x)
    for ky in range(k):
        for kx in range(k):
            out = out.addcmul_(weights[:, :, ky * k + kx], padded[:, :, ky : ky + h, kx : kx + w])
    return out


def filter_adaptive_conv_unfold(x: torch.Tensor, kernels: torch.Tensor, k: int = 5) -> torch.Tensor:
    """The same operation through ``F.unfold`` (materialises N×C·k²×H×W): the reference for tests/benchmarks."""
    _check(x, kernels, k)
    n, c, h, w = x.shape
    r = k // 2
    cols = F.unfold(F.pad(x, (r, r, r, r), mode="replicate"), k).view(n, c * k * k, h, w)
    return (cols * kernels).view(n, c, k * k, h, w).sum(dim=2)


class FilterAdaptiveConv(nn.Module):
    """SSFlow/LEDNet FAC block: kernels predicted from ``guide`` (3×[conv3×3 + ReLU] + conv1×1 → C·k²,
    ``predictor``'s attribute names as the released ``conv_fac_k*``), applied to ``x``, then leaky ReLU 0.2.

    The kernel tensor is never materialised (module docstring); ``unfold=True`` computes it and uses
    :func:`filter_adaptive_conv_unfold` instead (the reference path, for tests and the benchmark).
    """

    def __init__(self, channels: int, k: int = 5, hidden_layers: int = 3) -> None:
        super().__init__()
        if k < 1 or k % 2 == 0:
            raise ValueError(f"filter-adaptive conv: kernel size must be odd and >= 1, got {k}")
        self.k = k
        layers: list[nn.Module] = []
        for _ in range(hidden_layers):
            layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(channels, channels * k * k, 1))
        self.predictor = nn.Sequential(*layers)
        self.reset_to_identity()

    @torch.no_grad()
    def reset_to_identity(self, spread: float = 1e-3) -> None:
        """Start as the identity: the last layer's bias puts 1 on every channel's centre tap, its weights are
        N(0, ``spread``). With PyTorch's default init the predicted kernels are ~±0.05 per tap, so each FAC
        scales its input by ~0.1 and three in a row all but erase the image from the decoder (a one-off probe
        during development); released LEDNet/SSFlow train 20k+ steps past that."""
        last: nn.Conv2d = self.predictor[-1]  # type: ignore[assignment]
        last.weight.normal_(0.0, spread)
        bias = torch.zeros(last.out_channels // (self.k * self.k), self.k * self.k)
        bias[:, (self.k * self.k) // 2] = 1.0
        last.bias.copy_(bias.reshape(-1))

    def kernels(self, guide: torch.Tensor) -> torch.Tensor:
        """The full N×C·k²×H×W kernel tensor (reference path only)."""
        return self.predictor(guide)

    def forward(self, x: torch.Tensor, guide: torch.Tensor, unfold: bool = False) -> torch.Tensor:
        if guide.shape[-2:] != x.shape[-2:] or guide.shape[:2] != x.shape[:2]:
            raise ValueError(f"FAC: guide {tuple(guide.shape)} must match the input {tuple(x.shape)}")
        if unfold:
            return F.leaky_relu(filter_adaptive_conv_unfold(x, self.kernels(guide), self.k), 0.2)
        hidden = self.predictor[:-1](guide)
        last: nn.Conv2d = self.predictor[-1]  # type: ignore[assignment]
        c, k2 = x.shape[1], self.k * self.k
        weight = last.weight.view(c, k2, c, 1, 1)
        bias = last.bias.view(c, k2) if last.bias is not None else None
        n, _, h, w = x.shape
        r = self.k // 2
        padded = F.pad(x, (r, r, r, r), mode="replicate")
        out = torch.zeros_like(x)
        for i in range(k2):
            ky, kx = divmod(i, self.k)
            kern = F.conv2d(hidden, weight[:, i], None if bias is None else bias[:, i])
            out = out + kern * padded[:, :, ky : ky + h, kx : kx + w]
        return F.leaky_relu(out, 0.2)
