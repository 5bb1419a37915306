"""One registry mechanism for everything looked up by name: duplicates refused, unknown names list the known ones,
every registry filled and every registered component builds; configs typed by the registries, strictly."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from nightflow.baselines import CLEANERS, ENHANCERS, INTERPOLATORS, get_baseline, list_baselines
from nightflow.config import from_dict, to_dict
from nightflow.data import degrade as deg
from nightflow.data.datasets import DATASET_FORMATS, DataConfig
from nightflow.encoders import ENCODERS, MPCTConfig, build_encoder
from nightflow.errors import ConfigError
from nightflow.metrics import METRICS
from nightflow.models import MODEL_KINDS, FlowSpec, ModelConfig, RegressionConfig, build_any
from nightflow.models.zoo import config_names, get_config, parse_model_config
from nightflow.registry import Registry
from nightflow.train.config import RunConfig, run_config_from_dict

REGISTRIES = {
    "encoder": ENCODERS,
    "model kind": MODEL_KINDS,
    "enhancer": ENHANCERS,
    "denoise/deblur step": CLEANERS,
    "interpolator": INTERPOLATORS,
    "metric": METRICS,
    "degradation preset": deg.PRESETS,
    "dataset format": DATASET_FORMATS,
}


def test_duplicate_names_are_refused_and_unknown_names_list_the_known_ones():
    reg: Registry[int] = Registry("widget")
    reg.add("a", 1)

    @reg.register("b")
    def b() -> None: ...

    with pytest.raises(ValueError, match="widget 'a' is already registered"):
        reg.add("a", 2)
    with pytest.raises(ValueError, match="non-empty"):
        reg.add(" c", 3)
    with pytest.raises(ConfigError, match=r"^model\.widget: unknown widget 'z'; choose one of: a, b$"):
        reg.get("z", "model.widget")
    with pytest.raises(ConfigError, match="choose one of: a, b"):
        reg["z"]
    assert reg["a"] == 1 and reg.get("b") is b and list(reg) == ["a", "b"] and "a" in reg and len(reg) == 2


@pytest.mark.parametrize("kind", list(REGISTRIES))
def test_every_registry_is_filled_and_names_its_kind(kind):
    reg = REGISTRIES[kind]
    assert isinstance(reg, Registry) and reg.kind == kind and len(reg) > 0
    with pytest.raises(ConfigError, match=f"unknown {kind} 'no-such-name'; choose one of: {reg.names()[0]}"):
        reg.get("no-such-name")
    with pytest.raises(ValueError, match="already registered"):
        reg.add(reg.names()[0], reg[reg.names()[0]])


@pytest.mark.parametrize("name", ENCODERS.names())
def test_every_registered_encoder_builds_from_its_default_config(name):
    cls, cfg_cls = ENCODERS[name]
    with torch.device("meta"):  # the default (paper) sizes allocate nothing here
        enc = build_encoder(name, None, cls.supported_scales[-1], 3)
    assert type(enc) is cls and len(enc.out_channels) == 3
    assert dataclasses.is_dataclass(cfg_cls) and not dataclasses.fields(cfg_cls) or cfg_cls() == cfg_cls()


@pytest.mark.parametrize("kind", MODEL_KINDS.names())
def test_every_model_kind_builds_and_its_config_round_trips(kind):
    cfg_cls, build = MODEL_KINDS[kind]
    cfg = cfg_cls()
    assert cfg.kind == kind
    with torch.device("meta"):
        model = build(cfg)
    assert isinstance(model, torch.nn.Module) and model.scale == cfg.scale
    assert parse_model_config(to_dict(cfg)) == cfg


@pytest.mark.parametrize("name", list(list_baselines()))
def test_every_registered_baseline_builds_and_restores(name):
    scale = 2 if name in INTERPOLATORS else 1
    model = get_baseline(name, scale)
    lq = torch.rand(1, 3, 16, 16) * 0.2
    target = torch.rand(1, 3, 16 * scale, 16 * scale) if model.needs_target else None
    out = model.restore(lq, target=target)
    assert out.shape == (1, 3, 16 * scale, 16 * scale) and 0 <= float(out.min()) <= float(out.max()) <= 1


@pytest.mark.parametrize("name", METRICS.names())
def test_every_registered_metric_states_its_convention(name):
    metric = METRICS[name]
    assert metric.description and callable(metric.fn)


@pytest.mark.parametrize("name", ["psnr", "ssim", "lr_psnr", "ev_error"])
def test_cheap_metrics_run(name):
    from nightflow.metrics import compute_metrics

    pred, gt = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    assert name in compute_metrics(pred, gt, name, scale=2)


@pytest.mark.parametrize("name", deg.PRESETS.names())
def test_every_degradation_preset_degrades(name):
    cfg = deg.get_preset(name)
    assert cfg is not deg.PRESETS[name] and cfg == deg.PRESETS[name]  # a copy: callers may replace fields
    scale = cfg.scales[-1]
    hq = torch.rand(3, 16 * scale, 16 * scale)
    lq, params = deg.degrade(hq, scale, name, torch.Generator().manual_seed(0))
    assert lq.shape == (3, 16, 16) and params.preset == name


@pytest.mark.parametrize("name", DATASET_FORMATS.names())
def test_every_dataset_format_is_a_data_config_format(name):
    assert DataConfig(format=name).format == name and callable(DATASET_FORMATS[name])
    with pytest.raises(ConfigError, match="data.format: unknown dataset format"):
        DataConfig(format=name + "x")


# ------------------------------------------------------------------------------------------- typed configs
def test_encoder_config_is_the_encoders_dataclass_chosen_by_its_name():
    for name in config_names():
        cfg = get_config(name)
        if hasattr(cfg, "encoder_config"):
            assert isinstance(cfg.encoder_config, ENCODERS[cfg.encoder][1]), name
            assert parse_model_config(to_dict(cfg)) == cfg, name  # what a weights file stores round-trips
    assert isinstance(ModelConfig(encoder="rrdb").encoder_config, ENCODERS["rrdb"][1])  # None: its defaults
    assert ModelConfig(encoder_config={"dims": [8, 16], "heads": [1, 2]}).encoder_config.dims == [8, 16]


def test_python_construction_is_as_strict_as_yaml():
    with pytest.raises(
        ConfigError, match="unknown encoder 'glow'; choose one of: mpct, msformer, oatt_unet, rrdb"
    ):
        ModelConfig(encoder="glow")
    with pytest.raises(ConfigError, match="encoder_config.dimz"):
        ModelConfig(encoder_config={"dimz": [8]})
    with pytest.raises(ConfigError, match="RRDBConfig"):
        ModelConfig(encoder="rrdb", encoder_config=MPCTConfig())
    with pytest.raises(ConfigError, match="encoder_config.dimz"):
        RegressionConfig(encoder_config={"dimz": [8]})
    with pytest.raises(ConfigError, match="flow.coupling"):
        ModelConfig(flow=FlowSpec(coupling="affin"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="flow.subnet"):
        FlowSpec(subnet="mlp")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="prior"):
        ModelConfig(prior="gaussian")  # type: ignore[arg-type]
    cfg = get_config("lolisrflow-x2-tiny")
    with pytest.raises(ConfigError, match="MSFormerConfig"):
        dataclasses.replace(cfg, encoder="msformer")  # the old encoder's config does not fit the new encoder


def test_yaml_encoder_config_errors_name_the_key_path():
    data = to_dict(get_config("lolisrflow-x2-tiny"))
    data["encoder_config"]["windw"] = 8
    with pytest.raises(ConfigError, match=r"unknown config key 'model\.encoder_config\.windw'"):
        parse_model_config(data, "model")
    data = to_dict(get_config("lolisrflow-x2-tiny")) | {"encoder": "mpc"}
    with pytest.raises(ConfigError, match=r"model\.encoder: unknown encoder 'mpc'"):
        parse_model_config(data, "model")


def test_run_config_model_is_the_kind_its_data_names():
    data = {"model": "lolisrflow-x2-tiny", "data": {"format": "paired", "root": "x"}}
    cfg = run_config_from_dict(data, ["model=regression-x2-tiny", "model.head_blocks=1"])
    assert (
        isinstance(cfg, RunConfig) and isinstance(cfg.model, RegressionConfig) and cfg.model.head_blocks == 1
    )
    assert isinstance(run_config_from_dict(data).model, ModelConfig)
    with pytest.raises(ConfigError, match=r"model\.kind: unknown model kind 'flw'"):
        run_config_from_dict({"model": {"kind": "flw"}, "data": {}})
    with pytest.raises(ConfigError, match="model: expected a mapping"):
        run_config_from_dict({"model": 5, "data": {}})
    assert from_dict(RunConfig, {"model": cfg.model, "data": {}}).model is cfg.model  # typed values pass


def test_a_built_model_is_the_kind_its_config_names():
    cfg = get_config("regression-x2-tiny")
    with torch.device("meta"):
        assert type(build_any(cfg)).__name__ == "JointRegressor"
