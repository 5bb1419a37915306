"""Shared benchmark helpers: robust timing, the machine's conv throughput, result files and tables.

Why measure conv throughput in every run: absolute CPU times on a shared machine are noise; a ratio to the same
run's 3×3-conv GFLOP/s is what can be compared between runs and machines.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from nightflow.models import count_params  # noqa: F401  (re-exported for the bench scripts)

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]


def time_call(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> float:
    """Median wall time of ``fn`` in seconds, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def conv_throughput_gflops(
    channels: int = 64, size: int = 256, repeats: int = 3, layout: str = "nchw", dtype: str = "fp32"
) -> float:
    """Measured GFLOP/s of a 3×3 conv channels→channels on 1×channels×size×size (2 FLOPs per MAC).

    ``layout``: ``nchw`` or ``channels_last``; ``dtype``: ``fp32``, ``bf16-autocast`` (fp32 weights and input
    under CPU bf16 autocast, as ``--precision bf16`` runs) or ``bf16`` (weights and input stored in bf16)."""
    conv = torch.nn.Conv2d(channels, channels, 3, padding=1)
    x = torch.randn(1, channels, size, size)
    if layout == "channels_last":
        conv, x = conv.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    if dtype == "bf16":
        conv, x = conv.to(torch.bfloat16), x.to(torch.bfloat16)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16-autocast")
    with torch.no_grad(), autocast:
        seconds = time_call(lambda: conv(x), repeats=repeats)
    flops = 2 * channels * channels * 9 * size * size
    return flops / seconds / 1e9


def machine() -> dict:
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }


def save(name: str, payload: dict) -> Path:
    """Write ``benchmarks/results/<name>.json`` atomically."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def merge_rows(kept: list[dict], new: list[dict], key: tuple[str, ...] = ("spec",)) -> list[dict]:
    """``kept`` rows (an earlier run's) with each one that has a ``new`` row's ``key`` values replaced by it, then
    the new rows not yet there, in their order.

    Why: a result file holds rows for several models, and re-measuring one model (new weights) must not erase
    the others' rows."""
    fresh = {tuple(row[k] for k in key): row for row in new}
    merged = [fresh.pop(tuple(row[k] for k in key), row) for row in kept]
    return merged + list(fresh.values())


def kept_rows(path: Path) -> list[dict]:
    """The ``models`` rows of a result file as an earlier run left them (none if there is no file)."""
    return json.loads(path.read_text())["models"] if path.is_file() else []


def table(rows: list[dict], columns: list[str]) -> str:
    """A Markdown table of ``rows`` restricted to ``columns``."""

    def fmt(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------- one case per subprocess
def run_child(module: str, case: dict, timeout: int = 3600) -> subprocess.CompletedProcess:
    """Run ``python -m module --child CASE`` in a fresh interpreter (its own peak RSS) from the repository root."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]))
    return subprocess.run(
        [sys.executable, "-m", module, "--child", json.dumps(case)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=timeout,
    )


def run_case(module: str, case: dict, label: dict, timeout: int = 3600) -> dict:
    """The JSON row a child prints, or ``label`` plus the child's exit status and last stderr line."""
    proc = run_child(module, case, timeout)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {**label, "error": f"exit {proc.returncode}: {tail}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def child_main(doc: str, child: Callable[[dict], dict], run: Callable[..., object]) -> None:
    """The ``__main__`` of a subprocess benchmark: ``--child CASE`` runs one case and prints its row as JSON,
    otherwise ``run(quick=...)``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--child", help="JSON case to run in this process (internal)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
    else:
        run(quick=args.quick)
