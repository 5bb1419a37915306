"""The layer library (nightflow.layers): every block builds and keeps its shape on odd sizes; FeatureLevels puts
every encoder's features on the flow levels (HR/2^(l+1)) for ×1, ×2, ×4 and 1…3 levels; checkpoints keep their
state_dict keys (pinned per zoo config)."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from nightflow.encoders import MPCTConfig, MSFormerConfig, RRDBConfig, build_encoder
from nightflow.layers import (
    RRDB,
    ChannelAttention,
    ChannelGate,
    ConvHead,
    FeatureLevels,
    GatedFeedForward,
    GlobalContext,
    LayerNorm2d,
    PixelShuffleUp,
    PixelShuffleUpsampler,
    ResBlock,
    ResidualDenseBlock,
    ShuffleUp,
    SpatialGate,
    TransformerBlock,
    UnshuffleDown,
    WindowAttention,
    halve,
    resize,
)

pytestmark = pytest.mark.usefixtures("one_thread")

C = 8
ODD = [(7, 9), (5, 11), (1, 3)]

# (name, factory, output channels, output size from the input size)
SAME = lambda h, w: (h, w)  # noqa: E731
LAYERS = [
    ("layernorm", lambda: LayerNorm2d(C), C, SAME),
    ("resblock", lambda: ResBlock(C, res_scale=0.5), C, SAME),
    ("convhead", lambda: ConvHead(C, 6), 6, SAME),
    ("channel-attention", lambda: ChannelAttention(C, 2), C, SAME),
    ("window-attention", lambda: WindowAttention(C, 2, 4), C, SAME),
    ("feed-forward", lambda: GatedFeedForward(C, 2.66), C, SAME),
    ("transformer-channel", lambda: TransformerBlock(C, 2, 2.0, "channel"), C, SAME),
    ("transformer-window", lambda: TransformerBlock(C, 2, 2.0, "window", window=4), C, SAME),
    ("cbam-channel", lambda: ChannelGate(C, reduction=4), C, SAME),
    ("cbam-spatial", lambda: SpatialGate(), C, SAME),
    ("global-context", lambda: GlobalContext(C), C, SAME),
    ("rdb", lambda: ResidualDenseBlock(C, 4), C, SAME),
    ("rrdb", lambda: RRDB(C, 4), C, SAME),
    ("pixelshuffle-up", lambda: PixelShuffleUp(C), C, lambda h, w: (2 * h, 2 * w)),
    ("upsampler-x4", lambda: PixelShuffleUpsampler(C, 4), C, lambda h, w: (4 * h, 4 * w)),
    ("upsampler-x1", lambda: PixelShuffleUpsampler(C, 1), C, SAME),
    ("shuffle-up", lambda: ShuffleUp(C), C // 2, lambda h, w: (2 * h, 2 * w)),
]


@pytest.mark.parametrize("name,make,out_ch,size", LAYERS, ids=[l[0] for l in LAYERS])
@pytest.mark.parametrize("hw", ODD)
def test_every_layer_builds_and_keeps_its_shape_on_odd_sizes(name, make, out_ch, size, hw):
    torch.manual_seed(0)
    layer = make()
    x = torch.randn(2, C, *hw, requires_grad=True)
    y = layer(x)
    assert y.shape == (2, out_ch, *size(*hw))
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_guided_window_attention_and_unshuffle_down_shapes():
    attn = WindowAttention(C, 2, 4, guide_channels=3)
    assert attn(torch.randn(1, C, 7, 9), guide=torch.randn(1, 3, 7, 9)).shape == (1, C, 7, 9)
    with pytest.raises(ValueError, match="guide"):
        attn(torch.randn(1, C, 7, 9))
    # pixel-unshuffle needs even sizes (the MSFormer pads its input to the U-Net's multiple first)
    assert UnshuffleDown(C)(torch.randn(1, C, 6, 10)).shape == (1, 2 * C, 3, 5)
    with pytest.raises(ValueError, match="power of two"):
        PixelShuffleUpsampler(C, 3)


@pytest.mark.parametrize("hw", ODD)
def test_resampling_sizes(hw):
    h, w = hw
    x = torch.rand(1, 2, h, w)
    assert halve(x).shape[-2:] == ((h + 1) // 2, (w + 1) // 2)
    for size in [(h, w), (max(1, h // 2), max(1, w // 3)), (2 * h + 1, 3 * w)]:
        assert resize(x, size).shape[-2:] == size
    assert resize(x, (h, w)) is x
    # halve averages only real pixels at an odd edge
    assert torch.allclose(halve(x)[..., -1, -1], x[..., -1, -1]) or h % 2 == 0 or w % 2 == 0


def test_the_flow_core_imports_the_layers_but_no_image_code():
    code = "import sys, nightflow.flow; print(*(m for m in sys.modules if m.startswith('nightflow.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = {m.split(".")[1] for m in out.split()}
    # config (strict choices of GlowConfig) and errors are generic; no data, maps, encoders, models
    assert loaded <= {"flow", "layers", "config", "errors"} and {"flow", "layers"} <= loaded, loaded


# ----------------------------------------------------------------------------------------------- FeatureLevels
def _pyramid(lr: tuple[int, int], scales: int, stride: int, channels: int = 2) -> list[torch.Tensor]:
    h, w = lr
    return [torch.rand(1, channels, h // (stride * 2**j), w // (stride * 2**j)) for j in range(scales)]


def _nearest_up(y: torch.Tensor, i: int) -> torch.Tensor:
    return F.interpolate(y, scale_factor=2, mode="nearest")


@pytest.mark.parametrize("scale", [1, 2, 4])
@pytest.mark.parametrize("levels", [1, 2, 3])
@pytest.mark.parametrize("scales,stride", [(1, 1), (3, 1), (1, 2), (2, 2)])
def test_feature_levels_land_on_the_flow_grid(scale, levels, scales, stride):
    lr = (48, 80)  # divisible by every stride·2^j used here
    fl = FeatureLevels(scale, levels, scales=scales, stride=stride)
    hr = (scale * lr[0], scale * lr[1])
    want = [(hr[0] >> (l + 1), hr[1] >> (l + 1)) for l in range(levels)]
    assert fl.sizes(lr) == want
    out = fl(_pyramid(lr, scales, stride), up=_nearest_up)
    assert [tuple(t.shape[-2:]) for t in out] == want
    for src in fl.sources:  # the plan: k halvings below the finest scale, read once, from one chain
        assert src.k == src.level + 1 - (scale.bit_length() - 1) - (stride.bit_length() - 1)
        assert not (src.up and src.down)
    assert fl.n_up == max(0, -fl.sources[0].k)
    assert fl.used_scales == sorted({s.scale for s in fl.sources})


def test_feature_levels_plan_examples():
    # ×4, 3 levels over 3 branches (LoLiSRFlow ×4): HR/2 = 2·LR (one up step), LR, LR/2
    fl = FeatureLevels(4, 3, scales=3)
    assert [(s.k, s.scale, s.up, s.down) for s in fl.sources] == [(-1, 0, 1, 0), (0, 0, 0, 0), (1, 1, 0, 0)]
    assert fl.used_scales == [0, 1] and fl.n_up == 1 and fl.n_down == 0
    # ×1, 3 levels over one trunk at LR/2 (LLFlow ×1): the trunk, then two down steps
    fl = FeatureLevels(1, 3, scales=1, stride=2)
    assert [(s.k, s.scale, s.up, s.down) for s in fl.sources] == [(0, 0, 0, 0), (1, 0, 0, 1), (2, 0, 0, 2)]
    # ×1, 4 levels over 3 scales at LR, LR/2, LR/4: level 0 (HR/2 = LR/2) is scale 1, then the coarsest
    # scale as it is and halved once and twice
    fl = FeatureLevels(1, 4, scales=3)
    assert [(s.scale, s.down) for s in fl.sources] == [(1, 0), (2, 0), (2, 1), (2, 2)]
    assert fl.used_scales == [1, 2] and fl.n_up == 0 and fl.n_down == 2
    with pytest.raises(ValueError, match="up step"):
        FeatureLevels(4, 1, scales=1)(_pyramid((8, 8), 1, 1))
    with pytest.raises(ValueError, match="power of two"):
        FeatureLevels(3, 1)
    with pytest.raises(ValueError, match="encoder scales"):
        FeatureLevels(1, 2, scales=2)(_pyramid((8, 8), 1, 1))


def test_feature_levels_chains_steps_concatenates_extras_and_crops_a_padded_pyramid():
    calls: list[tuple[str, int]] = []

    def up(y, i):
        calls.append(("up", i))
        return _nearest_up(y, i)

    def down(y, i):
        calls.append(("down", i))
        return halve(y)

    lr, padded = (20, 12), (24, 16)  # real LR size inside a pyramid padded to a multiple of 8
    fl = FeatureLevels(4, 3, scales=1)
    feats = _pyramid(padded, 1, 1)
    out = fl(
        feats,
        up=up,
        down=down,
        extra=lambda src, size: torch.zeros(1, 1, *size) if src.k > 0 else None,
        lr_size=lr,
        crop=True,
    )
    assert calls == [("up", 0), ("down", 0)]  # each chain computed once, as long as the levels need
    # the extra map comes at the padded level size (12×8) and is cropped with it to the real one (10×6)
    assert [tuple(t.shape) for t in out] == [(1, 2, 40, 24), (1, 2, 20, 12), (1, 3, 10, 6)]
    assert torch.equal(out[1], feats[0][..., :20, :12])  # the up chain starts from the crop
    assert torch.equal(out[0], _nearest_up(feats[0][..., :20, :12], 0))


ENCODER_CFGS = {
    "mpct": MPCTConfig(dims=[8, 8, 8], heads=[1, 1, 1], stages=1, window=4, cond_channels=4),
    "rrdb": RRDBConfig(nf=4, nb=1, gc=2, stack_blocks=[0]),
    "msformer": MSFormerConfig(
        dim=4, heads=[1, 1], blocks=[1, 1], refine_blocks=0, window=2, guide_channels=2, cond_channels=4
    ),
}


@pytest.mark.parametrize("name", list(ENCODER_CFGS))
@pytest.mark.parametrize("scale", [1, 2, 4])
@pytest.mark.parametrize("levels", [1, 2, 3])
def test_every_encoder_uses_the_adapter_and_meets_the_flow_sizes(name, scale, levels):
    torch.manual_seed(0)
    enc = build_encoder(name, ENCODER_CFGS[name], scale, levels).eval()
    assert isinstance(enc.level_map, FeatureLevels) and enc.level_map.levels == levels
    m = enc.size_multiple()
    lr = (3 * m, 5 * m)
    with torch.no_grad():
        feats = enc(torch.rand(1, 3, *lr)).features
    assert [tuple(f.shape[-2:]) for f in feats] == enc.level_sizes(*lr) == enc.level_map.sizes(lr)
    assert [f.shape[1] for f in feats] == enc.out_channels


# ----------------------------------------------------------------------------------------------- checkpoints
# sha256 (first 16 hex digits) of "key shape" lines of every zoo config's state_dict, in order: a layer moved
# or renamed without keeping its attribute path would break every bundled and trained checkpoint
STATE_DICT_KEYS = {
    "llflow": "4d0549e8683078bb",
    # issue 15: coupling/injector hidden 32 → 64 as released (same keys, wider shapes; was 3c0a8c9d21550b88)
    "llflow-small": "31d99c2136add746",
    "lolisrflow-x1-paper": "028fa45f23c57a37",
    "lolisrflow-x1-tiny": "fc2db467b052675e",
    "lolisrflow-x1-tiny-jpeg": "fc2db467b052675e",  # a variant: its base's architecture
    "lolisrflow-x2-paper": "1ff1ef25df96971e",
    "lolisrflow-x2-tiny": "7ab9689eff16ddc4",
    "lolisrflow-x2-tiny-jpeg": "7ab9689eff16ddc4",  # a variant: its base's architecture
    "lolisrflow-x4-paper": "93ca00b47695d320",
    "lolisrflow-x4-tiny": "ee6c524232fa6a59",
    "lolisrflow-x4-tiny-jpeg": "ee6c524232fa6a59",  # a variant: its base's architecture
    "regression-x1-tiny": "b1a8affbb29cd12d",
    "regression-x2-tiny": "8ceedff29181d01f",
    "regression-x4-tiny": "61396bce4b5c7778",
    "sequential-x2-tiny": "4d50c0214ef6f9b9",
    "sequential-x4-tiny": "3a9d4a2872c0760e",
    "ssflow-paper": "18fdaad7322471eb",
    "ssflow-tiny": "81abf8f4e50c2243",
    "uptflow-paper": "69011408b7d4ea81",
    "uptflow-tiny": "aeb5a7d90f9c0a31",
}


def _keys_digest(model: torch.nn.Module) -> str:
    lines = "\n".join(f"{k} {tuple(v.shape)}" for k, v in model.state_dict().items())
    return hashlib.sha256(lines.encode()).hexdigest()[:16]


BIG = {"llflow", "uptflow-paper"}  # ~1 s each to build on a loaded 2-core CPU


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in BIG else n for n in sorted(STATE_DICT_KEYS)]
)
def test_zoo_configs_keep_their_state_dict_keys(name):
    from nightflow.models import build_any
    from nightflow.models.zoo import config_names, get_config

    assert set(config_names()) == set(STATE_DICT_KEYS)  # a new config: pin its digest here
    assert _keys_digest(build_any(get_config(name))) == STATE_DICT_KEYS[name]
