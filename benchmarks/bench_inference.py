"""Inference: peak memory (RSS growth) and time vs output size (1, 4, 16 MP), tiling on and off, CPU.

Why a subprocess per case: torch's allocator keeps freed memory, and tracemalloc does not see it, so the only honest
peak is the process's resident set. Each case runs in a fresh interpreter that resets the kernel's peak-RSS mark
(/proc/self/clear_refs) after building the model and the input, so the figure is what restoring costs.

``python -m benchmarks.run_all inference [--quick]``; one case by hand:
``python -m benchmarks.bench_inference --child '{"model": "lolisrflow-x2-tiny", "mp": 1, "tile": 0}'``
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from benchmarks.common import child_main, conv_throughput_gflops, machine, run_case, save, table

MODEL = "lolisrflow-x2-tiny"
TILE = 256  # LR pixels: 512×512 output tiles at ×2 (default overlap 32 px)
SIZES_MP = (1, 4, 16)
QUICK_SIZES_MP = (0.25, 1)
MEMORY_SHARE = 0.4  # skip an untiled case whose extrapolated peak exceeds this share of MemAvailable
ROOT = Path(__file__).resolve().parents[1]


def build_restorer(name: str):
    """Random-init restorer of a named config (weights do not change time or memory), ActNorm marked initialised."""
    import torch

    from nightflow.models import build_model
    from nightflow.models.zoo import get_config

    torch.manual_seed(0)
    model = build_model(get_config(name)).eval()
    s = model.scale
    with torch.no_grad():
        model.initialize({"hq": torch.rand(1, 3, 16 * s, 16 * s), "lq": torch.rand(1, 3, 16, 16)})
    return model


def child(case: dict) -> dict:
    """Run one case in this process and return its time and peak RSS growth (bytes)."""
    import torch

    from nightflow import inference, memory

    torch.manual_seed(0)
    model = build_restorer(case["model"])
    side = int(round(math.sqrt(case["mp"] * 1e6) / model.scale))
    lq = torch.rand(1, 3, side, side)
    exact = memory.reset_peak_rss()
    base = memory.rss_bytes()
    start = time.perf_counter()
    out = inference.restore(model, lq, tile=case["tile"], overlap=case.get("overlap"))
    seconds = time.perf_counter() - start
    peak = memory.peak_rss_bytes()
    return {
        "output": f"{out.shape[-1]}x{out.shape[-2]}",
        "output_mp": out.shape[-1] * out.shape[-2] / 1e6,
        "tile": case["tile"],
        "seconds": seconds,
        "peak_rss_growth_mib": (peak - base) / 2**20,
        "peak_exact": exact,
        "output_tensor_mib": out.numel() * 4 / 2**20,
    }


def _run_case(case: dict, timeout: int = 3600) -> dict:
    return run_case("benchmarks.bench_inference", case, {"tile": case["tile"], "mp": case["mp"]}, timeout)


def _mem_available() -> int:
    import torch

    from nightflow.inference import available_memory

    return available_memory(torch.device("cpu"))


def run(quick: bool = False) -> dict:
    sizes = QUICK_SIZES_MP if quick else SIZES_MP
    rows = []
    per_px = None  # untiled bytes per output pixel, from the largest untiled case so far
    for mp in sizes:
        for tile in (0, TILE):
            case = {"model": MODEL, "mp": mp, "tile": tile}
            if tile == 0 and per_px is not None:
                need = per_px * mp * 1e6
                if need > MEMORY_SHARE * _mem_available():
                    rows.append(
                        {
                            "output_mp": mp,
                            "tile": 0,
                            "skipped": f"needs ~{need / 2**30:.1f} GiB (extrapolated)",
                        }
                    )
                    continue
            row = _run_case(case)
            row.setdefault("output_mp", mp)
            rows.append(row)
            if tile == 0 and "peak_rss_growth_mib" in row:
                per_px = row["peak_rss_growth_mib"] * 2**20 / (row["output_mp"] * 1e6)
            print(json.dumps(row), flush=True)
    for r in rows:
        if "peak_rss_growth_mib" in r:
            r["bytes_per_output_px"] = r["peak_rss_growth_mib"] * 2**20 / (r["output_mp"] * 1e6)
            r["ms_per_mp"] = r["seconds"] * 1e3 / r["output_mp"]
    payload = {
        "benchmark": "inference",
        "model": MODEL,
        "tile_lr_px": TILE,
        "note": "random-init weights; peak RSS growth over model + input, measured in a fresh process per case",
        "quick": quick,
        "conv_gflops": conv_throughput_gflops(repeats=1 if quick else 3),
        "machine": machine(),
        "rows": rows,
    }
    path = save("inference", payload)
    cols = [
        "output_mp",
        "tile",
        "seconds",
        "ms_per_mp",
        "peak_rss_growth_mib",
        "bytes_per_output_px",
        "skipped",
        "error",
    ]
    print(table(rows, cols))
    print(f"saved {path}")
    return payload


if __name__ == "__main__":
    child_main(__doc__, child, run)
