"""The exposure head: how bright should this dark photo be? One EV number per image, from its thumbnail.

Why a learned estimate: a dark scene at −3 EV and a bright one at −5 EV look alike, so a fixed auto-gain to
mid-grey is often wrong by a stop or more; the tone distribution (and the noise, which grows as the exposure
falls) says more. The head starts as a plain auto-gain (log2 of a learned target level over the thumbnail's
mean linear luminance, the correction MLP zero-initialised) and learns the correction from the oracle gains of
the training pairs (loss: squared error in EV).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..context import linear_luminance

_HIST_LO, _HIST_HI, _HIST_BINS = -16.0, 0.0, 16
_QUANTILES = (0.1, 0.5, 0.9, 0.99)


def quantiles(x: Tensor, qs: tuple[float, ...]) -> Tensor:
    """``torch.quantile(x, qs, dim=1).t()`` (linear interpolation) for finite N×P ``x``, as sort + gather + the
    same two-sided lerp: bit-identical to it (tested), and it exports to ONNX, which ``aten::quantile`` does not."""
    values = x.sort(dim=1).values
    ranks = torch.tensor(qs, dtype=x.dtype, device=x.device) * (x.shape[1] - 1)
    below = ranks.floor()
    weight = ranks - below
    lo = values.index_select(1, below.long())
    hi = values.index_select(1, ranks.ceil().long())
    return torch.where(weight < 0.5, lo + weight * (hi - lo), hi - (hi - lo) * (1 - weight))


def exposure_features(thumb: Tensor) -> tuple[Tensor, Tensor]:
    """(features N×F, log2 mean linear luminance N) of N×3×S×S thumbnails: tone histogram in EV, quantiles,
    the log mean, and the mean colour ratios (a colour cast says something about the light)."""
    lum = linear_luminance(thumb.float()).flatten(1)  # N×P
    log_lum = torch.log2(lum + 2.0**_HIST_LO)
    centres = torch.linspace(_HIST_LO, _HIST_HI, _HIST_BINS, device=thumb.device)
    width = (_HIST_HI - _HIST_LO) / (_HIST_BINS - 1)
    soft = torch.relu(
        1.0 - (log_lum.unsqueeze(-1) - centres).abs() / width
    )  # triangular bins, differentiable
    hist = soft.mean(dim=1)
    q = quantiles(log_lum, _QUANTILES)
    log_mean = torch.log2(lum.mean(dim=1) + 1e-4)
    ratios = thumb.float().flatten(2).mean(dim=2)
    ratios = ratios / (ratios.sum(dim=1, keepdim=True) + 1e-6)
    feats = torch.cat([hist, q / 8.0, log_mean.unsqueeze(1) / 8.0, ratios], dim=1)
    return feats, log_mean


class ExposureHead(nn.Module):
    """thumbnail → log2 gain (EV) = log2(target level) − log2(mean luminance) + MLP(tone features)."""

    n_features = _HIST_BINS + len(_QUANTILES) + 1 + 3

    def __init__(self, hidden: int = 32, target_level: float = 0.18) -> None:
        super().__init__()
        self.log2_level = nn.Parameter(torch.tensor(math.log2(target_level)))
        self.mlp = nn.Sequential(nn.Linear(self.n_features, hidden), nn.GELU(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, thumb: Tensor) -> Tensor:
        return self.from_features(*exposure_features(thumb))

    def from_features(self, feats: Tensor, log_mean: Tensor) -> Tensor:
        """The estimate from :func:`exposure_features` computed beforehand (they hold no parameters, so a fit
        of the head alone computes them once: ``scripts/fit_exposure_head.py``)."""
        with torch.autocast(device_type=feats.device.type, enabled=False):
            corr = self.mlp(feats.float()).squeeze(1)
        return self.log2_level - log_mean + corr
