"""Losses as registered terms (issue 10 item 2): ``nightflow.losses``.

The pinned values below were computed with the hard-wired ``loss()`` methods *before* the losses package
existed (``python tests/test_losses.py`` prints them); the registered terms must reproduce them, so a
refactor of the losses can never silently change what a bundled recipe trains.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from nightflow.config import from_dict, load_yaml, to_dict
from nightflow.errors import ConfigError
from nightflow.losses import LOSSES, LossSet, LossSpec, MissingBatchKeyError
from nightflow.models import build_any
from nightflow.models.checkpoint import CONFIG_KEY, load_config, read_metadata
from nightflow.models.config import ModelConfig, flow_losses
from nightflow.models.zoo import CONFIG_DIR, WEIGHTS_DIR, config_names, get_config, parse_model_config


@pytest.fixture(autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# ----------------------------------------------------------------------------------------------- exactness
# case → (zoo config, changes to its YAML data, batch keys, lr size, generator seed)
LEGACY_COLOR = {"l1_weight": 1.5, "color_weight": 0.5, "exposure_weight": 0.25}  # old-style keys, on purpose
CASES = {
    "lolisrflow-x2-tiny": ("lolisrflow-x2-tiny", {}, ("ctx_thumb", "log2_gain"), (12, 10), 0),
    # coin < train_gt_ratio: the GT colour map as prior mean; no log2_gain: the oracle gain is derived from hq
    "lolisrflow-x2-tiny-gt-oracle": ("lolisrflow-x2-tiny", {"train_gt_ratio": 1.0}, (), (12, 10), 3),
    "lolisrflow-x2-tiny-legacy-color": (
        "lolisrflow-x2-tiny",
        LEGACY_COLOR,
        ("ctx_thumb", "log2_gain"),
        (8, 8),
        1,
    ),
    # pinned with coupling hidden 32, before llflow-small became the released width (64, issue 15): the old flow
    "llflow-small": (
        "llflow-small",
        {"flow": {"levels": 3, "steps": 4, "hidden": 32}},
        ("ctx_thumb",),
        (16, 12),
        0,
    ),
    "regression-x2-tiny": ("regression-x2-tiny", {}, ("ctx_thumb", "log2_gain"), (12, 10), 0),
    "regression-x2-tiny-legacy-color": (
        "regression-x2-tiny",
        {"l1_weight": 2.0, "color_weight": 0.5, "exposure_weight": 0.3},
        ("ctx_thumb", "log2_gain"),
        (9, 7),
        0,
    ),
    "sequential-x2-tiny": ("sequential-x2-tiny", {}, (), (12, 10), 0),
}

# today's loss dicts (key order included), printed by `python tests/test_losses.py` on the pre-refactor code
PINNED: dict[str, dict[str, float]] = {
    "llflow-small": {
        "nll": -0.5878037214279175,
        "total": -0.5878037214279175,
        "grad_norm": 7.747277137816688,
    },
    "lolisrflow-x2-tiny": {
        "nll": 7.977506637573242,
        "l1": 0.24883005023002625,
        "exposure": 1.1963415145874023,
        "total": 8.470386505126953,
        "grad_norm": 3.5963369600847845,
    },
    "lolisrflow-x2-tiny-gt-oracle": {
        "nll": 7.99765682220459,
        "l1": 0.24883005023002625,
        "exposure": 0.5894255638122559,
        "total": 8.429844856262207,
        "grad_norm": 3.6604947405149413,
    },
    "lolisrflow-x2-tiny-legacy-color": {
        "nll": 7.472165107727051,
        "l1": 0.23638997972011566,
        "color": 0.12251291424036026,
        "exposure": 1.3011534214019775,
        "total": 8.213294982910156,
        "grad_norm": 8.131906715389148,
    },
    "regression-x2-tiny": {
        "l1": 0.5112001299858093,
        "exposure": 1.1963415145874023,
        "total": 0.6308342814445496,
        "grad_norm": 1.1766541916359579,
    },
    "regression-x2-tiny-legacy-color": {
        "l1": 0.5090019702911377,
        "color": 0.12687167525291443,
        "exposure": 1.2920410633087158,
        "total": 1.4690520763397217,
        "grad_norm": 2.5363720588658536,
    },
    "sequential-x2-tiny": {
        "enhance_l1": 0.5031622648239136,
        "sr_l1": 0.22567850351333618,
        "l1": 0.4676431119441986,
        "total": 0.7288407683372498,
        "grad_norm": 2.2884502379079548,
    },
}


def case_config(case: str):
    name, changes, _, _, _ = CASES[case]
    data = load_yaml(CONFIG_DIR / f"{name}.yaml")
    if any(k.endswith("_weight") for k in changes) and "losses" in data:
        del data["losses"]  # the legacy keys stand for the whole loss list
    data.update(changes)
    if data.get("kind", "flow") == "flow":  # pinned before the zoo's flows got a scale floor (a flow change,
        data["flow"] = {**data["flow"], "scale_floor": 0.0}  # not a loss change): pin the loss terms alone
    return parse_model_config(data)


def case_batch(case: str, scale: int) -> dict[str, torch.Tensor]:
    from nightflow.context import oracle_log2_gain, thumbnail

    _, _, keys, (h, w), _ = CASES[case]
    g = torch.Generator().manual_seed(1234)
    hq = torch.rand(2, 3, scale * h, scale * w, generator=g)
    lq = (torch.nn.functional.avg_pool2d(hq, scale) if scale > 1 else hq) * 0.2
    lq = (lq + 0.02 * torch.rand(lq.shape, generator=g)).clamp(0, 1)
    batch = {"lq": lq, "hq": hq}
    whole = lq * 1.1  # the "whole image" the crops came from: not the crop itself
    if "ctx_thumb" in keys:
        batch["ctx_thumb"] = thumbnail(whole.clamp(0, 1))
    if "log2_gain" in keys:
        batch["log2_gain"] = oracle_log2_gain(lq, hq) + 0.1
    return batch


def case_losses(case: str) -> dict[str, float]:
    cfg = case_config(case)
    model = build_any(cfg)
    batch = case_batch(case, cfg.scale)
    model.initialize(batch)
    model.train()
    gen = torch.Generator().manual_seed(CASES[case][4])
    terms = model.loss(batch, gen)
    terms["total"].backward()
    out = {k: float(v.detach()) for k, v in terms.items()}
    grads = [p.grad.double().square().sum() for p in model.parameters() if p.grad is not None]
    out["grad_norm"] = float(torch.stack(grads).sum().sqrt())  # not a loss key: the gradient's size
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_registered_terms_reproduce_the_hard_wired_losses(case):
    got = case_losses(case)
    want = PINNED[case]
    assert list(got) == list(want)  # the same log.csv columns, in the same order (+ grad_norm)
    for key, value in want.items():
        tol = 1e-5 if key == "grad_norm" else 1e-6  # a sum over every parameter's gradient
        assert math.isclose(got[key], value, rel_tol=tol, abs_tol=1e-9), (case, key, got[key], value)


# ----------------------------------------------------------------------------------------------- configs
def _flow_data(**changes):
    data = load_yaml(CONFIG_DIR / "lolisrflow-x2-tiny.yaml")
    data.update(changes)
    return data


def test_the_registry_names_every_term_with_its_batch_needs():
    assert {"nll", "l1", "color_map_l1", "exposure", "enhance_l1", "sr_l1"} <= set(LOSSES.names())
    for name, cls in LOSSES.items():
        assert cls.reads, name  # every term says what it reads from the model
    assert LOSSES.get("l1").needs == ("hq",) and LOSSES.get("nll").needs == ("hq",)
    assert LOSSES.get("exposure").needs == (("log2_gain", "hq"),)  # the oracle gain, or hq to derive it


def test_unknown_or_misplaced_terms_are_one_line_config_errors():
    with pytest.raises(
        ConfigError,
        match=r"unknown loss term 'perceptual'; choose one of: color_consistency, color_map_l1, .*nll",
    ) as e:
        parse_model_config(_flow_data(losses=[{"name": "perceptual", "weight": 1.0}]))
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="unknown config key 'losses\\[0\\].wieght'"):
        parse_model_config(_flow_data(losses=[{"name": "l1", "wieght": 1.0}]))
    with pytest.raises(ConfigError, match="must be a finite number >= 0"):
        parse_model_config(_flow_data(losses=[{"name": "l1", "weight": -1.0}]))
    with pytest.raises(ConfigError, match="listed twice"):
        parse_model_config(_flow_data(losses=[{"name": "l1"}, {"name": "l1", "weight": 2.0}]))
    with pytest.raises(ConfigError, match="no term has a weight > 0"):
        parse_model_config(_flow_data(losses=[{"name": "l1", "weight": 0.0}]))
    reg = load_yaml(CONFIG_DIR / "regression-x2-tiny.yaml")
    with pytest.raises(
        ConfigError, match="term 'nll' reads the model's nll, which a regression model does not"
    ):
        parse_model_config({**reg, "losses": [{"name": "l1"}, {"name": "nll"}]})
    with pytest.raises(ConfigError, match="needs l1 with a weight > 0"):
        parse_model_config({**reg, "losses": [{"name": "exposure"}]})
    seq = load_yaml(CONFIG_DIR / "sequential-x2-tiny.yaml")
    with pytest.raises(ConfigError, match="each of the two networks"):
        parse_model_config({**seq, "losses": [{"name": "enhance_l1"}]})
    with pytest.raises(ConfigError, match="a sequential model does not compute"):
        parse_model_config(
            {**seq, "losses": [{"name": "enhance_l1"}, {"name": "sr_l1"}, {"name": "exposure"}]}
        )


def test_zoo_configs_list_todays_losses_and_round_trip():
    assert get_config("lolisrflow-x2-tiny").losses == flow_losses(l1=1.5)
    assert [(s.name, s.weight) for s in get_config("llflow-small").losses] == [("nll", 1.0)]
    assert [(s.name, s.weight) for s in get_config("regression-x2-tiny").losses] == [
        ("l1", 1.0),
        ("exposure", 0.1),
    ]
    assert [(s.name, s.weight) for s in get_config("sequential-x2-tiny").losses] == [
        ("enhance_l1", 1.0),
        ("sr_l1", 1.0),
        ("l1", 0.0),
    ]
    assert ModelConfig().losses == flow_losses()  # the dataclass default: LoLiSRFlow's loss
    for name in config_names():
        cfg = get_config(name)
        data = to_dict(cfg)
        assert not {"l1_weight", "color_weight", "exposure_weight", "enhance_weight", "sr_weight"} & set(data)
        assert from_dict(type(cfg), data) == cfg


def test_stored_configs_with_the_retired_weight_keys_convert_on_load():
    for path in sorted(WEIGHTS_DIR.glob("*.safetensors")):  # the bundled weights predate `losses`
        stored = json.loads(read_metadata(path)[CONFIG_KEY])
        cfg = load_config(path)
        if "l1_weight" in stored:
            assert "losses" not in stored
            want = flow_losses(stored["l1_weight"], stored["color_weight"], stored["exposure_weight"])
            assert cfg.losses == want
        else:  # written since: the list itself
            assert cfg.losses == [LossSpec(**spec) for spec in stored["losses"]]
    old = _flow_data(l1_weight=0.0, color_weight=0.0, exposure_weight=0.1)
    del old["losses"]
    assert [(s.name, s.weight) for s in parse_model_config(old).losses] == [("nll", 1.0), ("exposure", 0.1)]
    old_seq = {**load_yaml(CONFIG_DIR / "sequential-x2-tiny.yaml"), "enhance_weight": 2.0, "sr_weight": 0.5}
    del old_seq["losses"]
    assert [(s.name, s.weight) for s in parse_model_config(old_seq).losses] == [
        ("enhance_l1", 2.0),
        ("sr_l1", 0.5),
        ("l1", 0.0),
    ]
    with pytest.raises(ConfigError, match="give either 'losses' or the retired l1_weight"):
        parse_model_config(_flow_data(l1_weight=1.5))
    with pytest.raises(ConfigError, match="expected a number"):
        parse_model_config({**{k: v for k, v in _flow_data().items() if k != "losses"}, "l1_weight": "much"})


def test_a_run_folder_written_before_losses_still_resumes(tmp_path):
    import yaml

    from nightflow.train.config import run_config_to_dict
    from nightflow.train.distributed import DistContext
    from nightflow.train.run import load_recipe, resolve_run

    recipe = "lolisrflow-x2-tiny-synthetic"
    saved = run_config_to_dict(load_recipe(recipe))
    del saved["model"]["losses"]
    saved["model"].update(l1_weight=1.5, color_weight=0.0, exposure_weight=0.1)  # what old runs wrote
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    cfg, _, resuming = resolve_run(None, [], None, run, DistContext())
    assert resuming and cfg.model.losses == flow_losses(l1=1.5)
    resolve_run(recipe, [], None, run, DistContext())  # the same recipe: no "differs from" error


# ----------------------------------------------------------------------------------------------- behaviour
def _tiny_flow(losses):
    return build_any(
        parse_model_config(
            _flow_data(
                losses=losses,
                encoder_config={
                    "dims": [8, 16],
                    "heads": [1, 2],
                    "cond_channels": 8,
                    "exposure": True,
                },
            )
        )
    )


def test_an_l1_only_flow_trains_without_the_forward_pass():
    model = _tiny_flow([{"name": "l1", "weight": 1}])
    batch = case_batch("lolisrflow-x2-tiny", 2)
    model.initialize(batch)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    for _ in range(2):
        terms = model.loss(batch, gen)
        assert list(terms) == ["l1", "total"] and torch.isfinite(terms["total"])
        opt.zero_grad()
        terms["total"].backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.flow.parameters())
        opt.step()
    assert torch.equal(gen.get_state(), state)  # no GT-prior coin, no dequantisation noise: no NLL pass
    out = model.loss_outputs(batch, gen)
    LossSet(model.cfg.losses)(out, batch)
    assert out.computed("prediction") and not out.computed("nll")


def test_an_nll_only_flow_never_runs_the_reverse_pass():
    model = build_any(get_config("llflow-small"))
    batch = case_batch("llflow-small", 1)
    model.initialize(batch)
    out = model.loss_outputs(batch, torch.Generator().manual_seed(0))
    terms = LossSet(model.cfg.losses)(out, batch)
    assert list(terms) == ["nll", "total"]
    assert out.computed("nll") and not out.computed("prediction")


def test_a_term_needing_hq_on_unpaired_data_is_a_one_line_error(tmp_path):
    model = build_any(get_config("lolisrflow-x2-tiny"))
    unpaired = {"lq": torch.rand(2, 3, 8, 8), "name": ["a.png", "b.png"]}
    with pytest.raises(
        MissingBatchKeyError, match="loss term 'nll' needs batch key 'hq', which this batch lacks"
    ) as e:
        model.loss(unpaired)
    assert "\n" not in str(e.value) and "drop 'nll' from model.losses" in str(e.value)
    # the trainer says so before its data-dependent init reads the batch
    from nightflow.train.config import TrainConfig
    from nightflow.train.trainer import Trainer

    class Unpaired(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return {"lq": torch.rand(3, 8, 8), "name": f"{i}.png"}

    cfg = TrainConfig(max_steps=1, batch_size=2, device="cpu", progress=False, schedule="constant")
    trainer = Trainer(model, Unpaired(), cfg, tmp_path / "run", model_config=model.cfg)
    with pytest.raises(MissingBatchKeyError, match="'nll' needs batch key 'hq'"):
        trainer.fit()


def test_a_target_free_term_trains_on_unpaired_data():
    # the exposure head learns from the oracle gain alone: no hq anywhere
    model = _tiny_flow([{"name": "exposure", "weight": 1.0}])
    batch = case_batch("lolisrflow-x2-tiny", 2)
    unpaired = {k: v for k, v in batch.items() if k != "hq"}
    model.train()
    terms = model.loss(unpaired)
    assert list(terms) == ["exposure", "total"] and torch.isfinite(terms["total"])
    terms["total"].backward()
    # without the gain (and without hq to derive it) the term cannot be computed: said in one line
    with pytest.raises(MissingBatchKeyError, match="needs batch key 'log2_gain' or 'hq'"):
        model.loss({"lq": batch["lq"]})


def test_optional_terms_are_skipped_where_the_model_lacks_their_input():
    # llflow's encoder has no exposure head: a listed exposure term is neither logged nor added (as before)
    data = {**load_yaml(CONFIG_DIR / "llflow-small.yaml"), "losses": [{"name": "nll"}, {"name": "exposure"}]}
    model = build_any(parse_model_config(data))
    batch = case_batch("llflow-small", 1)
    model.initialize(batch)
    assert list(model.loss({"lq": batch["lq"], "hq": batch["hq"]})) == ["nll", "total"]


def test_weight_zero_terms_are_logged_without_gradient():
    model = build_any(get_config("regression-x2-tiny"))
    model.cfg.losses = [LossSpec("l1", 1.0), LossSpec("exposure", 0.0)]
    batch = case_batch("regression-x2-tiny", 2)
    terms = model.loss(batch)
    assert list(terms) == ["l1", "exposure", "total"]
    assert not terms["exposure"].requires_grad and torch.equal(terms["total"], terms["l1"])


if __name__ == "__main__":  # print the PINNED table (run on the code whose losses are to be pinned)
    torch.set_num_threads(1)
    print("PINNED: dict[str, dict[str, float]] = {")
    for case in sorted(CASES):
        print(f"    {case!r}: {{{', '.join(f'{k!r}: {v!r}' for k, v in case_losses(case).items())}}},")
    print("}")


def test_ssim_term_is_one_minus_the_benchmark_ssim_and_keeps_float32_under_bf16_autocast():
    from nightflow.losses import ForwardOutputs
    from nightflow.metrics import ssim

    gen = torch.Generator().manual_seed(0)
    target = torch.rand(2, 3, 24, 24, generator=gen) * 0.3
    pred = (target + 0.05 * torch.randn(2, 3, 24, 24, generator=gen)).clamp(0, 1).requires_grad_()
    term = LOSSES.get("ssim")("ssim")

    def loss(p: torch.Tensor) -> torch.Tensor:
        return term(ForwardOutputs({}, {"prediction": lambda: p, "target": lambda: target}), {})

    value = loss(pred)
    expected = 1 - ssim(pred.detach(), target, convention="skimage").mean()  # the suites' SSIM, float64
    assert abs(value.item() - expected.item()) < 1e-5 and 0.05 < value.item() < 1
    assert loss(target).item() == pytest.approx(0.0, abs=1e-5)
    noisier = (target + 0.1 * torch.randn(2, 3, 24, 24, generator=gen)).clamp(0, 1)
    assert loss(noisier).item() > value.item()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_bf16 = loss(pred)
    assert under_bf16.dtype == torch.float32 and abs(under_bf16.item() - value.item()) < 1e-6
    under_bf16.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_gradient_term_counts_every_step_of_a_block_grid_and_ignores_an_offset():
    import torch.nn.functional as F

    from nightflow.losses import ForwardOutputs

    gen = torch.Generator().manual_seed(0)
    target = F.interpolate(torch.rand(1, 3, 6, 6, generator=gen), size=(24, 24), mode="bilinear") * 0.5
    term = LOSSES.get("gradient_l1")("gradient_l1")

    def losses(p: torch.Tensor) -> tuple[float, float]:
        out = ForwardOutputs({}, {"prediction": lambda: p, "target": lambda: target})
        return term(out, {}).item(), LOSSES.get("l1")("l1")(out, {}).item()

    assert losses(target + 0.1) == pytest.approx((0.0, 0.1), abs=1e-6)  # an offset has no differences
    step = torch.zeros_like(target)
    step[..., :, 2::4] = 0.01  # a faint grid: every fourth column 0.01 brighter
    grad, pixels = losses(target + step)
    # 6 grid columns of 24, two steps of 0.01 each among a row's 23 differences; pixel L1 sees each column once
    assert grad == pytest.approx(12 * 0.01 / 23, rel=1e-4) and pixels == pytest.approx(0.01 / 4, rel=1e-4)
    pred = (target + step).requires_grad_()
    term(ForwardOutputs({}, {"prediction": lambda: pred, "target": lambda: target}), {}).backward()
    assert pred.grad.abs().sum() > 0


def test_a_flow_trains_with_the_ssim_term():
    model = _tiny_flow(
        [{"name": "nll", "weight": 1}, {"name": "l1", "weight": 1.5}, {"name": "ssim", "weight": 1}]
    )
    batch = case_batch("lolisrflow-x2-tiny", 2)
    model.initialize(batch)
    model.train()
    terms = model.loss(batch, torch.Generator().manual_seed(0))
    assert list(terms) == ["nll", "l1", "ssim", "total"] and 0 < terms["ssim"].item() < 2
    terms["total"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.flow.parameters())
