"""Self-supervised loss terms: train a restorer from dark (blurry, noisy) images alone, no normal-light target.

SSFlow's authors describe a loss tying the output's colour map to the input's and released no loss code, so
these terms are ours (``docs/ssflow.md`` has the rationale and the ablation). Notation: x the low-light input,
ŷ the model's deterministic restoration of it (the flow's reverse pass at the prior mean), lin(·) the sRGB →
linear curve, Y(·) linear Rec. 709 luminance, μ_k a k×k stride-1 box mean, g the scene's *auto exposure* in EV
(``context.auto_log2_gain`` of the whole image's thumbnail: the gain that brings its mean linear luminance to
18 % grey, what a camera meter does; the one assumption about brightness these terms make).

- ``pseudo_nll`` / ``pseudo_l1`` — the flow's likelihood (and its mean path's L1) on **neighbour pseudo-pairs**
  (Neighbor2Neighbor, Huang et al. 2021): every 2×2 cell of x gives one pixel to x₁ and an adjacent one to x₂;
  the model sees x₁ and is asked for ``gain(x₂, g)``. x₁ and x₂ show the same scene with independent noise, so
  the best prediction is the clean, brightened scene, not the input's noise (x itself as a target would teach
  the identity). The pseudo-targets keep the input's blur: deblurring comes from ``reblur``.
- ``color_consistency`` — mean |CR(μ₇ŷ) − CR(μ₇x)| with CR(I) = I / (Σ_c I + 10⁻³): the colour-ratio map is
  illumination-invariant, so brightening must not change it (the paper's idea); the box mean keeps the dark
  input's noise out of the ratio.
- ``exposure_control`` — mean over images of (log₂ mean Y(ŷ) − log₂ mean Y(x) − g)²: the crop is brightened
  by the scene's auto exposure (in EV, so the weight is the same whatever the darkness).
- ``illumination_smoothness`` — total variation of the log gain map G = log(Y(μ₅ŷ) + 10⁻³) − log(Y(μ₅x) +
  10⁻³): brightening is a smooth illumination change (Retinex), not a texture.
- ``reblur`` — the known degradation, where the data provides it (``blur_kernel``, the camera-shake kernel of
  the synthetic ``lol-blur`` preset): mean |k ∗ lin(ŷ) − min(lin(x)·2^g, 1)|. Blurring the restoration with
  the kernel must give back the brightened input; the kernel is low-pass, so it cannot copy the input's noise.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..context import linear_luminance, srgb_to_linear
from ..maps import color_ratio_map
from .base import LOSSES, ForwardOutputs, LossTerm


def neighbour_indices(x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """The random cell choices of :func:`neighbour_pair` for N×C×H×W (H, W even): two N×1×(H/2)×(W/2)×1 index
    tensors into each 2×2 cell (2·row + col), the second an edge neighbour of the first."""
    n, _, h, w = x.shape
    if h % 2 or w % 2:
        raise ValueError(f"neighbour pairs need an even height and width, got {h}×{w}")
    shape = (n, 1, h // 2, w // 2, 1)
    draw_on = generator.device if generator is not None else x.device
    first = torch.randint(0, 4, shape, generator=generator, device=draw_on).to(x.device)
    which = torch.randint(0, 2, shape, generator=generator, device=draw_on).to(x.device)
    # the neighbours of (r, c) are (r, 1−c) (index ^ 1) and (1−r, c) (index ^ 2)
    second = torch.where(which == 0, first ^ 1, first ^ 2)
    return first, second


def take_cells(x: Tensor, index: Tensor) -> Tensor:
    """The half-size sub-image of N×C×H×W picking, in every 2×2 cell, the pixel ``index`` names (all channels)."""
    n, c, h, w = x.shape
    cells = x.reshape(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 2, 4, 3, 5).reshape(n, c, h // 2, w // 2, 4)
    return cells.gather(4, index.expand(n, c, h // 2, w // 2, 1)).squeeze(4)


def neighbour_pair(x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Two half-size sub-images of N×C×H×W (H, W even): from every 2×2 cell a random pixel for the first and
    one of its two edge neighbours in the cell for the second, the same choice for every channel."""
    first, second = neighbour_indices(x, generator)
    return take_cells(x, first), take_cells(x, second)


