"""UPT-Flow (NJUPT-IPR-XuLintao/UPT-Flow) checkpoints → nightflow, the released architecture exactly.

The release's network is ``UPTFlow``: ``RRDB`` (an ``MSFormer``, whatever the name says) + ``flowUpsamplerNet``
(LLFlow's flow with the ``CondAffineSeparatedAndCond`` cross-coupling and CBAM subnets) + a parameter-free
``max_pool``. Sizes are read from the tensors: the width from ``patch_embed``, the window from the
relative-position bias tables ((2w − 1)² rows: 5 for the LOL models, 8 for the others), the heads from the
temperatures and bias tables, the blocks per level from the indices, and the flow (levels, transitions, steps,
coupling width) from the layer list. The coupling's eps is the release's 3e-4 (a YAML value, not a tensor).

The model is built with :meth:`MSFormerConfig.released` (``layout: released``) and the flow subnet
``cbam-released``; the cross-coupling and the flow core are nightflow's own. The release's reverse-pass
log-det subtracts one log-scale twice (``../shared/reference/upstream-uptflow.md`` §7.1); nightflow's does
not, so images match and likelihoods are the correct ones (docs/checkpoints.md).

Besides the parameters, the 14 ``relative_position_index`` buffers are copied (as integers) and checked
against the index nightflow computes. Mapped by transform: the 1×1 convs (LU), the CBAM MLP's Linears (to 1×1
convs), the spatial gate's 7×7 conv (input channels [max, mean] → [mean, max], zero bias).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import torch
from torch import Tensor

from ..encoders.msformer import MSFormerConfig
from ..layers.lewin import relative_position_index
from ..models.config import ModelConfig
from ._common import ConversionError, Entry, Plan, need, where
from .llflow import _flow_layout

REPO = "NJUPT-IPR-XuLintao/UPT-Flow"
COMMIT = "7432b6b84344"
TAKES_CONFIG = False  # everything is inferred from the tensors
ARCH = "uptflow"
EPS = 3e-4  # CondAffineSeparatedAndCond.affine_eps (confs/UPT-Flow.yml does not override it)
# built by the release, never used: none carry tensors in the released code (max_pool has no parameters);
# LLFlow's flowUpsamplerNet.f is matched in case a checkpoint from a derived branch still has it
DEAD = [r"flowUpsamplerNet\.f\.0\.(weight|bias)"]
_E = "RRDB"
# released global runs, local runs (nightflow index of each), by the order of MSFormerConfig.blocks
_GLOBAL = {
    "encoder_level1": "enc_glob.0",
    "encoder_level2": "enc_glob.1",
    "encoder_level3": "enc_glob.2",
    "latent": "latent_glob",
    "decoder_level3": "dec_glob.0",
    "decoder_level2": "dec_glob.1",
    "decoder_level1": "dec_glob.2",
    "refinement": "refine",
}
_LOCAL = {
    "encoderlayer_1": "enc_local.0",
    "encoderlayer_2": "enc_local.1",
    "encoderlayer_3": "enc_local.2",
    "bottlen": "latent_local",
    "decoderlayer_1": "dec_local.0",
    "decoderlayer_2": "dec_local.1",
    "decoderlayer_3": "dec_local.2",
}
_CONVS = {
    "patch_embed.proj": "embed",
    "down1_2.body.0": "down.0.body.0",
    "down2_3.body.0": "down.1.body.0",
    "down3_4.body.0": "down.2.body.0",
    "up4_3.body.0": "up.0.body.0",
    "up3_2.body.0": "up.1.body.0",
    "up2_1.body.0": "up.2.body.0",
    "reduce_chan_level0": "reduce_latent",
    "reduce_chan_level3": "reduce.0",
    "reduce_chan_level2": "reduce.1",
    "reduce_chan_level1": "reduce.2",
}


def _count(state: dict[str, Tensor], prefix: str) -> int:
    pat = re.compile(rf"{re.escape(prefix)}\.(\d+)\.")
    return len({int(m.group(1)) for k in state if (m := pat.match(k))})


def _window(state: dict[str, Tensor], path: str) -> int:
    key = f"{_E}.encoderlayer_1.blocks.0.attn.relative_position_bias_table"
    rows = int(need(state, key, path, ARCH).shape[0])
    w = (round(rows**0.5) + 1) // 2
    if (2 * w - 1) ** 2 != rows:
        raise ConversionError(f"{where(path)}tensor {key} has {rows} rows, not (2·window − 1)²")
    return w


def infer_config(
    state: dict[str, Tensor], arch: str = ARCH, path: str = "", config: Path | None = None
) -> ModelConfig:
    from ..models.zoo import get_config

    embed = need(state, f"{_E}.patch_embed.proj.weight", path, ARCH)
    if tuple(embed.shape[1:]) != (3, 3, 3):
        raise ConversionError(
            f"{where(path)}tensor {_E}.patch_embed.proj.weight has shape {list(embed.shape)}; UPT-Flow's encoder "
            "embeds the 3-channel image with a 3×3 conv"
        )
    dim = int(embed.shape[0])
    blocks = [
        _count(state, f"{_E}.{name}")
        for name in ("encoder_level1", "encoder_level2", "encoder_level3", "latent")
    ]
    if min(blocks) == 0:
        raise ConversionError(
            f"{where(path)}no {_E}.encoder_level*/latent blocks; is it an {arch} checkpoint?"
        )
    heads = [
        int(need(state, f"{_E}.{name}.0.attn.temperature", path, ARCH).shape[0])
        for name in ("encoder_level1", "encoder_level2", "encoder_level3", "latent")
    ]
    local_heads = [
        int(need(state, f"{_E}.{name}.blocks.0.attn.relative_position_bias_table", path, ARCH).shape[1])
        for name in _LOCAL
    ]
    levels, transitions, steps = _flow_layout(state, path, arch)
    key = f"flowUpsamplerNet.layers.{1 + transitions}.affine.fFeatures_1.model.0.weight"
    sub = need(state, key, path, ARCH)
    hidden, cond = int(sub.shape[0]), int(sub.shape[1])
    if cond != 6 * dim:
        raise ConversionError(
            f"{where(path)}tensor {key} takes {cond} conditioning channels; the released encoder of width {dim} "
            f"hands the flow 4·{dim} + 2·{dim} = {6 * dim}"
        )
    try:
        enc = MSFormerConfig.released(
            dim=dim,
            window=_window(state, path),
            blocks=blocks,
            refine_blocks=_count(state, f"{_E}.refinement"),
            heads=heads,
            local_heads=local_heads,
        )
    except Exception as exc:  # a config check of MSFormerConfig
        raise ConversionError(f"{where(path)}the inferred UPT-Flow encoder is not valid: {exc}") from None
    base = get_config("uptflow-paper")
    assert isinstance(base, ModelConfig)
    flow = dataclasses.replace(
        base.flow,
        levels=levels,
        steps=steps[0] if len(set(steps)) == 1 else steps,
        hidden=hidden,
        transitions=transitions,
        split=False,
        coupling="cross",
        subnet="cbam-released",
        scale_eps=EPS,
        scale_floor=0.0,
    )
    return dataclasses.replace(
        base,
        name="uptflow-released",
        description="UPT-Flow as released by its authors, converted (nightflow convert)",
        encoder_config=enc,
        flow=flow,
        tile_margin=0,
    )


def describe(cfg: ModelConfig) -> str:
    e = cfg.encoder_config
    assert isinstance(e, MSFormerConfig)
    return (
        f"dim {e.dim}, window {e.window}, blocks {e.blocks}, refine {e.refine_blocks}, cond {e.cond_channels}, "
        f"L {cfg.flow.levels}, K {cfg.flow.steps}, hidden {cfg.flow.hidden}"
    )


def _spatial(weight: Tensor, target: str) -> dict[str, Tensor]:
    """The released SpatialGate conv (no bias) reads [max, mean]; nightflow's reads [mean, max] with a bias."""
    return {f"{target}.weight": weight[:, [1, 0]].contiguous(), f"{target}.bias": weight.new_zeros(1)}


