"""Every invertible layer: exact inverse (float32) and exact log-det (float64 brute-force Jacobian), both at
initialisation and after 20 optimiser steps, plus extreme inputs and bad shapes."""

from __future__ import annotations

import pytest
import torch

from flow_helpers import brute_force_logdet, moved_from_init, train_a_bit
from nightflow.flow import (
    ActNorm,
    AffineInjector,
    ConditionalAffineCoupling,
    CrossCoupling,
    FlowSequence,
    InvConv1x1,
    Split,
    Squeeze,
    StraddleCoupling,
)

C, CC, H, W = 4, 3, 4, 4  # 4·4·4 = 64 dimensions for the Jacobian


def _layers():
    return {
        "actnorm": (lambda: ActNorm(C), 0),
        "invconv": (lambda: InvConv1x1(C), 0),
        "injector_conv": (lambda: AffineInjector(C, CC, 8, "conv"), CC),
        "injector_cbam": (lambda: AffineInjector(C, CC, 8, "cbam"), CC),
        "coupling_conv": (lambda: ConditionalAffineCoupling(C, CC, 8, "conv"), CC),
        "coupling_cbam": (lambda: ConditionalAffineCoupling(C, CC, 8, "cbam"), CC),
        "coupling_uncond": (lambda: ConditionalAffineCoupling(C, 0, 8), 0),
        "coupling_first": (lambda: ConditionalAffineCoupling(C, CC, 8, transform_first=True), CC),
        "coupling_odd_channels": (lambda: ConditionalAffineCoupling(5, CC, 8), CC),
        "cross_coupling": (lambda: CrossCoupling(C, CC, 8), CC),
        "injector_floor": (lambda: AffineInjector(C, CC, 8, "conv", floor=0.25), CC),
        "coupling_floor": (lambda: ConditionalAffineCoupling(C, CC, 8, "cbam", floor=0.25), CC),
        "cross_coupling_floor": (lambda: CrossCoupling(C, CC, 8, floor=0.25), CC),
        "cross_coupling_cbam_local": (lambda: CrossCoupling(C, CC, 8, "cbam-local", floor=0.25), CC),
        "squeeze": (lambda: Squeeze(), 0),
        "straddle_conv": (lambda: StraddleCoupling(8, CC, 8, "conv"), CC),
        "straddle_uncond": (lambda: StraddleCoupling(8, 0, 8, "conv"), 0),
        "split_cond": (lambda: Split(C, CC), CC),
        "split_uncond": (lambda: Split(C), 0),
        "step": (
            lambda: FlowSequence(
                [ActNorm(C), InvConv1x1(C), AffineInjector(C, CC, 8), ConditionalAffineCoupling(C, CC, 8)]
            ),
            CC,
        ),
    }


LAYERS = _layers()


def _channels(name: str) -> int:
    if name.startswith("straddle"):
        return 8  # a squeezed tensor: 2 channels of the finer grid
    return 5 if name == "coupling_odd_channels" else C


def _batch(name: str, cond_ch: int, n: int = 8, gen: torch.Generator | None = None):
    x = torch.randn(n, _channels(name), H, W, generator=gen) * 0.7 + 0.3
    cond = torch.randn(n, cond_ch, H, W, generator=gen) if cond_ch else None
    return x, cond


def _roundtrip_error(layer, x, cond) -> float:
    with torch.no_grad():
        y, _ = layer(x, cond)
        return float((layer.inverse(y, cond) - x).abs().max())


