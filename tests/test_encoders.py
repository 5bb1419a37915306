"""Encoders: exact level shapes for every scale and valid size, colour maps, gradients, attention, configs."""

from __future__ import annotations

import math

import pytest
import torch

from nightflow.config import from_dict, to_dict
from nightflow.encoders import (
    ENCODERS,
    EncoderOutput,
    MPCTConfig,
    MPCTEncoder,
    RRDBConfig,
    RRDBEncoder,
    build_encoder,
)
from nightflow.errors import ConfigError, UserError
from nightflow.layers import ChannelAttention, WindowAttention, resize
from nightflow.maps import color_ratio_map
from nightflow.models.zoo import get_config


def zoo_encoder(name: str):
    """The encoder config of a zoo model: the one preset of each size is its YAML file."""
    return get_config(name).encoder_config


# small sizes keep the whole file fast on a shared 2-core CPU; "alternate" exercises both attention kinds
SMALL = {
    "mpct": MPCTConfig(
        dims=[8, 16, 16],
        heads=[1, 2, 2],
        stages=2,
        blocks=1,
        attention="alternate",
        window=4,
        cond_channels=8,
        log_input=True,
    ),
    "rrdb": RRDBConfig(nf=8, nb=3, gc=4, stack_blocks=[0, 2]),
}

# LR sizes the restorer can pass for 3 flow levels: multiples of max(1, 8/s)
SIZES = {1: [(16, 24), (8, 40)], 2: [(12, 20), (4, 8)], 4: [(18, 22), (6, 10), (2, 2)]}
CASES = [(name, s, hw) for name in SMALL for s, sizes in SIZES.items() for hw in sizes]