def _subnet(plan: Plan, src: str, dst: str, expected: dict[str, Tensor]) -> None:
    """NN_F (Conv2d+ActNorm 1×1, ReLU, Conv2d+ActNorm 3×3, ReLU, CBAM + input, Conv2dZeros 1×1) → ConvSubnet
    ``cbam-released``."""
    for i, j in ((0, 0), (2, 1)):
        for a, b in (
            ("weight", "conv.weight"),
            ("actnorm.bias", "norm.bias"),
            ("actnorm.logs", "norm.log_scale"),
        ):
            plan.copy(f"{src}.model.{i}.{a}", f"{dst}.body.{j}.{b}", expected[f"{dst}.body.{j}.{b}"].shape)
    for i, j in ((1, 0), (3, 2)):
        w = expected[
            f"{dst}.body.2.channel.mlp.{j}.weight"
        ].shape  # (out, in, 1, 1); the release's Linear (out, in)
        plan.reshape(
            f"{src}.model.4.ChannelGate.mlp.{i}.weight", f"{dst}.body.2.channel.mlp.{j}.weight", w[:2], w
        )
        b = f"{dst}.body.2.channel.mlp.{j}.bias"
        plan.copy(f"{src}.model.4.ChannelGate.mlp.{i}.bias", b, expected[b].shape)
    sp = f"{dst}.body.2.spatial.conv"
    plan.entries.append(
        Entry(
            f"{src}.model.4.SpatialGate.spatial.conv.weight",
            tuple(expected[f"{sp}.weight"].shape),
            lambda t, k=sp: _spatial(t, k),
            "channels [max, mean] → [mean, max]; zero bias",
        )
    )
    plan.copy(f"{src}.model.5.weight", f"{dst}.out.conv.weight", expected[f"{dst}.out.conv.weight"].shape)
    plan.copy(f"{src}.model.5.bias", f"{dst}.out.conv.bias", expected[f"{dst}.out.conv.bias"].shape)
    gain = expected[f"{dst}.out.log_gain"].shape
    plan.reshape(f"{src}.model.5.logs", f"{dst}.out.log_gain", gain[1:], gain)


