"""`nightflow benchmark` end to end on fixtures, suite parsing, resume, errors, the figure, the shipped suites.

Fixtures: a tiny paired ×2 folder, a folder of two photos synthesised on the fly (×1, fixed seed and centre
crop), classical baselines and a random-init tiny LoLiSRFlow checkpoint written with ``save_model``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from nightflow.baselines import get_baseline
from nightflow.cli import main
from nightflow.config import from_dict
from nightflow.data.datasets import DataConfig, build_dataset
from nightflow.data.io import read_image, to_tensor
from nightflow.evaluation.figure import compose, crop_box, wrap
from nightflow.evaluation.suite import load_suite, plan_suite
from nightflow.metrics import compute_metrics
from nightflow.models import build_model, zoo
from nightflow.models.checkpoint import load_model, save_model
from nightflow.models.zoo import get_config

REPO = Path(__file__).resolve().parents[1]
SUITES = REPO / "benchmarks" / "suites"


def _smooth(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    img = cv2.GaussianBlur(rng.random((h, w, 3)), (0, 0), 2.0)
    img = (img - img.min()) / (img.max() - img.min())
    return np.round(img * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """root/pairs/{low,high} (3 pairs, ×2: 16×24 → 32×48) and root/photos/val (2 photos 48×64)."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(1)
    for sub in ("pairs/low", "pairs/high", "photos/val"):
        (root / sub).mkdir(parents=True)
    for i in range(3):
        hq = _smooth(rng, 32, 48)
        cv2.imwrite(str(root / "pairs/high" / f"p{i}.png"), hq)
        cv2.imwrite(
            str(root / "pairs/low" / f"p{i}.png"), cv2.resize(hq, (24, 16), interpolation=cv2.INTER_AREA) // 4
        )
    for i in range(2):
        cv2.imwrite(str(root / "photos/val" / f"photo{i}.png"), _smooth(rng, 48, 64))
    cfg = get_config("lolisrflow-x2-tiny")
    save_model(build_model(cfg), root / "flow_x2.safetensors", cfg)
    return root


def _suite(data: Path, tmp_path: Path, **changes) -> Path:
    suite = {
        "name": "fixture",
        "description": "tiny fixture suite",
        "data_root": str(data),
        "output": str(tmp_path / "out"),
        "metrics": ["psnr", "ssim"],
        "gt_mean": True,
        "figure": {"images": 2, "crop": 24},
        "models": [
            {"spec": str(data / "flow_x2.safetensors"), "label": "flow", "group": "joint"},
            {
                "spec": str(data / "flow_x2.safetensors"),
                "label": "flow sampled",
                "group": "joint",
                "temperature": 0.8,
                "metrics": ["psnr"],
            },
            {"spec": "baseline:gamma+bicubic", "label": "gamma+bicubic", "group": "classical"},
        ],  # fmt: skip
        "datasets": [
            {"label": "pairs-x2", "data": {"format": "paired", "root": "pairs", "scale": 2}},
            {
                "label": "syn-x1",
                "data": {
                    "format": "synthetic",
                    "root": "photos",
                    "split": "val",
                    "scale": 1,
                    "patch_size": 32,
                    "seed": 7,
                },
            },
        ],  # fmt: skip
        "published": [
            {
                "label": "Paper net",
                "group": "joint",
                "source": "a made-up row",
                "values": {"pairs-x2": {"psnr": 21.5}},
            }
        ],
    }
    suite.update(changes)
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


def _bench(*argv: str) -> int:
    return main(["benchmark", "--quiet", "--device", "cpu", *argv])


def _tensor(path: Path) -> torch.Tensor:
    return to_tensor(read_image(path)).unsqueeze(0)


