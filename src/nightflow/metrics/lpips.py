"""LPIPS v0.1 (Zhang et al., 2018) with AlexNet or VGG16 features, in plain PyTorch (no torchvision).

Why: LPIPS numbers are only comparable with papers with the original ImageNet backbones and the v0.1 linear
layers; torchvision cannot be installed here, so the two feature stacks are written out and loaded from the
safetensors files that ``python -m nightflow.metrics.assets`` builds.

Pipeline (as upstream ``lpips.LPIPS(net=..., version='0.1')``): [0, 1] → [-1, 1]; scaling layer
(x - shift) / scale; the five ReLU outputs of the backbone; each unit-normalised over channels (eps 1e-10);
squared difference; 1×1 linear layer (no bias); spatial mean; sum over the five layers.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UserError
from ._convert import as_batch, check_pair, crop
from .cache import lpips_file, require

NETS = ("alex", "vgg")
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
MIN_SIZE = {"alex": 31, "vgg": 16}  # smallest side for which every feature map is non-empty


class AlexNetFeatures(nn.Module):
    """torchvision's ``alexnet().features`` up to relu5, returning relu1 … relu5."""

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            [
                nn.Conv2d(3, 64, 11, stride=4, padding=2),
                nn.Conv2d(64, 192, 5, padding=2),
                nn.Conv2d(192, 384, 3, padding=1),
                nn.Conv2d(384, 256, 3, padding=1),
                nn.Conv2d(256, 256, 3, padding=1),
            ]
        )
        self.channels = [64, 192, 384, 256, 256]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for i, conv in enumerate(self.convs):
            x = F.relu(conv(x))
            feats.append(x)
            if i < 2:
                x = F.max_pool2d(x, 3, 2)
        return feats


class VGG16Features(nn.Module):
    """torchvision's ``vgg16().features`` up to relu5_3, returning relu1_2, relu2_2, relu3_3, relu4_3, relu5_3."""

    BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))

    def __init__(self) -> None:
        super().__init__()
        convs, c_in = [], 3
        for block in self.BLOCKS:
            for c_out in block:
                convs.append(nn.Conv2d(c_in, c_out, 3, padding=1))
                c_in = c_out
        self.convs = nn.ModuleList(convs)
        self.channels = [b[-1] for b in self.BLOCKS]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats, i = [], 0
        for b, block in enumerate(self.BLOCKS):
            if b > 0:
                x = F.max_pool2d(x, 2, 2)
            for _ in block:
                x = F.relu(self.convs[i](x))
                i += 1
            feats.append(x)
        return feats


class LPIPS(nn.Module):
    """LPIPS v0.1 distance; ``forward(x, y)`` takes N×3×H×W in [0, 1] and returns shape N (differentiable)."""

    def __init__(self, net: str = "alex", pretrained: bool = True) -> None:
        super().__init__()
        if net not in NETS:
            raise UserError(f"unknown LPIPS backbone '{net}'; use alex or vgg")
        self.net = net
        self.backbone = AlexNetFeatures() if net == "alex" else VGG16Features()
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in self.backbone.channels)
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        if pretrained:
            from safetensors.torch import load_file

            self.load_state_dict(load_file(str(require(lpips_file(net)))), strict=True)
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        side = min(x.shape[-2:])
        if side < MIN_SIZE[self.net]:
            raise UserError(
                f"LPIPS-{self.net} needs images of at least {MIN_SIZE[self.net]} px per side, got {side}"
            )
        fx = self.backbone(((x * 2 - 1) - self.shift) / self.scale)
        fy = self.backbone(((y * 2 - 1) - self.shift) / self.scale)
        total = x.new_zeros(x.shape[0])
        for lin, a, b in zip(self.lins, fx, fy):
            a = a / (a.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            b = b / (b.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((a - b) ** 2).mean(dim=(1, 2, 3))
        return total


_MODELS: dict[tuple[str, str], LPIPS] = {}


def get_lpips(net: str = "alex", device: torch.device | str = "cpu") -> LPIPS:
    """A cached, frozen LPIPS model on ``device`` (weights read from the asset cache once)."""
    key = (net, str(torch.device(device)))
    if key not in _MODELS:
        _MODELS[key] = LPIPS(net).to(device)
    return _MODELS[key]


def lpips(
    pred: torch.Tensor | np.ndarray,
    gt: torch.Tensor | np.ndarray,
    *,
    net: str = "alex",
    crop_border: int = 0,
) -> torch.Tensor:
    """Per-image LPIPS v0.1 distance (shape N, lower is more similar) of [0, 1] images, computed in float32."""
    p = as_batch(pred, "prediction", dtype=torch.float32)
    g = as_batch(gt, "ground truth", dtype=torch.float32).to(p.device)
    check_pair(p, g)
    model = get_lpips(net, p.device)
    with torch.no_grad():
        return model(crop(p, crop_border), crop(g, crop_border))