def _flow_plan(plan: Plan, cfg: ModelConfig, expected: dict[str, Tensor]) -> None:
    steps = cfg.flow.steps if isinstance(cfg.flow.steps, list) else [cfg.flow.steps] * cfg.flow.levels
    index = 0
    for level in range(cfg.flow.levels):
        channels = 3 * 4 ** (level + 1)
        n = 1 + cfg.flow.transitions + steps[level]
        for j in range(1, n):
            src, dst = f"flowUpsamplerNet.layers.{index + j}", f"flow.level_flows.{level}.layers.{j}.layers"
            for name, target in (("bias", "bias"), ("logs", "log_scale")):
                plan.copy(f"{src}.actnorm.{name}", f"{dst}.0.{target}", (1, channels, 1, 1))
            plan.invconv(f"{src}.invconv.weight", f"{dst}.1", channels)
            if j > cfg.flow.transitions:  # CrossCoupling: injector, coupling (z2), injector, coupling (z1)
                for part, sub in enumerate(("fFeatures_1", "fAffine_1", "fFeatures_2", "fAffine_2")):
                    _subnet(plan, f"{src}.affine.{sub}", f"{dst}.2.layers.{part}.net", expected)
        index += n


def _index(t: Tensor, target: str, window: int, source: str) -> dict[str, Tensor]:
    if not torch.equal(t.long(), relative_position_index(window)):
        raise ConversionError(
            f"tensor {source} is not Swin's relative-position index of a {window}×{window} window"
        )
    return {target: t.long()}


def build_plan(cfg: ModelConfig, expected: dict[str, Tensor], arch: str = ARCH) -> Plan:
    enc = cfg.encoder_config
    assert isinstance(enc, MSFormerConfig)
    plan = Plan(arch=arch, dead=list(DEAD), described=describe(cfg))
    u = "encoder.released_unet"

    def t(src: str, dst: str) -> None:
        plan.copy(f"{_E}.{src}", f"{u}.{dst}", expected[f"{u}.{dst}"].shape)

    for src, dst in _CONVS.items():
        t(f"{src}.weight", f"{dst}.weight")
    glob = (
        ("norm1.body.weight", "norm1.weight"), ("norm1.body.bias", "norm1.bias"),
        ("attn.temperature", "attn.temperature"), ("attn.qkv.weight", "attn.qkv.point.weight"),
        ("attn.qkv_dwconv.weight", "attn.qkv.depth.weight"), ("attn.project_out.weight", "attn.proj.weight"),
        ("norm2.body.weight", "norm2.weight"), ("norm2.body.bias", "norm2.bias"),
        ("ffn.project_in.weight", "ffn.inp.weight"), ("ffn.dwconv.weight", "ffn.depth.weight"),
        ("ffn.project_out.weight", "ffn.out.weight"),
    )  # fmt: skip
    local = (
        ("norm1.weight", "norm1.weight"), ("norm1.bias", "norm1.bias"),
        ("attn.relative_position_bias_table", "relative_position_bias_table"),
        ("attn.temperature", "temperature"), ("attn.proj.weight", "proj.weight"), ("attn.proj.bias", "proj.bias"),
        *((f"attn.qkv.to_{p}.{w}", f"to_{p}.{w}") for p in "qkv" for w in ("weight", "bias")),
        ("norm2.weight", "norm2.weight"), ("norm2.bias", "norm2.bias"),
        *((f"mlp.{m}.{w}", f"mlp.{m}.{w}") for m in ("conv1", "dwconv.0", "conv2") for w in ("weight", "bias")),
        ("mlp.eca.conv.weight", "mlp.eca.conv.weight"),
    )  # fmt: skip
    for src, dst in _GLOBAL.items():
        for i in range(_count(expected, f"{u}.{dst}")):
            for a, b in glob:
                t(f"{src}.{i}.{a}", f"{dst}.{i}.{b}")
    for src, dst in _LOCAL.items():
        for i in range(_count(expected, f"{u}.{dst}")):
            for a, b in local:
                t(f"{src}.blocks.{i}.{a}", f"{dst}.{i}.{b}")
            name, key = (
                f"{_E}.{src}.blocks.{i}.attn.relative_position_index",
                f"{u}.{dst}.{i}.relative_position_index",
            )
            n = enc.window**2
            plan.entries.append(
                Entry(
                    name,
                    (n, n),
                    lambda x, k=key, s=name: _index(x, k, enc.window, s),
                    "check index",
                    integer=True,
                )
            )
    _flow_plan(plan, cfg, expected)
    return plan
