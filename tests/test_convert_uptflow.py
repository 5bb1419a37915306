"""``nightflow convert --arch uptflow``: a released UPT-Flow checkpoint becomes a nightflow model that computes
what the official code computes.

The fixture (tests/fixtures/convert/uptflow_*, made by ``scripts/make_convert_fixtures.py fixtures --uptflow``
from a snapshot of NJUPT-IPR-XuLintao/UPT-Flow, which is not in this repository) is the official network at
reduced width (the official MSFormer class with dim 4, blocks [2, 1, 1, 1] mirrored, 1 refinement block,
window 5; the official flow with K 1, one transition, hidden 16 and its hard-coded 288 conditioning channels set
to 24), random init, perturbed, float16 weights; an input, the official reverse pass at z = 0 and the official
flow's continuous NLL. 21×30 is padded to 24×32 (not a multiple of 16) and every level's windows pad.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from nightflow.cli import main
from nightflow.convert import ConversionError, convert_state_dict, read_state_dict
from nightflow.encoders import MSFormerConfig, build_encoder
from nightflow.errors import ConfigError
from nightflow.flow import ConvSubnet
from nightflow.layers.lewin import LeWinBlock, relative_position_index, shift_mask
from nightflow.models.checkpoint import load_model, read_metadata
from nightflow.models.sizes import crop_to

FIXTURES = Path(__file__).parent / "fixtures" / "convert"


def _wired() -> bool:
    """Whether the flow configs accept the released subnet (``FlowSpec``/``GlowConfig.subnet``)."""
    from nightflow.models.config import FlowSpec

    try:
        FlowSpec(subnet="cbam-released")  # type: ignore[arg-type]
    except (ConfigError, ValueError):
        return False
    return True


needs_wiring = pytest.mark.skipif(
    not _wired(),
    reason="FlowSpec.subnet / GlowConfig.subnet do not list 'cbam-released' yet (models/config.py, flow/glow.py)",
)


@pytest.fixture()
def uptflow_pth(tmp_path: Path) -> Path:
    state = load_file(str(FIXTURES / "uptflow_state.safetensors"))
    path = tmp_path / "LOLv2_real.pth"
    torch.save(state, path)
    return path


def _io() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    io = load_file(str(FIXTURES / "uptflow_io.safetensors"))
    with safe_open(str(FIXTURES / "uptflow_io.safetensors"), framework="pt") as f:
        return io, dict(f.metadata())


@needs_wiring
def test_uptflow_convert_and_restore_reproduce_the_official_output(uptflow_pth: Path, tmp_path: Path, capsys):
    out = tmp_path / "uptflow.safetensors"
    assert main(["convert", str(uptflow_pth), "--arch", "uptflow", "-o", str(out)]) == 0
    assert "dim 4, window 5" in capsys.readouterr().out
    io, meta = _io()
    model = load_model(out)
    lq, hq, official = io["lq"], io["hq"], io["out"]
    with torch.no_grad():
        restored = model.restore(lq)
        lq_p, size = model._pad_lq(lq)
        assert tuple(lq_p.shape[-2:]) == (24, 32)  # padded size not a multiple of 16
        raw = crop_to(model._mean_path(model.condition(lq_p, model.context(lq)), lq_p, None), size)
        other = crop_to(
            model._mean_path(model.condition(lq_p.flip(-1), model.context(lq.flip(-1))), lq_p, None), size
        )
        nll = float(model.nll_bits_per_dim(hq, lq)[0])
    assert float(official.std()) > 0.1 and float((other - raw).abs().max()) > 0.05  # input-dependent output
    assert float((raw - official).abs().max()) < 1e-4
    assert float((restored - official.clamp(0, 1)).abs().max()) < 1e-4
    # the official flow's continuous NLL; nightflow's quant 32 adds the discretisation term log2 32
    want = float(meta["nll_continuous_bits_per_dim"]) + math.log2(model.cfg.quant)
    assert abs(want - nll) < 1e-4
    assert not model.tiling.tileable  # global attention and CBAM pooling over the whole input, as released


@needs_wiring
def test_uptflow_record_maps_every_tensor_and_lists_dead_ones(uptflow_pth: Path, tmp_path: Path):
    out = tmp_path / "c.safetensors"
    assert main(["convert", str(uptflow_pth), "--arch", "uptflow", "-o", str(out), "-q"]) == 0
    record = json.loads(read_metadata(out)["nightflow_conversion"])
    assert record["official_code"] == "NJUPT-IPR-XuLintao/UPT-Flow@7432b6b84344"
    state = read_state_dict(uptflow_pth)
    assert record["dead_tensors_skipped"] == []  # the release builds no dead tensors (max_pool has none)
    assert {row[0] for row in record["mapping"]} == set(state)  # every tensor mapped by name
    rows = {row[0]: row for row in record["mapping"]}
    spatial = "flowUpsamplerNet.layers.2.affine.fAffine_2.model.4.SpatialGate.spatial.conv.weight"
    assert rows[spatial][1] == [
        "flow.level_flows.0.layers.2.layers.2.layers.3.net.body.2.spatial.conv.bias",
        "flow.level_flows.0.layers.2.layers.2.layers.3.net.body.2.spatial.conv.weight",
    ]
    assert rows["RRDB.encoderlayer_1.blocks.1.attn.qkv.to_q.weight"][1] == [
        "encoder.released_unet.enc_local.0.1.to_q.weight"
    ]
    # a dead tensor, where a derived checkpoint has LLFlow's unused flow conv, is skipped by name and listed
    extra = {**state, "flowUpsamplerNet.f.0.weight": torch.zeros(1)}
    _, _, _, skipped = convert_state_dict(extra, "uptflow")
    assert skipped == ["flowUpsamplerNet.f.0.weight"]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@needs_wiring
def test_uptflow_refusals_name_the_tensor(uptflow_pth: Path, tmp_path: Path, capsys):
    state = read_state_dict(uptflow_pth)
    bad = {**state, "RRDB.reduce_chan_level2.weight": torch.zeros(16, 15, 1, 1)}
    path = tmp_path / "bad.pth"
    torch.save(bad, path)
    assert main(["convert", str(path), "--arch", "uptflow", "-o", str(tmp_path / "o.safetensors")]) == 2
    err = _one_error_line(capsys)
    assert "RRDB.reduce_chan_level2.weight" in err and "[16, 15, 1, 1]" in err and "[16, 16, 1, 1]" in err
    with pytest.raises(ConversionError, match=r"RRDB\.extra\.weight"):
        convert_state_dict({**state, "RRDB.extra.weight": torch.zeros(3)}, "uptflow")
    key = "RRDB.decoderlayer_3.blocks.1.mlp.eca.conv.weight"
    with pytest.raises(ConversionError, match=rf"lacks tensor {key.replace('.', '[.]')}"):
        convert_state_dict({k: v for k, v in state.items() if k != key}, "uptflow")
    index = "RRDB.bottlen.blocks.0.attn.relative_position_index"
    with pytest.raises(ConversionError, match=rf"{index.replace('.', '[.]')} is not Swin's"):
        convert_state_dict({**state, index: state[index].flip(0)}, "uptflow")
    with pytest.raises(ConversionError, match="not needed for --arch uptflow"):
        convert_state_dict(state, "uptflow", config=Path("UPT-Flow.yml"))


def test_uptflow_refuses_other_architectures_in_one_line():
    llflow = {k: v.float() for k, v in load_file(str(FIXTURES / "llflow_state.safetensors")).items()}
    with pytest.raises(ConversionError, match=r"lacks tensor RRDB\.patch_embed\.proj\.weight"):
        convert_state_dict(llflow, "uptflow")
    upt = load_file(str(FIXTURES / "uptflow_state.safetensors"))
    with pytest.raises(ConversionError, match=r"lacks tensor RRDB\.conv_first\.weight"):
        convert_state_dict(upt, "llflow-small")


def test_released_encoder_matches_the_official_conditioning_sizes():
    """The released layout runs without the flow wiring: 288 conditioning channels at dim 48 (192 + 96), at
    H/2, H/4, H/8, cropped to an unpadded input's level sizes."""
    cfg = MSFormerConfig.released(dim=4, blocks=[2, 1, 1, 1], refine_blocks=1)
    enc = build_encoder("msformer", cfg, 1, 3).eval()
    assert enc.out_channels == [24, 24, 24] and not enc.tileable and enc.grid_multiple == 8
    with torch.no_grad():
        out = enc(torch.rand(1, 3, 24, 32))
    assert [tuple(f.shape[-2:]) for f in out.features] == [(12, 16), (6, 8), (3, 4)]
    assert out.color_map is None
    assert MSFormerConfig.released().cond_channels == 288
    with pytest.raises(ConfigError, match="cond_channels is 4·dim"):
        MSFormerConfig(layout="released", local_heads=[1, 2, 4, 8, 8, 4, 2], cond_channels=192)
    with pytest.raises(ConfigError, match="only read by layout 'released'"):
        MSFormerConfig(local_heads=[1] * 7)
    with pytest.raises(ConfigError, match="×1 flow of 3 levels"):
        build_encoder("msformer", cfg, 2, 3)