def test_benchmark_end_to_end(data, tmp_path, capsys):
    suite = _suite(data, tmp_path)
    assert _bench(str(suite)) == 0
    out = tmp_path / "out"
    assert {p.name for p in out.iterdir()} >= {"results.md", "results.csv", "results.json", "figure_pairs-x2.png",
                                               "figure_syn-x1.png", "cells"}  # fmt: skip

    report = json.loads((out / "results.json").read_text())
    assert {"suite", "device", "settings", "metric_descriptions", "cells", "published", "skipped"} <= set(
        report
    )
    assert report["device"].startswith("cpu")
    cells = {(c["model"]["label"], c["dataset"]) for c in report["cells"]}
    # the ×2 flow does not run on ×1 data; the baseline runs on both
    assert cells == {("flow", "pairs-x2"), ("flow sampled", "pairs-x2"), ("gamma+bicubic", "pairs-x2"),
                     ("gamma+bicubic", "syn-x1")}  # fmt: skip
    by_cell = {(c["model"]["label"], c["dataset"]): c["result"] for c in report["cells"]}

    # numbers equal metrics computed directly
    flow = load_model(data / "flow_x2.safetensors")
    base = get_baseline("gamma+bicubic", 2)
    direct_flow, direct_base = [], []
    with torch.no_grad():
        for i in range(3):
            lq, hq = _tensor(data / "pairs/low" / f"p{i}.png"), _tensor(data / "pairs/high" / f"p{i}.png")
            direct_flow.append(compute_metrics(flow.restore(lq), hq, ["psnr", "ssim"], gt_mean=True))
            direct_base.append(compute_metrics(base.restore(lq), hq, ["psnr", "ssim"], gt_mean=True))
    for label, direct in (("flow", direct_flow), ("gamma+bicubic", direct_base)):
        mean = by_cell[(label, "pairs-x2")]["mean"]
        for key in ("psnr", "ssim", "psnr_gtmean", "ssim_gtmean"):
            assert mean[key] == pytest.approx(np.mean([d[key] for d in direct]), abs=1e-4), (label, key)
    syn = build_dataset(from_dict(DataConfig, {"format": "synthetic", "root": str(data / "photos"), "split": "val",
                                               "scale": 1, "patch_size": 32, "seed": 7}), train=False)  # fmt: skip
    base1 = get_baseline("gamma+bicubic", 1)
    syn_psnr = [compute_metrics(base1.restore(it["lq"][None]), it["hq"][None], "psnr")["psnr"] for it in syn]
    assert by_cell[("gamma+bicubic", "syn-x1")]["mean"]["psnr"] == pytest.approx(np.mean(syn_psnr), abs=1e-9)
    sampled = by_cell[("flow sampled", "pairs-x2")]
    assert sampled["columns"] == ["psnr", "psnr_gtmean"] and sampled["options"]["temperature"] == 0.8
    assert sampled["mean"]["psnr"] != pytest.approx(by_cell[("flow", "pairs-x2")]["mean"]["psnr"], abs=1e-3)
    params = sum(p.numel() for p in flow.parameters())
    assert by_cell[("flow", "pairs-x2")]["model"]["params"] == params

    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 5  # 4 cells + 1 published value set
    flow_row = next(r for r in rows if r["model"] == "flow")
    assert float(flow_row["psnr"]) == pytest.approx(by_cell[("flow", "pairs-x2")]["mean"]["psnr"], abs=1e-9)
    assert int(flow_row["params"]) == params and float(flow_row["seconds_per_image"]) > 0
    assert next(r for r in rows if r["kind"] == "published")["psnr"] == "21.5"

    md = (out / "results.md").read_text()
    assert "| Group | Model | T | pairs-x2 psnr↑ | pairs-x2 psnr_gtmean↑ |" in md
    assert "Paper net (published)" in md and "21.50" in md
    assert f"{by_cell[('flow', 'pairs-x2')]['mean']['psnr']:.2f}" in md
    assert "## Conventions" in md and "skimage convention" in md
    assert "dfsr-lle preset, seed 7" in md  # synthetic data says how it was made
    assert "Benchmark: fixture" in capsys.readouterr().out

    # the figure is a real image holding the ground-truth crop pixel for pixel
    fig = read_image(out / "figure_pairs-x2.png")
    assert fig.ndim == 3 and fig.shape[1] > 4 * 24 and fig.std() > 10
    box = crop_box(32, 48, 2, 24)
    gt = read_image(data / "pairs/high" / "p0.png")[box.y : box.y + box.size, box.x : box.x + box.size]
    windows = np.lib.stride_tricks.sliding_window_view(fig, gt.shape)
    assert (windows == gt).all(axis=(-3, -2, -1)).any()


def test_interrupted_run_resumes_and_results_are_kept(data, tmp_path, capsys):
    suite = _suite(data, tmp_path, models=[{"spec": "baseline:he+bicubic", "label": "he"},
                                           {"spec": "baseline:lime+bicubic", "label": "lime"}])  # fmt: skip
    out = tmp_path / "out"
    assert _bench(str(suite)) == 0
    first = json.loads((out / "results.json").read_text())
    assert _bench(str(suite)) == 2  # finished results are kept
    assert "already exists" in capsys.readouterr().err
    for name in ("results.md", "results.csv", "results.json"):  # as if interrupted before the tables
        (out / name).unlink()
    for fig in out.glob("figure_*.png"):
        fig.unlink()
    assert _bench(str(suite)) == 0
    again = json.loads((out / "results.json").read_text())
    assert all(c["cached"] for c in again["cells"])
    assert [c["result"]["mean"] for c in again["cells"]] == [c["result"]["mean"] for c in first["cells"]]
    assert _bench(str(suite), "--overwrite") == 0
    assert not any(c["cached"] for c in json.loads((out / "results.json").read_text())["cells"])


