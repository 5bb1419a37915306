"""benchmarks.output_filters: the filters do what their names say (the study's numbers rest on it)."""

from __future__ import annotations

import torch
from benchmarks.output_filters import FILTERS, smooth, to_rgb, to_ycbcr, unsharp


def _noisy(seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    base = torch.linspace(0.2, 0.8, 32).view(1, 1, 1, 32).expand(1, 3, 32, 32)
    return (base + 0.05 * torch.randn(1, 3, 32, 32, generator=gen)).clamp(0, 1)


def test_ycbcr_round_trip_is_exact_and_grey_has_no_chroma():
    x = _noisy()
    assert torch.allclose(to_rgb(to_ycbcr(x)), x, atol=1e-5)
    grey = torch.full((1, 3, 4, 4), 0.4)
    assert torch.allclose(to_ycbcr(grey)[:, 1:], torch.zeros(1, 2, 4, 4), atol=1e-6)


def test_a_chroma_blur_keeps_the_luma_and_lowers_the_chroma_noise():
    x = _noisy()
    y = smooth(x, chroma_sigma=1.5)
    before, after = to_ycbcr(x), to_ycbcr(y)
    assert torch.allclose(after[:, :1], before[:, :1], atol=1e-5)  # clamping to [0, 1] aside, luma untouched
    assert after[:, 1:].std() < 0.6 * before[:, 1:].std()


def test_a_luma_blur_keeps_the_chroma_and_the_unsharp_mask_sharpens_only_the_luma():
    x = _noisy()
    blurred = to_ycbcr(smooth(x, luma_sigma=0.7))
    assert torch.allclose(blurred[:, 1:], to_ycbcr(x)[:, 1:], atol=1e-5)
    assert blurred[:, :1].diff(dim=-1).abs().mean() < to_ycbcr(x)[:, :1].diff(dim=-1).abs().mean()
    sharp = to_ycbcr(unsharp(x, 1.0, 0.6))
    assert sharp[:, :1].diff(dim=-1).abs().mean() > to_ycbcr(x)[:, :1].diff(dim=-1).abs().mean()
    flat = torch.full((1, 3, 16, 16), 0.5)
    assert torch.allclose(unsharp(flat, 2.0, 0.6), flat, atol=1e-6)  # nothing to sharpen


def test_the_study_compares_against_the_unfiltered_output():
    x = _noisy()
    assert torch.equal(FILTERS["output"](x), x)
    assert len(FILTERS) == 13 and all(f(x).shape == x.shape for f in FILTERS.values())
