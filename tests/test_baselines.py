"""Classical baselines: each one brightens a synthetic dark pair, cascades run in the named order, and the
interface (scale, restore, temperature, shapes) is the flow models'."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from nightflow.baselines import (
    CLEANERS,
    ENHANCERS,
    INTERPOLATORS,
    Baseline,
    get_baseline,
    is_baseline,
    list_baselines,
)
from nightflow.context import oracle_log2_gain
from nightflow.errors import UserError
from nightflow.metrics import imresize, psnr

SIZE = 96


def _srgb_to_linear(x: np.ndarray) -> np.ndarray:
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(x: np.ndarray) -> np.ndarray:
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.clip(x, 0, None) ** (1 / 2.4) - 0.055)


def _scene(seed: int = 0) -> np.ndarray:
    """A smooth, natural-ish sRGB image (H×W×3 in [0, 1]): multi-scale colour noise, a gradient and an edge."""
    rng = np.random.default_rng(seed)
    f = sum(gaussian_filter(rng.standard_normal((SIZE, SIZE, 3)), sigma=(s, s, 0)) * s for s in (2, 6, 12))
    f = (f - f.min()) / (f.max() - f.min())
    yy, xx = np.mgrid[:SIZE, :SIZE] / SIZE
    f = 0.6 * f + 0.3 * np.stack([xx, yy, 1 - xx], -1) + 0.05
    f[20:50, 30:70] *= 0.6
    return np.clip(f, 0, 1)


def _dark_pair(scale: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(dark low-res input, bright GT): GT area-downscaled by ``scale``, ×0.1 in linear light, noise σ 0.01."""
    gt = torch.from_numpy(_scene(seed).transpose(2, 0, 1)).unsqueeze(0)
    lr = imresize(gt, scale=1 / scale, kernel="area").numpy()
    rng = np.random.default_rng(seed + 100)
    dark = _linear_to_srgb(_srgb_to_linear(lr) * 0.1) + rng.normal(0, 0.01, lr.shape)
    return torch.from_numpy(np.clip(dark, 0, 1)).float(), gt.float()


def _nearest(x: torch.Tensor, s: int) -> torch.Tensor:
    return x.repeat_interleave(s, 2).repeat_interleave(s, 3)


def _names(scale: int) -> list[str]:
    if scale == 1:
        return list(ENHANCERS)
    pairs = [(e, i) for e in ENHANCERS for i in INTERPOLATORS]
    return [f"{e}+{i}" for e, i in pairs] + [f"{i}+{e}" for e, i in pairs]


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_every_enhancer_and_cascade_raises_psnr_over_the_dark_input(scale):
    dark, gt = _dark_pair(scale)
    raw = float(psnr(_nearest(dark, scale), gt))
    assert raw < 10  # the input really is dark
    for name in _names(scale):
        baseline = get_baseline(name, scale=scale)
        out = baseline.restore(dark, target=gt) if baseline.needs_target else baseline.restore(dark)
        assert out.shape == (1, 3, SIZE, SIZE) and out.dtype == torch.float32, name
        assert float(out.min()) >= 0 and float(out.max()) <= 1, name
        gain = float(psnr(out, gt)) - raw
        assert gain > 1.0, (name, gain)


def test_oracle_exposure_matches_the_target_brightness_and_refuses_to_run_without_it():
    dark, gt = _dark_pair(1)
    oracle = get_baseline("oracle", scale=1)
    out = oracle.restore(dark, target=gt)
    assert float(oracle_log2_gain(out, gt).abs()) < 0.05  # brightness now matches (up to clipping)
    assert float(oracle_log2_gain(dark, gt)) > 1.0  # it did not before
    with pytest.raises(UserError, match="oracle"):
        oracle.restore(dark)
    assert get_baseline("oracle+bicubic", scale=2).needs_target and not get_baseline("gamma").needs_target


def test_interpolators_beat_pixel_replication_and_area_is_replication():
    """On a bright ×2 pair, bicubic and Lanczos beat replication; 'area' enlargement is replication exactly."""
    gt = torch.from_numpy(_scene(3).transpose(2, 0, 1)).unsqueeze(0).float()
    lr = imresize(gt, scale=0.5, kernel="area")
    replicated = _nearest(lr, 2)
    assert torch.equal(get_baseline("area", scale=2).restore(lr), replicated.clamp(0, 1))
    base = float(psnr(replicated, gt))
    for name in ("bicubic", "lanczos"):
        assert float(psnr(get_baseline(name, scale=2).restore(lr), gt)) > base + 0.5, name


def test_cascade_order_is_the_named_order():
    dark, _ = _dark_pair(2)
    a = get_baseline("clahe+bicubic", scale=2)
    b = get_baseline("bicubic+clahe", scale=2)
    assert [s.name for s in a.steps] == ["clahe", "bicubic"] and [s.name for s in b.steps] == [
        "bicubic",
        "clahe",
    ]
    assert not torch.allclose(a.restore(dark), b.restore(dark), atol=1e-3)
    manual = get_baseline("bicubic", scale=2).restore(get_baseline("clahe").restore(dark))
    assert torch.allclose(a.restore(dark), manual, atol=1e-6)


def test_interface_matches_the_flow_models():
    dark, _ = _dark_pair(1)
    x = dark[..., :37, :53]  # odd sizes
    for name in ["lime+lanczos", "gamma+area", "he+bicubic"]:
        m = get_baseline(name, scale=4)
        assert isinstance(m, torch.nn.Module) and isinstance(m, Baseline) and m.scale == 4
        assert sum(p.numel() for p in m.parameters()) == 0
        y = m.restore(x, temperature=0.8)
        assert y.shape == (1, 3, 148, 212)
        assert torch.equal(y, m.restore(x, temperature=0.0))  # temperature is ignored: deterministic
        assert torch.equal(m.restore(x[0]), y[0])  # a single 3×H×W item works too
        assert torch.equal(m(x), y)


def test_auto_gamma_hits_its_target_and_value_equalisation_keeps_hue():
    dark, _ = _dark_pair(1)
    out = get_baseline("gamma").restore(dark)
    assert float(out.mean()) == pytest.approx(0.4, abs=2e-3)
    for name in ("he", "clahe"):
        y = get_baseline(name).restore(dark)
        v_in, v_out = dark.amax(1, keepdim=True), y.amax(1, keepdim=True)
        mask = ((v_in > 0.05) & (v_out > 0.05)).expand_as(dark)
        # HSV hue and saturation kept: each channel divided by the max channel is unchanged
        assert torch.allclose((y / v_out)[mask], (dark / v_in)[mask], atol=1e-5), name


def test_bad_names_and_scales_are_one_line_user_errors():
    with pytest.raises(UserError, match="unknown baseline 'clahee'"):
        get_baseline("clahee+bicubic", scale=2)
    with pytest.raises(UserError, match="add an interpolator"):
        get_baseline("clahe", scale=2)
    with pytest.raises(UserError, match="at most one"):
        get_baseline("bicubic+lanczos", scale=2)
    with pytest.raises(UserError, match="positive integer"):
        get_baseline("bicubic", scale=0)
    with pytest.raises(UserError, match="N×3×H×W"):
        get_baseline("gamma").restore(torch.rand(1, 1, 8, 8))
    assert is_baseline("lime+bicubic") and not is_baseline("lolisrflow-x2")
    assert set(list_baselines()) == set(ENHANCERS) | set(CLEANERS) | set(INTERPOLATORS)
