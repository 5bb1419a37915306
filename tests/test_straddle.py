"""StraddleCoupling: what it couples (across the level's block edges), what it leaves alone (the one-pixel
border, tiny inputs), that it starts as the exact identity, and that trained weights without it load into a
flow with it and compute the same. Exact inverse and log-det are in tests/test_flow_layers.py."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from flow_helpers import brute_force_logdet, train_a_bit
from nightflow.errors import UserError
from nightflow.flow import (
    ConditionalAffineCoupling,
    ConditionalGlow,
    GlowConfig,
    StraddleCoupling,
    squeeze2d,
    unsqueeze2d,
)


def _trained_layer(channels: int = 8, cond: int = 3, seed: int = 0) -> StraddleCoupling:
    torch.manual_seed(seed)
    layer = StraddleCoupling(channels, cond, 8)
    gen = torch.Generator().manual_seed(seed + 1)

    def batch():
        return torch.randn(4, channels, 4, 4, generator=gen), torch.randn(4, cond, 4, 4, generator=gen)

    train_a_bit(layer, batch)
    return layer


def _fine_response(layer: StraddleCoupling, cond: torch.Tensor, fine: torch.Tensor, at: tuple[int, int, int]):
    """|change| of the layer's output on the finer grid when the finer input moves at (channel, row, col)."""
    moved = fine.clone()
    moved[0, at[0], at[1], at[2]] += 1.0
    with torch.no_grad():
        a = unsqueeze2d(layer(squeeze2d(fine), cond)[0])
        b = unsqueeze2d(layer(squeeze2d(moved), cond)[0])
    return (a - b).abs()[0]


def test_a_fresh_layer_is_the_exact_identity_with_zero_logdet():
    torch.manual_seed(0)
    layer = StraddleCoupling(12, 5, 8)
    x, cond = torch.randn(2, 12, 4, 6), torch.randn(2, 5, 4, 6)
    y, logdet = layer(x, cond)
    assert torch.equal(y, x) and torch.equal(logdet, torch.zeros(2))
    assert torch.equal(layer.inverse(x, cond), x)


def test_it_couples_across_the_block_edges_of_its_level():
    """A change inside one 2×2 block of the finer grid reaches the neighbouring block across the edge (the
    moved block straddles both); without the layer a squeeze-level coupling would only see it through the
    coarse grid's convolutions."""
    layer = _trained_layer()
    fine = torch.randn(1, 2, 8, 8)
    cond = torch.randn(1, 3, 4, 4)
    # fine pixel (1, 1) is in the level's block (0, 0); (2, 2) is in its block (1, 1); moved block (0, 0) holds both
    response = _fine_response(layer, cond, fine, at=(0, 1, 1))
    assert response[1, 2, 2] > 1e-4  # channel 0 is in the half that drives channel 1 on the moved grid


def test_the_one_pixel_border_passes_unchanged_and_nothing_wraps_around():
    layer = _trained_layer()
    fine = torch.randn(1, 2, 8, 8)
    cond = torch.randn(1, 3, 4, 4)
    with torch.no_grad():
        out = unsqueeze2d(layer(squeeze2d(fine), cond)[0])
    border = torch.ones(8, 8, dtype=torch.bool)
    border[1:-1, 1:-1] = False
    assert torch.equal(out[0][:, border], fine[0][:, border])
    assert not torch.equal(out[0][:, ~border], fine[0][:, ~border])
    # a change at the left border reaches nothing: it is in no moved block (a wrap-around would reach the right side)
    assert _fine_response(layer, cond, fine, at=(0, 3, 0)).sum() - 1.0 == pytest.approx(0.0, abs=1e-6)
    # a change at the first interior column reaches its neighbourhood (two couplings of two 3×3 convolutions on
    # the moved grid: ±4 moved blocks), never the far side of a wider image
    wide, wide_cond = torch.randn(1, 2, 8, 32), torch.randn(1, 3, 4, 16)
    response = _fine_response(layer, wide_cond, wide, at=(0, 3, 1))
    assert response[:, :, 2:11].max() > 0.0 and response[:, :, 11:].max() == 0.0


@pytest.mark.parametrize("size", [(1, 1), (1, 4), (3, 1)])
def test_a_level_one_block_high_or_wide_is_left_alone(size):
    layer = _trained_layer()
    x, cond = torch.randn(2, 8, *size), torch.randn(2, 3, *size)
    y, logdet = layer(x, cond)
    assert torch.equal(y, x) and torch.equal(logdet, torch.zeros(2))
    assert torch.equal(layer.inverse(x, cond), x)


def test_odd_level_sizes_invert_exactly_with_the_brute_force_logdet():
    layer = _trained_layer().double()
    x, cond = torch.randn(1, 8, 3, 5, dtype=torch.float64), torch.randn(1, 3, 3, 5, dtype=torch.float64)
    y, logdet = layer(x, cond)
    assert (layer.inverse(y, cond) - x).abs().max() < 1e-12
    assert float(logdet[0]) == 0.0
    assert brute_force_logdet(lambda t: layer(t, cond)[0], x) == pytest.approx(0.0, abs=1e-9)


def _glow(straddle, at: str = "end") -> ConditionalGlow:
    cfg = GlowConfig(levels=2, steps=1, hidden=8, cond_channels=[4, 4], straddle=straddle, straddle_at=at)
    return ConditionalGlow(cfg)


