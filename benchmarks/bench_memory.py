"""Peak memory of large restorations (issue 15 item 4): 6, 12 and 24 MP outputs of the bundled ×2, tiled by the
automatic planner from the memory it measures, under a working-memory bound (``--max-memory``).

Why a subprocess per size: the figure is the process's whole peak resident set (``VmHWM``: Python, torch, the
weights, the input, the output and every tile), which only a fresh interpreter measures honestly. The target is
a 24 MP output in at most 2 GB of peak RSS.

``python -m benchmarks.run_all memory [--quick]``; one size by hand:
``python -m benchmarks.bench_memory --child '{"model": "lolisrflow-x2", "mp": 6, "max_memory": 1610612736}'``
"""

from __future__ import annotations

import json
import math
import time

from benchmarks.common import child_main, machine, run_case, save, table

MODEL = "lolisrflow-x2"  # bundled weights
SIZES_MP = (6, 12, 24)
QUICK_SIZES_MP = (1, 2)
MAX_MEMORY = 1536 << 20  # the working-memory bound given to the planner (1.5 GiB)
TARGET_PEAK = 2 << 30  # issue 15: 24 MP in <= 2 GB peak RSS
THREADS = 1


def child(case: dict) -> dict:
    """Restore one random image of ``mp`` output megapixels (3:2) in this process; whole-process peak RSS."""
    import torch

    import nightflow
    from nightflow import inference, memory

    torch.set_num_threads(int(case.get("threads", THREADS)))
    model = nightflow.load(case["model"]).restorer
    s = model.scale
    width = int(round(math.sqrt(case["mp"] * 1e6 * 3 / 2) / s))
    height = int(round(width * 2 / 3))
    lq = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0)) * 0.2
    start = time.perf_counter()
    plan = inference.plan_for(model, height, width, None, max_memory=case["max_memory"])
    probe_s = time.perf_counter() - start
    out = inference.restore(model, lq, tile=None, max_memory=case["max_memory"])
    seconds = time.perf_counter() - start
    measured = inference.measure_memory(model, torch.device("cpu"))  # cached by the plan where it probed
    return {
        "output": f"{out.shape[-1]}x{out.shape[-2]}",
        "output_mp": out.shape[-1] * out.shape[-2] / 1e6,
        "tiles": plan.count,
        "tile_lr": f"{plan.tile_w}x{plan.tile_h}",
        "measured_bytes_per_px": round(measured.per_pixel),
        "memory_source": measured.source,
        "probe_and_plan_s": round(probe_s, 2),
        "seconds": round(seconds, 1),
        "peak_rss_mib": round(memory.peak_rss_bytes() / 2**20),
        "max_memory_mib": case["max_memory"] >> 20,
    }


def run(quick: bool = False) -> dict:
    rows = []
    for mp in QUICK_SIZES_MP if quick else SIZES_MP:
        case = {"model": MODEL, "mp": mp, "max_memory": MAX_MEMORY, "threads": THREADS}
        row = run_case("benchmarks.bench_memory", case, {"output_mp": mp}, timeout=7200)
        if "error" not in row:
            row["within_2gb"] = row["peak_rss_mib"] * 2**20 <= TARGET_PEAK
        rows.append(row)
        print(json.dumps(row), flush=True)
    payload = {
        "benchmark": "memory",
        "model": MODEL,
        "note": "whole-process peak RSS (VmHWM) in a fresh interpreter per size; tiles planned by "
        "nightflow.inference.plan_for from the memory it measured on a probe tile, under max_memory",
        "threads": THREADS,
        "quick": quick,
        "machine": machine(),
        "rows": rows,
    }
    path = save("memory", payload)
    cols = [
        "output_mp",
        "tiles",
        "tile_lr",
        "measured_bytes_per_px",
        "seconds",
        "peak_rss_mib",
        "within_2gb",
        "error",
    ]
    print(table(rows, cols))
    print(f"saved {path}")
    return payload


if __name__ == "__main__":
    child_main(__doc__, child, run)
