"""Inference-time folding: ActNorm into its neighbouring convolutions, so a step runs one conv instead of three ops.

Why: at inference the flow's affine pieces are constants. ``ActNorm → InvConv1x1`` is one affine 1×1 map,
y = W·((x + b)·eˢ) = (W·diag(eˢ))·x + W·(b·eˢ), with the inverse x = diag(e⁻ˢ)·W⁻¹·y − b, and its log-det per
pixel is Σs + Σlog|sᵢ| as before. In the coupling subnets, ``conv → ActNorm`` is a conv with a bias, and the zero
conv's output gain is a per-channel scale of its weights. Folding computes the merged weights once in float64
and stores them as float32 buffers: the folded model matches the unfolded one to float32 rounding (tested) and
saves the element-wise passes over every hidden map. A folded module is for inference only (its parameters are
gone): :func:`folded` folds a copy and leaves the original trainable.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .actnorm import ActNorm
from .base import FlowLayer, FlowSequence, check_4d
from .invconv import InvConv1x1
from .subnets import ConvNormAct, ZeroConv2d


class FoldedActNormInvConv(FlowLayer):
    """``ActNorm`` then ``InvConv1x1`` as one affine 1×1 conv each way, with the same log-determinant."""

    def __init__(self, actnorm: ActNorm, invconv: InvConv1x1):
        super().__init__()
        with torch.no_grad():
            s = actnorm.log_scale.double().flatten()
            b = actnorm.bias.double().flatten()
            w, w_inv = invconv.weight(), invconv.inverse_weight()
            c = w.shape[0]
            self.channels = c
            self.register_buffer("weight", (w * torch.exp(s)[None, :]).float().view(c, c, 1, 1))
            self.register_buffer("bias", (w @ (b * torch.exp(s))).float())
            self.register_buffer("inv_weight", (torch.exp(-s)[:, None] * w_inv).float().view(c, c, 1, 1))
            self.register_buffer("inv_bias", (-b).float())
            self.register_buffer("logdet_per_pixel", (s.sum() + invconv.log_s.double().sum()).float())

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_4d("FoldedActNormInvConv input", x, self.channels)
        with torch.autocast(device_type=x.device.type, enabled=False):  # invertible arithmetic stays fp32
            y = F.conv2d(x, self.weight.to(x.dtype), self.bias.to(x.dtype))
        logdet = self.logdet_per_pixel * (x.shape[2] * x.shape[3])
        return y, logdet.to(x.dtype).expand(x.shape[0])

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> Tensor:
        check_4d("FoldedActNormInvConv input", y, self.channels)
        with torch.autocast(device_type=y.device.type, enabled=False):
            return F.conv2d(y, self.inv_weight.to(y.dtype), self.inv_bias.to(y.dtype))


class FoldedConvAct(nn.Module):
    """``conv → ActNorm → ReLU`` as ``conv(+bias) → ReLU``: (conv(x) + b)·eˢ = conv_{w·eˢ}(x) + b·eˢ."""

    def __init__(self, block: ConvNormAct):
        super().__init__()
        conv, norm = block.conv, block.norm
        with torch.no_grad():
            s = torch.exp(norm.log_scale.double().flatten())
            self.conv = nn.Conv2d(
                conv.in_channels, conv.out_channels, conv.kernel_size, padding=conv.padding, bias=True
            )
            self.conv.weight.copy_((conv.weight.double() * s[:, None, None, None]).float())
            self.conv.bias.copy_((norm.bias.double().flatten() * s).float())
        self.conv.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.conv(x))


def _fold_zero_conv(block: ZeroConv2d) -> nn.Conv2d:
    """``conv(x)·exp(gain_factor·log_gain)`` as one conv with scaled weights and bias."""
    conv = block.conv
    with torch.no_grad():
        g = torch.exp(block.log_gain.double().flatten() * block.gain_factor)
        out = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, padding=conv.padding)
        out.weight.copy_((conv.weight.double() * g[:, None, None, None]).float())
        out.bias.copy_((conv.bias.double() * g).float())
    return out.requires_grad_(False)


def fold_(module: nn.Module) -> int:
    """Fold every ActNorm of ``module`` into its neighbouring conv, in place; returns how many were folded.
    Only for inference: the folded pieces hold constants, not the trainable factors."""
    count = 0
    if isinstance(module, FlowSequence):
        layers, i = [], 0
        old = list(module.layers)
        while i < len(old):
            if i + 1 < len(old) and isinstance(old[i], ActNorm) and isinstance(old[i + 1], InvConv1x1):
                layers.append(FoldedActNormInvConv(old[i], old[i + 1]))
                count, i = count + 1, i + 2
            else:
                layers.append(old[i])
                i += 1
        module.layers = nn.ModuleList(layers)
    for name, child in list(module.named_children()):
        if isinstance(child, ConvNormAct):
            setattr(module, name, FoldedConvAct(child))
            count += 1
        elif isinstance(child, ZeroConv2d):
            setattr(module, name, _fold_zero_conv(child))
            count += 1
        else:
            count += fold_(child)
    return count


def foldable(module: nn.Module) -> bool:
    """Whether ``module`` holds anything :func:`fold_` would fold."""
    return any(isinstance(m, (ActNorm, ConvNormAct, ZeroConv2d)) for m in module.modules())


def folded(module: nn.Module) -> nn.Module:
    """A folded copy of ``module`` for inference (eval mode); the original is left as it was."""
    out = copy.deepcopy(module).eval()
    fold_(out)
    return out