def test_glow_places_them_per_level_where_configured_and_refuses_bad_settings():
    glow = _glow([1, 2])
    counts = [sum(isinstance(m, StraddleCoupling) for m in level.modules()) for level in glow.level_flows]
    assert counts == [1, 2]
    assert not any(isinstance(m, StraddleCoupling) for m in _glow(0).modules())
    # squeeze, 2 transitions, 1 step: "end" runs them after the step, "start" between the transitions and the
    # step; either way nested under the layer before them, so every other tensor keeps its name
    for at, order in (("end", ["Step", "StraddleCoupling"]), ("start", ["StraddleCoupling", "Step"])):
        glow = _glow(1, at)
        flat = [
            "Step" if isinstance(m, ConditionalAffineCoupling) else type(m).__name__
            for m in glow.level_flows[0].modules()
            if isinstance(m, (ConditionalAffineCoupling, StraddleCoupling))
        ]
        assert flat == order
        assert set(_glow(0).state_dict()) <= set(glow.state_dict())
    with pytest.raises(ValueError, match="straddle_at"):
        _glow(1, "middle")
    with pytest.raises(ValueError, match="straddle"):
        _glow(-1)
    with pytest.raises(ValueError, match="straddle: expected 1 or 2 values"):
        _glow([1, 1, 1])


def test_a_glow_with_straddle_loaded_from_one_without_computes_the_same_until_trained():
    torch.manual_seed(0)
    plain = _glow(0)
    x = torch.rand(2, 3, 8, 8)
    conds = [torch.randn(2, 4, 4, 4), torch.randn(2, 4, 2, 2)]
    plain.train()
    plain.encode(x, conds)  # data-dependent init
    plain.eval()
    for at in ("end", "start"):
        with_straddle = _glow(1, at)
        missing, unexpected = with_straddle.load_state_dict(plain.state_dict(), strict=False)
        assert not unexpected and missing and all("net_" in k for k in missing)
        with_straddle.eval()
        with torch.no_grad():
            (za,), lda = plain.encode(x, conds)
            (zb,), ldb = with_straddle.encode(x, conds)
            assert torch.equal(za, zb) and torch.equal(lda, ldb)
            assert torch.equal(plain.decode([za], conds), with_straddle.decode([za], conds))


def test_init_weights_adds_identity_layers_but_still_refuses_other_missing_tensors(tmp_path):
    from nightflow.models import build_any
    from nightflow.models.checkpoint import save_model
    from nightflow.models.zoo import get_config
    from nightflow.train.run import fresh_identity_keys, load_initial_weights

    cfg = get_config("lolisrflow-x2-tiny")
    torch.manual_seed(1)
    donor = build_any(cfg).eval()
    path = save_model(donor, tmp_path / "donor.safetensors", cfg)
    straddled = dataclasses.replace(cfg, flow=dataclasses.replace(cfg.flow, straddle=1))
    model = build_any(straddled)
    load_initial_weights(model, str(path))
    model.eval()
    lq = torch.rand(1, 3, 16, 24) * 0.2
    with torch.no_grad():
        assert torch.equal(donor.restore(lq), model.restore(lq))
    ours = model.state_dict()
    fresh = fresh_identity_keys(model, sorted(set(ours) - set(donor.state_dict())))
    assert len(fresh) == len(set(ours) - set(donor.state_dict())) > 0
    assert all(".net_first." in k or ".net_second." in k for k in fresh)
    # an encoder that is wider is not an identity layer: still one line naming what does not fit
    wider = dataclasses.replace(
        straddled, encoder_config=dataclasses.replace(cfg.encoder_config, cond_channels=48)
    )
    with pytest.raises(UserError, match="does not fit"):
        load_initial_weights(build_any(wider), str(path))


def test_model_config_takes_straddle_strictly_from_yaml():
    from nightflow.config import from_dict
    from nightflow.errors import ConfigError
    from nightflow.models import ModelConfig
    from nightflow.models.zoo import get_config

    raw = dataclasses.asdict(get_config("lolisrflow-x2-tiny"))
    raw["flow"]["straddle"] = [0, 1, 1]
    cfg = from_dict(ModelConfig, raw)
    assert cfg.flow.straddle == [0, 1, 1]
    raw["flow"]["stradle"] = 1
    with pytest.raises(ConfigError, match="stradle"):
        from_dict(ModelConfig, raw)


def test_inference_folding_folds_its_subnets_and_matches():
    from nightflow.flow.fold import FoldedConvAct, folded

    layer = _trained_layer()
    twin = folded(layer)
    assert any(isinstance(m, FoldedConvAct) for m in twin.modules())
    x, cond = torch.randn(2, 8, 4, 6), torch.randn(2, 3, 4, 6)
    with torch.no_grad():
        assert (twin(x, cond)[0] - layer(x, cond)[0]).abs().max() < 1e-5
        assert (twin.inverse(x, cond) - layer.inverse(x, cond)).abs().max() < 1e-5


def test_without_transitions_or_steps_they_nest_after_the_squeeze_and_still_invert():
    for steps, transitions, at in ((1, 0, "start"), (0, 0, "end"), (0, 1, "end")):
        glow = ConditionalGlow(
            GlowConfig(
                levels=1,
                steps=steps,
                hidden=8,
                cond_channels=4,
                transitions=transitions,
                straddle=1,
                straddle_at=at,
            )
        )
        layer = next(m for m in glow.modules() if isinstance(m, StraddleCoupling))
        for p in layer.parameters():
            torch.nn.init.normal_(p, std=0.1)
        x, conds = torch.rand(1, 3, 8, 8), [torch.randn(1, 4, 4, 4)]
        glow.eval()
        with torch.no_grad():
            (z,), _ = glow.encode(x, conds)
            assert (glow.decode([z], conds) - x).abs().max() < 1e-5