def test_missing_weights_refused_or_skipped(data, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", tmp_path / "no-weights")
    models = [
        {"spec": "lolisrflow-x{scale}", "label": "zoo flow"},
        {"spec": "baseline:gamma+bicubic", "label": "g"},
    ]
    suite = _suite(data, tmp_path, models=models, published=[])
    assert _bench(str(suite)) == 2
    err = capsys.readouterr().err
    assert "has no weights" in err and "--skip-missing" in err and len(err.strip().splitlines()) == 1
    assert _bench(str(suite), "--skip-missing", "--limit", "1") == 0
    report = json.loads((tmp_path / "out" / "results.json").read_text())
    assert {c["model"]["label"] for c in report["cells"]} == {"g"}
    assert report["skipped"] == ["zoo flow (lolisrflow-x2)", "zoo flow (lolisrflow-x1)"]
    assert all(c["result"]["data"]["images"] == 1 for c in report["cells"])
    for f in (tmp_path / "out").glob("*.*"):  # the figure shows only scored images, so the cells are reusable
        f.unlink()
    assert _bench(str(suite), "--skip-missing", "--limit", "1") == 0
    assert all(c["cached"] for c in json.loads((tmp_path / "out" / "results.json").read_text())["cells"])


def test_dry_run_lists_cells_and_writes_nothing(data, tmp_path, capsys):
    suite = _suite(data, tmp_path)
    assert _bench(str(suite), "--dry-run") == 0
    out = capsys.readouterr().out
    assert out.startswith("4 cell(s)") and "flow on pairs-x2 (×2, T=0): ready" in out
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"models": [{"spec": "baseline:gamma", "temprature": 0.8}]}, "unknown config key 'models[0].temprature'"),
        ({"datasets": [{"label": "d", "data": {"format": "paired", "root": "pairs", "sacle": 2}}]},
         "unknown config key 'datasets[0].data.sacle'"),
        ({"models": [{"spec": "no-such-net"}]}, "unknown model 'no-such-net'"),
        ({"models": [{"spec": "baseline:gamma", "datasets": ["nope"]}]}, "no dataset labelled 'nope'"),
        ({"models": [{"spec": "baseline:gamma"}, {"spec": "baseline:gamma"}]}, "used twice"),
        ({"metrics": ["psnr", "fid"]}, "unknown metric 'fid'"),
        ({"models": [{"spec": "lolisrflow-x4"}]}, "matches no dataset"),
        ({"data_root": None}, "pass --data-root"),
    ],
)  # fmt: skip
def test_bad_suites_exit_2_with_one_line(data, tmp_path, monkeypatch, capsys, changes, message):
    monkeypatch.delenv("NIGHTFLOW_DATA", raising=False)
    suite = _suite(data, tmp_path, **changes)
    assert _bench(str(suite)) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and err.startswith("nightflow benchmark: error:")


def test_missing_suite_file_and_bad_data_root(data, tmp_path, capsys):
    assert _bench(str(tmp_path / "nope.yaml")) == 2
    assert "config file not found" in capsys.readouterr().err
    suite = _suite(data, tmp_path)
    assert _bench(str(suite), "--data-root", str(tmp_path / "elsewhere")) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_figure_helpers():
    box = crop_box(50, 70, 4, 30)
    assert (box.size, box.y % 4, box.x % 4) == (28, 0, 0) and box.y + box.size <= 50
    lines = wrap("LoLiSRFlow × a very long model label that cannot fit", 60)
    assert len(lines) == 2 and lines[-1].endswith("..") and lines[0].isascii()
    assert all(cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)[0][0] <= 60 for line in lines)
    tiles = [[torch.zeros(3, 16, 16), np.full((16, 16, 3), 255, np.uint8), None]]
    img = compose(["in", "model", "gt"], tiles, [["a", "12.34 dB", ""]])
    assert img.dtype == np.uint8 and img.shape[1] == 4 + 3 * (16 + 4)
    with pytest.raises(ValueError, match="expected 16×16"):
        compose(["a", "b"], [[torch.zeros(3, 16, 16), torch.zeros(3, 8, 8)]], [["", ""]])


