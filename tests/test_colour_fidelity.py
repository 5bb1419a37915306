"""The colour-fidelity measure (benchmarks/colour_fidelity.py): pale restorations score below 1, faithful ones 1,
whatever their brightness; noise and texture do not count as colour."""

from __future__ import annotations

import torch
from benchmarks.colour_fidelity import relative_saturation, saturation


def _scene() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    base = torch.rand(1, 3, 4, 4, generator=g) * 0.6 + 0.2
    return torch.nn.functional.interpolate(base, scale_factor=16, mode="nearest")  # flat 16 px colour patches


def test_faithful_colour_scores_one_whatever_the_brightness():
    target = _scene()
    assert abs(relative_saturation(target, target) - 1.0) < 1e-6
    assert abs(relative_saturation(0.5 * target, target) - 1.0) < 1e-5  # darker, same colours


def test_pale_colour_scores_below_one_in_proportion():
    target = _scene()
    grey = target.mean(dim=1, keepdim=True)
    pale = grey + 0.6 * (target - grey)
    assert abs(relative_saturation(pale, target) - 0.6) < 1e-4
    assert relative_saturation(grey.expand_as(target), target) < 1e-6


def test_fine_noise_is_not_colour():
    grey = torch.full((1, 3, 64, 64), 0.4)
    noise = 0.05 * torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    # per-pixel chroma noise of std 0.05 averages out over 8x8 blocks: far below its unpooled saturation
    assert saturation(grey + noise) < 0.2 * saturation(grey + noise, block=1)