def _logdet_error(layer, x, cond) -> tuple[float, float]:
    layer = layer.double().eval()
    x, cond = x[:1].double(), None if cond is None else cond[:1].double()
    _, logdet = layer(x, cond)
    brute = brute_force_logdet(lambda t: layer(t, cond)[0], x)
    return float(logdet[0].detach()), brute


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_inverse_and_logdet_at_init_and_after_training(name):
    torch.manual_seed(0)
    make, cond_ch = LAYERS[name]
    layer = make()
    gen = torch.Generator().manual_seed(1)
    x, cond = _batch(name, cond_ch, gen=gen)
    layer.train()
    layer(x, cond)  # data-dependent init where there is one
    layer.eval()
    assert _roundtrip_error(layer, x, cond) < 1e-4
    before = {n: p.detach().clone() for n, p in layer.named_parameters()}
    train_a_bit(layer, lambda: _batch(name, cond_ch, gen=gen))
    if before:
        assert moved_from_init(layer, before), "training must move every parameter off its initial value"
    x, cond = _batch(name, cond_ch, gen=gen)
    assert _roundtrip_error(layer, x, cond) < 1e-4
    ours, brute = _logdet_error(layer, x, cond)
    assert ours == pytest.approx(brute, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_extreme_inputs_stay_finite(name):
    torch.manual_seed(0)
    make, cond_ch = LAYERS[name]
    layer = make().eval()
    x = torch.full((2, _channels(name), H, W), 1e3)
    x[1] = -1e3
    cond = torch.zeros(2, cond_ch, H, W) if cond_ch else None
    with torch.no_grad():
        y, logdet = layer(x, cond)
        back = layer.inverse(y, cond)
    assert torch.isfinite(y).all() and torch.isfinite(logdet).all() and torch.isfinite(back).all()
    assert logdet.shape == (2,)


def test_actnorm_data_init_and_mark_initialized():
    x = torch.randn(16, 3, 5, 5) * 4 + 2
    norm = ActNorm(3).train()
    y, _ = norm(x)
    assert bool(norm.initialized)
    assert y.mean(dim=(0, 2, 3)).abs().max() < 1e-5
    assert (y.std(dim=(0, 2, 3), unbiased=False) - 1).abs().max() < 1e-4
    loaded = ActNorm(3)
    loaded.load_state_dict(norm.state_dict())
    assert bool(loaded.initialized)  # the flag travels with the weights
    fresh = ActNorm(3)
    fresh.mark_initialized()
    fresh.train()
    y2, _ = fresh(x)
    assert torch.equal(y2, x)  # no re-initialisation once marked


def test_actnorm_reads_its_initialized_buffer_once_and_again_after_a_state_dict_load():
    """After the first training step the flag is a Python bool: no tensor→bool read per step, so torch.compile
    traces the layer as one graph; a state dict loaded later (an uninitialised one here) decides again."""
    x = torch.randn(8, 3, 4, 4) * 3 + 1
    norm = ActNorm(3).train()
    norm(x)
    traced = torch.compile(norm.forward, backend="eager", fullgraph=True)  # fullgraph: a graph break raises
    y, _ = traced(x)
    assert y.mean(dim=(0, 2, 3)).abs().max() < 1e-5
    norm.load_state_dict(ActNorm(3).state_dict())  # initialized=False, bias 0, scale 1
    y, _ = norm(x + 5)
    assert bool(norm.initialized) and y.mean(dim=(0, 2, 3)).abs().max() < 1e-5  # initialised on the new data


def test_invconv_starts_orthogonal_and_inverse_uses_no_linalg_inv(monkeypatch):
    conv = InvConv1x1(12)
    w = conv.weight()
    assert torch.allclose(w @ w.t(), torch.eye(12, dtype=w.dtype), atol=1e-6)

    def forbidden(*args, **kwargs):
        raise AssertionError("inverse must not call torch.linalg.inv or slogdet")

    monkeypatch.setattr(torch.linalg, "inv", forbidden)
    monkeypatch.setattr(torch.linalg, "slogdet", forbidden)
    monkeypatch.setattr(torch, "inverse", forbidden)
    x = torch.randn(2, 12, 3, 3)
    y, _ = conv(x)
    assert (conv.inverse(y) - x).abs().max() < 1e-5


def test_coupling_scale_is_bounded_by_sigmoid_plus_eps():
    from nightflow.flow.coupling import shift_and_scale

    h = torch.tensor([[0.0, -1e4, 0.0, 1e4]]).view(1, 4, 1, 1)
    _, scale = shift_and_scale(h, eps=1e-3)
    assert scale.flatten().tolist() == pytest.approx([1e-3, 1.0 + 1e-3])


def test_local_channel_gate_is_local_and_global_one_is_not():
    """cbam-local's gate pools a 15 px window: a change far away leaves a pixel alone (tiles can agree)."""
    from nightflow.layers.attention import ChannelGate

    torch.manual_seed(0)
    for window, far_changes in ((15, False), (0, True)):
        gate = ChannelGate(8, reduction=2, window=window)
        x = torch.rand(1, 8, 40, 40)
        y = x.clone()
        y[..., 30:, 30:] += 1.0
        moved = (gate(x) - gate(y))[..., :10, :10].abs().max()
        assert (float(moved) > 1e-6) == far_changes, window
    with pytest.raises(ValueError, match="odd"):
        ChannelGate(8, window=4)


def test_scale_floor_bounds_the_scale_and_zero_floor_is_the_old_form():
    from nightflow.flow.coupling import shift_and_scale

    h = torch.tensor([[0.0, -1e4, 0.0, 0.0, 0.0, 1e4]]).view(1, 6, 1, 1)
    _, scale = shift_and_scale(h, eps=1e-3, floor=0.25)
    gate = float(torch.sigmoid(torch.tensor(2.0)))
    assert scale.flatten().tolist() == pytest.approx([0.25 + 1e-3, 0.25 + 0.75 * gate + 1e-3, 1.0 + 1e-3])
    _, old = shift_and_scale(h, eps=1e-3)
    assert old.flatten().tolist() == pytest.approx([1e-3, gate + 1e-3, 1.0 + 1e-3])
    with pytest.raises(ValueError, match="floor"):
        ConditionalAffineCoupling(C, CC, 8, floor=1.0)


@pytest.mark.parametrize(
    "layer, x, cond, words",
    [
        (
            AffineInjector(4, 3, 8),
            torch.randn(2, 4, 4, 4),
            torch.randn(2, 3, 2, 2),
            ["conditioning", "(2, 3, 4, 4)"],
        ),
        (ConditionalAffineCoupling(4, 3, 8), torch.randn(2, 4, 4, 4), None, ["conditioning", "None"]),
        (ActNorm(4), torch.randn(2, 5, 4, 4), None, ["ActNorm input", "(N, 4, H, W)", "(2, 5, 4, 4)"]),
        (Squeeze(), torch.randn(1, 3, 5, 4), None, ["divisible by 2", "(1, 3, 5, 4)"]),
    ],
)
def test_bad_shapes_name_the_tensor_and_both_shapes(layer, x, cond, words):
    with pytest.raises(ValueError) as err:
        layer(x, cond)
    for word in words:
        assert word in str(err.value)
