"""Where a training step's time goes: context pass, encoder, flow forward (NLL), flow reverse (L1), backward,
optimiser, data synthesis, for one bundled recipe's batch. Shares are what to read on a shared CPU.

    python -m benchmarks.profile_train_step [--model lolisrflow-x2-tiny] [--patch 96] [--batch 8] [--amp bf16]
        [--channels-last] [--compile]

``--compile`` wraps each flow level's forward and inverse in ``torch.compile`` (the level flows hold the
element-wise coupling and ActNorm arithmetic that fusion could speed up; ``ConditionalGlow.encode``'s input
checks stay eager) and reports the first step, which pays for the compilation, separately.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import default_collate

from nightflow.data.datasets import SyntheticDataset
from nightflow.losses import LossSet
from nightflow.models import build_model
from nightflow.models.zoo import get_config


def _timed(times: dict[str, float], name: str, fn):
    t = time.perf_counter()
    out = fn()
    times[name] = time.perf_counter() - t
    return out


def step(model, batch, opt, amp: bool) -> dict[str, float]:
    """One step of the model's own loss (``cfg.losses`` over ``loss_outputs``), each lazily computed part timed
    as it is first read: context, encoder, flow forward (NLL), flow reverse (mean-path L1)."""
    times: dict[str, float] = {}
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        out = model.loss_outputs(batch)
        _timed(times, "context pass + exposure head", lambda: out.get("exposure_estimate"))
        _timed(times, "encoder", lambda: out.get("color_map"))
        _timed(times, "flow forward (NLL)", lambda: out.get("nll"))
        _timed(times, "flow reverse (mean path L1)", lambda: out.get("prediction"))
        total = LossSet(model.cfg.losses)(out, batch)["total"]  # every part above is computed once
    opt.zero_grad()
    _timed(times, "backward", total.backward)
    _timed(times, "optimiser", opt.step)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lolisrflow-x2-tiny")
    parser.add_argument("--photos", default="data/photos")
    parser.add_argument("--patch", type=int, default=96)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--amp", choices=("bf16", "none"), default="bf16")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--channels-last", action="store_true", help="model weights in channels_last memory")
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile each flow level's forward and inverse"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = build_model(get_config(args.model))
    ds = SyntheticDataset(args.photos, split="train", scale=model.scale, patch_size=args.patch, length=64)
    for i in range(args.batch):
        ds[i]  # decode and cache the photos first
    t = time.perf_counter()
    items = [ds[i] for i in range(args.batch)]
    synthesis = time.perf_counter() - t
    batch = default_collate(items)
    batch.pop("name")
    model.initialize(batch)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    if args.compile:
        for level in model.flow.level_flows:
            level.forward = torch.compile(level.forward, dynamic=False)
            level.inverse = torch.compile(level.inverse, dynamic=False)
    t = time.perf_counter()
    step(model, batch, opt, args.amp == "bf16")  # warm-up (and compilation)
    print(f"first step (warm-up{', compilation' if args.compile else ''}): {time.perf_counter() - t:.1f} s")
    runs = [step(model, batch, opt, args.amp == "bf16") for _ in range(3)]
    parts = {k: min(r[k] for r in runs) for k in runs[0]}
    parts["data synthesis (batch)"] = synthesis
    total = sum(parts.values())
    print(
        f"{args.model}, patch {args.patch}, batch {args.batch}, {args.amp}, {args.threads} thread(s)"
        f"{', channels_last' if args.channels_last else ''}{', compiled flow levels' if args.compile else ''}: "
        f"{total:.2f} s"
    )
    for name, sec in parts.items():
        print(f"| {name} | {sec * 1000:.0f} ms | {100 * sec / total:.0f} % |")


if __name__ == "__main__":
    main()
