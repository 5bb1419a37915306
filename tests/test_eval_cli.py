"""`nightflow eval` end to end on tiny fixtures: numbers equal metrics computed directly, files, errors.

Models: classical baselines and a random-init tiny LoLiSRFlow written with ``save_model`` (its numbers are
meaningless, but they must equal what the restorer and ``nightflow.metrics`` give when called directly).
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from nightflow.baselines import get_baseline
from nightflow.cli import main
from nightflow.data.io import read_image, to_tensor
from nightflow.evaluation import image_seed
from nightflow.inference import draw_noise
from nightflow.metrics import compute_metrics, niqe
from nightflow.models import build_model
from nightflow.models.checkpoint import load_model, save_model
from nightflow.models.zoo import get_config


def _smooth(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    img = cv2.GaussianBlur(rng.random((h, w, 3)), (0, 0), 2.0)
    img = (img - img.min()) / (img.max() - img.min())
    return np.round(img * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    """low/ and high/ folders: 3 pairs, LR 16×24 (dark, area-downscaled), HR 32×48."""
    root = tmp_path_factory.mktemp("pairs")
    rng = np.random.default_rng(0)
    for i in range(3):
        hq = _smooth(rng, 32, 48)
        lq = (cv2.resize(hq, (24, 16), interpolation=cv2.INTER_AREA) * 0.25).astype(np.uint8)
        (root / "low").mkdir(exist_ok=True)
        (root / "high").mkdir(exist_ok=True)
        cv2.imwrite(str(root / "low" / f"img{i}.png"), lq)
        cv2.imwrite(str(root / "high" / f"img{i}.png"), hq)
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    cfg = get_config("lolisrflow-x2-tiny")
    path = tmp_path_factory.mktemp("ckpt") / "flow_x2.safetensors"
    return save_model(build_model(cfg), path, cfg)


def _pair_tensors(root: Path, i: int) -> tuple[torch.Tensor, torch.Tensor]:
    lq = to_tensor(read_image(root / "low" / f"img{i}.png")).unsqueeze(0)
    hq = to_tensor(read_image(root / "high" / f"img{i}.png")).unsqueeze(0)
    return lq, hq


def _eval(*argv: str) -> int:
    return main(["eval", "--quiet", "--device", "cpu", *argv])


def test_baseline_json_and_csv_equal_direct_metrics(pairs, tmp_path, capsys):
    js, cs = tmp_path / "r.json", tmp_path / "r.csv"
    argv = ["--model", "baseline:gamma+bicubic", "--data", str(pairs), "--scale", "2"]
    assert (
        _eval(*argv, "--metrics", "psnr,ssim_matlab_y", "--gt-mean", "--json", str(js), "--csv", str(cs)) == 0
    )
    out = capsys.readouterr().out
    assert "psnr_gtmean" in out and "MATLAB/BasicSR convention" in out  # conventions are named

    report = json.loads(js.read_text())
    assert {"model", "data", "options", "device", "columns", "images", "mean", "metric_descriptions"} <= set(
        report
    )
    assert report["model"] == {"spec": "baseline:gamma+bicubic", "kind": "baseline", "scale": 2, "params": 0,
                               "path": None}  # fmt: skip
    assert report["columns"] == ["psnr", "ssim_matlab_y", "psnr_gtmean", "ssim_matlab_y_gtmean"]
    assert report["data"]["images"] == 3 and report["options"]["temperature"] == 0.0

    baseline = get_baseline("gamma+bicubic", 2)
    names = ["psnr", "ssim_matlab_y"]
    for i, row in enumerate(report["images"]):
        lq, hq = _pair_tensors(pairs, i)
        direct = compute_metrics(baseline.restore(lq), hq, names, gt_mean=True)
        assert row["name"] == f"img{i}" and row["seconds"] > 0
        for key, value in direct.items():
            assert row[key] == pytest.approx(value, abs=1e-9)
        assert row["psnr_gtmean"] != pytest.approx(row["psnr"], abs=0.1)  # rescaling changed the dark output
    for key in report["columns"]:
        assert report["mean"][key] == pytest.approx(np.mean([r[key] for r in report["images"]]), abs=1e-12)

    rows = list(csv.DictReader(cs.open()))
    assert [r["name"] for r in rows] == ["img0", "img1", "img2", "mean"]
    assert float(rows[1]["psnr"]) == pytest.approx(report["images"][1]["psnr"], abs=1e-9)
    assert float(rows[3]["ssim_matlab_y_gtmean"]) == pytest.approx(
        report["mean"]["ssim_matlab_y_gtmean"], abs=1e-9
    )


def test_checkpoint_mean_path_and_seeded_samples(pairs, checkpoint, tmp_path):
    restorer = load_model(checkpoint)
    runs = {}
    for name, extra in [("t0", []), ("t8", ["--temperature", "0.8", "--seed", "3"]),
                        ("t8b", ["--temperature", "0.8", "--seed", "3"])]:  # fmt: skip
        js = tmp_path / f"{name}.json"
        assert (
            _eval(
                "--model",
                str(checkpoint),
                "--data",
                str(pairs),
                "--metrics",
                "psnr",
                "--json",
                str(js),
                *extra,
            )
            == 0
        )
        runs[name] = json.loads(js.read_text())
    assert (
        runs["t0"]["model"]["kind"] == "checkpoint" and runs["t0"]["model"]["scale"] == 2
    )  # scale from the model
    assert runs["t0"]["model"]["params"] == sum(p.numel() for p in restorer.parameters())
    with torch.no_grad():
        for i in range(3):
            lq, hq = _pair_tensors(pairs, i)
            mean_path = compute_metrics(restorer.restore(lq), hq, "psnr")["psnr"]
            noise = draw_noise((1, 3, 32, 48), torch.Generator().manual_seed(image_seed(3, i)))
            sampled = compute_metrics(restorer.restore(lq, 0.8, noise=noise).clamp(0, 1), hq, "psnr")["psnr"]
            assert runs["t0"]["images"][i]["psnr"] == pytest.approx(mean_path, abs=1e-4)
            assert runs["t8"]["images"][i]["psnr"] == pytest.approx(sampled, abs=1e-4)
            assert (
                runs["t8b"]["images"][i]["psnr"] == runs["t8"]["images"][i]["psnr"]
            )  # same seed, same numbers
            assert runs["t8"]["images"][i]["psnr"] != pytest.approx(mean_path, abs=1e-3)


def test_save_writes_the_scored_images(pairs, tmp_path):
    out = tmp_path / "restored"
    assert _eval("--model", "lime+bicubic", "--data", str(pairs), "--scale", "2", "--save", str(out)) == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == ["0000_img0.png", "0001_img1.png", "0002_img2.png"]
    lq, _ = _pair_tensors(pairs, 2)
    expected = np.round(get_baseline("lime+bicubic", 2).restore(lq)[0].permute(1, 2, 0).numpy() * 255)
    assert np.abs(read_image(out / files[2]).astype(float) - expected).max() <= 1


def test_unpaired_defaults_to_niqe_and_refuses_full_reference_metrics(tmp_path, capsys):
    folder = tmp_path / "dicm"
    folder.mkdir()
    img = _smooth(np.random.default_rng(5), 100, 200)
    cv2.imwrite(str(folder / "a.png"), img // 3)
    js = tmp_path / "n.json"
    assert (
        _eval("--model", "baseline:gamma", "--data", str(folder), "--format", "unpaired", "--json", str(js))
        == 0
    )
    report = json.loads(js.read_text())
    direct = float(
        niqe(get_baseline("gamma").restore(to_tensor(read_image(folder / "a.png")).unsqueeze(0)))[0]
    )
    assert report["columns"] == ["niqe"] and report["mean"]["niqe"] == pytest.approx(direct, abs=1e-9)
    capsys.readouterr()
    assert (
        _eval("--model", "baseline:gamma", "--data", str(folder), "--format", "unpaired", "--metrics", "psnr")
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert "needs ground truth" in err and len(err.splitlines()) == 1


def test_existing_result_is_kept_unless_overwrite(pairs, tmp_path, capsys):
    js = tmp_path / "r.json"
    js.write_text("keep me")
    argv = ["--model", "baseline:he+bicubic", "--data", str(pairs), "--scale", "2", "--json", str(js)]
    assert _eval(*argv) == 2
    assert "already exists" in capsys.readouterr().err and js.read_text() == "keep me"
    assert _eval(*argv, "--overwrite") == 0
    assert json.loads(js.read_text())["model"]["spec"] == "baseline:he+bicubic"
    assert not list(tmp_path.glob(".*tmp"))  # atomic write left nothing behind
    target = pairs / "high" / "img0.png"
    before = target.read_bytes()
    argv = ["--model", "baseline:he+bicubic", "--data", str(pairs), "--scale", "2", "--csv", str(target)]
    assert _eval(*argv, "--overwrite") == 2  # never written over an input, even with --overwrite
    assert "is one of the input images" in capsys.readouterr().err and target.read_bytes() == before


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "baseline:gamma", "--data", "/no/such/folder"], "is not a folder"),
        (["--model", "no-such-model", "--data", "{pairs}"], "unknown model 'no-such-model'"),
        (["--model", "runs/missing.safetensors", "--data", "{pairs}"], "checkpoint not found"),
        (["--model", "baseline:sharpen+bicubic", "--data", "{pairs}"], "unknown baseline 'sharpen'"),
        (["--model", "baseline:gamma", "--data", "{pairs}", "--metrics", "psnr,fid"], "unknown metric 'fid'"),
        (["--model", "{ckpt}", "--data", "{pairs}", "--scale", "4"], "restores ×2 but the data is ×4"),
        (["--model", "baseline:gamma+bicubic", "--data", "{pairs}", "--scale", "4"], "check data.scale"),
    ],
)
def test_user_errors_exit_2_with_one_line(pairs, checkpoint, capsys, argv, message):
    argv = [a.format(pairs=pairs, ckpt=checkpoint) for a in argv]
    assert _eval(*argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and err.startswith("nightflow eval: error:")


def test_cli_process_reports_a_bad_path_without_traceback(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "nightflow",
            "eval",
            "--model",
            "baseline:gamma",
            "--data",
            str(tmp_path / "nope"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "is not a folder" in proc.stderr


def test_eval_refuses_tiles_below_the_models_need_and_exposure_on_a_model_without_control(
    pairs, checkpoint, capsys
):
    assert _eval("--model", str(checkpoint), "--data", str(pairs), "--scale", "2", "--tile", "4") == 2
    assert "too small" in capsys.readouterr().err
    argv = ["--model", "baseline:gamma+bicubic", "--data", str(pairs), "--scale", "2", "--exposure", "1"]
    assert _eval(*argv) == 2
    assert "no exposure control" in capsys.readouterr().err


def test_eval_oracle_exposure_baseline_matches_the_targets_brightness(pairs, tmp_path):
    js = tmp_path / "oracle.json"
    argv = ["--model", "baseline:oracle+bicubic", "--data", str(pairs), "--scale", "2"]
    assert _eval(*argv, "--metrics", "psnr,ev_error", "--json", str(js)) == 0
    oracle = json.loads(js.read_text())["mean"]
    js2 = tmp_path / "plain.json"
    assert (
        _eval(*argv[:1], "baseline:bicubic", *argv[2:], "--metrics", "psnr,ev_error", "--json", str(js2)) == 0
    )
    plain = json.loads(js2.read_text())["mean"]
    assert oracle["ev_error"] < 0.1 < plain["ev_error"] and oracle["psnr"] > plain["psnr"] + 3
