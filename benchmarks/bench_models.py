"""Named models: parameters and GFLOPs per output megapixel (restore = encoder + decode at the prior mean) of every
zoo config, and CPU milliseconds per output megapixel for the CPU-sized configs (every *-tiny one and
llflow-small): the cost columns of the UPT-Flow / LoLiSRFlow / LLFlow comparison."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import conv_throughput_gflops, count_params, machine, save, table, time_call
from nightflow.models import build_any
from nightflow.models.zoo import config_names, get_config

LR = 64  # LR input side for FLOP counting and timing


def _flops(model: torch.nn.Module, lq: torch.Tensor) -> int:
    with torch.no_grad():
        model.restore(lq)  # warm-up: the flow caches its 1×1-conv inverses on the first call (one-time cost)
        with FlopCounterMode(display=False) as counter:
            model.restore(lq)
    return counter.get_total_flops()


def run(quick: bool = False) -> dict:
    repeats = 1 if quick else 3
    gflops = conv_throughput_gflops(repeats=repeats)
    rows = []
    for name in config_names():
        cfg = get_config(name)
        model = build_any(cfg).eval()
        lq = torch.rand(1, 3, LR, LR)
        out_mp = (LR * cfg.scale) ** 2 / 1e6
        row = {
            "model": name,
            "kind": cfg.kind,
            "scale": cfg.scale,
            "params_M": count_params(model) / 1e6,
            "gflops_per_out_mp": _flops(model, lq) / 1e9 / out_mp,
        }
        if name.endswith("-tiny") or name == "llflow-small":
            with torch.no_grad():
                seconds = time_call(lambda m=model, x=lq: m.restore(x), repeats=repeats)
            row["cpu_ms_per_out_mp"] = seconds * 1e3 / out_mp
        rows.append(row)
    print(
        f"\nNamed models at LR {LR}×{LR} (3×3 conv throughput this run: {gflops:.1f} GFLOP/s, "
        f"{torch.get_num_threads()} threads)"
    )
    print(table(rows, ["model", "kind", "scale", "params_M", "gflops_per_out_mp", "cpu_ms_per_out_mp"]))
    payload = {"machine": machine(), "lr_size": LR, "conv_gflops": gflops, "rows": rows}
    print(f"saved {save('models', payload)}")
    return payload


if __name__ == "__main__":
    run()
