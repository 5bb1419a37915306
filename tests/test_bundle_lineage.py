"""scripts/bundle_weights.py and write_model_cards.py: weights trained in several runs carry every run's facts.

A bundled model that trained on from earlier bundled weights (``train.init_weights``) must not be described by its
last run alone (200 steps on 36 photos, when it really had 3,800 steps, most of them on 24 photos).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BASE = {
    "steps": 2600,
    "wall_time_s": 6000.0,
    "checkpoint": "a",
    "recipe": "first",
    "amp": "bf16",
    "patch_size": 96,
}


def _run(steps: int, photos: int, amp: str = "none") -> dict:
    return {
        "steps": steps,
        "wall_time_s": 100.0 * steps,
        "checkpoint": f"step_{steps}",
        "recipe": f"more {steps}",
        "amp": amp,
        "patch_size": 96,
        "train_photos": photos,
        "final_losses": {"nll": float(steps)},
        "hardware": "here",
    }


def test_chained_facts_sum_steps_and_time_and_keep_every_stage_in_order():
    bundle = _script("bundle_weights")
    once = bundle.chain_facts(BASE, _run(1000, 36))
    twice = bundle.chain_facts(once, _run(200, 36))
    assert twice["steps"] == 3800 and twice["wall_time_s"] == pytest.approx(6000 + 100_000 + 20_000)
    assert [s["steps"] for s in twice["stages"]] == [2600, 1000, 200]
    assert [s["recipe"] for s in twice["stages"]] == ["first", "more 1000", "more 200"]
    assert twice["final_losses"] == {"nll": 200.0}  # the last run's, not the first one's
    assert (
        "train_photos" not in twice["stages"][0]
    )  # unknown for the first run: the card supplies its default


def test_training_on_from_interpolated_weights_keeps_the_mix_on_its_stage_and_the_card_names_it():
    """Weights trained on from a midpoint (scripts/interpolate_weights.py) must still say that one of their
    stages was mixed: without it the card would claim every step of that stage was trained."""
    bundle, cards = _script("bundle_weights"), _script("write_model_cards")
    mix = {"alpha": 0.5, "before": "m.safetensors", "before_sha256": "ab" * 32, "after_sha256": "c" * 64}
    midpoint = {**bundle.chain_facts(BASE, _run(500, 36)), "interpolation": mix}
    after = bundle.chain_facts(midpoint, _run(300, 36))
    assert "interpolation" not in after  # these weights are the last run's checkpoint, not a mix
    assert [s.get("interpolation") for s in after["stages"]] == [None, mix, None]
    assert after["steps"] == 2600 + 500 + 300
    line = cards._interpolation_line(after)
    assert "stage 2 of 3 ended as 0.5 × the weights before it" in line and "sha256 abababababab" in line
    assert "before the last stage" not in line  # the last stage is a plain checkpoint
    assert "trained jointly" in cards._exposure_line(None, interpolated="interpolation" in after)
    # a mix with no stages before it (a first run's file) is carried as well
    first = bundle.chain_facts({**BASE, "interpolation": mix}, _run(100, 36))
    assert first["stages"][0]["interpolation"] == mix


def test_card_describes_each_stage_photos_precision_and_recipe():
    cards = _script("write_model_cards")
    bundle = _script("bundle_weights")
    total = cards._train_photo_count()
    facts = bundle.chain_facts(bundle.chain_facts(BASE, _run(1000, total)), _run(200, total))
    photos = cards._photos_phrase(facts)
    assert f"{cards.FIRST_TRAIN_PHOTOS} photos for 2600 steps" in photos
    assert f"then {total} photos for 1000 steps, then {total} photos for 200 steps" in photos
    assert cards._stage_precision(facts).startswith("bf16 autocast")
    assert "float32 throughout (1000 steps)" in cards._stage_precision(facts)
    assert cards._recipe(facts, "m").count("; then ") == 2 and "`more 200` (200 steps)" in cards._recipe(
        facts, "m"
    )
    assert cards._jpeg_phrase(facts) == ""  # no stage saw JPEGs: nothing said
    jpeg = bundle.chain_facts(facts, {**_run(300, total), "jpeg_share": 0.5})
    assert "50% in the 300 steps of stage 4, none before" in cards._jpeg_phrase(jpeg)
    assert cards._tone_curve_phrase(jpeg) == ""  # every stage applied the tone curve: nothing said
    flat = bundle.chain_facts(jpeg, {**_run(400, total), "tone_curve_share": 0.5})
    assert "50% in the 400 steps of stage 5, none before" in cards._tone_curve_phrase(flat)
    assert cards._power_curve_phrase(flat) == ""  # no stage recorded a power-law share: nothing said
    power = bundle.chain_facts(flat, {**_run(300, total), "power_curve_share": 0.3})
    assert "30% in the 300 steps of stage 6, none before" in cards._power_curve_phrase(power)
    # a single run on every photo stays one short phrase
    assert cards._photos_phrase(_run(10, total)) == f"the {total} training photos"
    assert cards._stage_precision(_run(10, total)) == "float32 throughout"


def _fake_run(tmp_path: Path, init_weights: str | None) -> Path:
    run = tmp_path / "run"
    ckpt = run / "checkpoints" / "step_0000002"
    ckpt.mkdir(parents=True)
    save_file({"w": torch.ones(2)}, str(ckpt / "model.safetensors"), metadata={"ema": "true"})
    cfg = {
        "data": {"format": "paired", "patch_size": 64},
        "train": {"amp": "none", "init_weights": init_weights},
    }
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    rows = [{"kind": "train", "step": s, "elapsed_s": 5.0 * s, "nll": 1.0} for s in (1, 2)]
    (run / "log.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return run


def test_bundling_a_continued_run_requires_the_weights_it_continued(tmp_path, monkeypatch, capsys):
    bundle = _script("bundle_weights")
    monkeypatch.setattr(bundle, "WEIGHTS_DIR", tmp_path / "weights")
    run = _fake_run(tmp_path, init_weights="lolisrflow-x2")
    assert bundle.main([str(run), "m"]) == 2
    assert "--continues" in capsys.readouterr().err
    assert not (tmp_path / "weights").exists()  # nothing written

    base = tmp_path / "base.safetensors"
    save_file({"w": torch.zeros(2)}, str(base), metadata={"nightflow_training": json.dumps(BASE)})
    assert bundle.main([str(run), "m", "--continues", str(base)]) == 0
    from nightflow.models.checkpoint import read_metadata

    facts = json.loads(read_metadata(tmp_path / "weights" / "m.safetensors")["nightflow_training"])
    assert facts["steps"] == 2602 and [s["steps"] for s in facts["stages"]] == [2600, 2]


def test_continues_is_refused_for_a_run_that_started_fresh(tmp_path, monkeypatch, capsys):
    bundle = _script("bundle_weights")
    monkeypatch.setattr(bundle, "WEIGHTS_DIR", tmp_path / "weights")
    run = _fake_run(tmp_path, init_weights=None)
    base = tmp_path / "base.safetensors"
    save_file({"w": torch.zeros(2)}, str(base), metadata={"nightflow_training": json.dumps(BASE)})
    assert bundle.main([str(run), "m", "--continues", str(base)]) == 2
    assert "continues nothing" in capsys.readouterr().err


def test_jpeg_share_is_the_runs_override_else_its_presets():
    bundle = _script("bundle_weights")
    assert bundle.run_jpeg_share({"data": {"format": "synthetic", "preset": "dfsr-lle"}}) == 0.0
    assert bundle.run_jpeg_share({"data": {"format": "synthetic", "preset": "dfsr-lle-jpeg"}}) == 1.0
    assert bundle.run_jpeg_share({"data": {"format": "synthetic", "jpeg_prob": 0.5}}) == 0.5
    assert bundle.run_jpeg_share({"data": {"format": "paired"}}) == 0.0
    assert bundle.run_tone_curve_share({"data": {"format": "synthetic", "preset": "dfsr-lle"}}) == 1.0
    assert bundle.run_tone_curve_share({"data": {"format": "synthetic", "tone_curve_prob": 0.5}}) == 0.5
    assert bundle.run_tone_curve_share({"data": {"format": "paired"}}) == 1.0
    assert bundle.run_power_curve_share({"data": {"format": "synthetic", "preset": "dfsr-lle"}}) == 0.0
    assert bundle.run_power_curve_share({"data": {"format": "synthetic", "power_curve_prob": 0.3}}) == 0.3
    assert bundle.run_power_curve_share({"data": {"format": "paired"}}) == 0.0


def test_bundled_precision_is_what_the_trainer_recorded_even_for_an_auto_recipe():
    bundle = _script("bundle_weights")
    auto = {"train": {"amp": "auto"}}
    assert bundle.run_amp(auto, {"amp": "none"}) == "none"  # model weights: a top-level metadata key
    assert bundle.run_amp(auto, {"nightflow": json.dumps({"amp": "bf16"})}) == "bf16"  # plain weights
    assert bundle.run_amp(auto, {}) == "auto"  # not recorded: never guessed
    assert bundle.run_amp({"train": {"amp": "bf16"}}, {}) == "bf16"  # older checkpoints: the recipe's value


def test_weights_bundled_as_a_variant_take_its_name_and_must_have_its_architecture(tmp_path):
    from nightflow.errors import ConfigError
    from nightflow.models import build_model
    from nightflow.models.checkpoint import save_model
    from nightflow.models.zoo import get_config

    bundle = _script("bundle_weights")
    base_cfg = get_config("lolisrflow-x2-tiny")
    trained = save_model(build_model(base_cfg), tmp_path / "x2.safetensors", base_cfg)
    stored = json.loads(bundle.variant_config(trained, "lolisrflow-x2-tiny-jpeg"))
    assert stored["name"] == "lolisrflow-x2-tiny-jpeg" and stored["flow"]["hidden"] == base_cfg.flow.hidden
    assert stored["description"] == get_config("lolisrflow-x2-jpeg").description
    assert bundle.variant_config(trained, "lolisrflow-x2-tiny") is None  # not a variant: stored as trained
    x1_cfg = get_config("lolisrflow-x1-tiny")
    assert x1_cfg.bf16_inference and not get_config("lolisrflow-x1-jpeg").bf16_inference
    x1 = save_model(build_model(x1_cfg), tmp_path / "x1.safetensors", x1_cfg)
    # trained as the base, which allows bf16; bundled as the variant, the file takes the variant's measured fact
    stored = json.loads(bundle.variant_config(x1, "lolisrflow-x1-tiny-jpeg"))
    assert stored["bf16_inference"] is False and stored["name"] == "lolisrflow-x1-tiny-jpeg"
    x4_cfg = get_config("lolisrflow-x4-tiny")
    x4 = save_model(build_model(x4_cfg), tmp_path / "x4.safetensors", x4_cfg)
    with pytest.raises(ConfigError, match="differs from lolisrflow-x2-tiny-jpeg's in .*scale"):
        bundle.variant_config(x4, "lolisrflow-x2-tiny-jpeg")


def _cell(spec: str, label: str, scale: int, psnr: float) -> dict:
    return {
        "model": {"spec": spec, "temperature": 0.0},
        "dataset": label,
        "result": {"data": {"scale": scale}, "mean": {"psnr": psnr}},
    }


def test_cards_list_every_suite_that_scores_the_model_naming_its_datasets():
    cards = _script("write_model_cards")
    synthetic = {"suite": "synthetic", "cells": [_cell("lolisrflow-x{scale}", "x2", 2, 19.7)]}
    variants = {
        "suite": "jpeg-variants",
        "description": "lossless and JPEG.",
        "cells": [
            _cell("lolisrflow-x{scale}-jpeg", "x2", 2, 19.5),
            _cell("lolisrflow-x{scale}-jpeg", "x2 JPEG", 2, 19.8),
            _cell("lolisrflow-x{scale}-jpeg", "x4 JPEG", 4, 18.5),  # another scale: not this card's
            _cell("lolisrflow-x{scale}", "x2 JPEG", 2, 18.5),  # another model
        ],
    }
    assert cards._scores(synthetic, 2, "lolisrflow-x2-tiny") == ["- temperature 0.0: psnr 19.7"]
    assert cards._scores(synthetic, 2, "lolisrflow-x2-tiny-jpeg") == []
    averaged = _cell("lolisrflow-x{scale}", "x2", 2, 19.9)
    averaged["model"]["ensemble"] = 4
    with_ensemble = {"suite": "synthetic", "cells": [*synthetic["cells"], averaged]}
    assert cards._scores(with_ensemble, 2, "lolisrflow-x2-tiny") == [
        "- temperature 0.0: psnr 19.7",
        "- temperature 0.0, self-ensemble of 4 (`--ensemble 4`): psnr 19.9",
    ]
    section = cards._other_suites([synthetic, variants], 2, "lolisrflow-x2-tiny-jpeg")
    assert "## Scores on the jpeg-variants suite" in section and "synthetic suite" not in section
    assert "- x2, temperature 0.0: psnr 19.5\n- x2 JPEG, temperature 0.0: psnr 19.8\n" in section
    assert "18.5" not in section


def test_cards_say_which_precision_auto_runs_the_weights_in():
    from nightflow.models.zoo import weights_path

    cards = _script("write_model_cards")
    no_scores = {"suite": "synthetic", "cells": []}
    x1, x1_jpeg = (cards.card(weights_path(n), no_scores) for n in ("lolisrflow-x1", "lolisrflow-x1-jpeg"))
    assert "Inference (`--precision auto`): bf16 autocast where" in x1  # its base: within 1/255
    assert "Inference (`--precision auto`): float32 everywhere" in x1_jpeg  # its YAML: bf16_inference false


def test_cards_say_which_temperature_samples_are_drawn_at():
    from nightflow.models.zoo import weights_path

    cards = _script("write_model_cards")
    no_scores = {"suite": "synthetic", "cells": []}
    x1, x1_jpeg, upt = (
        cards.card(weights_path(n), no_scores) for n in ("lolisrflow-x1", "lolisrflow-x1-jpeg", "uptflow")
    )
    assert "without `--temperature`: temperature 0.6, measured on these weights" in x1  # its YAML sets it
    assert (
        "temperature 0.6, its base's (measured on lolisrflow-x1-tiny's weights; not swept on these)"
        in x1_jpeg
    )
    assert "without `--temperature`: temperature 0.4, nightflow's default" in upt


def test_the_card_hardware_is_what_the_run_recorded_not_the_bundling_machines():
    bundle = _script("bundle_weights")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        recorded = {"nightflow": json.dumps({"threads": 1, "device": "cpu"})}
        assert "1 thread(s) per run" in bundle.run_hardware(recorded)
        assert "1 thread(s) per run" in bundle.run_hardware(recorded, threads=1)
        from nightflow.errors import ConfigError

        with pytest.raises(ConfigError, match="recorded 1 thread"):
            bundle.run_hardware(recorded, threads=2)  # a flag never contradicts the record
        assert "thread count not recorded" in bundle.run_hardware({})  # older checkpoints: never guessed
        assert "3 thread(s) per run" in bundle.run_hardware({}, threads=3)
        assert bundle.run_hardware({"device": "cuda", "threads": "4"}).startswith("CUDA, 4 thread(s)")
    finally:
        torch.set_num_threads(before)


def test_the_card_keeps_every_logged_loss_term_and_no_bookkeeping(tmp_path):
    bundle = _script("bundle_weights")
    row = {
        "kind": "train",
        "step": 4,
        "epoch": 0,
        "pseudo_nll": 7.23912,
        "reblur": 0.09,
        "total": 7.6,
        "lr": 2e-4,
        "grad_norm": 3.0,
        "samples_per_s": 1.5,
        "elapsed_s": 9.0,
    }
    (tmp_path / "log.jsonl").write_text(json.dumps(row) + "\n")
    facts = bundle.training_facts(tmp_path, None)
    assert facts["final_losses"] == {"pseudo_nll": 7.2391, "reblur": 0.09, "total": 7.6}  # SSFlow's own terms
    assert facts["steps"] == 4 and facts["wall_time_s"] == 9.0


def test_weight_facts_measured_after_bundling_are_stored_into_the_file_and_nothing_else_is(
    tmp_path, monkeypatch
):
    from nightflow.config import to_dict
    from nightflow.errors import ConfigError
    from nightflow.models import zoo
    from nightflow.models.checkpoint import CONFIG_KEY, load_config

    store = _script("store_weight_facts")
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", tmp_path)
    want = to_dict(zoo.get_config("uptflow-tiny"))
    path = tmp_path / "uptflow-tiny.safetensors"
    stale = {**want, "bf16_inference": not want["bf16_inference"], "tile_margin": want["tile_margin"] + 8}
    save_file({"w": torch.arange(3.0)}, str(path), metadata={CONFIG_KEY: json.dumps(stale), "other": "kept"})
    assert store.store_facts("uptflow-tiny") == ["bf16_inference", "tile_margin"]
    assert to_dict(load_config(path)) == want
    from safetensors.torch import load_file

    from nightflow.models.checkpoint import read_metadata

    assert (
        torch.equal(load_file(str(path))["w"], torch.arange(3.0)) and read_metadata(path)["other"] == "kept"
    )
    assert store.store_facts("uptflow-tiny") == []  # already stored: nothing to do
    wider = {**want, "flow": {**want["flow"], "hidden": want["flow"]["hidden"] * 2}}
    save_file({"w": torch.zeros(1)}, str(path), metadata={CONFIG_KEY: json.dumps(wider)})
    with pytest.raises(ConfigError, match="flow"):  # another architecture: never stamped over
        store.store_facts("uptflow-tiny")
    assert to_dict(load_config(path))["flow"]["hidden"] == want["flow"]["hidden"] * 2


def test_the_step_of_a_checkpoint_is_read_where_the_trainer_recorded_it():
    bundle = _script("bundle_weights")
    assert bundle._checkpoint_step({"nightflow": json.dumps({"step": 800, "amp": "bf16"})}) == 800
    assert bundle._checkpoint_step({"step": "1200"}) == 1200  # a model weights file: a top-level key
    assert bundle._checkpoint_step({"nightflow": json.dumps({"amp": "none"})}) is None
    assert bundle._checkpoint_step({}) is None