def box_mean(x: Tensor, k: int) -> Tensor:
    """Stride-1 k×k mean (k odd), edges averaged over the pixels that exist."""
    return F.avg_pool2d(x, k, stride=1, padding=k // 2, count_include_pad=False)


def blur_batch(x: Tensor, kernels: Tensor) -> Tensor:
    """Convolve image n of N×C×H×W with kernel n of N×k×k (true convolution, replicate edges), trimmed first to
    the smallest centred square that holds every kernel's non-zero taps."""
    n, c, h, w = x.shape
    k = kernels.shape[-1]
    nz = (kernels.abs().sum(dim=0) > 0).nonzero()
    r = int((nz - k // 2).abs().max()) if len(nz) else 0
    mid = k // 2
    kern = kernels[:, mid - r : mid + r + 1, mid - r : mid + r + 1].flip(-2, -1).to(x.dtype)
    weight = kern.repeat_interleave(c, dim=0).unsqueeze(1)  # (N·C)×1×k×k
    padded = F.pad(x.reshape(1, n * c, h, w), (r, r, r, r), mode="replicate")
    return F.conv2d(padded, weight, groups=n * c).reshape(n, c, h, w)


def _lin(x: Tensor) -> Tensor:
    return srgb_to_linear(x.float().clamp(0.0, 1.0))


def _auto_gain(out: ForwardOutputs) -> Tensor:
    return out.get("auto_log2_gain").float().detach()


@LOSSES.register("pseudo_nll")
class PseudoNLL(LossTerm):
    """NLL (bits/dim, dequantised) of the brightened neighbour sub-image given the other one (module docstring)."""

    needs = ("lq",)
    reads = ("pseudo_nll",)

    def __call__(self, out: ForwardOutputs, batch: Mapping[str, Any]) -> Tensor:
        return out.get("pseudo_nll")


@LOSSES.register("pseudo_l1")
class PseudoL1(LossTerm):
    """L1 of the mean path on one neighbour sub-image against the other, brightened (module docstring)."""

    needs = ("lq",)
    reads = ("pseudo_prediction", "pseudo_target")

    def __call__(self, out: ForwardOutputs, batch: Mapping[str, Any]) -> Tensor:
        return (out.get("pseudo_prediction") - out.get("pseudo_target")).abs().mean()


@LOSSES.register("neighbour_consistency")
class NeighbourConsistency(LossTerm):
    """Neighbor2Neighbor's regulariser: mean |(ŷ(x₁) − gain(x₂, g)) − sg(g₁(ŷ) − g₂(ŷ))|, where g₁, g₂ take the
    same cells from the full-resolution restoration ŷ (no gradient through it). The pseudo-pair terms train
    only the half-size path; this ties the full-size output to it, so ŷ carries no noise the pairs removed."""

    needs = ("lq",)
    reads = ("pseudo_prediction", "pseudo_target", "pseudo_gap")

    def __call__(self, out: ForwardOutputs, batch: Mapping[str, Any]) -> Tensor:
        gap = out.get("pseudo_gap").detach()
        h, w = gap.shape[-2:]
        pred = out.get("pseudo_prediction")[..., :h, :w]
        target = out.get("pseudo_target")[..., :h, :w]
        return ((pred - target) - gap).abs().mean()


@LOSSES.register("color_consistency")
class ColorConsistency(LossTerm):
    """|CR(μ₇ŷ) − CR(μ₇x)|: brightening keeps the input's colour-ratio map (module docstring)."""

    needs = ("lq",)
    reads = ("prediction", "input")

    def __call__(self, out: ForwardOutputs, batch: Mapping[str, Any]) -> Tensor:
        pred = box_mean(out.prediction.float().clamp(0.0, 1.0), 7)
        ref = box_mean(out.get("input").float(), 7)
        return (color_ratio_map(pred, eps=1e-3) - color_ratio_map(ref, eps=1e-3)).abs().mean()


@LOSSES.register("exposure_control")
class ExposureControl(LossTerm):
    """(log₂ mean Y(ŷ) − log₂ mean Y(x) − g)², EV²: the crop gets the scene's auto exposure (module docstring)."""

    needs = ("lq",)
    reads = ("prediction", "input", "auto_log2_gain")

    def __call__(self, out: ForwardOutputs, batch: Mapping[str, Any]) -> Tensor:
        y_pred = linear_luminance(out.prediction.float()).mean(dim=(1, 2, 3)) + 1e-4
        y_in = linear_luminance(out.get("input").float()).mean(dim=(1, 2, 3)) + 1e-4
        return (torch.log2(y_pred) - torch.log2(y_in) - _auto_gain(out)).square().mean()


@LOSSES.register("illumination_smoothness")
class IlluminationSmoothness(LossTerm):
    """Total variation of the log gain map log Y(μ₅ŷ) − log Y(μ₅x) (module docstring)."""

    needs = ("lq",)
    reads = ("prediction", "input")

    def __call__(self, out: ForwardOutputs, batch: Mapping[str, Any]) -> Tensor:
        pred = linear_luminance(box_mean(out.prediction.float().clamp(0.0, 1.0), 5))
        ref = linear_luminance(box_mean(out.get("input").float(), 5))
        gain = torch.log(pred + 1e-3) - torch.log(ref + 1e-3)
        tv_x = (gain[..., :, 1:] - gain[..., :, :-1]).abs().mean()
        tv_y = (gain[..., 1:, :] - gain[..., :-1, :]).abs().mean()
        return tv_x + tv_y


@LOSSES.register("reblur")
class Reblur(LossTerm):
    """|k ∗ lin(ŷ) − min(lin(x)·2^g, 1)| with the batch's known blur kernel k (module docstring)."""

    needs = ("lq", "blur_kernel")
    reads = ("prediction", "input", "auto_log2_gain")

    def __call__(self, out: ForwardOutputs, batch: Mapping[str, Any]) -> Tensor:
        pred, x = out.prediction, out.get("input")
        kernels = batch["blur_kernel"].to(pred.device)
        gain = torch.pow(2.0, _auto_gain(out)).view(-1, 1, 1, 1)
        target = (_lin(x) * gain).clamp(max=1.0)
        return (blur_batch(_lin(pred), kernels) - target).abs().mean()
