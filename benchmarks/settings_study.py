"""Which patch size, batch, width and depth learn most per CPU-second? Train each setting of the ×2 recipe from
scratch for the same budget of training-step time, then score it on the synthetic suite's ×2 pairs.

Why a time budget and not a step count: a bigger patch or a wider flow costs more per step, so equal steps would
favour the expensive settings. ``train.time_budget_s`` counts training-step time only (not validation or
checkpoints), so every setting gets the same CPU seconds of learning. The lr schedule is constant (after the
recipe's warm-up) and EMA is off, so that a setting that takes fewer steps is not also judged on a lagging average.

Scores: PSNR at the exposure head's estimate (what a user gets) and at the target's exposure (the restoration
alone: a few minutes cannot train an exposure head, and the settings are about the flow and encoder), from
benchmarks/exposure_decomposition on the ``x2`` dataset of benchmarks/suites/synthetic.yaml.

    python -m benchmarks.settings_study --budget-s 420 --out /tmp/settings-study
    python -m benchmarks.settings_study --only recipe patch-64

Runs are resumable: a setting whose run already spent its budget is scored again, not retrained. Writes
results/settings_study.json and prints a markdown table. It is not part of `make bench` (about 8 minutes a
setting at the default budget, one thread).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from nightflow.train.checkpoint import CheckpointManager, load_state
from nightflow.train.run import train_run

from .common import ROOT, save
from .exposure_decomposition import decompose

RECIPE = "lolisrflow-x2-tiny-synthetic"

# name -> (what differs from the recipe, its overrides); the recipe: 96 px HR patches, batch 8, flow hidden 32, K=4
SETTINGS: dict[str, tuple[str, list[str]]] = {
    "recipe": ("96 px patches, batch 8, hidden 32, K = 4", []),
    "patch-64": ("64 px patches", ["data.patch_size=64"]),
    "patch-128-batch-4": ("128 px patches, batch 4", ["data.patch_size=128", "train.batch_size=4"]),
    "batch-4": ("batch 4", ["train.batch_size=4"]),
    "hidden-16": ("flow hidden width 16", ["model.flow.hidden=16"]),
    "steps-2": ("K = 2 flow steps per level", ["model.flow.steps=2"]),
}


def common_overrides(photos: Path, budget_s: float) -> list[str]:
    return [
        f"data.root={photos / 'train'}",
        f"val.root={photos / 'val'}",
        f"train.time_budget_s={budget_s}",
        "train.time_budget_clock=cpu",
        "train.max_steps=100000",
        "train.schedule=constant",
        "train.ema_decay=null",
        "train.val_every=100000",
        "train.checkpoint_every=100",
        "train.keep_last=2",
        "train.progress=false",
    ]


def latest_state(run_dir: Path) -> tuple[Path, dict] | None:
    """(checkpoint folder, its trainer state) of ``run_dir``'s latest checkpoint, or None."""
    latest = CheckpointManager(run_dir, 2).latest() if (run_dir / "checkpoints").is_dir() else None
    return None if latest is None else (latest, load_state(latest))


def run_setting(name: str, out: Path, photos: Path, budget_s: float, machine: list[str]) -> dict:
    """Train setting ``name`` until its budget is spent (resuming a run cut short), then score it."""
    label, extra = SETTINGS[name]
    run_dir = out / name
    found = latest_state(run_dir)
    if found is None or float(found[1].get("train_seconds", 0.0)) < budget_s:
        if (run_dir / "config.yaml").is_file():
            train_run(resume=run_dir, overrides=[f"train.time_budget_s={budget_s}"])
        else:
            train_run(RECIPE, overrides=common_overrides(photos, budget_s) + machine + extra, out=run_dir)
        found = latest_state(run_dir)
    assert found is not None
    folder, state = found
    step = int(state["step"])
    batch = int(yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["batch_size"])
    scored = decompose(str(folder), None)
    return {
        "setting": name,
        "differs": label,
        "overrides": extra,
        "steps": step,
        "train_seconds": round(float(state["train_seconds"]), 1),
        "seconds_per_step": round(float(state["train_seconds"]) / max(step, 1), 2),
        "patches_seen": step * batch,
        "psnr": scored["psnr"],
        "psnr_target_exposure": scored["psnr_oracle_exposure"],
        "mean_abs_head_error_ev": scored["mean_abs_head_error_ev"],
    }


def table(rows: list[dict], budget_s: float) -> str:
    lines = [
        f"| setting ({budget_s:.0f} s of training steps each) | steps | s/step | patches | PSNR | "
        "PSNR at the target's exposure |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['setting']}: {r['differs']} | {r['steps']} | {r['seconds_per_step']:.2f} | "
            f"{r['patches_seen']} | {r['psnr']:.2f} | {r['psnr_target_exposure']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budget-s", type=float, default=420.0, help="training-step seconds per setting")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "settings-study", help="run folders")
    parser.add_argument("--photos", type=Path, default=ROOT / "data" / "photos", help="holds train/ and val/")
    parser.add_argument("--only", nargs="+", choices=sorted(SETTINGS), help="settings to run (default all)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override for every setting, for this machine (e.g. train.amp=none on a CPU without AMX)",
    )
    args = parser.parse_args(argv)
    for split in ("train", "val"):
        if not (args.photos / split).is_dir():
            raise SystemExit(f"{args.photos / split}: no photos (run `make photos`)")
    rows = [
        run_setting(name, args.out, args.photos, args.budget_s, args.set) for name in (args.only or SETTINGS)
    ]
    save(
        "settings_study",
        {"recipe": RECIPE, "budget_s": args.budget_s, "machine_overrides": args.set, "rows": rows},
    )
    print(table(rows, args.budget_s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
