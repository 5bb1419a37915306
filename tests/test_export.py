"""ONNX export and the onnxruntime backend (issue 14 item 3): within 1e-4 of PyTorch for every bundled flow, on
random and real inputs of two sizes, mean path and seeded samples, whole and tiled; exposure models too."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

import nightflow
from nightflow import inference
from nightflow.cli import main
from nightflow.context import apply_gain, linear_to_srgb, srgb_to_linear
from nightflow.data.io import file_sha256, read_image, read_image_text, to_tensor, write_image
from nightflow.demo import samples
from nightflow.encoders.exposure import quantiles
from nightflow.errors import UserError
from nightflow.export import check_exportable, export_onnx
from nightflow.models import build_model
from nightflow.models.checkpoint import save_model
from nightflow.models.zoo import get_config, load_restorer
from nightflow.onnx_backend import OnnxRestorer, load_onnx, read_metadata
from standin_restorer import StandInRestorer

TOL = 1e-4  # max abs difference in [0, 1] units
BUNDLED = [r["name"] for r in nightflow.list_models(count_params=False) if r["bundled"]]
SAMPLE_T = 0.8  # a sampled graph's temperature in these tests (not the default)


pytestmark = pytest.mark.usefixtures("one_thread")


def _real() -> torch.Tensor:
    return to_tensor(read_image(samples()[0]))[None]  # 1×3×100×160, a bundled dark sample


def _inputs() -> dict[str, torch.Tensor]:
    """Random and real inputs of two sizes each (sizes off the pad grid, so padding and cropping are exercised)."""
    g = torch.Generator().manual_seed(0)
    real = _real()
    return {
        "random-40x56": torch.rand(1, 3, 40, 56, generator=g) ** 2 * 0.3,
        "random-2x72x48": torch.rand(2, 3, 72, 48, generator=g) ** 2 * 0.3,  # a batch of two
        "real-100x160": real,
        "real-58x90": real[:, :, 21:79, 33:123].contiguous(),
    }


def _pair(restorer, onnx_restorer, lq, temperature=0.0, tile=0, exposure=0.0):
    noise = None
    if temperature > 0:
        s = restorer.scale
        noise = inference.draw_noise(
            (lq.shape[0], 3, lq.shape[2] * s, lq.shape[3] * s), torch.Generator().manual_seed(3)
        )
    kw = dict(noise=noise, tile=tile, exposure=exposure)
    return inference.restore(restorer, lq, temperature, **kw), inference.restore(
        onnx_restorer, lq, temperature, **kw
    )


@pytest.fixture(scope="module", params=BUNDLED)
def exported(request, tmp_path_factory):
    """A bundled flow and its graphs at T = 0 and T = SAMPLE_T."""
    restorer, info = load_restorer(request.param, "cpu")
    folder = tmp_path_factory.mktemp(request.param)
    files = {t: export_onnx(restorer, folder / f"t{t:g}.onnx", t, info=info) for t in (0.0, SAMPLE_T)}
    return request.param, restorer.eval(), OnnxRestorer(files), files


def test_bundled_flows_are_listed():
    assert len(BUNDLED) >= 1 and all(name.startswith(("lolisrflow", "uptflow", "ssflow")) for name in BUNDLED)
    assert "uptflow-tiny" in BUNDLED  # UPT-Flow exports too (msformer, cross couplings, cbam-local)


@pytest.mark.parametrize("temperature", [0.0, SAMPLE_T])
def test_onnx_matches_pytorch_on_random_and_real_inputs(exported, temperature):
    name, restorer, onnx_restorer, _ = exported
    for label, lq in _inputs().items():
        ref, out = _pair(restorer, onnx_restorer, lq, temperature)
        assert (
            out.shape
            == ref.shape
            == (lq.shape[0], 3, lq.shape[2] * restorer.scale, lq.shape[3] * restorer.scale)
        )
        err = float((out - ref).abs().max())
        assert err <= TOL, f"{name} {label} T={temperature}: max abs {err:.2e}"
        assert float(ref.std()) > 0.01  # a real picture, not a constant both sides agree on


def test_onnx_self_ensemble_matches_pytorch_on_a_non_square_input(exported):
    """The dynamic-size graphs take the W×H inputs of the odd rotations, so `--ensemble` works on ONNX too."""
    name, restorer, onnx_restorer, _ = exported
    lq = _real()[:, :, 21:79, 33:123].contiguous()  # 58×90
    ref = inference.restore(restorer, lq, ensemble=2)
    out = inference.restore(onnx_restorer, lq, ensemble=2)
    err = float((out - ref).abs().max())
    assert err <= TOL, f"{name}: max abs {err:.2e}"
    assert float((ref - inference.restore(restorer, lq)).abs().max()) > 10 * TOL  # really another image


def test_tiled_onnx_shares_the_whole_image_thumbnail_like_pytorch(exported):
    name, restorer, onnx_restorer, _ = exported
    lq = _real()
    # tiles of the model's own minimum (the pipeline refuses smaller ones; inference.restore does not check)
    tile = max(64, restorer.tiling.min_tile)
    if tile >= max(
        lq.shape[-2:]
    ):  # ssflow-tiny's 400 px minimum: a mosaic of the sample, large enough to tile
        row = torch.cat([lq, lq.flip(-1), lq], -1)
        lq = torch.cat([row, row.flip(-2), row, row.flip(-2), row], -2)[
            ..., : tile + 64, : tile + 64
        ].contiguous()
    ref, out = _pair(restorer, onnx_restorer, lq, SAMPLE_T, tile=tile)
    assert float((out - ref).abs().max()) <= TOL, name
    whole = inference.restore(onnx_restorer, lq, 0.0, tile=0)
    tiled = inference.restore(onnx_restorer, lq, 0.0, tile=tile)
    assert float((whole - tiled).abs().mean()) < 2 / 255  # tiles agree with the whole image, as in PyTorch


def test_graph_inputs_dynamic_sizes_and_metadata(exported):
    name, restorer, onnx_restorer, files = exported
    for t, path in files.items():
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        inputs = {i.name: i.shape for i in session.get_inputs()}
        expected = (
            ["lq", "thumb"] + (["exposure"] if restorer.has_exposure else []) + (["noise"] if t > 0 else [])
        )
        assert list(inputs) == expected
        assert isinstance(inputs["lq"][2], str) and isinstance(inputs["lq"][3], str)  # dynamic H and W
        assert inputs["thumb"][1:] == [3, 48, 48]
        meta = read_metadata(path)
        assert meta["scale"] == restorer.scale and meta["pad_multiple"] == restorer.pad_multiple
        assert meta["temperature"] == t and meta["model"] == name
        assert meta["sample_temperature"] == restorer.sample_temperature  # the runner's default for samples
    assert onnx_restorer.sample_temperature == restorer.sample_temperature  # read back from the files


@pytest.fixture(scope="module")
def exposure_model(tmp_path_factory):
    """A tiny LoLiSRFlow with an exposure head and every weight perturbed (zero-initialised layers would make the
    output ignore the input's brightness), saved as a checkpoint."""
    cfg = get_config("lolisrflow-x2-tiny")
    model = build_model(cfg)
    assert model.has_exposure
    g = torch.Generator().manual_seed(0)
    model.initialize(
        {"lq": torch.rand(2, 3, 16, 16, generator=g) * 0.2, "hq": torch.rand(2, 3, 32, 32, generator=g)}
    )
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.002)  # larger makes the untrained flow explode
    path = save_model(model, tmp_path_factory.mktemp("exposure") / "model.safetensors", cfg)
    restorer, info = load_restorer(path, "cpu")
    return path, restorer.eval(), info


