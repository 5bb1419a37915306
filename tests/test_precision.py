"""Inference precision (issue 15 item 3): bf16 autocast where it is native and measured safe, float32 otherwise.

The 1/255 claims behind ``Encoder.bf16_inference`` are pinned here on a crop of a bundled sample for every bundled
model; on CPUs without native bf16 PyTorch emulates it (slowly, so the crops are small), with the same rounding.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import nightflow
from nightflow import precision
from nightflow.baselines import get_baseline
from nightflow.commands.enhance import resolved_precision
from nightflow.data.io import image_to_tensor, read_image
from nightflow.errors import SettingError, UserError
from nightflow.inference import restore

pytestmark = pytest.mark.usefixtures("one_thread")

SAMPLE = Path(nightflow.__file__).parent / "examples" / "mate-ladybird_dark.png"


@pytest.fixture(scope="module")
def crop() -> torch.Tensor:
    x, _ = image_to_tensor(read_image(SAMPLE))
    return x[..., 40:104, 60:124]  # 64×64 LR


def _fp32_and_bf16(name: str, lq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r = nightflow.load(name).restorer
    return restore(r, lq, tile=0, precision="fp32"), restore(r, lq, tile=0, precision="bf16")


@pytest.mark.parametrize("name", ["lolisrflow-x1"])
def test_models_that_list_bf16_stay_within_one_level_of_fp32(name, crop):
    r = nightflow.load(name).restorer
    assert "bf16" in r.precisions
    lq = crop[..., :32, :32] if r.scale == 4 else crop  # emulated bf16 is slow: keep the x4 output small
    a, b = _fp32_and_bf16(name, lq)
    diff = (a - b).abs().max().item() * 255
    print(f"{name}: bf16 vs fp32 max {diff:.3f}/255")  # `pytest -s tests/test_precision.py` shows the figures
    assert 0 < diff <= 1.0, f"{name}: bf16 differs from fp32 by {diff:.3f}/255"  # 0 would mean no autocast


@pytest.mark.parametrize("scale", [2, 4])
def test_bundled_x2_and_x4_are_kept_in_fp32_by_their_config_because_bf16_moves_them_more_than_one_level(
    crop, scale
):
    """Their MPCT encoder is bf16-safe in general, but these weights are not (the base or the JPEG variant that
    shares its config): ModelConfig.bf16_inference."""
    diffs = {}
    for name in (f"lolisrflow-x{scale}", f"lolisrflow-x{scale}-jpeg"):
        r = nightflow.load(name).restorer
        assert r.encoder.bf16_inference and not r.cfg.bf16_inference and r.precisions == ("fp32",)
        a, b = _fp32_and_bf16(name, crop)
        diffs[name] = (a - b).abs().max().item() * 255
        print(f"{name}: bf16 vs fp32 max {diffs[name]:.3f}/255")
    assert max(diffs.values()) > 1.0  # why their config sets bf16_inference: false


def test_x1_jpeg_variant_is_kept_in_fp32_by_its_own_config_while_its_base_keeps_bf16(crop):
    """A variant sets ``bf16_inference`` for its own weights (zoo.WEIGHT_FACTS): the x1's JPEG variant moves more
    than one level under bf16, the x1 itself does not (test above), so only the variant pays for float32."""
    r = nightflow.load("lolisrflow-x1-jpeg").restorer
    assert r.encoder.bf16_inference and not r.cfg.bf16_inference and r.precisions == ("fp32",)
    assert "bf16" in nightflow.load("lolisrflow-x1").restorer.precisions
    a, b = _fp32_and_bf16("lolisrflow-x1-jpeg", crop)
    diff = (a - b).abs().max().item() * 255
    print(f"lolisrflow-x1-jpeg: bf16 vs fp32 max {diff:.3f}/255")
    assert diff > 1.0  # why its config sets bf16_inference: false


def test_uptflow_is_kept_in_fp32_by_its_config_because_bf16_moves_its_weights_more_than_one_level(crop):
    """Its MSFormer encoder is bf16-safe in general (the weights before December 2026's third round stayed within
    0.97/255), these weights are not: ModelConfig.bf16_inference."""
    r = nightflow.load("uptflow").restorer
    assert r.encoder.bf16_inference and not r.cfg.bf16_inference and r.precisions == ("fp32",)
    a, b = _fp32_and_bf16("uptflow", crop)
    diff = (a - b).abs().max().item() * 255
    print(f"uptflow: bf16 vs fp32 max {diff:.3f}/255")
    assert diff > 1.0  # why its config sets bf16_inference: false


def test_ssflow_is_kept_in_fp32_because_bf16_moves_it_more_than_one_level(crop):
    r = nightflow.load("ssflow").restorer
    assert r.precisions == ("fp32",)
    a, b = _fp32_and_bf16("ssflow", crop)
    diff = (a - b).abs().max().item() * 255
    print(f"ssflow: bf16 vs fp32 max {diff:.3f}/255")
    assert diff > 1.0  # why bf16_inference is False for oatt_unet


def _leaf_layers(seq):
    from nightflow.flow.base import FlowSequence

    for layer in seq.layers:
        if type(layer) is FlowSequence:
            yield from _leaf_layers(layer)
        else:
            yield layer


def test_every_flow_layer_inverts_its_own_output_to_fp32_rounding_under_autocast():
    """Each invertible layer under bf16 autocast: float32 output, inverse(forward(x)) == x to 1e-4 (a bf16 1×1
    conv or affine map would lose ~1e-2). The whole flow's round trip is *not* that exact under bf16: a 1e-5
    difference in a coupling's kept half can flip the bf16 rounding of its subnet's input (``precision`` docs)."""
    r = nightflow.load("lolisrflow-x2").restorer.eval()
    lq, x = torch.rand(1, 3, 16, 16) * 0.2, torch.rand(1, 3, 32, 32)
    checked = 0
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        cond = r.condition(r._pad_lq(lq)[0], r.context(lq))
        assert cond.features[0].dtype == torch.bfloat16  # the encoder did run in bf16
        for level, flow in enumerate(r.flow.level_flows):
            for layer in _leaf_layers(flow):
                y, logdet = layer(x, cond.features[level])
                assert y.dtype == torch.float32 and logdet.dtype == torch.float32, type(layer).__name__
                assert (layer.inverse(y, cond.features[level]) - x).abs().max().item() < 1e-4
                x, checked = y, checked + 1
    assert checked > 20


def test_auto_uses_bf16_only_where_measured_faster_and_on_a_model_measured_safe(monkeypatch):
    flow = nightflow.load("lolisrflow-x1").restorer
    ssflow = nightflow.load("ssflow").restorer
    classical = get_baseline("gamma+bicubic", scale=2)
    for vendor in ("GenuineIntel", "AuthenticAMD"):  # no bf16 units: emulated, ~75x slower
        monkeypatch.setattr(precision, "cpu_vendor", lambda v=vendor: v)
        monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
        assert not precision.fast_bf16("cpu")
        assert precision.resolve("auto", flow, torch.device("cpu")) == "fp32"
    # AVX-512-bf16 without AMX: slower than float32 end to end on the Intel Xeon measured, faster on AMD Zen 4
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16"}))
    monkeypatch.setattr(precision, "cpu_vendor", lambda: "GenuineIntel")
    assert not precision.fast_bf16("cpu")
    assert precision.resolve("auto", flow, torch.device("cpu")) == "fp32"
    monkeypatch.setattr(precision, "cpu_vendor", lambda: "AuthenticAMD")
    assert precision.fast_bf16("cpu")
    assert precision.resolve("auto", flow, torch.device("cpu")) == "bf16"
    monkeypatch.setattr(precision, "cpu_vendor", lambda: "GenuineIntel")
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx512_bf16", "amx_bf16", "amx_tile"}))
    assert precision.fast_bf16("cpu")
    assert precision.resolve("auto", flow, torch.device("cpu")) == "bf16"
    assert precision.resolve("auto", ssflow, torch.device("cpu")) == "fp32"
    assert precision.resolve("auto", classical, torch.device("cpu")) == "fp32"
    # explicit choices are honoured whatever the hardware or the model
    assert precision.resolve("fp32", flow, torch.device("cpu")) == "fp32"
    assert precision.resolve("bf16", ssflow, torch.device("cpu")) == "bf16"


def test_cpu_flags_are_read_from_cpuinfo():
    flags = precision.cpu_flags()
    assert isinstance(flags, frozenset)
    if Path("/proc/cpuinfo").is_file():
        assert flags  # every Linux x86/ARM cpuinfo lists some flags
        if "vendor_id" in Path("/proc/cpuinfo").read_text():  # x86
            assert precision.cpu_vendor() and " " not in precision.cpu_vendor()  # e.g. AuthenticAMD


def test_unknown_precisions_are_refused_in_one_line(crop):
    model = nightflow.load("lolisrflow-x1")
    with pytest.raises(SettingError, match="precision must be one of auto, fp32, bf16"):
        model.restore(np.zeros((8, 8, 3), np.uint8), precision="half")
    with pytest.raises(ValueError, match="resolve 'auto' first"):
        restore(model.restorer, crop, precision="auto")


def test_cli_refuses_bf16_with_the_onnx_backend_and_resolves_auto_to_fp32_there():
    args = argparse.Namespace(precision="bf16", backend="onnx")
    with pytest.raises(UserError, match="--precision bf16 needs --backend torch"):
        resolved_precision(SimpleNamespace(), args)
    args.precision = "auto"
    assert resolved_precision(SimpleNamespace(), args) == "fp32"


def test_enhance_records_the_precision_and_a_changed_precision_is_not_mistaken_for_done(tmp_path):
    from nightflow.cli import main
    from nightflow.data.io import read_image_text

    src = tmp_path / "in.png"
    img = (np.random.default_rng(0).random((24, 24, 3)) * 60).astype(np.uint8)
    import cv2

    assert cv2.imwrite(str(src), img)
    out = tmp_path / "out.png"
    args = ["enhance", str(src), "--model", "lolisrflow-x1", "-o", str(out), "-q"]
    assert main([*args, "--precision", "bf16"]) == 0
    import json

    record = json.loads(read_image_text(out)["nightflow"])
    assert record["precision"] == "bf16"
    assert main([*args, "--precision", "fp32"]) == 2  # a different output exists: refused, not kept as done
    assert main([*args, "--precision", "fp32", "--overwrite"]) == 0
    assert json.loads(read_image_text(out)["nightflow"])["precision"] is None  # fp32: as older records
