"""Inference folding (issue 15 item 3): ActNorm folded into its neighbouring convs changes nothing but rounding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import nightflow
from flow_helpers import brute_force_logdet
from nightflow.api import Model
from nightflow.baselines import get_baseline
from nightflow.flow import ActNorm, InvConv1x1
from nightflow.flow.base import FlowSequence
from nightflow.flow.fold import FoldedActNormInvConv, fold_, foldable, folded
from nightflow.flow.subnets import ConvNormAct, ZeroConv2d

pytestmark = pytest.mark.usefixtures("one_thread")


def _random_actnorm(c: int, g: torch.Generator) -> ActNorm:
    a = ActNorm(c)
    with torch.no_grad():
        a.bias.copy_(torch.randn(a.bias.shape, generator=g))
        a.log_scale.copy_(0.3 * torch.randn(a.log_scale.shape, generator=g))
    a.mark_initialized()
    return a


def test_folded_actnorm_invconv_is_the_same_bijection_with_an_exact_logdet():
    g = torch.Generator().manual_seed(0)
    seq = FlowSequence([_random_actnorm(4, g), InvConv1x1(4, generator=g)]).double().eval()
    layer = FoldedActNormInvConv(*seq.layers).double()
    x = torch.randn(2, 4, 3, 3, generator=g, dtype=torch.float64)
    y_ref, ld_ref = seq(x)
    y, ld = layer(x)
    torch.testing.assert_close(y, y_ref, atol=1e-6, rtol=1e-6)  # buffers are float32: float32 rounding
    torch.testing.assert_close(ld, ld_ref, atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(layer.inverse(y), x, atol=1e-5, rtol=1e-5)
    # the stored log-det is the true one of the folded map (brute-force Jacobian on one sample)
    exact = brute_force_logdet(lambda t: layer(t)[0], x[:1])
    torch.testing.assert_close(ld[0].item(), float(exact), atol=1e-4, rtol=1e-5)


def test_fold_replaces_every_actnorm_and_keeps_the_original_trainable():
    r = nightflow.load("lolisrflow-x2").restorer
    f = folded(r)
    assert not any(isinstance(m, (ActNorm, ConvNormAct, ZeroConv2d)) for m in f.modules())
    assert any(isinstance(m, ActNorm) for m in r.modules())  # the original is untouched
    assert sum(p.numel() for p in f.flow.parameters()) < sum(p.numel() for p in r.flow.parameters())
    assert fold_(f) == 0  # nothing left to fold


@pytest.mark.parametrize("name", ["lolisrflow-x2", "uptflow"])
def test_folded_models_restore_and_score_as_before(name):
    r = nightflow.load(name).restorer.eval()
    f = folded(r)
    g = torch.Generator().manual_seed(1)
    lq = torch.rand(1, 3, 64, 64, generator=g) * 0.25
    hq = torch.rand(1, 3, 64 * r.scale, 64 * r.scale, generator=g)
    with torch.inference_mode():
        ctx = r.context(lq)
        assert (f.restore(lq, context=ctx) - r.restore(lq, context=ctx)).abs().max().item() < 1e-5
        noise = torch.randn(hq.shape, generator=g)
        a = r.restore(lq, temperature=0.4, noise=noise, context=ctx)
        assert (f.restore(lq, temperature=0.4, noise=noise, context=ctx) - a).abs().max().item() < 1e-5
        torch.testing.assert_close(f.nll_bits_per_dim(hq, lq, ctx), r.nll_bits_per_dim(hq, lq, ctx))


def test_the_api_runs_a_folded_twin_kept_in_step_with_the_trainable_restorer():
    img = (np.random.default_rng(0).random((24, 32, 3)) * 60).astype(np.uint8)
    m = nightflow.load("lolisrflow-x1")
    twin = m.inference_restorer
    assert not foldable(twin) and foldable(m.restorer)  # the restorer keeps its ActNorms (trainable)
    assert m.inference_restorer is twin  # cached while the parameters do not change
    out = m.restore(img)
    with torch.no_grad():
        act = next(mod for mod in m.restorer.modules() if isinstance(mod, ActNorm))
        act.bias.add_(0.5)  # an in-place update (a training step) must reach the twin
    assert m.inference_restorer is not twin
    assert not np.array_equal(m.restore(img), out)
    classical = Model(get_baseline("gamma"))
    assert classical.inference_restorer is classical.restorer  # nothing to fold: used as it is


def test_api_compile_keeps_the_output():
    img = (np.random.default_rng(0).random((24, 32, 3)) * 60).astype(np.uint8)
    plain = nightflow.load("lolisrflow-x1").restore(img)
    compiled = nightflow.load("lolisrflow-x1").compile(backend="eager")  # the real inductor takes minutes
    assert np.array_equal(compiled.restore(img), plain)


@pytest.mark.parametrize("name, expected", [("uptflow", True), ("ssflow", True), ("lolisrflow-x2", False)])
def test_the_cpu_twin_is_channels_last_exactly_where_measured_faster_and_restores_the_same(
    name, expected, monkeypatch
):
    m = nightflow.load(name)
    if not expected:  # an encoder not measured faster in channels_last keeps the NCHW layout
        monkeypatch.setattr(type(m.restorer.encoder), "channels_last_inference", False)
    twin = m.inference_restorer
    conv = next(
        mod for mod in twin.modules() if isinstance(mod, torch.nn.Conv2d) and mod.kernel_size == (3, 3)
    )
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) is expected
    assert twin.channels_last_inference is expected
    lq = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2)) * 0.25
    with torch.inference_mode():
        ctx = m.restorer.context(lq)
        ref = m.restorer.eval().restore(lq, context=ctx)
        out = twin.restore(lq, context=ctx)
    assert (out - ref).abs().max().item() < 1e-5  # folding + memory layout: float32 rounding only