def test_exposure_head_model_matches_and_follows_the_exposure_input(exposure_model, tmp_path):
    path, restorer, info = exposure_model
    files = {t: export_onnx(restorer, tmp_path / f"e{t:g}.onnx", t, info=info) for t in (0.0, SAMPLE_T)}
    onnx_restorer = OnnxRestorer(files)
    assert onnx_restorer.has_exposure
    lq = _inputs()["real-58x90"]
    outs = {}
    for ev in (0.0, 0.7, -0.5):
        for t in (0.0, SAMPLE_T):
            ref, out = _pair(restorer, onnx_restorer, lq, t, exposure=ev)
            assert float((out - ref).abs().max()) <= TOL, (ev, t)
        outs[ev] = out
    assert float((outs[0.7] - outs[0.0]).abs().mean()) > 1e-3  # the exposure input is really used


def test_quantiles_and_pow_rewrites_are_identical_to_what_they_replace():
    """encoders/exposure.py: quantiles() == torch.quantile; context.apply_gain: 2**x via pow instead of exp2."""
    qs = (0.1, 0.5, 0.9, 0.99)
    for seed in range(40):
        g = torch.Generator().manual_seed(seed)
        x = torch.log2(torch.rand(3, 2304, generator=g) ** (1 + seed % 4) + 2**-16)
        if seed % 3 == 0:
            x = x.round()  # ties
        assert torch.equal(quantiles(x, qs), torch.quantile(x, torch.tensor(qs), dim=1).t())
    img = torch.rand(4, 3, 20, 20)
    gain = torch.tensor([-3.0, 0.0, 1.7, 5.2])
    old = linear_to_srgb(srgb_to_linear(img) * torch.exp2(gain).view(-1, 1, 1, 1)).clamp(0, 1)
    assert float((apply_gain(img, gain) - old).abs().max()) <= 1e-6


