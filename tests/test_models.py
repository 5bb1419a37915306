"""FlowRestorer and the zoo: sizes, exact inverse for every named config, likelihood, overfitting, sampling,
weights files and strict configs."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import nightflow
import nightflow.api
from nightflow.errors import ConfigError, UserError
from nightflow.models import ModelConfig, build_model
from nightflow.models.checkpoint import load_model, save_model
from nightflow.models.zoo import config_names, get_config


def tiny(scale: int, **flow_overrides) -> ModelConfig:
    cfg = get_config(f"lolisrflow-x{scale}")
    if flow_overrides:
        cfg = dataclasses.replace(cfg, flow=dataclasses.replace(cfg.flow, **flow_overrides))
    return cfg


@pytest.mark.parametrize("scale", [1, 2, 4])
@pytest.mark.parametrize("size", [(37, 53), (16, 16), (9, 4)])
def test_restore_output_is_scale_times_input_for_any_size(scale, size):
    model = build_model(tiny(scale, steps=1)).eval()
    lq = torch.rand(1, 3, *size)
    with torch.no_grad():
        out = model.restore(lq)
    assert out.shape == (1, 3, scale * size[0], scale * size[1])
    assert out.min() >= 0 and out.max() <= 1


FLOW_CONFIGS = [n for n in config_names() if isinstance(get_config(n), ModelConfig)]


def test_zoo_has_the_named_flow_configs():
    expected = {f"lolisrflow-x{s}-{size}" for s in (1, 2, 4) for size in ("tiny", "paper")} | {
        "llflow",
        "llflow-small",
    }
    assert expected <= set(FLOW_CONFIGS)


@pytest.mark.parametrize("name", FLOW_CONFIGS)
def test_decode_inverts_encode_for_every_named_config(name):
    model = build_model(get_config(name))
    s = model.scale
    lq = torch.rand(1, 3, 8 if s > 1 else 16, 12 if s > 1 else 24)
    hq = torch.rand(1, 3, s * lq.shape[2], s * lq.shape[3])
    model.initialize({"hq": hq, "lq": lq})  # ActNorm data init, so the layers are not at the identity
    model.eval()
    with torch.no_grad():
        latents, logdet = model.encode(hq, lq)
        back = model.decode(latents, lq)
    assert torch.isfinite(logdet).all()
    assert (back - hq).abs().max() < 1e-4


def test_encode_decode_pad_odd_sizes_and_crop_back():
    model = build_model(tiny(4, steps=1))
    lq, hq = torch.rand(2, 3, 37, 53), torch.rand(2, 3, 148, 212)
    model.initialize({"hq": hq, "lq": lq})
    model.eval()
    with torch.no_grad():
        back = model.decode(model.encode(hq, lq)[0], lq)
    assert back.shape == hq.shape and (back - hq).abs().max() < 1e-4


def test_nll_bits_per_dim_is_finite_and_differentiable():
    model = build_model(tiny(2, steps=1))
    lq, hq = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 16, 16)
    bpd = model.nll_bits_per_dim(hq, lq)
    assert bpd.shape == (2,) and torch.isfinite(bpd).all()
    bpd.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_nll_bits_per_dim_normalises_by_the_padded_dimensions_it_was_computed_over():
    """A 37×53 input at ×1 is padded to the model's multiple; its NLL is that of the padded pair, so it is the
    same number as the NLL of the explicitly padded pair (same context), not that number × padded/unpadded."""
    model = build_model(tiny(1, steps=1))
    lq, hq = torch.rand(1, 3, 37, 53), torch.rand(1, 3, 37, 53)
    model.initialize({"hq": hq, "lq": lq})
    model.eval()
    m = model.pad_multiple
    assert 37 % m and 53 % m  # the case under test: padding happens
    ph, pw = -37 % m, -53 % m
    lq_p = torch.nn.functional.pad(lq, (0, pw, 0, ph), mode="replicate")
    hq_p = torch.nn.functional.pad(hq, (0, pw, 0, ph), mode="replicate")
    ctx = model.context(lq)
    with torch.no_grad():
        odd = model.nll_bits_per_dim(hq, lq, ctx)
        padded = model.nll_bits_per_dim(hq_p, lq_p, ctx)
    assert torch.allclose(odd, padded, rtol=1e-5)
    assert not hasattr(model, "log_prob")  # the restorer's likelihood is named for what it is


def test_overfitting_one_pair_reduces_nll_and_l1_by_a_large_factor():
    torch.manual_seed(0)
    model = build_model(tiny(2, steps=2, hidden=16))
    y, x = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 32), indexing="ij")
    hq = torch.stack([0.2 + 0.6 * x, 0.3 + 0.5 * y, 0.5 + 0.3 * x * y]).unsqueeze(0)
    lq = torch.nn.functional.avg_pool2d(hq, 2) * 0.1  # dark and ×2 smaller
    gen = torch.Generator().manual_seed(0)
    # LLFlow's learning rate and gradient clipping: one image is an extreme target (the NLL wants to collapse the
    # coupling scales, which makes the reverse pass of the L1 term explode at higher rates without clipping)
    opt = torch.optim.Adam(model.parameters(), lr=5e-4)
    model.train()
    history = []
    for _ in range(200):
        terms = model.loss({"hq": hq, "lq": lq}, gen)
        opt.zero_grad()
        terms["total"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        history.append((float(terms["nll"].detach()), float(terms["l1"].detach())))
    nll0, l10 = history[0]
    nll_end = sum(h[0] for h in history[-10:]) / 10
    l1_end = sum(h[1] for h in history[-10:]) / 10
    assert nll_end < nll0 / 2, (nll0, nll_end)
    assert l1_end < l10 / 5, (l10, l1_end)


def test_temperature_zero_is_deterministic_and_samples_differ():
    model = build_model(tiny(2, steps=1))
    lq = torch.rand(1, 3, 8, 8)
    model.initialize({"hq": torch.rand(1, 3, 16, 16), "lq": lq})
    model.eval()
    with torch.no_grad():
        a = model.restore(lq, temperature=0.0, generator=torch.Generator().manual_seed(1))
        b = model.restore(lq, temperature=0.0, generator=torch.Generator().manual_seed(2))
        samples = model.sample(lq, n=4, temperature=0.8, generator=torch.Generator().manual_seed(0))
        again = model.sample(lq, n=4, temperature=0.8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    assert samples.shape == (4, 1, 3, 16, 16)
    assert torch.equal(samples, again)
    flat = samples.reshape(4, -1)
    for i in range(4):
        for j in range(i + 1, 4):
            assert (flat[i] - flat[j]).abs().max() > 1e-3


def test_uncertainty_is_zero_at_temperature_zero_and_positive_above():
    model = build_model(tiny(2, steps=1))
    model.initialize({"hq": torch.rand(1, 3, 16, 16), "lq": torch.rand(1, 3, 8, 8)})
    api = nightflow.api.Model(model.eval())
    img = (torch.rand(8, 8, 3).numpy() * 255).astype("uint8")
    assert float(abs(api.uncertainty(img, n=3, temperature=0.0)).max()) == 0.0
    assert float(api.uncertainty(img, n=3, temperature=0.8).max()) > 0.0


def test_weights_file_round_trip_rebuilds_the_same_model(tmp_path):
    cfg = tiny(2, steps=1)
    model = build_model(cfg)
    lq = torch.rand(1, 3, 8, 8)
    model.initialize({"hq": torch.rand(1, 3, 16, 16), "lq": lq})
    model.eval()
    path = save_model(model, tmp_path / "m.safetensors", cfg, {"note": "test"})
    loaded = load_model(path)
    with torch.no_grad():
        assert torch.equal(model.restore(lq), loaded.restore(lq))
    loaded_api = nightflow.load(str(path))
    assert loaded_api.scale == 2
    assert loaded_api.restorer.cfg == cfg


def test_zoo_name_without_weights_says_so_and_unknown_names_fail_clearly():
    with pytest.raises(UserError, match="no bundled weights"):
        nightflow.load("llflow")
    with pytest.raises(UserError, match="unknown model 'lolisrflow-x3'"):
        nightflow.load("lolisrflow-x3")
    with pytest.raises(UserError, match="not found"):
        nightflow.load("runs/missing/model.safetensors")


def test_zoo_variants_share_their_base_architecture_and_bundled_files_store_their_zoo_config():
    from nightflow.config import to_dict
    from nightflow.models import zoo
    from nightflow.models.checkpoint import load_config

    variants = [n for n in config_names() if zoo.variant_base(n)]
    assert {f"lolisrflow-x{s}-tiny-jpeg" for s in (1, 2, 4)} <= set(variants)
    for name in variants:
        base = to_dict(get_config(zoo.variant_base(name)))
        mine = to_dict(get_config(name))
        assert mine["name"] == name and mine["description"] != base["description"]
        assert (
            {"name", "description"}
            <= {k for k in mine if mine[k] != base[k]}
            <= {"name", "description"} | zoo.WEIGHT_FACTS
        )
        assert zoo.canonical(name.replace("-tiny", "")) == name  # the short alias, as for the bases
    for name in config_names():
        if zoo.weights_path(name).is_file():  # what `nightflow models` says is what the file holds
            assert to_dict(load_config(zoo.weights_path(name))) == to_dict(get_config(name)), name


@pytest.mark.parametrize("bad", [0.0, -0.2, 2.5, float("nan")])
def test_a_sample_temperature_outside_0_to_the_maximum_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="sample_temperature must be in"):
        dataclasses.replace(get_config("lolisrflow-x2-tiny"), sample_temperature=bad)


def test_a_variant_may_set_only_its_name_description_and_facts_measured_on_its_weights(tmp_path, monkeypatch):
    from nightflow.models import zoo

    monkeypatch.setattr(zoo, "CONFIG_DIR", tmp_path)
    (tmp_path / "base.yaml").write_text((zoo.PACKAGE / "configs" / "lolisrflow-x1-tiny.yaml").read_text())
    (tmp_path / "ok.yaml").write_text("variant_of: base\nname: ok\ndescription: other weights\n")
    assert get_config("ok").flow == get_config("base").flow and get_config("ok").name == "ok"
    (tmp_path / "fp32.yaml").write_text(
        "variant_of: base\nname: fp32\nbf16_inference: false\ntile_margin: 20\nsample_temperature: 0.3\n"
    )
    assert get_config("base").bf16_inference and get_config("base").tile_margin == 0
    assert get_config("base").sample_temperature == 0.6  # lolisrflow-x1-tiny's, measured on its weights
    fp32 = get_config("fp32")  # bf16 moved these weights too far: their base stays as it is
    assert not fp32.bf16_inference and fp32.tile_margin == 20 and fp32.flow == get_config("base").flow
    assert fp32.sample_temperature == 0.3
    cases = {
        "wider": (
            "variant_of: base\nname: wider\nflow: {hidden: 64}\n",
            "may set only name, description .*not flow",
        ),
        "orphan": ("variant_of: nothing\nname: orphan\n", "unknown model 'nothing'"),
        "chain": ("variant_of: ok\nname: chain\n", "'ok' is itself a variant"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / f"{name}.yaml").write_text(text)
        with pytest.raises(ConfigError, match=message):
            get_config(name)


def test_misspelt_yaml_key_is_an_error_naming_the_key(tmp_path):
    from nightflow.config import load_config

    path = tmp_path / "bad.yaml"
    path.write_text("scale: 2\nflow:\n  levles: 3\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'flow.levles' \(did you mean 'levels'\?\)"):
        load_config(ModelConfig, path)
    path.write_text("scale: 3\n")
    with pytest.raises(ConfigError, match="scale must be 1, 2 or 4"):
        load_config(ModelConfig, path)


def test_wrong_hq_size_names_the_expected_shape():
    model = build_model(tiny(2, steps=1))
    with pytest.raises(ValueError, match=r"hq: expected shape \(1, 3, 16, 16\)"):
        model.encode(torch.rand(1, 3, 12, 16), torch.rand(1, 3, 8, 8))
