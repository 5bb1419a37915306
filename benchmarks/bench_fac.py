"""SSFlow's filter-adaptive convolution: the memory-bounded layer vs the unfold reference, peak RSS and time.

Case: the three FAC layers of the paper-size OAtt-UNet (64 ch @ ½, 128 @ ¼, 128 @ ⅛ of the output) on random
features for a 1 MP and a 4 MP output, inference (no grad), one subprocess per case so the peak resident set is the
layer's own (bench_inference's method). The unfold path materialises the C·25-channel kernels and the unfolded
input (≈ 2·25× the feature maps); a case whose estimate exceeds 40 % of the available memory is skipped and says so.

``python -m benchmarks.run_all fac [--quick]``
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from benchmarks.bench_inference import _mem_available
from benchmarks.common import child_main, machine, run_case, save, table

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ((64, 2), (128, 4), (128, 8))  # (channels, output px per feature px)
MEMORY_SHARE = 0.4


def _unfold_bytes(mp: float) -> float:
    """Kernels + unfolded input + output of the largest layer, fp32."""
    return max(c * (mp * 1e6 / s**2) * 4 * (2 * 25 + 2) for c, s in LAYERS)


def child(case: dict) -> dict:
    import torch

    from nightflow import memory
    from nightflow.layers.fac import FilterAdaptiveConv

    torch.manual_seed(0)
    side = math.sqrt(case["mp"] * 1e6)
    layers = []
    for c, s in LAYERS:
        n = int(side / s)
        layers.append((FilterAdaptiveConv(c).eval(), torch.randn(1, c, n, n), torch.randn(1, c, n, n)))
    exact = memory.reset_peak_rss()
    base = memory.rss_bytes()
    start = time.perf_counter()
    with torch.no_grad():
        for fac, x, guide in layers:
            fac(x, guide, unfold=case["unfold"])
    seconds = time.perf_counter() - start
    return {
        "output_mp": case["mp"],
        "path": "unfold" if case["unfold"] else "bounded",
        "seconds": seconds,
        "peak_rss_growth_mib": (memory.peak_rss_bytes() - base) / 2**20,
        "peak_exact": exact,
    }


def _run_case(case: dict) -> dict:
    path = "unfold" if case["unfold"] else "bounded"
    return run_case("benchmarks.bench_fac", case, {"output_mp": case["mp"], "path": path})


def run(quick: bool = False) -> dict:
    sizes = (0.25, 1) if quick else (1, 4)
    rows = []
    for mp in sizes:
        for unfold in (False, True):
            need = _unfold_bytes(mp)
            if unfold and need > MEMORY_SHARE * _mem_available():
                rows.append({"output_mp": mp, "path": "unfold", "skipped": f"needs ~{need / 2**30:.1f} GiB"})
                continue
            rows.append(_run_case({"mp": mp, "unfold": unfold}))
            print(json.dumps(rows[-1]), flush=True)
    payload = {"machine": machine(), "layers": LAYERS, "rows": rows}
    save("fac", payload)
    print(table(rows, ["output_mp", "path", "seconds", "peak_rss_growth_mib", "skipped", "error"]))
    return payload


if __name__ == "__main__":
    child_main(__doc__, child, run)
