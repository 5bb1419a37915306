"""LLFlow (wyf0912/LLFlow, AAAI 2022) checkpoints → nightflow ``llflow`` / ``llflow-small``.

The release's network is ``LLFlow``: ``RRDB`` (ConEncoder1) + ``flowUpsamplerNet``. Sizes are read from the
tensors (as spandrel does): ``nf`` from ``RRDB.conv_first``, ``nb`` from the ``RRDB_trunk`` indices, ``gc`` from
the dense blocks, ``K``, ``L`` and the transitions from the flow's layer list, the coupling width from
``fAffine``, how many RRDB outputs are stacked from the conditioning width. *Which* blocks are stacked is not in
the tensors: it is the arch's released value (small [1], large [1, 3, 5, 7]) unless ``--config`` names the
release's YAML (``network_G.flow.stackRRDB.blocks``).

The encoder is built with :meth:`RRDBConfig.released` (the release's input maps, whole-image 8-bit HE, nearest
stacking and its colour head), so the converted model computes what the official code computes.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from torch import Tensor

from ..encoders.rrdb import RRDBConfig
from ..models.config import ModelConfig
from ._common import ConversionError, Plan, need

REPO = "wyf0912/LLFlow"
COMMIT = "115da161a96d"
TAKES_CONFIG = True  # --config: which RRDB blocks are stacked, which the tensors do not say
RELEASED_BLOCKS = {"llflow-small": [1], "llflow": [1, 3, 5, 7]}
# built by the release, never used in either pass (docs/performance.md, tests/test_llflow_arch.py)
DEAD = [
    r"RRDB\.HRconv\.(weight|bias)",
    r"RRDB\.downconv3\.(weight|bias)",
    r"RRDB\.conv_last\.(weight|bias)",
    r"RRDB\.awb_para\.(weight|bias)",
    r"flowUpsamplerNet\.f\.0\.(weight|bias)",
]
_LAYER = re.compile(r"flowUpsamplerNet\.layers\.(\d+)\.(actnorm|invconv|affine)\.")


def _flow_layout(state: dict[str, Tensor], path: str, arch: str) -> tuple[int, int, list[int]]:
    """(levels, transitions, steps per level) from the flow's layer indices: squeeze, T transitions, K steps."""
    kinds: dict[int, str] = {}
    for key in state:
        m = _LAYER.match(key)
        if m:
            i = int(m.group(1))
            kinds[i] = "step" if m.group(2) == "affine" or kinds.get(i) == "step" else "trans"
    if not kinds:
        raise ConversionError(f"{path}: no flowUpsamplerNet.layers tensors; is it an {arch} checkpoint?")
    seq = [kinds.get(i, "squeeze") for i in range(max(kinds) + 1)]
    levels: list[list[str]] = []
    for kind in seq:
        if kind == "squeeze":
            levels.append([])
        elif not levels:
            raise ConversionError(f"{path}: flowUpsamplerNet.layers.0 is not a squeeze; unknown flow layout")
        else:
            levels[-1].append(kind)
    trans = {lv.count("trans") for lv in levels}
    if len(trans) != 1 or any(lv != sorted(lv, key=lambda k: k == "step") for lv in levels):
        raise ConversionError(
            f"{path}: flow levels are not 'squeeze, transitions, steps'; unknown flow layout"
        )
    return len(levels), trans.pop(), [lv.count("step") for lv in levels]


