"""Training throughput (samples/s) of LoLiSRFlow x2 tiny on CPU: the full trainer vs a bare optimisation loop,
and the bundled recipe of today (96 px HR patches, ``train.amp: auto``: bf16 autocast where
``nightflow.precision.fast_bf16`` holds, else float32) against the first one (64 px, float32).

Why both: the bare loop (``model.loss`` + backward + Adam on one resident batch) is what the model costs; the
trainer adds on-the-fly synthetic data, per-item seeding, the loss all-reduce/NaN check, gradient clipping, EMA
and logging. Their ratio is the trainer's overhead, which is comparable between machines where absolute CPU
times on a shared box are not. Steps are timed from a step callback, after untimed warm-up steps.

``python -m benchmarks.run_all train [--quick]`` or ``python -m benchmarks.bench_train [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from benchmarks.common import conv_throughput_gflops, count_params, machine, save, table
from nightflow.context import oracle_log2_gain, thumbnail
from nightflow.precision import training_amp

MODEL = "lolisrflow-x2-tiny"
RECIPE_AMP = training_amp(
    "auto", "cpu"
)  # the recipes' train.amp: auto, as the trainer decides it on this CPU
FULL = {"patch": 96, "batch": 8, "warmup": 2, "steps": 8, "amp": RECIPE_AMP}  # the bundled recipe's settings
FIRST = {"patch": 64, "batch": 8, "warmup": 2, "steps": 8, "amp": "none"}  # the first bundled recipe
QUICK = {"patch": 32, "batch": 4, "warmup": 1, "steps": 3, "amp": RECIPE_AMP}
# One intra-op thread: on the shared 2-core machine, two threads measured up to ~9x slower per step under load
# (OpenMP workers spinning against other processes); one thread gives repeatable figures.
THREADS = 1


def _photos(folder: Path, count: int = 4, size: int = 160) -> Path:
    from nightflow.data.io import write_image

    gen = torch.Generator().manual_seed(0)
    for i in range(count):
        coarse = torch.rand(1, 3, 10, 10, generator=gen)
        write_image(
            folder / f"p{i}.png", F.interpolate(coarse, size=(size, size), mode="bicubic")[0].clamp(0, 1)
        )
    return folder


def _recipe(path: Path, photos: Path, case: dict) -> Path:
    total = case["warmup"] + case["steps"]
    recipe = {
        "model": MODEL,
        "data": {"format": "synthetic", "root": str(photos), "scale": 2, "patch_size": case["patch"]},
        "train": {
            "max_steps": total,
            "batch_size": case["batch"],
            "warmup_steps": 2,
            "grad_clip": 10.0,
            "ema_decay": 0.999,
            "log_every": 1,
            "val_every": 10**6,
            "checkpoint_every": 10**6,
            "device": "cpu",
            "progress": False,
            "amp": case["amp"],
        },
    }
    recipe["data"]["length"] = case["batch"] * total
    path.write_text(yaml.safe_dump(recipe))
    return path


def trainer_throughput(case: dict, work: Path) -> dict:
    """Samples/s of ``nightflow train`` steps (data, step, EMA, logs), from per-step callback timestamps."""
    from nightflow.train.run import train_run

    stamps: list[float] = []
    recipe = _recipe(work / "recipe.yaml", _photos(work / "photos"), case)
    start = time.perf_counter()
    train_run(
        recipe, out=work / "run", callbacks=[lambda trainer, step, losses: stamps.append(time.perf_counter())]
    )
    per_step = [b - a for a, b in zip(stamps[case["warmup"] - 1 :], stamps[case["warmup"] :])]
    seconds = statistics.median(per_step)
    return {
        "mode": "trainer",
        "s_per_step": seconds,
        "samples_per_s": case["batch"] / seconds,
        "run_seconds": time.perf_counter() - start,
    }


def bare_throughput(case: dict) -> dict:
    """Samples/s of model.loss + backward + Adam on one resident batch: the model's own cost."""
    from nightflow.models import build_model
    from nightflow.models.zoo import get_config

    model = build_model(get_config(MODEL)).train()
    s, p = model.scale, case["patch"]
    gen = torch.Generator().manual_seed(0)
    hq = torch.rand(case["batch"], 3, p, p, generator=gen)
    lq = F.avg_pool2d(hq, s) * 0.2
    batch = {"hq": hq, "lq": lq, "ctx_thumb": thumbnail(lq), "log2_gain": oracle_log2_gain(lq, hq)}
    model.initialize(batch)
    opt = torch.optim.Adam(model.parameters(), lr=2e-4, betas=(0.9, 0.99))
    times = []
    for i in range(case["warmup"] + case["steps"]):
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=case["amp"] == "bf16"):
            loss = model.loss(batch, generator=gen)["total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= case["warmup"]:
            times.append(time.perf_counter() - t)
    seconds = statistics.median(times)
    return {
        "mode": "bare loop",
        "s_per_step": seconds,
        "samples_per_s": case["batch"] / seconds,
        "hr_mpix_per_s": case["batch"] * p * p / seconds / 1e6,
        "params": count_params(model),
    }


def run(quick: bool = False, threads: int = THREADS) -> dict:
    case = QUICK if quick else FULL
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    load_before = os.getloadavg()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            rows = [bare_throughput(case), trainer_throughput(case, Path(tmp))]
            first = None if quick else bare_throughput(FIRST)
        gflops = conv_throughput_gflops(repeats=1 if quick else 3)  # same thread count as the runs
    finally:
        torch.set_num_threads(old_threads)
    for r in rows:
        r.update(patch_hr=case["patch"], batch=case["batch"], amp=case["amp"], timed_steps=case["steps"])
    overhead = rows[1]["s_per_step"] / rows[0]["s_per_step"] - 1.0
    recipe_ratio = None
    if first is not None:
        first.update(mode="bare loop, first recipe", patch_hr=FIRST["patch"], batch=FIRST["batch"])
        first.update(amp=FIRST["amp"], timed_steps=FIRST["steps"])
        rows.append(first)
        recipe_ratio = {
            "samples_per_s": rows[0]["samples_per_s"] / first["samples_per_s"],
            "hr_mpix_per_s": rows[0]["hr_mpix_per_s"] / first["hr_mpix_per_s"],
        }
    payload = {
        "benchmark": "train",
        "model": MODEL,
        "device": "cpu",
        "quick": quick,
        "note": "median step time after warm-up; trainer = synthetic data on the fly, EMA, clipping, logging",
        "trainer_overhead_pct": 100.0 * overhead,
        "today_over_first_recipe": recipe_ratio,
        "threads": threads,
        "load_average_1min": {"before": load_before[0], "after": os.getloadavg()[0]},
        "conv_gflops": gflops,
        "machine": machine(),
        "rows": rows,
    }
    path = save("train", payload)
    print(table(rows, ["mode", "patch_hr", "batch", "amp", "s_per_step", "samples_per_s"]))
    if recipe_ratio:
        print(f"today's recipe over the first: {recipe_ratio}")
    print(f"trainer overhead over the bare loop: {100.0 * overhead:+.1f}%  (saved {path})")
    return payload


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--threads", type=int, default=THREADS, help=f"torch intra-op threads (default {THREADS})"
    )
    args = parser.parse_args()
    run(quick=args.quick, threads=args.threads)
