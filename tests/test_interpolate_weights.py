"""scripts/interpolate_weights.py: a point between two weights files of one model is a valid weights file whose
flow is still exactly invertible, and the file says how it was made."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from nightflow.models import build_model
from nightflow.models.checkpoint import load_model, save_model
from nightflow.models.zoo import get_config

ROOT = Path(__file__).resolve().parent.parent


def _script():
    spec = importlib.util.spec_from_file_location(
        "interpolate_weights", ROOT / "scripts" / "interpolate_weights.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _two_files(tmp_path: Path) -> tuple[Path, Path, torch.Tensor]:
    cfg = get_config("lolisrflow-x2")
    cfg = dataclasses.replace(cfg, flow=dataclasses.replace(cfg.flow, steps=1))
    torch.manual_seed(0)
    model = build_model(cfg)
    lq = torch.rand(1, 3, 8, 8)
    model.initialize({"hq": torch.rand(1, 3, 16, 16), "lq": lq})
    model.eval()
    before = save_model(
        model, tmp_path / "before.safetensors", cfg, {"nightflow_training": json.dumps({"steps": 10})}
    )
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    after = save_model(
        model, tmp_path / "after.safetensors", cfg, {"nightflow_training": json.dumps({"steps": 20})}
    )
    return before, after, lq


def test_the_ends_are_the_two_files_and_the_midpoint_is_their_mean():
    interpolate = _script().interpolate
    a = {"w": torch.tensor([0.0, 2.0]), "flag": torch.tensor([1], dtype=torch.uint8)}
    b = {"w": torch.tensor([1.0, 4.0]), "flag": torch.tensor([1], dtype=torch.uint8)}
    assert torch.equal(interpolate(a, b, 0.0)["w"], a["w"])
    assert torch.equal(interpolate(a, b, 1.0)["w"], b["w"])
    assert torch.equal(interpolate(a, b, 0.5)["w"], torch.tensor([0.5, 3.0]))
    assert torch.equal(interpolate(a, b, 0.5)["flag"], a["flag"])


@pytest.mark.parametrize(
    "other, message",
    [
        ({"w": torch.zeros(3), "flag": torch.tensor([1], dtype=torch.uint8)}, "w:"),
        ({"w": torch.zeros(2), "flag": torch.tensor([0], dtype=torch.uint8)}, "cannot be interpolated"),
        ({"w": torch.zeros(2)}, "different tensors"),
    ],
)
def test_tensors_that_cannot_be_mixed_are_refused(other, message):
    a = {"w": torch.zeros(2), "flag": torch.tensor([1], dtype=torch.uint8)}
    with pytest.raises(ValueError, match=message):
        _script().interpolate(a, other, 0.5)
    with pytest.raises(ValueError, match="alpha"):
        _script().interpolate(a, a, 1.5)


def test_an_interpolated_flow_loads_inverts_exactly_and_records_how_it_was_made(tmp_path):
    before, after, lq = _two_files(tmp_path)
    out = tmp_path / "mid.safetensors"
    assert _script().main([str(before), str(after), "--alpha", "0.5", "-o", str(out)]) == 0
    mid, ends = load_model(out).eval(), [load_model(p).eval() for p in (before, after)]
    for name, value in mid.state_dict().items():
        a, b = ends[0].state_dict()[name], ends[1].state_dict()[name]
        if value.is_floating_point():
            assert torch.allclose(value, (a + b) / 2, atol=1e-7), name
    hq = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        latents, logdet = mid.encode(hq, lq)
        assert (mid.decode(latents, lq) - hq).abs().max() < 1e-4
        outputs = [m.restore(lq) for m in (ends[0], mid, ends[1])]
    assert torch.isfinite(logdet).all()
    assert not torch.equal(outputs[1], outputs[0]) and not torch.equal(outputs[1], outputs[2])
    from safetensors import safe_open

    with safe_open(str(out), "pt") as f:
        training = json.loads(f.metadata()["nightflow_training"])
        assert (
            "nightflow_exposure_fit" not in f.metadata()
        )  # the after file's head fit describes another head
    assert training["steps"] == 20  # the after file's facts, with the interpolation added
    assert (
        training["interpolation"]["alpha"] == 0.5
        and training["interpolation"]["before"] == "before.safetensors"
    )


def test_existing_outputs_and_other_architectures_are_refused(tmp_path, capsys):
    before, after, _ = _two_files(tmp_path)
    assert _script().main([str(before), str(after), "--alpha", "0.5", "-o", str(after)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    missing = str(tmp_path / "missing.safetensors")
    assert (
        _script().main([str(before), missing, "--alpha", "0.5", "-o", str(tmp_path / "y.safetensors")]) == 2
    )
    assert "no such weights file" in capsys.readouterr().err
    cfg = get_config("lolisrflow-x2")
    wider = dataclasses.replace(cfg, flow=dataclasses.replace(cfg.flow, steps=1, hidden=cfg.flow.hidden + 8))
    other = save_model(build_model(wider), tmp_path / "wider.safetensors", wider, {})
    assert (
        _script().main([str(before), str(other), "--alpha", "0.5", "-o", str(tmp_path / "x.safetensors")])
        == 2
    )
    assert "another architecture" in capsys.readouterr().err


def test_the_card_of_interpolated_weights_says_so_and_a_plain_runs_card_does_not():
    spec = importlib.util.spec_from_file_location(
        "write_model_cards", ROOT / "scripts" / "write_model_cards.py"
    )
    cards = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cards)
    assert cards._interpolation_line({"steps": 500}) == ""
    mix = {
        "alpha": 0.5,
        "before": "uptflow-tiny.safetensors",
        "before_sha256": "ab" * 32,
        "after_sha256": "c" * 64,
    }
    line = cards._interpolation_line({"steps": 500, "interpolation": mix})
    assert "0.5 × the weights before the last stage" in line and "sha256 abababababab" in line
    assert "--alpha 0.5" in line
    assert "mix of the two files' heads" in cards._exposure_line(None, interpolated=True)
    assert "trained jointly" in cards._exposure_line(None)
