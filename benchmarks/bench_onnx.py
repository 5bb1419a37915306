"""ONNX Runtime against PyTorch on the CPU: the restore path (mean path, one piece) of every bundled flow, through
the same pipeline (nightflow.inference with the onnx backend), at one LR size; also the largest difference."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from benchmarks.common import conv_throughput_gflops, machine, save, table, time_call
from nightflow import inference, list_models
from nightflow.export import export_onnx
from nightflow.models.zoo import load_restorer
from nightflow.onnx_backend import OnnxRestorer

LR = (128, 192)  # LR input height × width


def run(quick: bool = False) -> dict:
    repeats = 1 if quick else 3
    gflops = conv_throughput_gflops(repeats=repeats)
    lq = torch.rand(1, 3, *LR, generator=torch.Generator().manual_seed(0)) ** 2 * 0.3
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for entry in list_models(count_params=False):
            if not entry["bundled"]:
                continue
            restorer, info = load_restorer(entry["name"], "cpu")
            onnx = OnnxRestorer(
                {0.0: export_onnx(restorer, Path(tmp) / f"{entry['name']}.onnx", 0.0, info=info)}
            )
            with torch.no_grad():
                ref = inference.restore(restorer, lq, 0.0, tile=0)
                t_torch = time_call(lambda r=restorer: inference.restore(r, lq, 0.0, tile=0), repeats=repeats)
            out = inference.restore(onnx, lq, 0.0, tile=0)
            t_ort = time_call(lambda r=onnx: inference.restore(r, lq, 0.0, tile=0), repeats=repeats)
            rows.append(
                {
                    "model": entry["name"],
                    "scale": restorer.scale,
                    "torch_s": t_torch,
                    "ort_s": t_ort,
                    "ort_speedup": t_torch / t_ort,
                    "max_abs_diff": float((out - ref).abs().max()),
                }
            )
    print(
        f"\nONNX Runtime vs PyTorch, restore at LR {LR[0]}×{LR[1]}, CPU, {torch.get_num_threads()} threads "
        f"(3×3 conv throughput this run: {gflops:.1f} GFLOP/s)"
    )
    print(table(rows, ["model", "scale", "torch_s", "ort_s", "ort_speedup", "max_abs_diff"]))
    payload = {"machine": machine(), "lr_size": list(LR), "conv_gflops": gflops, "rows": rows}
    print(f"saved {save('onnx', payload)}")
    return payload


if __name__ == "__main__":
    run()
