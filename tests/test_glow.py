"""The whole ConditionalGlow: exact inverse and log-det, Gaussian fit to a known density, temperature sampling,
extreme and bad inputs, and the likelihood conventions."""

from __future__ import annotations

import math

import pytest
import torch

from flow_helpers import brute_force_logdet
from nightflow.flow import ConditionalGlow, GlowConfig, bits_per_dim, llflow_bits_per_pixel
from nightflow.flow.likelihood import standard_normal_log_prob

VARIANTS = {
    "no_split_fixed_prior": dict(split=False, prior_channels=48),
    "split_learned_prior": dict(split=True, top_prior="learned", prior_channels=4),
    "split_no_prior": dict(split=True),
    "cross_cbam": dict(coupling="cross", subnet="cbam", prior_channels=48),
    "uneven_steps_uncond_level": dict(steps=[2, 1], cond_channels=[3, 0], split=True),
}


def make_flow(variant: str, seed: int = 0) -> ConditionalGlow:
    torch.manual_seed(seed)
    kwargs = dict(levels=2, steps=2, hidden=8, cond_channels=3) | VARIANTS[variant]
    return ConditionalGlow(GlowConfig(**kwargs))


def make_inputs(flow: ConditionalGlow, n: int, size: int = 8, gen: torch.Generator | None = None):
    x = torch.rand(n, 3, size, size, generator=gen)
    conds = []
    for level, ch in enumerate(flow.cfg.cond_per_level):
        s = size // 2 ** (level + 1)
        conds.append(torch.randn(n, ch, s, s, generator=gen) if ch else None)
    prior = None
    if flow.cfg.prior_channels:
        m = size // flow.multiple
        prior = torch.randn(n, flow.cfg.prior_channels, m, m, generator=gen) * 0.1
    return x, conds, prior


def _train(flow: ConditionalGlow, steps: int = 20) -> None:
    gen = torch.Generator().manual_seed(3)
    opt = torch.optim.Adam(flow.parameters(), lr=1e-2)
    flow.train()
    for _ in range(steps):
        x, conds, prior = make_inputs(flow, 8, gen=gen)
        loss = -flow.log_prob(x, conds, prior).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    flow.eval()


def _roundtrip(flow, x, conds, prior) -> float:
    with torch.no_grad():
        latents, _ = flow.encode(x, conds, prior)
        return float((flow.decode(latents, conds, prior) - x).abs().max())


def _flat_map(flow, conds, prior):
    """x ↦ all latents laid out as one image-shaped tensor (a permutation, so |det| is unchanged)."""
    return lambda t: flow.latents_to_image(flow.encode(t, conds, prior)[0])


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_glow_inverse_and_logdet_at_init_and_after_training(variant):
    flow = make_flow(variant)
    gen = torch.Generator().manual_seed(0)
    x, conds, prior = make_inputs(flow, 4, gen=gen)
    flow.train()
    flow.encode(x, conds, prior)  # ActNorm data init
    flow.eval()
    assert _roundtrip(flow, x, conds, prior) < 1e-4
    _train(flow)
    x, conds, prior = make_inputs(flow, 4, gen=gen)
    assert _roundtrip(flow, x, conds, prior) < 1e-4

    flow = flow.double()
    x1 = x[:1].double()  # 3·8·8 = 192 dimensions
    c1 = [None if c is None else c[:1].double() for c in conds]
    p1 = None if prior is None else prior[:1].double()
    _, logdet = flow.encode(x1, c1, p1)
    brute = brute_force_logdet(_flat_map(flow, c1, p1), x1)
    assert float(logdet[0].detach()) == pytest.approx(brute, rel=1e-6)


def test_latent_shapes_and_image_layout_roundtrip():
    flow = make_flow("split_learned_prior")
    shapes = flow.latent_shapes(8, 16)
    assert shapes == [(6, 4, 8), (24, 2, 4)]
    noise = torch.randn(2, 3, 8, 16)
    latents = flow.latents_from_image(noise)
    assert [tuple(z.shape[1:]) for z in latents] == shapes
    assert torch.equal(flow.latents_to_image(latents), noise)


def test_fit_known_conditional_gaussian_reaches_analytic_nll():
    """x = upsample(c) + A·ε (A mixes colour channels, same at every pixel): the flow can represent it exactly,
    so its NLL on fresh samples must reach the analytic conditional entropy."""
    torch.manual_seed(0)
    a = torch.tensor([[0.30, 0.00, 0.00], [0.15, 0.20, 0.00], [-0.10, 0.05, 0.10]])
    dims = 3 * 4 * 4
    entropy_nats = (
        dims / 3 * (0.5 * 3 * math.log(2 * math.pi * math.e) + torch.log(torch.diag(a).abs()).sum())
    )
    analytic_bpd = float(entropy_nats) / (dims * math.log(2))
    flow = ConditionalGlow(GlowConfig(levels=2, steps=2, hidden=16, cond_channels=[3, 0]))
    gen = torch.Generator().manual_seed(1)

    def batch(n):
        c = torch.randn(n, 3, 2, 2, generator=gen)
        eps = torch.randn(n, 3, 4, 4, generator=gen)
        x = torch.nn.functional.interpolate(c, scale_factor=2) + torch.einsum("ij,njhw->nihw", a, eps)
        return x, [c, None]

    opt = torch.optim.Adam(flow.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 600)
    flow.train()
    for _ in range(600):
        x, conds = batch(128)
        loss = -flow.log_prob(x, conds).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    flow.eval()
    with torch.no_grad():
        x, conds = batch(4096)
        bpd = float(bits_per_dim(flow.log_prob(x, conds), dims, quant=0).mean())
    assert abs(bpd - analytic_bpd) < 0.05, (bpd, analytic_bpd)


