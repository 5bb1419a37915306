"""Inference optimisations of a bundled model (the ×2 unless ``--model``), each measured on its own against plain
float32 (issue 15 item 3).

Rows: float32 eager (the reference); channels_last (model and input); bf16 autocast of the encoder and coupling
subnets (``--precision bf16``; the flow's invertible arithmetic stays float32); ActNorm folded into its convs
(``nightflow.flow.fold``; the CLI, web UI and API run a folded twin: ``Model.inference_restorer``); ``torch.compile`` of the encoder and
subnets (``Model.compile``, opt-in; compile time reported); batched tiles (``tile_batch``: 4 tiles per call
against 1, same tile plan); and, per bundled flow, the folded twin in NCHW vs channels_last memory (the
layout `Encoder.channels_last_inference` records). Each row: ms per output megapixel (best of the interleaved rounds) and the max
difference from float32 in 0..255 levels. Ratios are from one run (interleaved A/B rounds); this machine is
shared, so absolute times are indicative only.

``python -m benchmarks.run_all optimizations [--quick]`` (quick: fewer rounds, no torch.compile);
``python -m benchmarks.bench_optimizations --model lolisrflow-x1-jpeg --threads 1`` for another bundled model (saved
as ``optimizations_<model>``): what float32 costs a model whose weights keep it out of bf16
"""

from __future__ import annotations

import statistics
import time

import torch

from benchmarks.common import conv_throughput_gflops, machine, save, table

MODEL = "lolisrflow-x2"
SIZE = 192  # LR side: a 384×384 output
TILE = 96  # LR tile side of the batched-tiles rows (a 192 LR image in 4 tiles)
THREADS = 2


def _lq() -> torch.Tensor:
    return torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0)) * 0.25


def _contenders(quick: bool, model: str = MODEL) -> tuple[dict, int]:
    """The timed calls by row name, and the model's scale (for the output megapixels)."""
    import nightflow
    from nightflow import inference
    from nightflow.flow.fold import folded

    base = nightflow.load(model).restorer.eval()
    lq = _lq()
    ctx = base.context(lq)

    def call(model, x=lq, precision="fp32", tile=0, tile_batch=1):
        return lambda: inference.restore(
            model, x, tile=tile, tile_batch=tile_batch, precision=precision, context=ctx
        )

    cl = nightflow.load(model).restorer.eval().to(memory_format=torch.channels_last)
    folded_cl = folded(base).to(memory_format=torch.channels_last)
    lq_cl = lq.contiguous(memory_format=torch.channels_last)
    rows = {
        "fp32 (reference)": call(base),
        "channels_last": call(cl, lq_cl),
        "bf16 autocast (encoder + subnets)": call(base, precision="bf16"),
        "ActNorm folded": call(folded(base)),
        "ActNorm folded + channels_last": call(folded_cl, lq_cl),
        "ActNorm folded + channels_last + bf16": call(folded_cl, lq_cl, precision="bf16"),
        "tiles 96 px, 1 per call": call(base, tile=TILE, tile_batch=1),
        "tiles 96 px, 4 per call": call(base, tile=TILE, tile_batch=4),
    }
    if not quick:
        comp = nightflow.load(model).compile()
        start = time.perf_counter()
        with torch.inference_mode():
            call(comp.restorer)()
        rows["torch.compile (encoder + subnets)"] = call(comp.restorer)
        rows["torch.compile (encoder + subnets)"].compile_s = time.perf_counter() - start  # type: ignore[attr-defined]
    return rows, int(base.scale)


LAYOUT_MODELS = {
    "lolisrflow-x1": 256,
    "lolisrflow-x2": 192,
    "lolisrflow-x4": 96,
    "uptflow": 256,
    "ssflow": 256,
}


LAYOUT_ROUNDS = 10  # single rounds of the small LoLiSRFlow models vary by ±15 % on a shared machine