def _blocks_from_yaml(config: Path) -> list[int]:
    import yaml

    try:
        data = yaml.safe_load(Path(config).read_text())
        blocks = data["network_G"]["flow"]["stackRRDB"]["blocks"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise ConversionError(
            f"--config {config}: cannot read network_G.flow.stackRRDB.blocks ({' '.join(str(exc).split())})"
        ) from None
    if not isinstance(blocks, list) or not all(isinstance(b, int) for b in blocks):
        raise ConversionError(f"--config {config}: network_G.flow.stackRRDB.blocks is not a list of integers")
    return blocks


def infer_config(
    state: dict[str, Tensor], arch: str, path: str = "", config: Path | None = None
) -> ModelConfig:
    from ..models.zoo import get_config

    first = need(state, "RRDB.conv_first.weight", path, arch)
    nf, in_ch = int(first.shape[0]), int(first.shape[1])
    if in_ch != 12:
        raise ConversionError(
            f"{path}: tensor RRDB.conv_first.weight takes {in_ch} channels; nightflow converts the released LOL "
            "encoder (log + HE input, colour and noise maps: 12 channels)"
        )
    nb = len({int(m.group(1)) for k in state if (m := re.match(r"RRDB\.RRDB_trunk\.(\d+)\.", k))})
    if nb == 0:
        raise ConversionError(f"{path}: no RRDB.RRDB_trunk tensors; is it an {arch} checkpoint?")
    gc = int(need(state, "RRDB.RRDB_trunk.0.RDB1.conv1.weight", path, arch).shape[0])
    levels, transitions, steps = _flow_layout(state, path, arch)
    first_step = 1 + transitions
    aff = need(state, f"flowUpsamplerNet.layers.{first_step}.affine.fFeatures.0.weight", path, arch)
    hidden, cond = int(aff.shape[0]), int(aff.shape[1])
    if cond % nf:
        raise ConversionError(
            f"{path}: tensor flowUpsamplerNet.layers.{first_step}.affine.fFeatures.0.weight takes {cond} "
            f"conditioning channels, not a multiple of nf {nf}"
        )
    n_stacked = cond // nf - 1
    blocks = _blocks_from_yaml(config) if config is not None else RELEASED_BLOCKS[arch]
    if len(blocks) != n_stacked:
        raise ConversionError(
            f"{path}: the checkpoint stacks {n_stacked} RRDB block outputs ({cond} conditioning channels, nf {nf}) "
            f"but {'--config' if config else arch} names {len(blocks)} ({blocks}); pass the release's YAML with --config"
        )
    base = get_config(arch)
    assert isinstance(base, ModelConfig)
    enc = RRDBConfig.released(nf=nf, nb=nb, gc=gc, stack_blocks=list(blocks))
    flow = dataclasses.replace(
        base.flow,
        levels=levels,
        steps=steps[0] if len(set(steps)) == 1 else steps,
        hidden=hidden,
        transitions=transitions,
    )
    return dataclasses.replace(
        base,
        name=f"{arch}-released",
        description=f"LLFlow ({arch}) as released by its authors, converted (nightflow convert)",
        encoder_config=enc,
        flow=flow,
    )


def describe(cfg: ModelConfig) -> str:
    e = cfg.encoder_config
    assert isinstance(e, RRDBConfig)
    return (
        f"nf {e.nf}, nb {e.nb}, gc {e.gc}, blocks {e.stack_blocks}, L {cfg.flow.levels}, K {cfg.flow.steps}, "
        f"hidden {cfg.flow.hidden}"
    )


def _subnet(plan: Plan, src: str, dst: str, expected: dict[str, Tensor]) -> None:
    """CondAffineSeparatedAndCond's F (Conv2d+ActNorm, ReLU, Conv2d+ActNorm, ReLU, Conv2dZeros) → ConvSubnet."""
    for i, j in ((0, 0), (2, 1)):
        plan.copy(
            f"{src}.{i}.weight", f"{dst}.body.{j}.conv.weight", expected[f"{dst}.body.{j}.conv.weight"].shape
        )
        plan.copy(
            f"{src}.{i}.actnorm.bias",
            f"{dst}.body.{j}.norm.bias",
            expected[f"{dst}.body.{j}.norm.bias"].shape,
        )
        scale = f"{dst}.body.{j}.norm.log_scale"
        plan.copy(f"{src}.{i}.actnorm.logs", scale, expected[scale].shape)
    plan.copy(f"{src}.4.weight", f"{dst}.out.conv.weight", expected[f"{dst}.out.conv.weight"].shape)
    plan.copy(f"{src}.4.bias", f"{dst}.out.conv.bias", expected[f"{dst}.out.conv.bias"].shape)
    gain = expected[f"{dst}.out.log_gain"].shape  # (1, C, 1, 1); the release stores logs as (C, 1, 1)
    plan.reshape(f"{src}.4.logs", f"{dst}.out.log_gain", gain[1:], gain)


def flow_plan(
    plan: Plan, cfg: ModelConfig, expected: dict[str, Tensor], prefix: str = "flowUpsamplerNet"
) -> None:
    """The LLFlow flow (shared by LLFlow and SSFlow): layers i of level l ↔ ``flow.level_flows.l.layers.j``."""
    steps = cfg.flow.steps if isinstance(cfg.flow.steps, list) else [cfg.flow.steps] * cfg.flow.levels
    index = 0
    for level in range(cfg.flow.levels):
        channels = 3 * 4 ** (level + 1)
        n = 1 + cfg.flow.transitions + steps[level]
        for j in range(1, n):
            src, dst = f"{prefix}.layers.{index + j}", f"flow.level_flows.{level}.layers.{j}.layers"
            for name, target in (("bias", "bias"), ("logs", "log_scale")):
                plan.copy(f"{src}.actnorm.{name}", f"{dst}.0.{target}", (1, channels, 1, 1))
            plan.invconv(f"{src}.invconv.weight", f"{dst}.1", channels)
            if j > cfg.flow.transitions:
                _subnet(plan, f"{src}.affine.fFeatures", f"{dst}.2.net", expected)
                _subnet(plan, f"{src}.affine.fAffine", f"{dst}.3.net", expected)
        index += n


def build_plan(cfg: ModelConfig, expected: dict[str, Tensor], arch: str) -> Plan:
    enc = cfg.encoder_config
    assert isinstance(enc, RRDBConfig)
    plan = Plan(arch=arch, dead=list(DEAD), described=describe(cfg))

    def conv(src: str, dst: str) -> None:
        for p in ("weight", "bias"):
            plan.copy(f"RRDB.{src}.{p}", f"encoder.{dst}.{p}", expected[f"encoder.{dst}.{p}"].shape)

    conv("conv_first", "conv_first")
    conv("conv_second", "conv_second")
    for b in range(enc.nb):
        for r in range(3):
            for c in range(5):
                dst = f"trunk.{b}.body.{r}." + (f"convs.{c}" if c < 4 else "last")
                conv(f"RRDB_trunk.{b}.RDB{r + 1}.conv{c + 1}", dst)
    conv("trunk_conv", "trunk_conv")
    conv("downconv1", "downs.0")
    conv("downconv2", "downs.1")
    conv("fine_tune_color_map.0", "color_head")
    flow_plan(plan, cfg, expected)
    return plan