def test_shipped_suites_parse_and_plan(tmp_path):
    synthetic = load_suite(SUITES / "synthetic.yaml")
    cells = plan_suite(synthetic, SUITES / "synthetic.yaml")
    datasets = {c.dataset.label: c.data for c in cells}
    assert sorted(d.scale for d in datasets.values()) == [1, 2, 4]
    for cfg in datasets.values():
        assert (cfg.format, cfg.split, cfg.seed, cfg.augment) == ("synthetic", "val", 0, False)
        assert Path(cfg.root) == (REPO / "data" / "photos").resolve()
    specs = {(c.info.spec, c.model.temperature) for c in cells}
    for s in (1, 2, 4):
        assert (f"lolisrflow-x{s}", 0.0) in specs and (f"lolisrflow-x{s}", 0.8) in specs
    for s in (2, 4):
        assert (f"runs/regression-x{s}-tiny", 0.0) in specs and (f"runs/sequential-x{s}-tiny", 0.0) in specs
    cascades = {c.info.spec for c in cells if c.info.kind == "baseline" and c.scale == 4}
    assert len(cascades) >= 3 and all("+" in s for s in cascades)

    # the JPEG suite is the synthetic one with a JPEG step added: same photos, seeds and crops
    jpeg = load_suite(SUITES / "synthetic-jpeg.yaml")
    jpeg_data = {c.dataset.label: c.data for c in plan_suite(jpeg, SUITES / "synthetic-jpeg.yaml")}
    assert jpeg_data.keys() == datasets.keys()
    for label, cfg in jpeg_data.items():
        assert cfg.preset == "dfsr-lle-jpeg" and datasets[label].preset == "dfsr-lle"
        assert dataclasses.replace(cfg, preset="dfsr-lle") == datasets[label]

    # the JPEG-variant suites score the synthetic suite's pairs too, lossless and JPEG; the quality sweep
    # differs between its sets only by the JPEG quality
    variants = plan_suite(load_suite(SUITES / "jpeg-variants.yaml"), SUITES / "jpeg-variants.yaml")
    for c in variants:
        plain = dataclasses.replace(c.data, preset="dfsr-lle")
        assert plain == datasets[f"x{c.scale}"] and c.data.preset in ("dfsr-lle", "dfsr-lle-jpeg")
    assert {c.info.spec for c in variants if c.info.kind == "zoo"} == {
        f"lolisrflow-x{s}{v}" for s in (1, 2, 4) for v in ("", "-jpeg")
    }
    sweep = plan_suite(load_suite(SUITES / "jpeg-quality-x2.yaml"), SUITES / "jpeg-quality-x2.yaml")
    qualities = {c.dataset.label: c.data.jpeg_quality for c in sweep}
    assert qualities == {"lossless": None, "q95": [95, 95], "q85": [85, 85], "q75": [75, 75], "q60": [60, 60]}
    for c in sweep:
        assert dataclasses.replace(c.data, preset="dfsr-lle", jpeg_quality=None) == datasets["x2"]

    # the foreign suite: pairs written by scripts/make_foreign_pairs.py, scored against the naive and the
    # exposure-matched cascades
    foreign = plan_suite(load_suite(SUITES / "foreign.yaml"), SUITES / "foreign.yaml")
    assert {(c.data.format, c.data.scale, Path(c.data.root)) for c in foreign} == {
        ("paired", s, (REPO / "data" / "foreign" / f"x{s}").resolve()) for s in (1, 2, 4)
    }
    assert {"baseline:oracle+bicubic", "baseline:auto+bicubic"} <= {c.info.spec for c in foreign}

    rellisur = load_suite(SUITES / "rellisur.yaml")
    cells = plan_suite(rellisur, SUITES / "rellisur.yaml", tmp_path)
    assert {(c.data.format, c.data.split, c.data.scale, c.data.crop_lq) for c in cells} == {
        ("rellisur", "test", 2, 624),
        ("rellisur", "test", 4, 624),
    }
    assert Path(cells[0].data.root) == tmp_path / "RELLISUR"
    assert {c.model.group for c in cells} == {"sequential", "joint"}
    assert {p.group for p in rellisur.published} == {"sequential", "joint"} and len(rellisur.published) == 6


@pytest.mark.parametrize("path", sorted(SUITES.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_suite_parses_and_plans_its_cells(path, tmp_path):
    """A suite the docs cite must stay runnable as the code changes: strict parsing, every model spec resolvable
    (zoo names, baselines, run paths that may be absent) and at least one cell. A suite without a data root of its
    own (RELLISUR: the user's copy) gets a stand-in folder, as --data-root would give it."""
    suite = load_suite(path)
    cells = plan_suite(suite, path, None if suite.data_root else tmp_path)
    assert cells and {c.dataset.label for c in cells} == {d.label for d in suite.datasets}
