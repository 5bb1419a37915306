"""Does a model draw a block grid into its outputs? Edge strength by position on the 2-LR-pixel grid.

Why: on the foreign photos the flows' flat areas look blocky. A conditional flow builds its output from squeezed
latents (2×2, 4×4, 8×8 output pixels per latent position) and its encoder has branches at half the input's
resolution, so block edges can appear at fixed positions. This measures them: the mean absolute difference
between neighbouring pixels (luminance, both directions), folded by position modulo ``period`` output pixels
(default twice the scale: every second input pixel), each position's mean divided by the mean over all
positions. A picture without a grid gives about 1 everywhere; a grid shows as a peak at the block edges. The
targets are measured the same way, as the reference.

    python -m benchmarks.grid_periodicity lolisrflow-x1 lolisrflow-x2 lolisrflow-x4 --suite benchmarks/suites/foreign.yaml

Writes results/grid_periodicity_<suite name>[_ensemble<N>].json, keeping the rows of models measured before (a row
of the same model and period is replaced), so one model can be measured on its own; ``--out FILE`` writes (and
merges into) FILE instead, for candidates that are not the bundled models.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

import nightflow
from nightflow import inference
from nightflow.atomic import write_text_atomic
from nightflow.evaluation.suite import load_suite

from .common import RESULTS, kept_rows, merge_rows
from .exposure_decomposition import suite_pairs, suite_parser

_LUMA = (0.299, 0.587, 0.114)


def luma(image: torch.Tensor) -> torch.Tensor:
    """N×3×H×W → N×H×W luminance (BT.601 weights) in float64."""
    return (image.double() * torch.tensor(_LUMA, dtype=torch.float64).view(1, 3, 1, 1)).sum(1)


def edge_profile(images: list[torch.Tensor], period: int) -> list[float]:
    """Mean |neighbour difference| at each position modulo ``period`` (difference k sits between pixels k and
    k + 1), over N×3×H×W ``images`` and both directions, divided by its mean over the positions."""
    sums = torch.zeros(period, dtype=torch.float64)
    counts = torch.zeros(period, dtype=torch.float64)
    for image in images:
        y = luma(image)
        for diff in (y.diff(dim=-1).abs().mean(dim=(0, 1)), y.diff(dim=-2).abs().mean(dim=(0, 2))):
            phase = torch.arange(diff.numel()) % period
            sums.index_add_(0, phase, diff)
            counts.index_add_(0, phase, torch.ones_like(diff))
    profile = sums / counts.clamp_min(1)
    return [round(float(v), 4) for v in profile / profile.mean()]


def grid_excess(profile: list[float]) -> float:
    """How far the strongest position stands out: max / mean − 1 (0 without any grid)."""
    return round(max(profile) - 1.0, 4)


def probe_inputs(size: int = 96, level: float = 0.04, noise: float = 0.01) -> dict[str, torch.Tensor]:
    """Made-up dark inputs that tell a systematic grid from a noise-driven one: flat, flat with Gaussian noise,
    and a smooth ramp (1×3×size×size; the noise seeded)."""
    g = torch.Generator().manual_seed(0)
    flat = torch.full((1, 3, size, size), level)
    ramp = torch.linspace(level / 4, 2 * level, size).view(1, 1, 1, size).expand(1, 3, size, size)
    return {
        "flat": flat,
        "flat + noise": (flat + noise * torch.randn(flat.shape, generator=g)).clamp(0.0, 1.0),
        "ramp": ramp.contiguous(),
    }


def probe(spec: str, period: int = 0) -> list[dict]:
    """The edge profile of the mean path on :func:`probe_inputs`, with the mean |neighbour difference| of the
    output's luminance (absolute, so a large relative excess on a nearly constant output reads as harmless)."""
    model = nightflow.load(spec)
    period = period or 2 * model.scale
    rows = []
    for label, lq in probe_inputs().items():
        out = inference.restore(model.inference_restorer, lq, tile=0)
        y = luma(out)
        mean_diff = float((y.diff(dim=-1).abs().mean() + y.diff(dim=-2).abs().mean()) / 2)
        profile = edge_profile([out], period)
        rows.append(
            {"spec": spec, "input": label, "period": period, "profile": profile, "mean_diff": mean_diff}
        )
    return rows


def measure(spec: str, args) -> dict:
    model = nightflow.load(spec)
    period = args.period or 2 * model.scale
    outputs, targets = [], []
    for item in suite_pairs(model.scale, args.data_root, args.suite):
        lq = item["lq"].unsqueeze(0)
        outputs.append(inference.restore(model.inference_restorer, lq, tile=0, ensemble=args.ensemble))
        targets.append(item["hq"].unsqueeze(0))
    out, ref = edge_profile(outputs, period), edge_profile(targets, period)
    return {
        "spec": spec,
        "period": period,
        "ensemble": args.ensemble,
        "pairs": len(outputs),
        "output_profile": out,
        "target_profile": ref,
        "output_excess": grid_excess(out),
        "target_excess": grid_excess(ref),
    }


def main(argv: list[str] | None = None) -> int:
    parser = suite_parser(__doc__)
    parser.add_argument(
        "--period", type=int, default=0, help="output pixels (default: 2 × the model's scale)"
    )
    parser.add_argument("--ensemble", type=int, default=1, help="self-ensemble of the mean path (default 1)")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results file (default: benchmarks/results/grid_periodicity_*.json)",
    )
    parser.add_argument(
        "--probe",
        action="store_true",
        help="instead of the suite's pairs, restore made-up dark inputs (flat, flat + noise, ramp) and print their "
        "profiles: a grid that needs the noise is noise turned into blocks, not a fixed pattern",
    )
    args = parser.parse_args(argv)
    if args.probe:
        for spec in args.models:
            for row in probe(spec, args.period):
                print(
                    f"{spec} {row['input']}: profile {row['profile']} (excess {grid_excess(row['profile']):+.3f}), "
                    f"mean |difference| {row['mean_diff'] * 255:.2f}/255"
                )
        return 0
    rows = []
    for spec in args.models:
        row = measure(spec, args)
        rows.append(row)
        print(
            f"{spec} (period {row['period']} px, {row['pairs']} pairs): output {row['output_profile']} "
            f"(excess {row['output_excess']:+.3f}); target {row['target_profile']} "
            f"(excess {row['target_excess']:+.3f})"
        )
    suffix = f"_ensemble{args.ensemble}" if args.ensemble != 1 else ""
    name = f"grid_periodicity_{load_suite(args.suite).name}{suffix}"
    path = args.out or RESULTS / f"{name}.json"
    merged = merge_rows(kept_rows(path), rows, key=("spec", "period"))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps({"models": merged}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
