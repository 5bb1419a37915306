"""UPT-Flow: the MSFormer encoder (shapes, UPM-guided window attention, whole-image context), the uptflow
configs (exact flow, sizes, strictness, zoo) and its training recipes. Tiny inputs only: the paper-size model is
built, and run on at most 16×16."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

import nightflow
from flow_helpers import brute_force_logdet
from nightflow import inference
from nightflow.encoders import ENCODERS, MSFormerConfig, MSFormerEncoder, build_encoder
from nightflow.errors import ConfigError, SettingError, UserError
from nightflow.flow import CrossCoupling
from nightflow.flow.subnets import ZeroConv2d
from nightflow.layers import WindowAttention
from nightflow.models import build_model
from nightflow.models.zoo import get_config, list_models

PAPER_PARAMS = 23.45e6
TINY = get_config("uptflow-tiny")
SMALL = MSFormerConfig(dim=8, heads=[1, 1, 2, 2], blocks=[1, 1, 1, 1], refine_blocks=1, window=4,
                       guide_channels=4, cond_channels=8)  # fmt: skip


def _dark(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Smooth dark scenes with fine noise: colour balance varies, so the unbalanced-point map is not trivial."""
    g = torch.Generator().manual_seed(seed)
    base = F.interpolate(
        torch.rand(n, 3, max(1, h // 8), max(1, w // 8), generator=g), size=(h, w), mode="bilinear"
    )
    return ((0.7 * base + 0.3 * torch.rand(n, 3, h, w, generator=g)) ** 2 * 0.3).contiguous()


def _perturbed(name: str, seed: int = 1) -> torch.nn.Module:
    """A non-trivial restorer: ActNorm initialised on data, the zero-initialised last convs set to N(0, 0.02)."""
    model = build_model(get_config(name))
    model.initialize({"lq": _dark(2, 32, 32), "hq": 3 * _dark(2, 32, 32, seed=5)})
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, ZeroConv2d):
                mod.conv.weight.normal_(0, 0.02, generator=g)
                mod.conv.bias.normal_(0, 0.02, generator=g)
    return model.eval()


# ----------------------------------------------------------------------------------------------- the encoder
@pytest.mark.parametrize("hw", [(8, 40), (24, 8), (40, 56)])
def test_encoder_level_shapes_for_odd_multiples_at_x1(hw):
    """×1 with 3 flow levels: H, W multiples of 8 that are odd multiples of the U-Net's and window's grids
    (40 = 5·8 is padded internally to the window at every level and cropped back)."""
    torch.manual_seed(0)
    enc = build_encoder("msformer", SMALL, 1, 3).eval()
    h, w = hw
    with torch.no_grad():
        out = enc(_dark(2, h, w))
    assert out.color_map is None  # zero-mean prior: no colour map
    assert [tuple(f.shape) for f in out.features] == [(2, 8, h >> (l + 1), w >> (l + 1)) for l in range(3)]
    assert all(torch.isfinite(f).all() for f in out.features)


@pytest.mark.parametrize("scale,hw", [(2, (12, 20)), (4, (6, 10))])
def test_encoder_upscales_for_x2_and_x4_and_any_size_reaches_the_restorer(scale, hw):
    enc = build_encoder("msformer", SMALL, scale, 3).eval()
    with torch.no_grad():
        feats = enc(_dark(1, *hw)).features
    h, w = scale * hw[0], scale * hw[1]
    assert [tuple(f.shape[-2:]) for f in feats] == [(h >> (l + 1), w >> (l + 1)) for l in range(3)]
    model = build_model(TINY).eval()
    with torch.no_grad():
        out = model.restore(_dark(1, 13, 27))  # any size: the restorer pads to its multiple and crops back
    assert out.shape == (1, 3, 13, 27)


def test_gradients_reach_every_encoder_parameter():
    enc = MSFormerEncoder(dataclasses.replace(SMALL, exposure=True), 1, 3)
    lq = _dark(2, 16, 16)
    ctx = enc.make_context(lq)
    out = enc(lq, ctx)
    (sum(f.square().mean() for f in out.features) + ctx.estimate.sum()).backward()
    missing = [n for n, p in enc.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing


def test_guided_window_attention_is_window_attention_with_queries_and_keys_from_the_guide():
    """The design's invariants: (a) with the guide equal to the features and the q/k/v weights split the same
    way, the guided layer *is* plain window attention; (b) with an all-zero map every window averages its
    real values uniformly (q = k = 0), padded pixels excluded."""
    torch.manual_seed(0)
    plain = WindowAttention(8, 2, 4)
    guided = WindowAttention(8, 2, 4, guide_channels=8)
    with torch.no_grad():
        w_point, w_depth = plain.qkv.point.weight, plain.qkv.depth.weight
        guided.qk.point.weight.copy_(w_point[:16])
        guided.v.point.weight.copy_(w_point[16:])
        guided.qk.depth.weight.copy_(w_depth[:16])
        guided.v.depth.weight.copy_(w_depth[16:])
        guided.proj.weight.copy_(plain.proj.weight)
        x = torch.randn(2, 8, 10, 13)  # not a multiple of the window: padding and masking take part
        assert torch.allclose(guided(x, guide=x), plain(x), atol=1e-6)

        zero = WindowAttention(8, 2, 4, guide_channels=1)
        y = zero(x, guide=torch.zeros(2, 1, 10, 13))
        (v,) = zero.v(x)
        ones = F.pad(torch.ones(1, 1, 10, 13), (0, 3, 0, 2))
        mean = F.avg_pool2d(F.pad(v, (0, 3, 0, 2)), 4) / F.avg_pool2d(ones, 4)  # real pixels only
        expected = zero.proj(F.interpolate(mean, scale_factor=4, mode="nearest")[..., :10, :13])
        assert torch.allclose(y, expected, atol=1e-5)
    with pytest.raises(ValueError, match="needs a guide"):
        guided(x)
    with pytest.raises(ValueError, match="without guide channels"):
        plain(x, guide=x)


def test_the_context_makes_a_crop_exact_away_from_its_edges_on_the_window_grid():
    """Channel-attention maps are recorded on the thumbnail and replayed: a crop on the tile grid
    (``grid_multiple``) encoded with the whole image's context equals the whole image beyond the encoder's
    receptive field (measured: 1e-5 relative at 64 LR px from the crop's edge, exactly 0 at 96); with its own
    context, or off the window grid, it does not."""
    torch.manual_seed(0)
    enc = build_encoder("msformer", TINY.encoder_config, 1, 3).eval()
    assert enc.grid_multiple == 32  # window 4 × 2^3: coarsest windows anchored at the image origin
    lq = _dark(1, 256, 256)
    y0 = x0 = 64  # a grid-aligned origin, not zero
    with torch.no_grad():
        ctx = enc.make_context(lq)
        whole = enc(lq, ctx).features[0]
        crop = enc(lq[..., y0:, x0:], ctx).features[0]
        own = enc(lq[..., y0:, x0:]).features[0]
        off = enc(lq[..., y0 - 8 :, x0 - 8 :], ctx).features[0][
            ..., 4:, 4:
        ]  # origin 56: on the U-Net grid only
    inner = (..., slice(48, None), slice(48, None))  # ≥ 96 LR px from the crop's top/left edges
    ref = whole[..., y0 // 2 :, x0 // 2 :][inner]
    scale = float(ref.abs().max())
    assert float((crop[inner] - ref).abs().max()) <= 1e-5 * scale
    assert float((own[inner] - ref).abs().max()) > 1e-3 * scale  # the crop's own statistics differ
    assert float((off[inner] - ref).abs().max()) > 1e-3 * scale  # windows off the grid differ


def test_tiles_smaller_than_the_measured_margin_allows_are_refused():
    """uptflow-tiny, perturbed, 192 px. Measured when this test was written, through ``inference.restore`` with the
    whole image's context: 128-px tiles with a 64-px overlap differed from the whole image by 9.8/255 max,
    0.54/255 mean (96-px tiles: 10.8 / 1.0; 64-px tiles: 29 / 3.4), because the U-Net's receptive field reaches
    64-96 LR px past a tile edge. Hence the encoder's ``tile_margin`` of 88 px (``scripts/measure_tiling.py``:
    0.14/255 beyond it) and a smallest tile of 384 px; the engine now refuses smaller tiles instead of
    returning that error, and an automatic plan never goes below it."""
    model = _perturbed("uptflow-tiny")
    least = model.tiling.min_tile
    assert model.tiling.margin >= 88 and least >= 2 * (2 * model.tiling.margin + 8)
    lq = _dark(1, 192, 192, seed=3)
    with pytest.raises(SettingError, match=f"at least {least} px"):
        inference.restore(model, lq, tile=128, overlap=64)
    whole = inference.restore(model, lq, tile=0)
    assert float(whole.std()) > 0.02  # the perturbed model's output depends on the input
    torch.testing.assert_close(inference.restore(model, lq, tile=least), whole)  # one tile is the whole image


# --------------------------------------------------------------------------------------------------- the flow
def test_uptflow_tiny_flow_is_exactly_invertible_with_the_brute_force_log_determinant():
    """Float64, 8×8 HR: encode∘decode is the identity and the flow's log-det (what the NLL uses) equals
    log|det J| of the whole map; so does each CrossCoupling's, which is where upstream's reverse pass
    subtracted one log-scale twice."""
    model = _perturbed("uptflow-tiny")
    lq = _dark(1, 8, 8)
    hq = (3 * _dark(1, 8, 8, seed=7)).clamp(0, 1).double()
    with torch.no_grad():  # the encoder's conditioning in fp32 (the exposure head is fp32 by design)
        feats = [f.double() for f in model.condition(lq, model.context(lq)).features]
    model.flow.double()
    with torch.no_grad():
        latents, logdet = model.flow.encode(hq, feats)
        back = model.flow.decode(latents, feats)
    assert float((back - hq).abs().max()) < 1e-10

    def whole_map(x):
        return torch.cat([z.reshape(1, -1) for z in model.flow.encode(x, feats)[0]], dim=1)

    assert abs(brute_force_logdet(whole_map, hq) - float(logdet)) < 1e-6 * max(1.0, abs(float(logdet)))

    couplings = [m for m in model.flow.modules() if isinstance(m, CrossCoupling)]
    assert len(couplings) == 3 * TINY.flow.steps
    cc = couplings[0]
    x = torch.randn(1, cc.channels, 4, 4, dtype=torch.float64)
    cond = feats[0]
    with torch.no_grad():
        y, ld = cc(x, cond)
        assert float((cc.inverse(y, cond) - x).abs().max()) < 1e-12
    bf = brute_force_logdet(lambda t: cc(t, cond)[0], x)
    tol = 1e-6 * abs(bf)  # the affine scales are formed in fp32 by design (autocast safety), even here
    assert abs(bf - float(ld)) < tol
    parts, t = [], x  # log-dets of the four half-steps: injector, coupling (z2), injector, coupling (z1)
    with torch.no_grad():
        for layer in cc.layers:
            t, part = layer(t, cond)
            parts.append(float(part))
    upstream = parts[0] + parts[2] + 2 * parts[3]  # its reverse pass counted the 4th scale for the 2nd
    assert abs(upstream - bf) > 100 * tol


def test_paper_config_parameter_count_and_a_16px_pass():
    model = build_model(get_config("uptflow-paper"))
    n_enc = sum(p.numel() for p in model.encoder.parameters())
    n_flow = sum(p.numel() for p in model.flow.parameters())
    total = sum(p.numel() for p in model.parameters())
    print(f"uptflow params: encoder {n_enc:,}, flow {n_flow:,}, total {total:,} (paper 23.45 M)")
    assert abs(total - PAPER_PARAMS) <= 0.05 * PAPER_PARAMS
    cfg = model.cfg
    assert (cfg.flow.coupling, cfg.flow.subnet, cfg.flow.scale_eps) == ("cross", "cbam", 3e-4)
    assert (cfg.flow.levels, cfg.flow.steps, cfg.flow.split, cfg.prior) == (3, 8, False, "zero")
    enc_cfg = model.encoder.cfg
    assert (enc_cfg.dim, enc_cfg.heads, enc_cfg.ffn_expansion, enc_cfg.window) == (48, [2, 2, 4, 8], 2.66, 8)
    assert model.pad_multiple == 64
    with torch.no_grad():
        out = model.eval().restore(_dark(1, 16, 16))
    assert out.shape == (1, 3, 16, 16) and torch.isfinite(out).all()
    tiny_total = sum(p.numel() for p in build_model(TINY).parameters())
    assert 2.0e6 < tiny_total < 3.5e6


# ---------------------------------------------------------------------------------- configs, zoo and recipes
def test_configs_are_strict(tmp_path):
    assert "msformer" in ENCODERS
    with pytest.raises(ConfigError, match="encoder.dimm"):
        build_encoder("msformer", {"dimm": 8}, 1, 3)
    with pytest.raises(ConfigError, match="heads"):
        MSFormerConfig(dim=8, heads=[3, 1, 2, 2])
    from nightflow.config import load_config
    from nightflow.models import ModelConfig
    from nightflow.models.zoo import CONFIG_DIR

    data = yaml.safe_load((CONFIG_DIR / "uptflow-tiny.yaml").read_text())
    data["encoder_config"]["windw"] = 8
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="encoder_config.windw"):
        load_config(ModelConfig, bad)  # the encoder's config dataclass is parsed with the model config


def test_uptflow_loads_the_bundled_tiny_model_offline_and_the_paper_size_says_it_has_no_weights():
    rows = {r["name"]: r for r in list_models(count_params=False)}
    assert rows["uptflow-tiny"]["bundled"] is True and rows["uptflow-tiny"]["scale"] == 1
    assert rows["uptflow-paper"]["bundled"] is False
    model = nightflow.load("uptflow")  # the alias of the bundled size, as lolisrflow-x2 is
    assert model.restorer.cfg.name == "uptflow-tiny" and model.restorer.tiling.tileable
    out = model.restore(np.zeros((40, 56, 3), np.uint8) + 20)
    assert out.shape == (40, 56, 3) and out.dtype == np.uint8
    with pytest.raises(UserError, match="no bundled weights"):
        nightflow.load("uptflow-paper")


def test_recipes_load_strictly_with_the_paper_settings():
    from nightflow.train.run import load_recipe

    lol = load_recipe("uptflow-lol")
    assert lol.model.name == "uptflow-paper" and lol.data.format == "lol" and lol.data.patch_size == 160
    t = lol.train
    assert (t.batch_size, t.lr, t.betas, t.warmup_steps, t.max_steps) == (8, 2e-4, [0.9, 0.99], 800, 50000)
    assert (t.schedule, t.milestones, t.gamma, t.optimizer) == (
        "multistep",
        [0.4, 0.6, 0.8, 0.9],
        0.5,
        "adam",
    )
    assert [s.name for s in lol.model.losses] == ["nll"]  # NLL only
    tiny = load_recipe("uptflow-tiny-synthetic")
    assert tiny.model.name == "uptflow-tiny" and tiny.data.format == "synthetic" and tiny.data.scale == 1
    with pytest.raises(ConfigError, match="lrr"):
        load_recipe("uptflow-tiny-synthetic", ["train.lrr=1"])


def test_tiny_recipe_trains_two_steps(tmp_path):
    from nightflow.data.io import write_image
    from nightflow.train.run import train_run

    photos = tmp_path / "photos"
    photos.mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(3):
        coarse = torch.rand(1, 3, 8, 8, generator=g)
        write_image(
            photos / f"p{i}.png", F.interpolate(coarse, size=(64, 64), mode="bilinear")[0].clamp(0, 1)
        )
    from nightflow.train.run import recipe_path

    recipe = yaml.safe_load(recipe_path("uptflow-tiny-synthetic").read_text())
    recipe["data"].update(root=str(photos), patch_size=32, length=4)
    recipe["val"].update(root=str(photos), patch_size=32, length=1)
    recipe["train"].update(max_steps=2, batch_size=2, log_every=1, val_every=2, checkpoint_every=2,
                           val_max_images=1, val_save_images=1, device="cpu", progress=False, amp="none")  # fmt: skip
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    summary = train_run(path, out=tmp_path / "run")
    assert summary["steps"] == 2 if "steps" in summary else True
    weights = sorted((tmp_path / "run" / "checkpoints").glob("step_*/model.safetensors"))
    assert weights and weights[-1].parent.name == "step_0000002"
    restorer = nightflow.load(str(tmp_path / "run")).restorer
    assert restorer.cfg.name == "uptflow-tiny" and restorer.cfg.prior == "zero"


def test_bundled_uptflow_tiles_agree_with_the_whole_image():
    """Flow subnets pool a 15 px window (cbam-local), not the whole map, and the model states its measured tile
    margin (88 LR px): two tiles of the model's smallest tile size reproduce the whole image within 1/255."""
    from nightflow.data.io import read_image, to_tensor
    from nightflow.demo import EXAMPLES

    model = nightflow.load("uptflow").restorer.eval()
    spec = model.tiling
    assert spec.tileable and spec.margin == 88 and spec.min_tile % spec.grid == 0
    dark = to_tensor(read_image(EXAMPLES / "mate-ladybird_dark.png")).float()  # 100×160
    row = torch.cat([dark, dark.flip(-1), dark], -1)  # a mirrored mosaic: 400×480 of real dark content
    lq = torch.cat([row, row.flip(-2), row, row.flip(-2)], -2)[None][..., : spec.min_tile, :448].contiguous()
    whole = inference.restore(model, lq, tile=0)
    tiled = inference.restore(model, lq, tile=spec.min_tile)
    assert float((whole - tiled).abs().max()) * 255 <= 1.0
