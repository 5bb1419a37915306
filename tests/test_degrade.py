"""nightflow.data.degrade: the physics of each step, and the presets' order, determinism and bookkeeping."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from nightflow.data import degrade as D


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_srgb_linear_round_trip_and_known_values():
    x = torch.linspace(0, 1, 1001).view(1, 1, -1).expand(3, 1, -1)
    assert torch.allclose(D.linear_to_srgb(D.srgb_to_linear(x)), x, atol=1e-6)
    assert D.srgb_to_linear(torch.tensor(0.5)).item() == pytest.approx(0.214041, abs=1e-6)
    assert D.linear_to_srgb(torch.tensor(0.0031308)).item() == pytest.approx(0.04045, abs=1e-6)
    assert D.srgb_to_linear(torch.tensor(-0.2)).item() == 0.0


def test_darken_minus_3_ev_is_exactly_one_eighth():
    linear = torch.rand(2, 3, 16, 16, generator=gen())
    dark = D.darken_ev(linear, -3)
    assert torch.equal(dark, linear / 8)
    assert torch.equal(dark * 8, linear)
    batch = D.darken_ev(linear, torch.tensor([-3.0, -1.0]))
    assert torch.equal(batch[0], linear[0] / 8) and torch.equal(batch[1], linear[1] / 2)


@pytest.mark.parametrize("x,shot,read", [(0.2, 0.01, 0.02), (0.05, 1e-3, 5e-3), (0.5, 0.012, 0.0)])
def test_flat_patch_noise_variance_matches_model(x, shot, read):
    flat = torch.full((3, 128, 128), x)
    noisy = D.poisson_gaussian_noise(flat, shot, read, gen(1))
    measured = (noisy - flat).var().item()
    expected = shot * x + read**2
    assert abs(measured - expected) / expected < 0.10
    assert abs((noisy - flat).mean().item()) < 5 * math.sqrt(expected / noisy.numel())  # unbiased


def test_row_noise_is_shared_along_rows():
    flat = torch.full((3, 64, 256), 0.1)
    noisy = D.poisson_gaussian_noise(flat, 0.0, 0.0, gen(2), row=0.01)
    assert torch.allclose(noisy[:, :, :1].expand_as(noisy), noisy)  # constant along each row
    assert (noisy[0, :, 0] - 0.1).std().item() == pytest.approx(0.01, rel=0.3)


def test_noise_levels_follow_brooks_relation():
    g = gen(3)
    draws = [D.sample_noise_levels(g) for _ in range(400)]
    shots = torch.tensor([s for s, _ in draws]).log()
    read_vars = torch.tensor([r * r for _, r in draws]).log()
    assert shots.min() >= math.log(1e-4) and shots.max() <= math.log(0.012)
    resid = read_vars - (2.18 * shots + 1.20)
    assert abs(resid.mean().item()) < 0.06 and resid.std().item() == pytest.approx(0.26, rel=0.15)


def test_downscale_of_constant_stays_constant():
    for value in (0.3, 0.7071, 1.0 / 3.0):
        img = torch.full((3, 32, 48), value)
        for factor in (2, 4):
            out = D.downscale(img, factor)
            assert out.shape == (3, 32 // factor, 48 // factor)
            assert torch.equal(out, torch.full_like(out, value))


def test_downscale_is_an_area_mean_and_checks_divisibility():
    img = torch.rand(1, 3, 8, 12, generator=gen(4))
    out = D.downscale(img, 4)
    assert torch.allclose(out, img.view(1, 3, 2, 4, 3, 4).mean(dim=(3, 5)), atol=1e-6)
    assert torch.allclose(
        D.downscale(img[..., :6, :6], 3), img[..., :6, :6].view(1, 3, 2, 3, 2, 3).mean(dim=(3, 5))
    )
    with pytest.raises(ValueError, match="divisible"):
        D.downscale(torch.rand(3, 10, 8), 4)


def test_quantise_levels():
    x = torch.tensor([-0.1, 0.0, 0.3333, 0.5, 1.2])
    q = D.quantise(x, 2)  # levels 0, 1/3, 2/3, 1
    assert torch.allclose(q, torch.tensor([0.0, 0.0, 1 / 3, 2 / 3, 1.0]))
    assert len(torch.unique(D.quantise(torch.rand(10000, generator=gen()), 4))) == 16


def test_gaussian_kernels_sum_to_one_and_have_the_right_spread():
    k = D.gaussian_kernel(1.5)
    assert k.sum().item() == pytest.approx(1.0, abs=1e-6) and torch.allclose(k, k.T)
    r = torch.arange(k.shape[0]) - k.shape[0] // 2
    assert (k.sum(0) * r**2).sum().item() == pytest.approx(1.5**2, rel=0.02)
    aniso = D.gaussian_kernel(3.0, 1.0, theta=0.0)
    r = torch.arange(aniso.shape[0]) - aniso.shape[0] // 2
    var_x = (aniso.sum(0) * r**2).sum().item()
    var_y = (aniso.sum(1) * r**2).sum().item()
    assert var_x == pytest.approx(9.0, rel=0.03) and var_y == pytest.approx(1.0, rel=0.05)
    rotated = D.gaussian_kernel(3.0, 1.0, theta=math.pi / 2)
    assert torch.allclose(rotated, aniso.T, atol=1e-6)


def _centroid(k: torch.Tensor) -> tuple[float, float]:
    ys, xs = torch.meshgrid(torch.arange(k.shape[0]), torch.arange(k.shape[1]), indexing="ij")
    return (k * ys).sum().item() - k.shape[0] // 2, (k * xs).sum().item() - k.shape[1] // 2


def test_motion_kernels_are_normalised_centred_and_seeded():
    kernels = []
    for seed in range(6):
        k, info = D.motion_blur_kernel(gen(seed), length_range=(5.0, 20.0))
        assert k.min() >= 0 and k.sum().item() == pytest.approx(1.0, abs=1e-5)
        assert k.shape[0] == k.shape[1] == info["size"] and k.shape[0] % 2 == 1
        assert max(abs(c) for c in _centroid(k)) < 1e-3
        assert 5.0 <= info["length"] <= 20.0
        assert (k > 0).sum() > 3  # a trajectory, not a point
        kernels.append(k)
    again, _ = D.motion_blur_kernel(gen(0), length_range=(5.0, 20.0))
    assert torch.equal(again, kernels[0])
    assert not all(k.shape == kernels[0].shape and torch.equal(k, kernels[0]) for k in kernels[1:])


def test_blur_keeps_constants_and_does_not_shift():
    k, _ = D.motion_blur_kernel(gen(7), length_range=(8.0, 8.0))
    const = torch.full((3, 40, 40), 0.4)
    assert torch.allclose(D.blur(const, k), const, atol=1e-6)
    impulse = torch.zeros(3, 41, 41)
    impulse[:, 20, 20] = 1.0
    out = D.blur(impulse, k)
    cy, cx = _centroid(out[0])
    assert abs(cy) < 1e-3 and abs(cx) < 1e-3
    delta = torch.zeros(3, 3)
    delta[1, 1] = 1.0
    x = torch.rand(2, 3, 9, 9, generator=gen())
    assert torch.equal(D.blur(x, delta), x)


def test_unprocess_reprocess_round_trip_away_from_highlights():
    x = 0.05 + 0.75 * torch.rand(3, 24, 24, generator=gen(5))
    for seed in range(3):
        p = D.random_unprocess_params(gen(seed))
        assert 1.9 <= p.red_gain <= 2.4 and 1.5 <= p.blue_gain <= 1.9
        assert torch.allclose(
            torch.tensor(p.rgb2cam, dtype=torch.float64).sum(1), torch.ones(3, dtype=torch.float64)
        )
        raw = D.unprocess(x, p)
        assert not torch.allclose(raw, D.srgb_to_linear(x), atol=1e-3)  # a different colour space
        assert torch.allclose(D.reprocess(raw, p), x, atol=1e-4)


def test_greys_and_whites_stay_neutral_in_the_low_light_image():
    # noise off: what is left of the camera pipeline must not tint neutral tones, highlights included
    cfg = dataclasses.replace(
        D.get_preset("dfsr-lle"),
        ev_range=(-3.0, -3.0),
        shot_range=(1e-12, 1e-12),
        row_noise_prob=0.0,
        quant_bits=(14, 14),
    )
    ramp = torch.tensor([0.2, 0.5, 0.8, 0.95, 1.0]).view(1, 1, 5).expand(3, 4, 5).contiguous()
    for seed in range(4):
        lq, p = D.degrade(ramp, 1, cfg, gen(seed))
        assert p.unprocess is not None
        spread = lq.amax(dim=0) - lq.amin(dim=0)
        assert spread.max().item() < 2e-3, spread
        assert torch.all(lq[0, 0, 1:] > lq[0, 0, :-1])  # still a ramp


def test_tone_curve_inverse():
    x = torch.linspace(0, 1, 101)
    assert torch.allclose(D.tone_curve(D.inverse_tone_curve(x)), x, atol=1e-6)


def test_unprocess_without_tone_curve_round_trips_and_differs():
    x = 0.05 + 0.75 * torch.rand(3, 24, 24, generator=gen(5))
    p = D.random_unprocess_params(gen(0))
    flat = dataclasses.replace(p, tone_curve=False)
    assert torch.allclose(D.reprocess(D.unprocess(x, flat), flat), x, atol=1e-4)
    assert not torch.allclose(D.unprocess(x, flat), D.unprocess(x, p), atol=1e-3)


def _quiet(cfg: D.DegradeConfig, **changes) -> D.DegradeConfig:
    """``cfg`` with noise, banding and coarse quantisation off, at −3 EV."""
    return dataclasses.replace(
        cfg,
        ev_range=(-3.0, -3.0),
        shot_range=(1e-12, 1e-12),
        row_noise_prob=0.0,
        quant_bits=(14, 14),
        **changes,
    )


def test_without_tone_curve_the_dark_image_is_the_target_darkened_in_linear_light():
    hq = 0.1 + 0.8 * torch.rand(3, 16, 16, generator=gen(3))
    plain = _quiet(D.get_preset("dfsr-lle"), tone_curve_prob=0.0)
    lq, params = D.degrade(hq, 1, plain, gen(1))
    assert params.unprocess is not None and params.unprocess.tone_curve is False
    expected = D.srgb_to_linear(hq) / 8
    assert torch.allclose(D.srgb_to_linear(lq), expected, rtol=0.02, atol=2e-4)
    # with the tone curve (every preset's default) the S-curve crushes the shadows: far darker than that
    curved, params = D.degrade(hq, 1, _quiet(D.get_preset("dfsr-lle")), gen(1))
    assert params.unprocess.tone_curve is True
    assert D.srgb_to_linear(curved).mean() < 0.5 * expected.mean()


def test_tone_curve_share_draws_both_and_the_default_draws_nothing():
    hq = torch.rand(3, 16, 16, generator=gen(4))
    half = dataclasses.replace(D.get_preset("dfsr-lle"), tone_curve_prob=0.5)
    drawn = {D.degrade(hq, 1, half, gen(seed))[1].unprocess.tone_curve for seed in range(16)}
    assert drawn == {True, False}
    # share 1 (the presets' value) draws no number: the pairs made before the option existed stay the same
    explicit = dataclasses.replace(D.get_preset("dfsr-lle"), tone_curve_prob=1.0)
    a, pa = D.degrade(hq, 2, "dfsr-lle", gen(9))
    b, pb = D.degrade(hq, 2, explicit, gen(9))
    assert torch.equal(a, b) and pa.ev == pb.ev
    assert D.get_preset("dfsr-lle").tone_curve_prob == 1.0


def test_power_curve_scene_is_the_target_darkened_in_linear_light_of_its_power_law():
    """A scene whose camera encodes with a power law: unprocess and reprocess use the same curve, so without
    the tone curve the dark image is the target darkened in that law's linear light, not the sRGB curve's;
    read with the sRGB curve its dark colours come out far paler (the foreign set's symptom)."""
    hq = 0.1 + 0.8 * torch.rand(3, 16, 16, generator=gen(3))
    power = _quiet(D.get_preset("dfsr-lle"), tone_curve_prob=0.0, power_curve_prob=1.0)
    lq, params = D.degrade(hq, 1, power, gen(1))
    gamma = params.unprocess.gamma
    assert gamma is not None and 2.0 <= gamma <= 2.4
    assert torch.allclose(lq.clamp(min=0) ** gamma, hq**gamma / 8, rtol=0.02, atol=2e-4)
    assert not torch.allclose(D.srgb_to_linear(lq), D.srgb_to_linear(hq) / 8, rtol=0.1, atol=2e-3)
    # the curves are exact inverses of each other, both ways
    x = torch.linspace(0, 1, 101)
    for g in (None, 2.2):
        assert torch.allclose(D.encode_transfer(D.decode_transfer(x, g), g), x, atol=1e-5)


def test_power_curve_share_draws_both_and_the_default_draws_nothing():
    hq = torch.rand(3, 16, 16, generator=gen(4))
    half = dataclasses.replace(D.get_preset("dfsr-lle"), power_curve_prob=0.5)
    drawn = {D.degrade(hq, 1, half, gen(seed))[1].unprocess.gamma is None for seed in range(16)}
    assert drawn == {True, False}
    explicit = dataclasses.replace(D.get_preset("dfsr-lle"), power_curve_prob=0.0)
    a, pa = D.degrade(hq, 2, "dfsr-lle", gen(9))
    b, pb = D.degrade(hq, 2, explicit, gen(9))
    assert torch.equal(a, b) and pa.ev == pb.ev and pa.unprocess.gamma is None
    assert all(
        p.power_curve_prob == 0.0 for p in map(D.get_preset, ("dfsr-lle", "lol-blur", "dfsr-lle-jpeg"))
    )


def test_degrade_shapes_determinism_and_params():
    hq = torch.rand(3, 32, 48, generator=gen(6))
    for scale in (1, 2, 4):
        lq, params = D.degrade(hq, scale, "dfsr-lle", gen(11))
        assert lq.shape == (3, 32 // scale, 48 // scale) and lq.dtype == torch.float32
        assert 0.0 <= lq.min() and lq.max() <= 1.0
        lq2, params2 = D.degrade(hq, scale, "dfsr-lle", gen(11))
        assert torch.equal(lq, lq2) and params == params2
        assert -5.0 <= params.ev <= -2.5 and params.unprocess is not None and 10 <= params.quant_bits <= 14
        assert (params.blur is not None) == (scale > 1)
        assert lq.mean() < hq.mean()  # darker
    other, _ = D.degrade(hq, 2, "dfsr-lle", gen(12))
    assert not torch.equal(other, D.degrade(hq, 2, "dfsr-lle", gen(11))[0])
    d = params.to_dict()
    assert d["preset"] == "dfsr-lle" and "shot_noise" in d and isinstance(d["unprocess"]["rgb2cam"], list)


def test_jpeg_round_trip_is_8_bit_and_loses_more_at_lower_quality():
    # a smooth image with fine texture: JPEG's error grows as the quality falls
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 48), torch.linspace(0, 1, 64), indexing="ij")
    img = torch.stack([xx, yy, 0.5 + 0.2 * torch.sin(40 * xx) * torch.cos(30 * yy)]).clamp(0, 1)
    hi, lo = D.jpeg_compress(img, 95), D.jpeg_compress(img, 30)
    assert hi.shape == img.shape and hi.dtype == torch.float32
    assert ((hi * 255) - (hi * 255).round()).abs().max() < 1e-4  # 8-bit levels, like the file
    err_hi, err_lo = (hi - img).abs().mean(), (lo - img).abs().mean()
    assert err_hi < 0.02 and err_lo > 2 * err_hi  # 0.012 and 0.032 here (4:2:0 costs the blue texture)
    assert torch.equal(D.jpeg_compress(img, 60), D.jpeg_compress(img, 60))
    with pytest.raises(ValueError, match="quality"):
        D.jpeg_compress(img, 0)


