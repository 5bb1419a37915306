"""nightflow's `llflow-small` and `llflow` are the released LLFlow architectures, module by module (issue 15.1).

The OFFICIAL counts were measured, not derived: the release wyf0912/LLFlow at commit 115da161a96d (GitHub
snapshot), exported to a folder outside this repository, its torchvision/natsort imports stubbed, each network
built with random init from its released config (``code/confs/LOL_smallNet.yml``; ``code/confs/LOL-pc.yml``,
the release's LOL config, for the large net) as ``LLFlow(in_nc, out_nc, nf, nb, scale, K, opt)`` and counted
with ``sum(p.numel())`` per child module (the flow by layer type, grouped per level). The benchmark
``benchmarks/bench_llflow_official.py`` builds it the same way.

Two differences are accounted for, not reproduced (docs/performance.md):
- dead official weights, built but never called in either pass: ``ConEncoder1.HRconv``, ``downconv3``,
  ``conv_last``, ``awb_para`` and ``FlowUpsamplerNet.f`` (DEAD below). nightflow does not build them.
- the 1×1 convs: the release stores a plain c×c W (c² parameters); nightflow's LU-factored ``InvConv1x1`` stores
  full c×c ``lower``/``upper`` tensors behind triangular masks plus ``log_s`` (2c² + c entries, c² of them
  free). Ours are compared by free parameters (``nightflow.flow.count_free_params``); the stored totals are
  pinned separately (STORED).
"""

from __future__ import annotations

import pytest
import torch

from nightflow.flow import ActNorm, AffineInjector, ConditionalAffineCoupling, InvConv1x1, count_free_params
from nightflow.models import build_any, count_params
from nightflow.models.zoo import get_config

# official live modules (dead ones in DEAD); flow levels finest first (12, 48, 192 channels)
OFFICIAL = {
    "llflow-small": {
        "encoder.conv_first": 3_488,
        "encoder.conv_second": 9_248,
        "encoder.trunk (RRDB_trunk)": 1_660_800,
        "encoder.trunk_conv": 9_248,
        "encoder.downs (downconv1+2)": 18_496,
        "encoder.color_head (fine_tune_color_map)": 99,
        "flow.level0.transitions": 336,
        "flow.level0.step_actnorms": 96,
        "flow.level0.step_invconvs": 576,
        "flow.level0.injectors (fFeatures)": 220_352,
        "flow.level0.couplings (fAffine)": 206_432,
        "flow.level1.transitions": 4_800,
        "flow.level1.step_actnorms": 384,
        "flow.level1.step_invconvs": 9_216,
        "flow.level1.injectors (fFeatures)": 386_816,
        "flow.level1.couplings (fAffine)": 331_136,
        "flow.level2.transitions": 74_496,
        "flow.level2.step_actnorms": 1_536,
        "flow.level2.step_invconvs": 147_456,
        "flow.level2.injectors (fFeatures)": 1_052_672,
        "flow.level2.couplings (fAffine)": 829_952,
    },
    "llflow": {
        "encoder.conv_first": 6_976,
        "encoder.conv_second": 36_928,
        "encoder.trunk (RRDB_trunk)": 17_266_176,
        "encoder.trunk_conv": 36_928,
        "encoder.downs (downconv1+2)": 73_856,
        "encoder.color_head (fine_tune_color_map)": 195,
        "flow.level0.transitions": 336,
        "flow.level0.step_actnorms": 288,
        "flow.level0.step_invconvs": 1_728,
        "flow.level0.injectors (fFeatures)": 2_430_528,
        "flow.level0.couplings (fAffine)": 2_388_768,
        "flow.level1.transitions": 4_800,
        "flow.level1.step_actnorms": 1_152,
        "flow.level1.step_invconvs": 27_648,
        "flow.level1.injectors (fFeatures)": 2_929_920,
        "flow.level1.couplings (fAffine)": 2_762_880,
        "flow.level2.transitions": 74_496,
        "flow.level2.step_actnorms": 4_608,
        "flow.level2.step_invconvs": 442_368,
        "flow.level2.injectors (fFeatures)": 4_927_488,
        "flow.level2.couplings (fAffine)": 4_259_328,
    },
}
# official modules built but never used in the forward/reverse pass
DEAD = {
    "llflow-small": {
        "HRconv": 9_248,
        "downconv3": 9_248,
        "conv_last": 867,
        "awb_para": 99,
        "flow.f": 442_752,
    },
    "llflow": {
        "HRconv": 36_928,
        "downconv3": 36_928,
        "conv_last": 1_731,
        "awb_para": 195,
        "flow.f": 1_106_304,
    },
}
# the release's totals as built (live + dead): RRDB encoder, flow (FlowUpsamplerNet)
OFFICIAL_BUILT = {"llflow-small": (1_720_841, 3_709_008), "llflow": (17_496_841, 21_362_640)}
# nightflow's stored parameter entries (count_params, what the zoo lists): free + masked LU triangles
STORED = {"llflow-small": 5_205_019, "llflow": 38_231_291}