def test_lewin_block_pieces_follow_swin():
    idx = relative_position_index(2)
    assert idx.tolist() == [[4, 3, 1, 0], [5, 4, 2, 1], [7, 6, 4, 3], [8, 7, 5, 4]]
    mask = shift_mask(10, 10, 5, 2)
    assert mask.shape == (4, 25, 25) and float(mask[0].abs().max()) == 0.0 and float(mask[3].min()) == -100.0
    block = LeWinBlock(8, 2, 5, shift=2).eval()
    x, g = torch.randn(1, 8, 7, 9), torch.randn(1, 8, 7, 9)
    assert block(x, g).shape == x.shape


def test_released_subnet_is_the_release_kernel_order():
    net = ConvSubnet(30, 24, 16, "cbam-released")
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert shapes["body.0.conv.weight"] == (16, 30, 1, 1) and shapes["body.1.conv.weight"] == (16, 16, 3, 3)
    assert shapes["out.conv.weight"] == (24, 16, 1, 1) and shapes["body.2.channel.mlp.0.weight"] == (
        1,
        16,
        1,
        1,
    )
    # the default kinds keep their layout
    assert tuple(ConvSubnet(30, 24, 16, "cbam").state_dict()["body.0.conv.weight"].shape) == (16, 30, 3, 3)