def expected_shapes(n: int, channels: list[int], s: int, h: int, w: int, levels: int) -> list[tuple]:
    return [(n, channels[l], s * h // 2 ** (l + 1), s * w // 2 ** (l + 1)) for l in range(levels)]


@pytest.mark.parametrize("name,scale,hw", CASES)
def test_level_shapes_and_color_map(name, scale, hw):
    torch.manual_seed(0)
    enc = build_encoder(name, SMALL[name], scale, 3).eval()
    h, w = hw
    lq = torch.rand(2, 3, h, w) * 0.3
    with torch.no_grad():
        out = enc(lq)
    assert isinstance(out, EncoderOutput)
    assert enc.scale == scale and enc.levels == 3 and enc.input_multiple == 1
    assert [tuple(f.shape) for f in out.features] == expected_shapes(2, enc.out_channels, scale, h, w, 3)
    assert out.color_map.shape == (2, 3, scale * h, scale * w)
    assert (out.color_map > 0).all()
    torch.testing.assert_close(out.color_map.sum(dim=1), torch.ones(2, scale * h, scale * w))
    assert all(torch.isfinite(f).all() for f in out.features)


@pytest.mark.parametrize("name", list(SMALL))
@pytest.mark.parametrize(
    "scale,levels,hw", [(4, 2, (37, 53)), (2, 1, (7, 9)), (1, 4, (16, 32)), (4, 4, (4, 12))]
)
def test_other_level_counts_and_odd_sizes(name, scale, levels, hw):
    enc = build_encoder(name, SMALL[name], scale, levels).eval()
    h, w = hw
    assert (h % enc.size_multiple(), w % enc.size_multiple()) == (0, 0)
    with torch.no_grad():
        out = enc(torch.rand(1, 3, h, w))
    assert [tuple(f.shape) for f in out.features] == expected_shapes(1, enc.out_channels, scale, h, w, levels)
    assert out.color_map.shape == (1, 3, scale * h, scale * w)


@pytest.mark.parametrize("name", list(SMALL))
@pytest.mark.parametrize("scale", [1, 2, 4])
def test_gradients_reach_every_parameter(name, scale):
    torch.manual_seed(1)
    enc = build_encoder(name, SMALL[name], scale, 3)
    h = 8 if scale == 1 else 4 if scale == 2 else 6
    out = enc(torch.rand(1, 3, h, 2 * h))
    g = torch.Generator().manual_seed(2)
    loss = sum((f * torch.randn(f.shape, generator=g)).sum() for f in out.features)
    loss = loss + (out.color_map * torch.randn(out.color_map.shape, generator=g)).sum()
    loss.backward()
    missing = [n for n, p in enc.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_mpct_color_map_starts_as_upsampled_input_ratio():
    enc = build_encoder("mpct", SMALL["mpct"], 2, 3).eval()
    lq = torch.rand(1, 3, 8, 12)
    with torch.no_grad():
        cmap = enc(lq).color_map
    prior = resize(color_ratio_map(lq), (16, 24)) + 1e-4
    torch.testing.assert_close(cmap, prior / prior.sum(dim=1, keepdim=True))


def test_rrdb_level_channels_stack_block_outputs():
    assert RRDBEncoder(zoo_encoder("llflow-small"), 1, 3).out_channels == [64, 64, 64]
    enc = RRDBEncoder(RRDBConfig(nf=8, nb=4, gc=4, stack_blocks=[1, 3]), 1, 3)
    assert enc.out_channels == [24, 24, 24]


def test_presets_have_the_documented_sizes():
    def params(m: torch.nn.Module) -> float:
        return sum(p.numel() for p in m.parameters()) / 1e6

    for s in (1, 2, 4):
        tiny = zoo_encoder(f"lolisrflow-x{s}-tiny")
        assert 0.3 < params(MPCTEncoder(tiny, s, 3)) < 0.8  # CPU-trainable budget
    assert 2.0 < params(MPCTEncoder(zoo_encoder("lolisrflow-x2-paper"), 2, 3)) < 8.0
    # LLFlow's published encoder sizes: 1.70 M (small) and 17.42 M (large)
    assert params(RRDBEncoder(zoo_encoder("llflow-small"), 1, 3)) == pytest.approx(1.70, abs=0.005)
    large = RRDBEncoder(zoo_encoder("llflow"), 1, 3)
    assert params(large) == pytest.approx(17.42, abs=0.005)
    assert large.out_channels == [320, 320, 320]


@pytest.mark.parametrize("name", list(SMALL))
def test_eval_forward_is_deterministic(name):
    enc = build_encoder(name, SMALL[name], 2, 3).eval()
    lq = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        a, b = enc(lq), enc(lq)
    assert all(torch.equal(x, y) for x, y in zip(a.features, b.features))
    assert torch.equal(a.color_map, b.color_map)


@pytest.mark.parametrize("name", list(SMALL))
def test_bad_input_sizes_are_one_line_value_errors(name):
    enc = build_encoder(name, SMALL[name], 1, 3)
    with pytest.raises(ValueError, match="multiples of 8") as info:
        enc(torch.rand(1, 3, 12, 16))
    assert isinstance(info.value, UserError) and "\n" not in str(info.value)
    with pytest.raises(ValueError, match="N×3×H×W"):
        enc(torch.rand(1, 4, 16, 16))


def test_zoo_encoder_configs_round_trip_through_plain_dicts():
    for cfg in (
        zoo_encoder("lolisrflow-x2-tiny"),
        zoo_encoder("lolisrflow-x2-paper"),
        zoo_encoder("llflow"),
        zoo_encoder("llflow-small"),
    ):
        assert from_dict(type(cfg), to_dict(cfg)) == cfg  # what a YAML file in the zoo will hold


def test_build_encoder_is_strict():
    assert set(ENCODERS) == {"mpct", "msformer", "oatt_unet", "rrdb"}
    enc = build_encoder("rrdb", {"nf": 8, "nb": 2, "gc": 4, "stack_blocks": [1]}, 2, 3)
    assert isinstance(enc, RRDBEncoder) and enc.out_channels == [16, 16, 16]
    assert isinstance(build_encoder("mpct", zoo_encoder("lolisrflow-x2-tiny"), 4, 3), MPCTEncoder)
    with pytest.raises(ConfigError, match="unknown encoder 'glow'"):
        build_encoder("glow", {}, 1, 3)
    with pytest.raises(ConfigError, match="encoder.dimz"):
        build_encoder("mpct", {"dimz": [8]}, 1, 3)
    with pytest.raises(ConfigError, match="RRDBConfig"):
        build_encoder("rrdb", zoo_encoder("lolisrflow-x2-tiny"), 1, 3)
    with pytest.raises(ConfigError, match="scale"):
        build_encoder("rrdb", RRDBConfig(nf=8, nb=2, gc=4, stack_blocks=[1]), 3, 3)
    with pytest.raises(ConfigError, match="stack_blocks"):
        build_encoder("rrdb", {"nb": 2, "stack_blocks": [5]}, 1, 3)
    with pytest.raises(ConfigError, match="heads"):
        build_encoder("mpct", {"dims": [8, 16], "heads": [3, 2]}, 1, 3)


def _naive_window_attention(attn: WindowAttention, x: torch.Tensor) -> torch.Tensor:
    """Reference: loop over windows, attend only among the real pixels of each window."""
    n, c, h, w = x.shape
    ws, heads = attn.window, attn.heads
    q, k, v = attn.qkv(x)
    out = torch.zeros_like(x)
    for i in range(0, h, ws):
        for j in range(0, w, ws):
            sl = (slice(None), slice(None), slice(i, i + ws), slice(j, j + ws))
            qw, kw, vw = (t[sl] for t in (q, k, v))
            hh, ww = qw.shape[-2:]
            qw, kw, vw = (t.reshape(n, heads, c // heads, hh * ww).transpose(-2, -1) for t in (qw, kw, vw))
            a = torch.softmax(qw @ kw.transpose(-2, -1) / math.sqrt(c // heads), dim=-1)
            out[sl] = (a @ vw).transpose(-2, -1).reshape(n, c, hh, ww)
    return attn.proj(out)


def test_window_attention_masks_padding_and_stays_in_its_window():
    torch.manual_seed(3)
    attn = WindowAttention(dim=8, heads=2, window=4).eval()
    x = torch.randn(2, 8, 10, 7)  # not a multiple of the window: padded and masked inside
    with torch.no_grad():
        y = attn(x)
        torch.testing.assert_close(y, _naive_window_attention(attn, x), atol=1e-5, rtol=1e-4)
        x2 = x.clone()
        x2[:, :, 0, 0] += 5.0  # a change in the top-left window ...
        y2 = attn(x2)
    assert not torch.allclose(y2[:, :, :4, :4], y[:, :, :4, :4])
    torch.testing.assert_close(y2[:, :, 4:, :], y[:, :, 4:, :])  # ... leaves every other window alone
    torch.testing.assert_close(y2[:, :, :, 4:], y[:, :, :, 4:])


def test_channel_attention_is_global_and_size_agnostic():
    torch.manual_seed(4)
    attn = ChannelAttention(dim=8, heads=2).eval()
    with torch.no_grad():
        for size in [(1, 1), (5, 3), (33, 17)]:
            assert attn(torch.randn(1, 8, *size)).shape == (1, 8, *size)
        x = torch.randn(1, 8, 12, 12)
        x2 = x.clone()
        x2[:, :, 0, 0] += 5.0
        far = attn(x2)[:, :, 8:, 8:] - attn(x)[:, :, 8:, 8:]
    assert far.abs().max() > 1e-4  # a far-away pixel changes the C×C map, so the whole image sees it