def test_jpeg_preset_is_dfsr_lle_then_a_jpeg_round_trip():
    hq = torch.rand(3, 32, 48, generator=gen(6))
    for scale in (1, 2):
        plain, p_plain = D.degrade(hq, scale, "dfsr-lle", gen(5))
        jpeg, p_jpeg = D.degrade(hq, scale, "dfsr-lle-jpeg", gen(5))
        assert p_plain.jpeg_quality is None and 60 <= p_jpeg.jpeg_quality <= 95
        # same draws up to the JPEG step (so dfsr-lle's pairs did not change when JPEG was added), JPEG last
        assert p_jpeg.ev == p_plain.ev and p_jpeg.shot_noise == p_plain.shot_noise
        assert torch.equal(jpeg, D.jpeg_compress(plain, p_jpeg.jpeg_quality))
        assert p_jpeg.to_dict()["jpeg_quality"] == p_jpeg.jpeg_quality


def test_lol_blur_preset_blurs_and_stays_at_x1():
    hq = torch.rand(3, 32, 32, generator=gen(8))
    lq, params = D.degrade(hq, 1, "lol-blur", gen(9))
    assert lq.shape == hq.shape and params.motion_length is not None and params.motion_kernel_size >= 3
    with pytest.raises(ValueError, match="supports scales"):
        D.degrade(hq, 2, "lol-blur", gen(9))
    with pytest.raises(ValueError, match="unknown degradation preset"):
        D.degrade(hq, 1, "nope", gen(9))
    with pytest.raises(ValueError, match="divisible"):
        D.degrade(torch.rand(3, 30, 32), 4, "dfsr-lle", gen(9))


def test_noise_is_added_after_downscaling_in_linear_light():
    # If noise came before the ×4 decimation, averaging 16 pixels would cut its variance 16-fold.
    cfg = dataclasses.replace(
        D.get_preset("dfsr-lle"),
        ev_range=(-1.0, -1.0),
        unprocess_prob=0.0,
        row_noise_prob=0.0,
        quant_bits=(14, 14),
    )
    value = 0.8
    hq = torch.full((3, 256, 256), value)
    lq, p = D.degrade(hq, 4, cfg, gen(10))
    signal = D.srgb_to_linear(torch.tensor(value)).item() / 2
    measured = (D.srgb_to_linear(lq) - signal).var().item()
    expected = p.shot_noise * signal + p.read_noise**2
    assert abs(measured - expected) / expected < 0.10
    assert D.srgb_to_linear(lq).mean().item() == pytest.approx(signal, rel=0.02)  # exactly -1 EV darker
