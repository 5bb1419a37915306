"""`nightflow enhance` and `nightflow models`: naming, bit depths, samples, heat-maps, keep/overwrite, errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import nightflow
from nightflow.api import Model
from nightflow.cli import main
from standin_restorer import StandInRestorer

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def fake_load(monkeypatch):
    """nightflow.load returning a stand-in model, recording what it was asked for."""
    calls = []

    def load(name_or_path, device="cpu"):
        calls.append((str(name_or_path), device))
        return Model(
            StandInRestorer(scale=4 if "x4" in str(name_or_path) else 2), {"name": str(name_or_path)}
        )

    monkeypatch.setattr(nightflow, "load", load, raising=False)
    return calls


def _write(path: Path, h: int = 20, w: int = 28, dtype=np.uint8, seed: int = 0, grey: bool = False) -> Path:
    rng = np.random.default_rng(seed)
    top = 255 if dtype == np.uint8 else 65535
    img = rng.integers(0, top // 4, size=(h, w) if grey else (h, w, 3)).astype(dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)
    return path


def _read(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, path
    return img


def test_single_8bit_image_default_folder(tmp_path, fake_load, capsys):
    src = _write(tmp_path / "dark.png")
    assert main(["enhance", str(src), "--device", "cpu"]) == 0
    out = tmp_path / "nightflow_out" / "dark_x2.png"
    img = _read(out)
    assert img.shape == (40, 56, 3) and img.dtype == np.uint8
    assert fake_load == [("lolisrflow-x2", "cpu")]  # default model name
    assert "wrote 1 file" in capsys.readouterr().out
    assert not list((tmp_path / "nightflow_out").glob(".*tmp"))  # atomic write left nothing behind


def test_16bit_in_16bit_out_and_x4(tmp_path, fake_load):
    src = _write(tmp_path / "deep.png", dtype=np.uint16)
    assert main(["enhance", str(src), "-o", str(tmp_path / "o"), "--model", "some-x4", "--tile", "8"]) == 0
    img = _read(tmp_path / "o" / "deep_x4.png")
    assert img.shape == (80, 112, 3) and img.dtype == np.uint16
    assert img.max() > 255


def test_folder_glob_samples_and_uncertainty(tmp_path, fake_load):
    _write(tmp_path / "in" / "a.png", seed=1)
    _write(tmp_path / "in" / "b.jpg", seed=2)
    _write(tmp_path / "more" / "c.png", seed=3)
    out = tmp_path / "out"
    argv = ["enhance", str(tmp_path / "in"), str(tmp_path / "more" / "*.png"), "-o", str(out)]
    argv += ["--samples", "2", "--uncertainty", "--uncertainty-raw", "--seed", "4", "--temperature", "0.9"]
    assert main(argv) == 0
    names = sorted(p.name for p in out.iterdir())
    expected = []
    for stem in ("a", "b", "c"):
        expected += [f"{stem}_x2.png", f"{stem}_x2_s00.png", f"{stem}_x2_s01.png"]
        expected += [f"{stem}_x2_uncertainty.png", f"{stem}_x2_uncertainty16.png"]
    assert names == sorted(expected)
    s0, s1 = _read(out / "a_x2_s00.png"), _read(out / "a_x2_s01.png")
    assert s0.shape == (40, 56, 3) and np.abs(s0.astype(int) - s1.astype(int)).mean() > 1  # samples differ
    np.testing.assert_array_equal(_read(out / "a_x2.png"), s0)  # temperature > 0: main output = sample 0
    heat = _read(out / "a_x2_uncertainty.png")
    assert heat.shape == (40, 56, 3) and heat.dtype == np.uint8 and heat.max() > 100
    raw = _read(out / "a_x2_uncertainty16.png")
    assert raw.shape == (40, 56) and raw.dtype == np.uint16 and raw.max() > 0


def test_uncertainty_zero_at_temperature_zero(tmp_path, fake_load):
    src = _write(tmp_path / "z.png")
    assert main(["enhance", str(src), "--uncertainty", "--uncertainty-raw", "--temperature", "0"]) == 0
    assert not _read(tmp_path / "nightflow_out" / "z_x2_uncertainty16.png").any()


def test_existing_outputs_kept_unless_overwrite(tmp_path, fake_load, capsys):
    src = _write(tmp_path / "k.png")
    out = tmp_path / "nightflow_out" / "k_x2.png"
    out.parent.mkdir()
    out.write_bytes(b"keep me")
    assert main(["enhance", str(src)]) == 0
    assert out.read_bytes() == b"keep me"
    assert "kept 1 already done" in capsys.readouterr().out
    assert main(["enhance", str(src), "--overwrite"]) == 0
    assert _read(out).shape == (40, 56, 3)


def test_same_stem_inputs_get_distinct_names(tmp_path, fake_load):
    _write(tmp_path / "a.png", seed=1)
    _write(tmp_path / "a.jpg", seed=2)
    assert main(["enhance", str(tmp_path / "a.png"), str(tmp_path / "a.jpg")]) == 0
    names = sorted(p.name for p in (tmp_path / "nightflow_out").iterdir())
    assert names == ["a_jpg_x2.png", "a_png_x2.png"]


def test_never_writes_over_an_input(tmp_path, fake_load, capsys):
    a = _write(tmp_path / "a.png")
    victim = _write(tmp_path / "a_x2.png", seed=5)
    before = victim.read_bytes()
    assert main(["enhance", str(a), str(victim), "-o", str(tmp_path), "--overwrite"]) == 2
    err = capsys.readouterr().err.strip()
    assert "overwrite an input" in err and len(err.splitlines()) == 1
    assert victim.read_bytes() == before


def test_without_model_jpeg_files_get_the_jpeg_variant_and_are_told_so(tmp_path, fake_load, capsys):
    import json

    from nightflow.data.io import read_image_text

    _write(tmp_path / "a.png")
    _write(tmp_path / "b.jpg")
    _write(tmp_path / "c.png.jpg", seed=3)  # the name does not decide: its bytes do
    os.replace(tmp_path / "c.png.jpg", tmp_path / "c.png")  # a JPEG named .png
    assert main(["enhance", str(tmp_path), "--json"]) == 0
    assert sorted(fake_load) == [
        ("lolisrflow-x2", "auto"),
        ("lolisrflow-x2-jpeg", "auto"),
    ]  # each loaded once
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc["model"] == "auto" and doc["scale"] == 2
    assert {Path(i["input"]).name: i["model"] for i in doc["images"]} == {
        "a.png": "lolisrflow-x2",
        "b.jpg": "lolisrflow-x2-jpeg",
        "c.png": "lolisrflow-x2-jpeg",
    }
    note = [line for line in captured.err.splitlines() if "note:" in line]
    assert len(note) == 1 and "2 inputs are JPEGs" in note[0] and "lolisrflow-x2-jpeg" in note[0]
    assert "--model" in note[0] and "1 other(s) lolisrflow-x2" in note[0]
    out = tmp_path / "nightflow_out"
    record = json.loads(read_image_text(out / "b_x2.png")["nightflow"])
    assert record["model"] == "lolisrflow-x2-jpeg"
    # run again: every output is kept (each was recorded with the model that made it)
    assert main(["enhance", str(tmp_path)]) == 0
    assert "kept 3 already done" in capsys.readouterr().out


def test_without_model_scale_picks_the_bundled_pair_and_model_uses_one_for_all(tmp_path, fake_load, capsys):
    _write(tmp_path / "a.png")
    _write(tmp_path / "b.jpg")
    assert main(["enhance", str(tmp_path), "--scale", "4", "-o", str(tmp_path / "x4"), "--quiet"]) == 0
    assert sorted(n for n, _ in fake_load) == ["lolisrflow-x4", "lolisrflow-x4-jpeg"]
    assert capsys.readouterr().err == ""  # --quiet: no note either
    fake_load.clear()
    assert main(["enhance", str(tmp_path), "--model", "lolisrflow-x2", "-o", str(tmp_path / "one")]) == 0
    assert fake_load == [("lolisrflow-x2", "auto")]
    assert "JPEG" not in capsys.readouterr().err  # the user chose: nothing to tell


def test_float_tiff_gives_16bit_png(tmp_path, fake_load):
    import tifffile

    src = tmp_path / "f.tif"
    tifffile.imwrite(
        src, np.random.default_rng(0).random((12, 10, 3), dtype=np.float32) * 0.3, photometric="rgb"
    )
    assert main(["enhance", str(src)]) == 0
    assert _read(tmp_path / "nightflow_out" / "f_x2.png").dtype == np.uint16


@pytest.mark.parametrize(
    ("setup", "argv", "message"),
    [
        (None, ["missing.png"], "no such file"),
        (None, ["nothing/*.png"], "no images match"),
        ("garbage", ["bad.png"], "cannot read image"),
        ("tiny", ["tiny.png"], "tiny.png: image is only 1×1"),
        ("ok", ["ok.png", "--model", "lolisrflow-x2", "--scale", "4"], "upscales x2 but --scale 4"),
        ("ok", ["ok.png", "--uncertainty", "--uncertainty-samples", "1"], "at least 2 samples"),
        ("ok", ["ok.png", "-o", "ok.png"], "is a file"),
    ],
    ids=["missing", "empty-glob", "unreadable", "1x1", "wrong-scale", "one-sample", "out-is-file"],
)
def test_user_errors_exit_2_with_one_line(tmp_path, fake_load, capsys, monkeypatch, setup, argv, message):
    monkeypatch.chdir(tmp_path)
    if setup == "garbage":
        (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not really a png")
    elif setup == "tiny":
        _write(tmp_path / "tiny.png", h=1, w=1)
    elif setup == "ok":
        _write(tmp_path / "ok.png")
    assert main(["enhance", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("nightflow enhance: error:") and message in err
    if setup == "ok":
        assert not (tmp_path / "nightflow_out" / "ok_x2.png").exists()  # refused before any work


def test_batch_goes_on_past_an_unreadable_image(tmp_path, fake_load, capsys):
    _write(tmp_path / "good.png")
    (tmp_path / "bad.png").write_bytes(b"not an image at all")
    assert main(["enhance", str(tmp_path)]) == 2
    assert (tmp_path / "nightflow_out" / "good_x2.png").exists()
    err = capsys.readouterr().err
    assert "bad.png" in err and "1 of 2 images failed" in err


def test_subprocess_bad_path_exit_code(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    proc = subprocess.run(
        [sys.executable, "-m", "nightflow", "enhance", str(tmp_path / "nope.png")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "no such file" in proc.stderr


def test_models_table_and_json(monkeypatch, capsys):
    rows = [
        {
            "name": "lolisrflow-x2",
            "scale": 2,
            "task": "enhance+sr",
            "params": 1_234_567,
            "bundled": False,
            "description": "LoLiSRFlow x2",
        },
        {
            "name": "llflow-small",
            "scale": 1,
            "task": "enhance",
            "params": 1_700_000,
            "bundled": True,
            "description": "LLFlow small",
        },
    ]
    monkeypatch.setattr(nightflow, "list_models", lambda: rows, raising=False)
    assert main(["models"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:5] == ["NAME", "SCALE", "TASK", "PARAMS", "BUNDLED"]
    assert out[1].split()[:5] == ["lolisrflow-x2", "x2", "enhance+sr", "1.23M", "no"]
    assert out[2].split()[:5] == ["llflow-small", "x1", "enhance", "1.7M", "yes"]
    assert main(["models", "--json"]) == 0
    import json

    assert json.loads(capsys.readouterr().out)[0]["params"] == 1_234_567


@pytest.fixture(scope="module")
def real_checkpoints(tmp_path_factory):
    """Self-describing weights files of the real random-init tiny x2 and x4 models."""
    from nightflow.models import build_model
    from nightflow.models.checkpoint import save_model
    from nightflow.models.zoo import get_config

    folder = tmp_path_factory.mktemp("ckpt")
    paths = {}
    for scale in (2, 4):
        cfg = get_config(f"lolisrflow-x{scale}-tiny")
        paths[scale] = save_model(build_model(cfg), folder / f"x{scale}.safetensors", cfg)
    return paths


def test_real_checkpoint_end_to_end(tmp_path, real_checkpoints):
    src8 = _write(tmp_path / "in" / "odd.png", h=19, w=27)
    src16 = _write(tmp_path / "in" / "deep.png", h=16, w=12, dtype=np.uint16)
    out = tmp_path / "out"
    argv = [
        "enhance",
        str(tmp_path / "in"),
        "-o",
        str(out),
        "--model",
        str(real_checkpoints[2]),
        "--scale",
        "2",
    ]
    assert (
        main([*argv, "--samples", "2", "--uncertainty", "--uncertainty-samples", "2", "--device", "auto"])
        == 0
    )
    img = _read(out / "odd_x2.png")
    assert img.shape == (38, 54, 3) and img.dtype == np.uint8
    assert _read(out / "deep_x2.png").shape == (32, 24, 3) and _read(out / "deep_x2.png").dtype == np.uint16
    assert _read(out / "odd_x2_s01.png").shape == (38, 54, 3)
    assert _read(out / "odd_x2_uncertainty.png").shape == (38, 54, 3)
    assert src8.exists() and src16.exists()


@pytest.mark.parametrize(
    ("model", "extra", "message"),
    [
        ("x4", ["--scale", "2"], "upscales x4 but --scale 2"),
        ("garbage", [], "not a readable safetensors"),
        ("unbundled", [], "no bundled weights"),
        ("no-such-model", [], "unknown model"),
        ("missing/dir/w.safetensors", [], "checkpoint not found"),
    ],
    ids=["wrong-scale", "corrupt", "zoo-without-weights", "unknown-name", "missing-file"],
)
def test_real_loader_errors_exit_2(tmp_path, real_checkpoints, capsys, model, extra, message):
    src = _write(tmp_path / "a.png")
    if model == "x4":
        model = str(real_checkpoints[4])
    elif model == "garbage":
        (tmp_path / "bad.safetensors").write_bytes(b"definitely not safetensors")
        model = str(tmp_path / "bad.safetensors")
    elif model.startswith("missing"):
        model = str(tmp_path / model)
    elif model == "unbundled":
        from nightflow.models import zoo

        model = next(n for n in zoo.config_names() if not zoo.weights_path(n).is_file())
    assert main(["enhance", str(src), "--model", model, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "nightflow_out").exists()


def test_default_model_is_the_zoo_x2(tmp_path, capsys):
    """No --model: the zoo's lolisrflow-x2 — restored if its weights are bundled, else a one-line error."""
    from nightflow.models import zoo

    src = _write(tmp_path / "d.png", h=12, w=16)
    code = main(["enhance", str(src)])
    if zoo.weights_path("lolisrflow-x2").is_file():
        assert code == 0
        assert _read(tmp_path / "nightflow_out" / "d_x2.png").shape == (24, 32, 3)
    else:
        assert code == 2 and "no bundled weights" in capsys.readouterr().err
