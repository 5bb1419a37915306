"""Learned non-flow baselines (issue 6, deliverable 3): joint regression and the sequential cascade.

They must behave like the flow wherever the zoo, the trainer, tiled inference and ``nightflow.load`` touch them,
use the tiny LoLiSRFlow's encoder (joint) and budget (both), and the cascade's two losses must each train only
their own network.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import nightflow
from nightflow.config import from_dict
from nightflow.errors import ConfigError, UserError
from nightflow.losses import LossSpec
from nightflow.models import (
    MODEL_KINDS,
    JointRegressor,
    RegressionConfig,
    SequentialCascade,
    SequentialConfig,
    build_any,
    build_model,
)
from nightflow.models.checkpoint import load_model, save_model
from nightflow.models.zoo import get_config
from nightflow.train.config import TrainConfig
from nightflow.train.trainer import Trainer

NAMES = [
    "regression-x1-tiny",
    "regression-x2-tiny",
    "regression-x4-tiny",
    "sequential-x2-tiny",
    "sequential-x4-tiny",
]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors on a shared 2-core machine: one intra-op thread is faster than two under load."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def models() -> dict[str, torch.nn.Module]:
    return {name: build_any(get_config(name)).eval() for name in NAMES}


def smooth_pair(scale: int, lr_size: tuple[int, int], seed: int = 0, gain: float = 0.15):
    """A normal-light HR image (smooth random colours) and its dark LR version (area ↓, × gain)."""
    g = torch.Generator().manual_seed(seed)
    h, w = scale * lr_size[0], scale * lr_size[1]
    coarse = torch.rand(1, 3, 4, 4, generator=g)
    hq = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)
    lq = F.avg_pool2d(hq, scale) * gain
    return hq, lq


# ----------------------------------------------------------------------------------------------- configs
def test_zoo_configs_parse_to_their_kinds_and_are_strict():
    for name in NAMES:
        cfg = get_config(name)
        assert cfg.name == name
        assert isinstance(cfg, RegressionConfig if name.startswith("regression") else SequentialConfig)
        assert MODEL_KINDS[cfg.kind][0] is type(cfg)
    with pytest.raises(ConfigError, match="head_chanels.*did you mean 'head_channels'"):
        from_dict(RegressionConfig, {"kind": "regression", "head_chanels": [8, 8, 8]})
    with pytest.raises(ConfigError, match=r"unknown config key 'sr\.block'"):
        from_dict(SequentialConfig, {"kind": "sequential", "sr": {"block": 3}})
    with pytest.raises(ConfigError, match="scale 2 or 4"):
        SequentialConfig(scale=1)
    with pytest.raises(ConfigError, match="one positive width per level"):
        RegressionConfig(levels=3, head_channels=[8, 8])


def test_joint_regressor_uses_the_tiny_flows_encoder_exactly():
    """Same encoder config, same module, and (same seed, built first) the same initial weights as the flow."""
    for s in (2, 4):
        flow_cfg, reg_cfg = get_config(f"lolisrflow-x{s}-tiny"), get_config(f"regression-x{s}-tiny")
        assert reg_cfg.encoder == flow_cfg.encoder and reg_cfg.encoder_config == flow_cfg.encoder_config
        assert reg_cfg.levels == flow_cfg.flow.levels
        flow, reg = build_model(flow_cfg), build_any(reg_cfg)
        a, b = flow.encoder.state_dict(), reg.encoder.state_dict()
        assert list(a) == list(b)
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert reg.pad_multiple == flow.pad_multiple


def _restore_flops(model: torch.nn.Module, lr: int = 16) -> int:
    """FLOPs of one steady-state restore (a first call runs once-only work: the flow's 1×1-conv inverses).

    The whole-image context (a fixed-size thumbnail pass, independent of the image size) is computed outside
    the count: at 16×16 it would outweigh the image itself, at photo sizes it is negligible."""
    lq = torch.rand(1, 3, lr, lr)
    with torch.no_grad():
        context = model.context(lq)
        model.restore(lq, context=context)
        with FlopCounterMode(display=False) as counter:
            model.restore(lq, context=context)
    return counter.get_total_flops()


def test_parameters_and_flops_match_the_tiny_flow_within_30_percent(models):
    for s in (2, 4):
        flow = build_model(get_config(f"lolisrflow-x{s}-tiny")).eval()
        flow_params = sum(p.numel() for p in flow.parameters())
        flow_flops = _restore_flops(flow)
        for kind in ("regression", "sequential"):
            model = models[f"{kind}-x{s}-tiny"]
            params = sum(p.numel() for p in model.parameters())
            flops = _restore_flops(model)
            print(
                f"x{s} {kind}: {params} params ({params / flow_params:.2f}× flow), "
                f"{flops / 1e6:.0f} MFLOPs at 16×16 ({flops / flow_flops:.2f}× flow)"
            )
            assert 0.7 <= params / flow_params <= 1.3, (kind, s, params, flow_params)
            assert 0.7 <= flops / flow_flops <= 1.3, (kind, s, flops, flow_flops)


# ----------------------------------------------------------------------------------------------- contract
@pytest.mark.parametrize("name", NAMES)
def test_odd_sizes_restore_sample_and_loss(models, name):
    model = models[name]
    s = model.scale
    hq, lq = smooth_pair(s, (13, 7))
    with torch.no_grad():
        out = model.restore(lq)
        assert out.shape == (1, 3, 13 * s, 7 * s)
        assert out.min() >= 0 and out.max() <= 1
        # no distribution: temperature, noise and generator change nothing; samples are copies
        g = torch.Generator().manual_seed(1)
        noisy = model.restore(lq, temperature=0.8, noise=torch.randn(1, 3, 13 * s, 7 * s), generator=g)
        assert torch.equal(noisy, out)
        samples = model.sample(lq, n=3, temperature=0.8, generator=g)
        assert samples.shape == (3, 1, 3, 13 * s, 7 * s)
        assert all(torch.equal(samples[i], out) for i in range(3))
        model.initialize({"hq": hq, "lq": lq})  # no-op, but present for the trainer
        terms = model.loss({"hq": hq, "lq": lq})
    assert {"total", "l1"} <= set(terms)
    assert all(torch.isfinite(v) for v in terms.values())
    with pytest.raises(UserError, match="expected shape"):
        model.loss({"hq": hq[..., :-1], "lq": lq})
    with pytest.raises(ValueError):
        model.restore(lq[:, :2])


def test_regression_colour_term_is_reported_and_weighted():
    cfg = RegressionConfig(
        scale=2,
        encoder_config={"dims": [8, 16], "heads": [1, 2], "cond_channels": 8},
        head_channels=[8, 8, 8],
        head_blocks=1,
        losses=[LossSpec("l1", 1.0), LossSpec("color_map_l1", 0.5)],
    )
    model = build_any(cfg)
    hq, lq = smooth_pair(2, (8, 8))
    terms = model.loss({"hq": hq, "lq": lq})
    assert set(terms) == {"l1", "color", "total"}
    assert torch.allclose(terms["total"], terms["l1"] + 0.5 * terms["color"])


# ----------------------------------------------------------------------------------------------- training
def _overfit(model: torch.nn.Module, hq: torch.Tensor, lq: torch.Tensor, steps: int) -> tuple[float, float]:
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    first = None
    for _ in range(steps):
        terms = model.loss({"hq": hq, "lq": lq})
        first = float(terms["l1"].detach()) if first is None else first
        opt.zero_grad()
        terms["total"].backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        last = float((model.restore(lq) - hq).abs().mean())
    return first, last


@pytest.mark.parametrize("name", ["regression-x2-tiny", "sequential-x2-tiny"])
def test_short_overfit_on_one_pair_cuts_the_l1_by_10x(name):
    """One small pair, ≤150 Adam steps: the deterministic output's L1 must drop by an order of magnitude."""
    model = build_any(get_config(name))
    hq, lq = smooth_pair(2, (8, 8))
    first, last = _overfit(model, hq, lq, steps=120)
    print(f"{name}: L1 {first:.4f} -> {last:.4f}")
    assert first > 0.2  # the dark input is far from the target at init
    assert last < first / 10


def test_sequential_losses_each_train_only_their_own_network():
    model = build_any(get_config("sequential-x2-tiny")).train()
    hq, lq = smooth_pair(2, (9, 11))
    terms = model.loss({"hq": hq, "lq": lq})
    assert not terms["l1"].requires_grad  # the cascade L1 is a monitor, never trained on

    def grads(loss: torch.Tensor) -> tuple[float, float]:
        model.zero_grad(set_to_none=True)
        loss.backward(retain_graph=True)
        norm = lambda net: sum(float(p.grad.abs().sum()) for p in net.parameters() if p.grad is not None)  # noqa: E731
        return norm(model.enhance), norm(model.sr)

    enh_on_enh, enh_on_sr = grads(terms["enhance_l1"])
    sr_on_enh, sr_on_sr = grads(terms["sr_l1"])
    assert enh_on_enh > 0 and enh_on_sr == 0
    assert sr_on_sr > 0 and sr_on_enh == 0
    assert torch.allclose(terms["total"], terms["enhance_l1"] + terms["sr_l1"])
    # the SR net's own task: its input is the clean area-downscaled target
    with torch.no_grad():
        assert torch.allclose(terms["sr_l1"], (model.sr(F.avg_pool2d(hq, 2)) - hq).abs().mean())


class _Pairs(torch.utils.data.Dataset):
    def __init__(self, n: int, scale: int) -> None:
        self.n, self.scale = n, scale

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        hq, lq = smooth_pair(self.scale, (8, 8), seed=index)
        return {"hq": hq[0], "lq": lq[0], "name": f"img{index}.png"}


@pytest.mark.parametrize("name", ["sequential-x2-tiny", "regression-x2-tiny"])
def test_the_shared_trainer_trains_and_writes_loadable_weights(tmp_path, name):
    cfg = get_config(name)
    model = build_any(cfg)
    train_cfg = TrainConfig(
        seed=0,
        max_steps=3,
        batch_size=2,
        lr=1e-3,
        schedule="constant",
        log_every=1,
        val_every=3,
        val_max_images=1,
        val_save_images=1,
        checkpoint_every=3,
        keep_last=1,
        device="cpu",
        progress=False,
    )
    trainer = Trainer(
        model, _Pairs(4, 2), train_cfg, tmp_path / "run", val_set=_Pairs(1, 2), model_config=cfg
    )
    summary = trainer.fit()
    assert summary["step"] == 3 and np.isfinite(summary["losses"]["total"])
    assert {"l1", "total"} <= set(summary["losses"])
    loaded = nightflow.load(tmp_path / "run")  # run folder → best checkpoint → self-describing weights
    assert type(loaded.restorer) is type(model)
    lq = _Pairs(1, 2)[0]["lq"][None]
    with torch.no_grad():
        assert torch.allclose(loaded.restorer.restore(lq), model.eval().restore(lq), atol=1e-6)


# ----------------------------------------------------------------------------------------------- weights
@pytest.mark.parametrize("name", ["regression-x4-tiny", "sequential-x2-tiny"])
def test_weights_round_trip_through_save_load_and_nightflow_load(tmp_path, name):
    model = build_any(get_config(name)).eval()
    with torch.no_grad():  # move away from the seeded init so a rebuilt model would not pass by accident
        for p in model.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    path = save_model(model, tmp_path / f"{name}.safetensors", get_config(name), {"note": "test"})
    back = load_model(path)
    assert isinstance(back, JointRegressor if name.startswith("regression") else SequentialCascade)
    assert back.cfg == model.cfg
    s = model.scale
    _, lq = smooth_pair(s, (9, 6))
    with torch.no_grad():
        expected = model.restore(lq)
        assert torch.equal(back.restore(lq), expected)
    api_model = nightflow.load(str(path))
    assert api_model.scale == s
    # a size on the pad grid: the inference engine pads by reflection, the model by replication
    _, lq = smooth_pair(s, (12, 8))
    img = (lq[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    out = api_model.restore(img, tile=0)
    assert out.dtype == np.uint8 and out.shape == (12 * s, 8 * s, 3)
    via_tensor = model.restore(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255)
    ref = (via_tensor[0].permute(1, 2, 0).detach().numpy() * 255).round()
    assert np.abs(out.astype(np.float64) - ref).max() <= 1
