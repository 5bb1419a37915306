"""Flow core: parameters and forward/inverse time of a 3-level ConditionalGlow on 1×3×256×256 with conditioning."""

from __future__ import annotations

import torch

from benchmarks.common import conv_throughput_gflops, count_params, machine, save, table, time_call
from nightflow.flow import ConditionalGlow, GlowConfig

SIZE, COND = 256, 64


def _case(steps: int, repeats: int) -> dict:
    torch.manual_seed(0)
    flow = ConditionalGlow(
        GlowConfig(levels=3, steps=steps, hidden=64, cond_channels=COND, prior_channels=192)
    )
    x = torch.rand(1, 3, SIZE, SIZE)
    conds = [torch.randn(1, COND, SIZE // 2 ** (i + 1), SIZE // 2 ** (i + 1)) for i in range(3)]
    prior = torch.randn(1, 192, SIZE // 8, SIZE // 8) * 0.1
    flow.train()
    with torch.no_grad():
        latents, _ = flow.encode(x, conds, prior)  # ActNorm init
    flow.eval()
    with torch.no_grad():
        fwd = time_call(lambda: flow.encode(x, conds, prior), repeats=repeats)
        inv = time_call(lambda: flow.decode(latents, conds, prior), repeats=repeats)
        err = float((flow.decode(latents, conds, prior) - x).abs().max())
    return {
        "config": f"L=3 K={steps} hidden=64 cond={COND}",
        "params_M": count_params(flow) / 1e6,
        "forward_ms": fwd * 1e3,
        "inverse_ms": inv * 1e3,
        "roundtrip_max_abs": err,
    }


def run(quick: bool = False) -> dict:
    repeats = 1 if quick else 3
    gflops = conv_throughput_gflops(repeats=repeats)
    rows = [_case(k, repeats) for k in (4, 12)]
    for r in rows:
        r["conv_gflops"] = gflops
    print(f"\nFlow core on 1×3×{SIZE}×{SIZE} (3×3 conv throughput this run: {gflops:.1f} GFLOP/s)")
    print(table(rows, ["config", "params_M", "forward_ms", "inverse_ms", "roundtrip_max_abs"]))
    payload = {"machine": machine(), "input": [1, 3, SIZE, SIZE], "conv_gflops": gflops, "rows": rows}
    print(f"saved {save('flow_core', payload)}")
    return payload


if __name__ == "__main__":
    run()
