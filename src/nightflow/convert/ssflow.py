"""SSFlow (shibaoshun/SSFlow) checkpoints → nightflow ``ssflow-paper`` (the OAtt-UNet encoder + LLFlow's flow).

The release's network is LLFlow's ``LLFlow`` class whose ``RRDB`` (ConEncoder1) holds the OAtt-UNet as
``RRDB.denoise`` (class ``SSFlow`` in ``models/ns_model2.py``) and whose ``flowUpsamplerNet`` is LLFlow's flow,
byte-identical (``../shared/reference/upstream-ssflow.md`` §2, §3). Sizes are read from the tensors: the widths
[c1, c2, c3, c4] from ``conv_first`` and the three residual down-samplings, the conditioning width from
``conv22``, the FAC kernel size and depth from ``conv_fac_k1``, the orthogonal filters' size from the
``constant_filter`` buffer, the excitation's reduction from its first Linear, and the flow (levels,
transitions, steps, coupling width) as for LLFlow. The pyramid's bins (four branches) are the released
(1, 2, 3, 6); they are not in the tensors.

Besides the parameters, three kinds of buffers are copied: the Gram–Schmidt ``constant_filter`` (random at
construction, so it must come from the checkpoint), the blur-pools' binomial ``filt`` and the attention
block's BatchNorm statistics (``num_batches_tracked`` as an integer). The encoder is ``ssflow-paper``'s
(``pooling: image``, ``ortho_norm: batch``, no input gain): its blocks are the released ones, op for op, so the
converted model computes what the official code computes (measured: ``docs/checkpoints.md``). The official
input, log(max(x + 1e-3, 1e-3)) turned back by ``exp`` inside the encoder, is x + 1e-3 up to rounding.

Dead weights (built by the release, never used by either pass), skipped by name: the whole OrthoNet-18
backbone, the curve layers ``conv_1c/2c/3c``, the FFT attentions ``attn1/2/3`` and LayerNorms ``norm1/2/3``,
``side_out`` (computed, then discarded), LLFlow's RRDB leftovers in ``RRDB`` (trunk, ``conv_second``,
``trunk_conv``, ``downconv1/2/3``, ``HRconv``, ``conv_last``, ``awb_para``, ``fine_tune_color_map``, the
3-channel ``conv_fac_k3`` whose output is discarded) and ``flowUpsamplerNet.f``.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from torch import Tensor

from ..encoders.oatt_unet import OAttUNetConfig
from ..models.config import ModelConfig
from ._common import ConversionError, Plan, need, where
from .llflow import _flow_layout, flow_plan

REPO = "shibaoshun/SSFlow"
COMMIT = "1a8778e39d2f"
TAKES_CONFIG = False  # everything is inferred from the tensors
ARCH = "ssflow"
RELEASED_BINS = [1, 2, 3, 6]  # ns_model2.py: PPM(..., bins=(1, 2, 3, 6)); the tensors only give their number
_W = r"\.(weight|bias)"
_BN = r"\.(weight|bias|running_mean|running_var|num_batches_tracked)"
DEAD = [
    # OrthoNet-18 (ns_model2.py: self.OrthoNet), instantiated, never called
    r"RRDB\.denoise\.OrthoNet\.conv1\.weight",
    r"RRDB\.denoise\.OrthoNet\.bn1" + _BN,
    r"RRDB\.denoise\.OrthoNet\.fc" + _W,
    r"RRDB\.denoise\.OrthoNet\.layer[1-4]\.\d+\._process\.[03]\.weight",
    r"RRDB\.denoise\.OrthoNet\.layer[1-4]\.\d+\._process\.[14]" + _BN,
    r"RRDB\.denoise\.OrthoNet\.layer[1-4]\.\d+\._excitation\.[02]\.weight",
    r"RRDB\.denoise\.OrthoNet\.layer[1-4]\.\d+\.F_C_A\.constant_filter",
    r"RRDB\.denoise\.OrthoNet\.layer[1-4]\.\d+\.downsample\.0\.weight",
    r"RRDB\.denoise\.OrthoNet\.layer[1-4]\.\d+\.downsample\.1" + _BN,
    # LEDNet's curve layers, skipped by the forward
    r"RRDB\.denoise\.conv_[123]c\.predict_a\.[024]" + _W,
    # FFT attention and LayerNorms, built, unused
    r"RRDB\.denoise\.attn[123]\.(to_hidden|to_hidden_dw|project_out)\.weight",
    r"RRDB\.denoise\.attn[123]\.norm\.body" + _W,
    r"RRDB\.denoise\.norm[123]\.body" + _W,
    # computed, then discarded
    r"RRDB\.denoise\.side_out" + _W,
    # LLFlow's ConEncoder1 leftovers
    r"RRDB\.conv_second" + _W,
    r"RRDB\.RRDB_trunk\.\d+\.RDB[123]\.conv[1-5]" + _W,
    r"RRDB\.trunk_conv" + _W,
    r"RRDB\.downconv[123]" + _W,
    r"RRDB\.HRconv" + _W,
    r"RRDB\.conv_last" + _W,
    r"RRDB\.awb_para" + _W,
    r"RRDB\.fine_tune_color_map\.0" + _W,
    r"RRDB\.conv_fac_k3\.[0246]" + _W,
    # LLFlow's unused flow conv
    r"flowUpsamplerNet\.f\.0" + _W,
]
_D = "RRDB.denoise"


def infer_config(
    state: dict[str, Tensor], arch: str = ARCH, path: str = "", config: Path | None = None
) -> ModelConfig:
    from ..models.zoo import get_config

    first = need(state, "RRDB.conv_first.weight", path, ARCH)
    nf, in_ch = int(first.shape[0]), int(first.shape[1])
    if in_ch != 3:
        raise ConversionError(
            f"{where(path)}tensor RRDB.conv_first.weight takes {in_ch} channels; SSFlow's encoder reads the 3-channel "
            "image (an LLFlow checkpoint? use --arch llflow-small or llflow)"
        )
    stem = need(state, f"{_D}.E_block1.0.weight", path, ARCH)
    c1 = int(stem.shape[0])
    if int(stem.shape[1]) != nf or c1 != nf:
        raise ConversionError(
            f"{where(path)}tensor {_D}.E_block1.0.weight has shape {list(stem.shape)}; nightflow converts SSFlow with "
            f"conv_first's width ({nf}) equal to the U-Net's first width"
        )
    downs = [f"{_D}.E_block1.2", f"{_D}.E_block2", f"{_D}.E_block3"]
    widths = [c1] + [int(need(state, f"{d}.reshape_conv.top.5.weight", path, ARCH).shape[0]) for d in downs]
    cond = int(need(state, f"{_D}.conv22.0.conv.0.weight", path, ARCH).shape[0])
    fac = need(state, f"{_D}.conv_fac_k1.0.weight", path, ARCH)
    fac_convs = sorted(
        int(m.group(1))
        for k in state
        if (m := re.fullmatch(rf"{re.escape(_D)}\.conv_fac_k1\.(\d+)\.weight", k))
    )
    last = state[f"{_D}.conv_fac_k1.{fac_convs[-1]}.weight"]
    k2 = int(last.shape[0]) // int(fac.shape[0])
    k = round(k2**0.5)
    if k * k != k2 or k % 2 == 0 or int(last.shape[0]) != k2 * int(fac.shape[0]):
        raise ConversionError(
            f"{where(path)}tensor {_D}.conv_fac_k1.{fac_convs[-1]}.weight {list(last.shape)} is not C·k² kernels of an "
            "odd k"
        )
    filt = need(state, f"{_D}.BasicBlock.F_C_A.constant_filter", path, ARCH)
    if filt.dim() != 3 or filt.shape[1] != filt.shape[2]:
        raise ConversionError(
            f"{where(path)}tensor {_D}.BasicBlock.F_C_A.constant_filter has shape {list(filt.shape)}, not C×S×S"
        )
    hidden = int(need(state, f"{_D}.BasicBlock._excitation.0.weight", path, ARCH).shape[0])
    reduction = max(1, widths[1] // max(hidden, 1))
    if max(1, round(widths[1] / reduction)) != hidden:
        raise ConversionError(
            f"{where(path)}tensor {_D}.BasicBlock._excitation.0.weight: {hidden} hidden units are no round({widths[1]}/r)"
        )
    n_bins = len(
        {int(m.group(1)) for kk in state if (m := re.match(rf"{re.escape(_D)}\.PPM1\.features\.(\d+)\.", kk))}
    )
    if n_bins != len(RELEASED_BINS):
        raise ConversionError(
            f"{where(path)}{_D}.PPM1 has {n_bins} pyramid branches; the release has {len(RELEASED_BINS)} (bins "
            f"{RELEASED_BINS})"
        )
    if f"{_D}.BasicBlock._process.1.running_mean" not in state:
        raise ConversionError(
            f"{where(path)}the checkpoint lacks tensor {_D}.BasicBlock._process.1.running_mean (the attention block's "
            "BatchNorm); is it an ssflow checkpoint?"
        )
    levels, transitions, steps = _flow_layout(state, path, arch)
    aff = need(state, f"flowUpsamplerNet.layers.{1 + transitions}.affine.fFeatures.0.weight", path, ARCH)
    base = get_config("ssflow-paper")
    assert isinstance(base, ModelConfig)
    try:
        enc = dataclasses.replace(
            base.encoder_config,
            channels=widths,
            cond_channels=cond,
            fac_kernel=k,
            fac_hidden_layers=len(fac_convs) - 1,
            ortho_size=int(filt.shape[1]),
            ortho_reduction=reduction,
            ortho_norm="batch",
            ppm_bins=list(RELEASED_BINS),
            pooling="image",
            input_gain="none",
        )
    except Exception as exc:  # a config check of OAttUNetConfig
        raise ConversionError(f"{where(path)}the inferred SSFlow encoder is not valid: {exc}") from None
    flow = dataclasses.replace(
        base.flow,
        levels=levels,
        steps=steps[0] if len(set(steps)) == 1 else steps,
        hidden=int(aff.shape[0]),
        transitions=transitions,
    )
    return dataclasses.replace(
        base,
        name="ssflow-released",
        description="SSFlow as released by its authors, converted (nightflow convert)",
        encoder_config=enc,
        flow=flow,
    )


def describe(cfg: ModelConfig) -> str:
    e = cfg.encoder_config
    assert isinstance(e, OAttUNetConfig)
    return (
        f"channels {e.channels}, cond {e.cond_channels}, FAC {e.fac_kernel}×{e.fac_kernel}, ortho {e.ortho_size}, "
        f"L {cfg.flow.levels}, K {cfg.flow.steps}, hidden {cfg.flow.hidden}"
    )


def build_plan(cfg: ModelConfig, expected: dict[str, Tensor], arch: str = ARCH) -> Plan:
    enc = cfg.encoder_config
    assert isinstance(enc, OAttUNetConfig)
    plan = Plan(arch=arch, dead=list(DEAD), described=describe(cfg))

    def t(src: str, dst: str) -> None:
        key = f"encoder.{dst}"
        if key.endswith("num_batches_tracked"):
            plan.copy_integer(src, key, expected[key].shape)
        else:
            plan.copy(src, key, expected[key].shape)

    def conv(src: str, dst: str, bias: bool = True) -> None:
        for p in ("weight", "bias") if bias else ("weight",):
            t(f"{src}.{p}", f"{dst}.{p}")

    def prelu(src: str, dst: str) -> None:
        t(f"{src}.weight", f"{dst}.weight")

    def down(src: str, dst: str) -> None:  # ResidualDownSample
        conv(f"{src}.top.0", f"{dst}.top.0", False)
        prelu(f"{src}.top.1", f"{dst}.top.1")
        conv(f"{src}.top.2", f"{dst}.top.2", False)
        prelu(f"{src}.top.3", f"{dst}.top.3")
        t(f"{src}.top.4.filt", f"{dst}.top.4.filt")
        conv(f"{src}.top.5", f"{dst}.top.5", False)
        t(f"{src}.bot.0.filt", f"{dst}.bot.0.filt")
        conv(f"{src}.bot.1", f"{dst}.bot.1", False)

    def up(src: str, dst: str) -> None:  # ResidualUpSample
        conv(f"{src}.top.0", f"{dst}.top.0", False)
        prelu(f"{src}.top.1", f"{dst}.top.1")
        conv(f"{src}.top.2", f"{dst}.top.2", False)
        prelu(f"{src}.top.3", f"{dst}.top.3")
        conv(f"{src}.top.4", f"{dst}.top.4", False)
        conv(f"{src}.bot.1", f"{dst}.bot", False)

    def enc_block(src: str, dst: str, has_down: bool) -> None:  # BasicBlock_E
        conv(f"{src}.body1.0", f"{dst}.body1.0")
        prelu(f"{src}.body1.1", f"{dst}.body1.1")
        conv(f"{src}.body1.2", f"{dst}.body1.2")
        conv(f"{src}.body2.0", f"{dst}.body2.0")
        prelu(f"{src}.body2.1", f"{dst}.body2.1")
        if has_down:
            down(f"{src}.reshape_conv", f"{dst}.down")

    def dec_block(src: str, dst: str, has_up: bool) -> None:  # BasicBlock_D_2Res
        if has_up:
            up(f"{src}.reshape_conv", f"{dst}.up")
        for body, res in (("body1", "res1"), ("body2", "res2")):
            conv(f"{src}.{body}.0", f"{dst}.{res}.body.0")
            prelu(f"{src}.{body}.1", f"{dst}.{res}.body.1")
            conv(f"{src}.{body}.2", f"{dst}.{res}.body.2")

    def ppm(src: str, dst: str) -> None:
        for b in range(len(enc.ppm_bins)):
            conv(f"{src}.features.{b}.1", f"{dst}.features.{b}.0", False)
            prelu(f"{src}.features.{b}.2", f"{dst}.features.{b}.1")
        conv(f"{src}.fuse.0", f"{dst}.bottleneck.0", False)
        prelu(f"{src}.fuse.1", f"{dst}.bottleneck.1")

    d = _D
    conv("RRDB.conv_first", "conv_first")
    conv(f"{d}.E_block1.0", "e_stem.0")
    prelu(f"{d}.E_block1.1", "e_stem.1")
    enc_block(f"{d}.E_block1.2", "e_block1", True)
    o = f"{d}.BasicBlock"
    conv(f"{o}._process.0", "ortho.conv1", False)
    conv(f"{o}._process.3", "ortho.conv2", False)
    for i, bn in ((1, "bn1"), (4, "bn2")):
        for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            t(f"{o}._process.{i}.{p}", f"ortho.{bn}.{p}")
    t(f"{o}._excitation.0.weight", "ortho.excite.0.weight")
    t(f"{o}._excitation.2.weight", "ortho.excite.2.weight")
    t(f"{o}.F_C_A.constant_filter", "ortho.filters")
    ppm(f"{d}.PPM1", "ppm1")
    enc_block(f"{d}.E_block2", "e_block2", True)
    ppm(f"{d}.PPM2", "ppm2")
    enc_block(f"{d}.E_block3", "e_block3", True)
    ppm(f"{d}.PPM3", "ppm3")
    enc_block(f"{d}.M_block1", "m_block1", False)
    enc_block(f"{d}.M_block2", "m_block2", False)
    dec_block(f"{d}.D_block3", "d_block3", False)
    dec_block(f"{d}.D_block2", "d_block2", True)
    dec_block(f"{d}.D_block1", "d_block1", True)
    dec_block(f"{d}.D_block0.0", "d_block0", True)
    conv(f"{d}.D_block0.1", "out_conv")
    for level, name in ((3, "fac3"), (2, "fac2"), (1, "fac1")):
        for j in range(enc.fac_hidden_layers + 1):
            conv(f"{d}.conv_fac_k{level}.{2 * j}", f"{name}.predictor.{2 * j}")
    conv(f"{d}.conv22.0.conv.0", "conv22")
    conv(f"{d}.conv33.0.conv.0", "conv33")
    flow_plan(plan, cfg, expected)
    return plan