# measured on the official code (NJUPT-IPR-XuLintao/UPT-Flow @ 7432b6b84344, confs/UPT-Flow.yml, random init,
# sum(p.numel()) per child; ../shared/reference/upstream-uptflow.md §6): RRDB (MSFormer) at window 5 (LOL) and 8
# (the other sets), flowUpsamplerNet (L 3, K 8, 2 transitions, hidden 64, 288 conditioning channels)
OFFICIAL_ENCODER = {5: 16_713_902, 8: 16_722_254}
OFFICIAL_FLOW = 6_723_600
# nightflow's spatial-gate conv has a bias the release lacks (held at 0 by the converter): 4 subnets × 24 steps
SPATIAL_BIASES = 4 * 24


@pytest.mark.parametrize("window", [5, 8])
def test_released_encoder_has_the_official_parameter_count(window: int):
    enc = build_encoder("msformer", MSFormerConfig.released(window=window), 1, 3)
    assert sum(p.numel() for p in enc.parameters()) == OFFICIAL_ENCODER[window]


def test_released_flow_has_the_official_free_parameter_count():
    from torch import nn

    from nightflow.flow import ActNorm, InvConv1x1, count_free_params
    from nightflow.flow.coupling import CrossCoupling

    layers: list[nn.Module] = []
    for c in (12, 48, 192):
        for _ in range(2):  # transitions
            layers += [ActNorm(c), InvConv1x1(c)]
        for _ in range(8):
            layers += [ActNorm(c), InvConv1x1(c), CrossCoupling(c, 288, 64, "cbam-released", 3e-4)]
    assert count_free_params(nn.ModuleList(layers)) == OFFICIAL_FLOW + SPATIAL_BIASES


@needs_wiring
def test_converted_full_size_model_counts_like_the_release():
    import dataclasses

    from nightflow.flow import count_free_params
    from nightflow.models import build_any
    from nightflow.models.zoo import get_config

    base = get_config("uptflow-paper")
    cfg = dataclasses.replace(
        base,
        encoder_config=MSFormerConfig.released(),
        flow=dataclasses.replace(base.flow, hidden=64, subnet="cbam-released", scale_floor=0.0),
    )
    model = build_any(cfg)
    assert count_free_params(model) == OFFICIAL_ENCODER[5] + OFFICIAL_FLOW + SPATIAL_BIASES