def ours_by_module(model) -> dict[str, int]:
    enc = model.encoder
    out = {
        "encoder.conv_first": count_params(enc.conv_first),
        "encoder.conv_second": count_params(enc.conv_second),
        "encoder.trunk (RRDB_trunk)": count_params(enc.trunk),
        "encoder.trunk_conv": count_params(enc.trunk_conv),
        "encoder.downs (downconv1+2)": count_params(enc.downs),
        "encoder.color_head (fine_tune_color_map)": count_params(enc.color_head),
    }
    assert count_params(enc.ups) == 0  # ×1: no up steps
    for level, flow in enumerate(model.flow.level_flows):
        groups = dict.fromkeys(
            ["transitions", "step_actnorms", "step_invconvs", "injectors (fFeatures)", "couplings (fAffine)"],
            0,
        )
        for layer in flow.layers:
            parts = list(getattr(layer, "layers", []))
            kinds = [type(p) for p in parts]
            if kinds == [ActNorm, InvConv1x1]:
                groups["transitions"] += count_free_params(layer)
            elif kinds == [ActNorm, InvConv1x1, AffineInjector, ConditionalAffineCoupling]:
                groups["step_actnorms"] += count_free_params(parts[0])
                groups["step_invconvs"] += count_free_params(parts[1])
                groups["injectors (fFeatures)"] += count_free_params(parts[2])
                groups["couplings (fAffine)"] += count_free_params(parts[3])
            else:
                assert count_params(layer) == 0, f"unexpected parametrised layer {type(layer).__name__}"
        out.update({f"flow.level{level}.{k}": v for k, v in groups.items()})
    return out


@pytest.mark.parametrize("name", ["llflow-small", pytest.param("llflow", marks=pytest.mark.slow)])
def test_llflow_configs_match_the_release_module_by_module(name):
    torch.manual_seed(0)
    model = build_any(get_config(name))
    ours = ours_by_module(model)
    official = OFFICIAL[name]
    assert list(ours) == list(official)
    off = {k: v for k, v in official.items() if abs(ours[k] - v) > 0.005 * v}
    assert not off, {k: (ours[k], official[k]) for k in off}  # (ours, official) per module beyond 0.5 %
    # nothing else carries parameters: the modules above are the whole model
    assert sum(ours.values()) == count_free_params(model)
    # the pinned official figures add up to what the release builds, dead modules included
    enc_built, flow_built = OFFICIAL_BUILT[name]
    dead = DEAD[name]
    enc_live = sum(v for k, v in official.items() if k.startswith("encoder."))
    assert enc_live + sum(v for k, v in dead.items() if not k.startswith("flow.")) == enc_built
    assert sum(v for k, v in official.items() if k.startswith("flow.")) + dead["flow.f"] == flow_built
    # stored entries = free parameters + c(c+1) masked entries per InvConv1x1
    assert count_params(model) == STORED[name]
    masked = sum(m.masked_entries for m in model.modules() if isinstance(m, InvConv1x1))
    assert count_params(model) - masked == sum(official.values())


def test_free_params_of_an_invconv_are_those_of_a_plain_weight():
    conv = InvConv1x1(12)
    assert count_params(conv) == 2 * 12 * 12 + 12
    assert conv.masked_entries == 12 * 13
    assert count_free_params(conv) == 12 * 12
    # the masked entries never reach W: changing them leaves the map unchanged
    w = conv.weight().clone()
    with torch.no_grad():
        conv.lower.add_(torch.triu(torch.ones(12, 12)))
        conv.upper.add_(torch.tril(torch.ones(12, 12)))
    assert torch.equal(conv.weight(), w)
