"""A tiny module honouring the FlowRestorer inference contract, for fast tests of the inference engine.

Why: the engine's tests need a model whose behaviour is known (a finite receptive field, noise added pointwise
in image layout) and that refuses inputs off the pad grid, so tile planning mistakes fail loudly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nightflow.errors import ConfigError
from nightflow.models.base import SAMPLE_TEMPERATURE, SizeSpec, TilingSpec, temperature_for


class StandInRestorer(nn.Module):
    """Random-init conv net ×scale: sigmoid(logit(bilinear-up lq) + head(lq) [+ hr(up)]) + 0.05·T·noise.

    It states the restorer contract (``nightflow.models.base``): tiles on its pad grid, the default margin
    of 12 LR px, any tile of at least one grid block; no global context, no exposure control."""

    stochastic = True
    needs_target = False
    has_exposure = False
    dtypes = (torch.float32,)
    precisions = ("fp32",)

    def __init__(
        self,
        scale: int = 2,
        pad_multiple: int = 8,
        width: int = 8,
        depth: int = 3,
        hr_width: int = 0,
        seed: int = 0,
        sample_temperature: float = SAMPLE_TEMPERATURE,
    ):
        super().__init__()
        torch.manual_seed(seed)
        self.scale = scale
        self.sample_temperature = sample_temperature
        self.levels = 1
        self.pad_multiple = pad_multiple
        layers: list[nn.Module] = [nn.Conv2d(3, width, 3, padding=1), nn.ReLU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
        layers.append(nn.Conv2d(width, 3 * scale * scale, 3, padding=1))
        self.head = nn.Sequential(*layers)
        # optional stage on the output grid, so memory grows with the output like a real flow's features
        self.hr = (
            nn.Sequential(
                nn.Conv2d(3, hr_width, 3, padding=1), nn.ReLU(), nn.Conv2d(hr_width, 3, 3, padding=1)
            )
            if hr_width
            else None
        )
        self.calls: list[tuple[int, ...]] = []  # shapes seen by restore(), for tests of tile sizes

    @property
    def sizes(self) -> SizeSpec:
        return SizeSpec(multiple=self.pad_multiple)

    @property
    def tiling(self) -> TilingSpec:
        return TilingSpec(tileable=True, grid=self.pad_multiple, margin=12, min_tile=self.pad_multiple)

    def context(self, lq: torch.Tensor, exposure: float = 0.0) -> None:
        if exposure:
            raise ConfigError("StandInRestorer has no exposure control; leave exposure at 0")
        return None

    def restore(
        self,
        lq: torch.Tensor,
        temperature: float = 0.0,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        context: object = None,
        target: torch.Tensor | None = None,
    ) -> torch.Tensor:
        h, w = lq.shape[-2:]
        if h % self.pad_multiple or w % self.pad_multiple:
            raise AssertionError(f"engine sent {h}x{w}, not a multiple of {self.pad_multiple}")
        self.calls.append(tuple(lq.shape))
        up = F.interpolate(lq, scale_factor=self.scale, mode="bilinear", align_corners=False)
        logit = torch.logit(up.clamp(1e-3, 1 - 1e-3))
        logit = logit + 0.3 * F.pixel_shuffle(self.head(lq), self.scale)
        if self.hr is not None:
            logit = logit + 0.1 * self.hr(up)
        out = torch.sigmoid(logit)
        if temperature > 0:
            if noise is None:
                noise = torch.randn(out.shape, generator=generator)
            out = out + 0.05 * temperature * noise.to(out)
        return out

    def sample(
        self, lq: torch.Tensor, n: int, temperature: float | None = None, generator=None, context=None
    ) -> torch.Tensor:
        t = temperature_for(self, temperature)
        return torch.stack([self.restore(lq, t, generator=generator) for _ in range(n)])