def test_api_model_on_the_onnx_backend_matches_the_torch_one(exported):
    name, _, _, files = exported
    img = read_image(samples()[0])
    onnx_model = load_onnx(files[0.0])
    torch_model = nightflow.load(name)
    # float32 on both sides: "auto" may pick bf16 for the torch model on a CPU with fast bf16, which moves a bundled
    # model by up to 1/255 (tests/test_precision.py) and so two 8-bit levels after rounding
    a, b = onnx_model.restore(img).astype(int), torch_model.restore(img, precision="fp32").astype(int)
    assert a.dtype == b.dtype and np.abs(a - b).max() <= 1  # 1e-4 can round to the next 8-bit level


def test_cli_export_then_enhance_with_the_onnx_backend(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NIGHTFLOW_CACHE", str(tmp_path / "cache"))
    name = BUNDLED[0]
    onnx_file = tmp_path / "m.onnx"
    assert main(["export", name, "--onnx", str(onnx_file), "--opset", "18"]) == 0
    assert f"wrote {onnx_file}" in capsys.readouterr().out
    meta = read_metadata(onnx_file)
    assert meta["opset"] == 18 and meta["weights_sha256"] == file_sha256(load_restorer(name)[1]["path"])
    src = samples()[0]
    assert main(["enhance", str(src), "--model", name, "-o", str(tmp_path / "torch.png")]) == 0
    assert (
        main(
            [
                "enhance",
                str(src),
                "--backend",
                "onnx",
                "--model",
                str(onnx_file),
                "-o",
                str(tmp_path / "onnx.png"),
            ]
        )
        == 0
    )
    diff = np.abs(
        read_image(tmp_path / "torch.png").astype(int) - read_image(tmp_path / "onnx.png").astype(int)
    )
    assert diff.max() <= 1
    record = json.loads(read_image_text(tmp_path / "onnx.png")["nightflow"])
    assert record["backend"] == "onnx"
    # a zoo name exports on first use into the cache, one graph per temperature asked for
    argv = [
        "enhance",
        str(src),
        "--backend",
        "onnx",
        "--samples",
        "2",
        "--tile",
        "64",
        "-o",
        str(tmp_path / "zoo.png"),
    ]
    assert main(argv) == 0
    cached = sorted(p.name for p in (tmp_path / "cache" / "onnx").iterdir())
    own = get_config(name).sample_temperature  # samples without --temperature: the model's own
    assert len(cached) == 2 and any(f"-t{own:g}-" in n for n in cached)
    capsys.readouterr()
    # the file holds T = 0 only
    assert (
        main(
            [
                "enhance",
                str(src),
                "--backend",
                "onnx",
                "--model",
                str(onnx_file),
                "--temperature",
                "0.5",
                "-o",
                str(tmp_path / "t.png"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "exported at temperature 0, not 0.5" in err


def test_cli_export_with_exposure_and_onnx_enhance_exposure(exposure_model, tmp_path):
    path, _, _ = exposure_model
    onnx_file = tmp_path / "e.onnx"
    assert main(["export", str(path), "--onnx", str(onnx_file), "--quiet"]) == 0
    src = tmp_path / "in.png"
    write_image(src, (read_image(samples()[0])[:48, :64]))
    for backend, model in (("torch", str(path)), ("onnx", str(onnx_file))):
        assert (
            main(
                [
                    "enhance",
                    str(src),
                    "--backend",
                    backend,
                    "--model",
                    model,
                    "--exposure",
                    "0.5",
                    "-o",
                    str(tmp_path / f"{backend}.png"),
                ]
            )
            == 0
        )
    diff = np.abs(
        read_image(tmp_path / "torch.png").astype(int) - read_image(tmp_path / "onnx.png").astype(int)
    )
    assert diff.max() <= 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--opset", "5"], "--opset must be a whole number in 16..20"),
        (["--temperature", "9"], "--temperature must be a finite number in [0, 2.0]"),
    ],
)
def test_cli_export_refusals_are_one_line(tmp_path, capsys, argv, message):
    assert main(["export", BUNDLED[0], "--onnx", str(tmp_path / "x.onnx"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and not (tmp_path / "x.onnx").exists()


def test_cli_export_refuses_other_names_and_existing_files(tmp_path, capsys):
    assert main(["export", BUNDLED[0], "--onnx", str(tmp_path / "x.txt")]) == 2
    assert "must end in .onnx" in capsys.readouterr().err
    (tmp_path / "y.onnx").write_bytes(b"keep")
    assert main(["export", BUNDLED[0], "--onnx", str(tmp_path / "y.onnx")]) == 2
    assert "already exists" in capsys.readouterr().err and (tmp_path / "y.onnx").read_bytes() == b"keep"
    assert (
        main(
            [
                "enhance",
                str(samples()[0]),
                "--backend",
                "onnx",
                "--model",
                str(tmp_path / "y.onnx"),
                "-o",
                str(tmp_path / "o.png"),
            ]
        )
        == 2
    )
    assert "not a readable ONNX model" in capsys.readouterr().err


def test_non_flows_and_a_missing_runtime_are_user_errors(monkeypatch):
    with pytest.raises(UserError, match="not a conditional flow"):
        check_exportable(StandInRestorer())
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(UserError, match=r"pip install 'nightflow\[onnx\]'"):
        load_onnx(Path("whatever.onnx"))


def test_a_flow_with_straddle_couplings_exports_and_matches(tmp_path):
    """StraddleCoupling (a crop, a squeeze and a slice assignment on the moved grid) traces into the dynamic-size
    graph: bundled ×2 weights with one straddle layer per level, whose subnets are moved off the identity."""
    import dataclasses

    from nightflow.flow import StraddleCoupling
    from nightflow.models import build_any
    from nightflow.train.run import load_initial_weights

    cfg = get_config("lolisrflow-x2-tiny")
    cfg = dataclasses.replace(cfg, flow=dataclasses.replace(cfg.flow, straddle=1))
    model = build_any(cfg)
    load_initial_weights(model, "lolisrflow-x2")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in (m for m in model.modules() if isinstance(m, StraddleCoupling)):
            for p in layer.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.01)
    restorer, info = load_restorer(save_model(model, tmp_path / "straddle.safetensors", cfg), "cpu")
    plain, _ = load_restorer("lolisrflow-x2", "cpu")
    onnx_restorer = OnnxRestorer({0.0: export_onnx(restorer.eval(), tmp_path / "t0.onnx", 0.0, info=info)})
    lq = _inputs()["real-58x90"]
    ref, out = _pair(restorer, onnx_restorer, lq)
    assert float((out - ref).abs().max()) <= TOL
    assert float((ref - inference.restore(plain.eval(), lq)).abs().max()) > 1e-3  # the layers really act
