"""The restorer contract (nightflow.models.base), checked over the whole registry, as timm tests its zoo:
every zoo config and every classical baseline builds, states what the contract asks, pads odd sizes, restores
to the right shape and dtype in [0, 1]; flows round-trip; trainable ones give a finite loss that backpropagates.
"""

from __future__ import annotations

import pytest
import torch

from nightflow.baselines import get_baseline, list_baselines
from nightflow.models import build_any, zoo
from nightflow.models.base import (
    MAX_TEMPERATURE,
    SAMPLE_TEMPERATURE,
    Restorer,
    SizeSpec,
    TilingSpec,
    Trainable,
)

pytestmark = pytest.mark.usefixtures("one_thread")

ZOO = zoo.config_names()
# paper-size models are built and shape-checked, but only the tiny ones run a loss (seconds, not minutes)
SMALL = [n for n in ZOO if "paper" not in n and n != "llflow"]
ODD = (13, 19)  # an LR size no encoder's multiple divides


def _baseline_names() -> list[str]:
    names = list(list_baselines())
    # every enhancer alone at ×1 and followed by bicubic at ×2 (oracles read the target)
    return [n for n in names if "+" not in n] + ["gamma+bicubic", "oracle+bicubic", "bicubic+gamma"]


@pytest.fixture(scope="module")
def built() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {name: build_any(zoo.get_config(name)).eval() for name in ZOO}


def _lq(h: int, w: int, n: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(h * 31 + w)) * 0.3


@pytest.mark.parametrize("name", ZOO)
def test_every_zoo_model_states_the_contract(built, name):
    m = built[name]
    assert isinstance(m, Restorer) and isinstance(m, Trainable)
    assert m.scale in (1, 2, 4) and m.scale == zoo.get_config(name).scale
    assert isinstance(m.sizes, SizeSpec) and m.sizes.multiple >= 1
    cfg = zoo.get_config(name)
    # a flow whose subnets pool globally (UPT-Flow as released) or whose encoder pools each input on its own
    # (SSFlow as released) cannot tile consistently, and says so
    global_pool = cfg.kind == "flow" and (
        cfg.flow.subnet == "cbam" or getattr(cfg.encoder_config, "pooling", "context") == "image"
    )
    assert isinstance(m.tiling, TilingSpec) and m.tiling.tileable == (not global_pool)
    assert (
        m.tiling.grid == m.sizes.multiple and m.tiling.min_tile % m.tiling.grid == 0
    )  # tiles on the pad grid
    assert m.tiling.min_tile >= 2 * m.tiling.margin, "a tile must be larger than the margins it discards"
    assert torch.float32 in m.dtypes
    assert isinstance(m.stochastic, bool) and m.needs_target is False
    assert m.stochastic == (zoo.get_config(name).kind == "flow")
    # the sampling default is the config's (a weight fact) for flows; deterministic models state nightflow's
    assert m.sample_temperature == (cfg.sample_temperature if m.stochastic else SAMPLE_TEMPERATURE)
    assert 0 < m.sample_temperature <= MAX_TEMPERATURE


@pytest.mark.parametrize("name", SMALL)
def test_every_small_zoo_model_pads_odd_sizes_and_restores_in_range(built, name):
    m = built[name]
    lq = _lq(*ODD)
    with torch.no_grad():
        ctx = m.context(lq)
        y = m.restore(lq, temperature=0.0, context=ctx)
        s = m.scale
        assert y.shape == (1, 3, s * ODD[0], s * ODD[1]) and y.dtype == torch.float32
        assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
        samples = m.sample(lq, 2, temperature=0.8, generator=torch.Generator().manual_seed(0), context=ctx)
        assert samples.shape == (2, 1, 3, s * ODD[0], s * ODD[1])
        if m.stochastic:
            assert not torch.equal(samples[0], samples[1]), "a flow's samples differ"
            hq = torch.rand(1, 3, s * ODD[0], s * ODD[1])
            z, _ = m.encode(hq, lq, ctx)
            assert float((m.decode(z, lq, ctx) - hq).abs().max()) < 1e-4
        else:
            assert torch.equal(samples[0], samples[1]), "a deterministic model's samples are copies"


@pytest.mark.parametrize("name", SMALL)
def test_every_small_trainable_gives_a_finite_loss_that_backpropagates(name):
    torch.manual_seed(0)
    m = build_any(zoo.get_config(name)).train()
    s = m.scale
    delta = torch.zeros(2, 3, 3)
    delta[:, 1, 1] = 1.0  # the known blur kernel that SSFlow's reblur term reads: none
    batch = {"lq": _lq(16, 16, n=2), "hq": torch.rand(2, 3, 16 * s, 16 * s), "blur_kernel": delta}
    m.initialize(batch)
    out = m.loss(batch, torch.Generator().manual_seed(0))
    assert "total" in out and torch.isfinite(out["total"])
    out["total"].backward()
    grads = [p.grad for p in m.parameters() if p.requires_grad]
    assert any(g is not None and float(g.abs().sum()) > 0 for g in grads)


@pytest.mark.parametrize("name", _baseline_names())
def test_every_baseline_states_the_contract_and_restores(name):
    scale = 2 if "bicubic" in name or "lanczos" in name or "bilinear" in name else 1
    b = get_baseline(name, scale)
    assert isinstance(b, Restorer) and not isinstance(b, Trainable)
    assert b.stochastic is False and b.has_exposure is False and not b.tiling.tileable
    lq = _lq(*ODD)
    target = torch.rand(1, 3, b.scale * ODD[0], b.scale * ODD[1])
    y = b.restore(lq, temperature=0.8, noise=None, context=b.context(lq), target=target)
    assert y.shape == (1, 3, b.scale * ODD[0], b.scale * ODD[1])
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    if not b.needs_target:
        assert b.sample(lq, 2).shape == (2, *y.shape)
    with pytest.raises(Exception, match="exposure"):
        b.context(lq, exposure=1.0)