def test_temperature_zero_decodes_prior_mean_and_seeds_control_samples():
    flow = make_flow("no_split_fixed_prior")
    x, conds, prior = make_inputs(flow, 2, gen=torch.Generator().manual_seed(0))
    flow.train()
    flow.encode(x, conds, prior)
    flow.eval()
    with torch.no_grad():
        a = flow.sample(conds, prior, temperature=0.0, generator=torch.Generator().manual_seed(1))
        b = flow.sample(conds, prior, temperature=0.0, generator=torch.Generator().manual_seed(2))
        assert torch.equal(a, b)
        top = flow.encode(a, conds, prior)[0][-1]
        assert top.abs().max() < 1e-4  # standardised top latent is 0, i.e. z equals the prior mean
        s1 = flow.sample(conds, prior, temperature=0.8, generator=torch.Generator().manual_seed(7))
        s2 = flow.sample(conds, prior, temperature=0.8, generator=torch.Generator().manual_seed(7))
        s3 = flow.sample(conds, prior, temperature=0.8, generator=torch.Generator().manual_seed(8))
    assert torch.equal(s1, s2)
    assert (s1 - s3).abs().max() > 1e-3
    assert (s1 - a).abs().max() > 1e-3


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_glow_extreme_inputs_and_zero_conditioning_are_finite(variant):
    flow = make_flow(variant).eval()
    x, conds, prior = make_inputs(flow, 2)
    x = torch.where(torch.rand_like(x) > 0.5, 1e3, -1e3)
    conds = [None if c is None else torch.zeros_like(c) for c in conds]
    with torch.no_grad():
        latents, logdet = flow.encode(x, conds, prior)
        back = flow.decode(latents, conds, prior)
    assert all(torch.isfinite(z).all() for z in latents)
    assert torch.isfinite(logdet).all() and torch.isfinite(back).all()


def test_glow_bad_inputs_raise_value_errors_naming_tensor_and_shapes():
    flow = make_flow("no_split_fixed_prior")
    x, conds, prior = make_inputs(flow, 2)
    with pytest.raises(
        ValueError, match=r"conditioning\[1\]: expected shape \(2, 3, 2, 2\), got \(2, 3, 3, 3\)"
    ):
        flow.encode(x, [conds[0], torch.zeros(2, 3, 3, 3)], prior)
    with pytest.raises(ValueError, match=r"divisible by 4.*\(2, 3, 6, 8\)"):
        flow.encode(torch.rand(2, 3, 6, 8), conds, prior)
    with pytest.raises(ValueError, match="expected a list of 2 tensors"):
        flow.encode(x, conds[:1], prior)
    with pytest.raises(ValueError, match=r"prior: expected shape \(2, 48, 2, 2\)"):
        flow.encode(x, conds, None)
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="flow input: contains NaN"):
        flow.encode(bad, conds, prior)


def test_bits_per_dim_and_llflow_bits_per_pixel_conventions():
    log_p = torch.tensor([0.0])  # uniform density on [0, 1]^D
    assert float(bits_per_dim(log_p, 12, quant=256)) == pytest.approx(8.0)
    assert float(bits_per_dim(log_p, 12, quant=32)) == pytest.approx(5.0)
    z = torch.zeros(1, 3, 2, 2)
    lp = standard_normal_log_prob(z)
    assert float(lp) == pytest.approx(-0.5 * 12 * math.log(2 * math.pi))
    assert float(llflow_bits_per_pixel(lp, 2, 2)) == pytest.approx(3 * 0.5 * math.log2(2 * math.pi))


def test_sample_without_noise_sizes_from_the_first_conditioned_level():
    """Level 0 unconditioned, level 1 conditioned (at H/4) in a 3-level flow (2^levels = 8): the noise must be
    H×W, not 8·(H/4) (the size the old derivation took from the first conditioning tensor found)."""
    torch.manual_seed(0)
    flow = ConditionalGlow(GlowConfig(levels=3, steps=1, hidden=8, cond_channels=[0, 3, 0]))
    conds = [None, torch.randn(2, 3, 4, 4), None]
    assert flow.input_size(conds) == (2, 16, 16)
    assert flow.noise_shape(conds) == (2, 3, 16, 16)
    out = flow.sample(conds, temperature=0.5, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 3, 16, 16) and torch.isfinite(out).all()
    again = flow.sample(conds, temperature=0.5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    shapes = flow.latent_shapes(16, 16)
    assert [
        tuple(z.shape[1:]) for z in flow.latents_from_image(torch.zeros(flow.noise_shape(conds)))
    ] == shapes


def test_unknown_structure_names_from_python_raise():
    for key, bad in (("coupling", "affin"), ("subnet", "mlp"), ("top_prior", "gaussian")):
        with pytest.raises(ValueError, match=key):
            GlowConfig(**{key: bad})
