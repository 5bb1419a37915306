"""The registered loss terms. A new one is a subclass here (or in its own module) with one ``@LOSSES.register``.

Every term reduces to a scalar with ``.mean()`` over the whole batch, as the hard-wired losses did; the pinned
values in ``tests/test_losses.py`` hold them to what the models computed before the terms existed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from ..maps import color_map_l1
from ..metrics.ssim import local_ssim
from .base import LOSSES, ForwardOutputs, LossTerm


@LOSSES.register("nll")
class NLL(LossTerm):
    """Flows: negative log-likelihood of the dequantised target in bits/dim (padded dimensions)."""

    needs = ("hq",)
    reads = ("nll",)

    def __call__(self, out: ForwardOutputs, batch: Mapping[str, Any]) -> Tensor:
        return out.nll


@LOSSES.register("l1")
class L1(LossTerm):
    """Mean absolute error of the model's deterministic prediction against the target: the flow's reverse pass
    at the prior mean (LoLiSRFlow's γ term, on the padded grid), the regression head's output, the sequential
    cascade's output (weight 0 there by default: logged, not trained)."""

    needs = ("hq",)
    reads = ("prediction", "target")

    def __call__(self, out: ForwardOutputs, batch: Mapping[str, Any]) -> Tensor:
        return (out.prediction - out.target).abs().mean()


@LOSSES.register("ssim")
class SSIM(LossTerm):
    """1 − SSIM of the deterministic prediction (as ``l1`` reads it) against the target: scikit-image's
    convention on RGB, the benchmark suites' SSIM (``metrics.ssim.local_ssim``). Why: L1 weighs an error by its
    size in absolute levels, so the dark, low-contrast regions of a night photo, where SSIM (relative to local
    brightness and contrast) loses most, pull little on it. Computed in float32 with autocast off: the local
    variances are differences of squares that bf16 cannot hold."""

    needs = ("hq",)
    reads = ("prediction", "target")

    def __call__(self, out: ForwardOutputs, batch: Mapping[str, Any]) -> Tensor:
        pred, target = out.prediction, out.target
        with torch.autocast(pred.device.type, enabled=False):
            return 1.0 - local_ssim(pred.float(), target.float(), "skimage").mean()


@LOSSES.register("gradient_l1")
class GradientL1(LossTerm):
    """L1 between the neighbour differences (horizontal and vertical) of the deterministic prediction (as ``l1``
    reads it) and those of the target. Why: the flows draw a faint block grid at every second input pixel
    (``benchmarks/grid_periodicity.py``); a step between two blocks is a small error in pixels but the whole
    error in differences, where the target has none."""

    needs = ("hq",)
    reads = ("prediction", "target")

    def __call__(self, out: ForwardOutputs, batch: Mapping[str, Any]) -> Tensor:
        pred, target = out.prediction, out.target
        dx = (pred.diff(dim=-1) - target.diff(dim=-1)).abs().mean()
        dy = (pred.diff(dim=-2) - target.diff(dim=-2)).abs().mean()
        return dx + dy


@LOSSES.register("color_map_l1")
class ColorMapL1(LossTerm):
    """L1 between the predicted colour-ratio map and the target's (``maps.color_map_l1``); logged as ``color``.
    Skipped where the encoder predicts no colour map."""

    key = "color"
    needs = ("hq",)
    reads = ("color_map", "target")
    optional = True

    def __call__(self, out: ForwardOutputs, batch: Mapping[str, Any]) -> Tensor:
        return color_map_l1(out.color_map, out.target)


@LOSSES.register("exposure")
class Exposure(LossTerm):
    """Squared EV error of the exposure head against the applied gain: the batch's oracle ``log2_gain`` (or,
    without it, the one derived from ``hq``). Skipped on models without an exposure head."""

    needs = (("log2_gain", "hq"),)
    reads = ("exposure_estimate", "log2_gain")
    optional = True

    def __call__(self, out: ForwardOutputs, batch: Mapping[str, Any]) -> Tensor:
        return (out.exposure_estimate - out.log2_gain.detach()).square().mean()


@LOSSES.register("enhance_l1")
class EnhanceL1(LossTerm):
    """Sequential: L1 of the enhancement net's LR output against the area-downscaled target."""

    needs = ("hq",)
    reads = ("enhanced", "enhance_target")

    def __call__(self, out: ForwardOutputs, batch: Mapping[str, Any]) -> Tensor:
        return (out.enhanced - out.enhance_target).abs().mean()


@LOSSES.register("sr_l1")
class SRL1(LossTerm):
    """Sequential: L1 of the SR net applied to the clean downscaled target, against the target."""

    needs = ("hq",)
    reads = ("sr_of_target", "target")

    def __call__(self, out: ForwardOutputs, batch: Mapping[str, Any]) -> Tensor:
        return (out.sr_of_target - out.target).abs().mean()
