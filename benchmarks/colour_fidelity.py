"""Are a model's restorations as colourful as the targets? Saturation relative to brightness, output over target, on
a suite's pairs.

Why: PSNR and SSIM barely move when a restoration is pale, yet a pale photo is what a user sees first. On the
foreign set (an independent pipeline that encodes with a 2.2 power law) the flows came out about a quarter less
saturated than the targets, on the synthetic suite (the sRGB curve) not at all; this measures it the same way for
any model and suite (``docs/training.md``, "Pale colours from a power-law camera").

The measure: both images are averaged over 8×8 blocks (so noise and texture do not count as colour), then
saturation = mean |pixel − its grey| / mean brightness; the ratio output / target is 1 for faithful colour, < 1
for pale, and does not change when the output is only brighter or darker than the target.

    python -m benchmarks.colour_fidelity lolisrflow-x2 --suite benchmarks/suites/foreign.yaml
    python -m benchmarks.colour_fidelity lolisrflow-x1 lolisrflow-x2 lolisrflow-x4

Writes results/colour_fidelity_<suite name>.json.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

import nightflow
from nightflow import inference
from nightflow.evaluation.suite import load_suite

from .common import save
from .exposure_decomposition import SUITE, suite_pairs, suite_parser

BLOCK = 8


def saturation(image: torch.Tensor, block: int = BLOCK) -> float:
    """Mean chroma over mean brightness of an N×3×H×W image in [0, 1], after averaging ``block``×``block``
    blocks (sRGB values, as a viewer sees them)."""
    pooled = F.avg_pool2d(image.float(), block)
    chroma = (pooled - pooled.mean(dim=1, keepdim=True)).abs().mean()
    return float(chroma / pooled.mean().clamp(min=1e-6))


def relative_saturation(output: torch.Tensor, target: torch.Tensor, block: int = BLOCK) -> float:
    """``saturation(output) / saturation(target)``: 1 for faithful colour, below 1 for pale."""
    return saturation(output, block) / max(saturation(target, block), 1e-6)


def measure(spec: str, root_override: Path | None, suite_file: Path = SUITE) -> dict:
    """Per-pair relative saturation and brightness ratio (output mean / target mean) on the mean path."""
    model = nightflow.load(spec)
    pairs = []
    for item in suite_pairs(model.scale, root_override, suite_file):
        lq, hq = item["lq"].unsqueeze(0), item["hq"].unsqueeze(0)
        with torch.no_grad():
            out = inference.restore(model.inference_restorer, lq, tile=0)
        pairs.append(
            {
                "name": item["name"],
                "relative_saturation": round(relative_saturation(out, hq), 3),
                "brightness_ratio": round(float(out.mean() / hq.mean()), 3),
            }
        )
    values = [p["relative_saturation"] for p in pairs]
    return {
        "spec": spec,
        "pairs": pairs,
        "median_relative_saturation": round(statistics.median(values), 3),
        "mean_relative_saturation": round(statistics.fmean(values), 3),
    }


def main(argv: list[str] | None = None) -> int:
    args = suite_parser(__doc__).parse_args(argv)
    rows = []
    for spec in args.models:
        row = measure(spec, args.data_root, args.suite)
        rows.append(row)
        print(
            f"{spec}: saturation relative to the target, median {row['median_relative_saturation']:.3f}, "
            f"mean {row['mean_relative_saturation']:.3f} ({len(row['pairs'])} pairs)"
        )
    save(f"colour_fidelity_{load_suite(args.suite).name}", {"models": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