def layout_rows(rounds: int = LAYOUT_ROUNDS) -> list[dict]:
    """Every bundled flow, folded, NCHW vs channels_last (the choice ``Encoder.channels_last_inference`` records
    and ``Model.inference_restorer`` applies on the CPU): ``rounds`` interleaved A/B rounds (the order alternates),
    median time of each, LR inputs of :data:`LAYOUT_MODELS` px."""
    import nightflow
    from nightflow import inference
    from nightflow.flow.fold import folded

    rows = []
    for name, size in LAYOUT_MODELS.items():
        plain = folded(nightflow.load(name).restorer)
        nhwc = folded(plain).to(memory_format=torch.channels_last)
        lq = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)) * 0.25
        with torch.inference_mode():
            ctx = plain.context(lq)
            fns = {m: (lambda m=m, x=lq, c=ctx: inference.restore(m, x, context=c)) for m in (plain, nhwc)}
            times = {m: [] for m in fns}
            outs = {m: fn() for m, fn in fns.items()}
            order = list(fns)
            for r in range(rounds):
                for m in order if r % 2 == 0 else order[::-1]:
                    start = time.perf_counter()
                    fns[m]()
                    times[m].append(time.perf_counter() - start)
        best = {m: statistics.median(t) for m, t in times.items()}
        out_mp = (size * plain.scale) ** 2 / 1e6
        rows.append(
            {
                "model": name,
                "ms_per_output_mp_nchw": round(best[plain] * 1e3 / out_mp),
                "ms_per_output_mp_channels_last": round(best[nhwc] * 1e3 / out_mp),
                "speed_channels_last": round(best[plain] / best[nhwc], 3),
                "max_diff_255": round((outs[nhwc] - outs[plain]).abs().max().item() * 255, 5),
                "channels_last_inference": plain.channels_last_inference,
            }
        )
    return rows


def run(quick: bool = False, threads: int = THREADS, model: str = MODEL) -> dict:
    torch.set_num_threads(threads)
    contenders, scale = _contenders(quick, model)
    rounds = 2 if quick else 3
    out_mp = (SIZE * scale) ** 2 / 1e6
    best = {name: float("inf") for name in contenders}
    outputs = {}
    with torch.inference_mode():
        for name, fn in contenders.items():
            outputs[name] = fn()  # warm-up, and the output compared with float32
        for _ in range(rounds):
            for name, fn in contenders.items():
                start = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - start)
    layouts = layout_rows(2 if quick else LAYOUT_ROUNDS)
    conv_rates = [
        {
            "conv 3×3 64→64, 1×64×256²": f"{dtype}, {layout}",
            "gflop_per_s": round(conv_throughput_gflops(repeats=rounds, layout=layout, dtype=dtype), 1),
        }
        for layout in ("nchw", "channels_last")
        for dtype in ("fp32", "bf16-autocast", "bf16")
    ]
    ref = outputs["fp32 (reference)"]
    ref_ms = best["fp32 (reference)"] * 1e3 / out_mp
    rows = []
    for name, fn in contenders.items():
        ms = best[name] * 1e3 / out_mp
        rows.append(
            {
                "optimisation": name,
                "ms_per_output_mp": round(ms),
                "speed_vs_fp32": round(ref_ms / ms, 3),
                "max_diff_255": round((outputs[name] - ref).abs().max().item() * 255, 4),
                "compile_s": round(getattr(fn, "compile_s", 0.0), 1) or "",
            }
        )
    from nightflow.precision import cpu_flags, fast_bf16

    payload = {
        "benchmark": "optimizations",
        "model": model,
        "input_lr": f"{SIZE}x{SIZE}",
        "threads": threads,
        "rounds": rounds,
        "fast_bf16": fast_bf16("cpu"),
        "bf16_flags": sorted(f for f in cpu_flags() if "bf16" in f or f.startswith("amx")),
        "conv_gflops": conv_throughput_gflops(repeats=1 if quick else 3),
        "machine": machine(),
        "quick": quick,
        "rows": rows,
        "layout_rows": layouts,
        "conv_rates": conv_rates,
    }
    path = save("optimizations" if model == MODEL else f"optimizations_{model}", payload)
    print(table(rows, ["optimisation", "ms_per_output_mp", "speed_vs_fp32", "max_diff_255", "compile_s"]))
    print(
        table(
            layouts,
            [
                "model",
                "ms_per_output_mp_nchw",
                "ms_per_output_mp_channels_last",
                "speed_channels_last",
                "max_diff_255",
                "channels_last_inference",
            ],
        )
    )
    print(table(conv_rates, list(conv_rates[0])))
    print(
        f"bf16 faster than fp32 (auto uses it): {payload['fast_bf16']} (flags {payload['bf16_flags'] or 'none'}); saved {path}"
    )
    return payload


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--model", default=MODEL, help=f"bundled model to measure (default {MODEL})")
    args = parser.parse_args()
    run(quick=args.quick, threads=args.threads, model=args.model)
