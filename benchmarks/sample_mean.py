"""Is the mean of several samples a better restoration than the flow's mean path? PSNR/SSIM on a suite's pairs.

Why: a flow's samples scatter around the posterior, so their average estimates the posterior mean, which is what
minimises the squared error in principle; if it beat the mean path (temperature 0), averaging samples would be
the cheap quality knob. The self-ensemble (`--ensemble`, nightflow.ensemble) averages the *mean path* over
rotations instead and refuses temperatures above 0; this measures why. Each pair is restored at temperature 0,
then ``--samples`` samples are drawn at each ``--temperatures`` value (noise seeded by the pair's index) and
averaged over the first 4 and over all of them; scores are the suites' (RGB PSNR and SSIM, and PSNR after
rescaling to the target's mean grey, which takes the exposure estimate out).

    python -m benchmarks.sample_mean lolisrflow-x2
    python -m benchmarks.sample_mean lolisrflow-x2 --suite benchmarks/suites/foreign.yaml

Writes results/sample_mean_<suite name>.json.
"""

from __future__ import annotations

import statistics
import sys

import torch

import nightflow
from nightflow import inference
from nightflow.evaluation.engine import EvalOptions, score_item
from nightflow.evaluation.suite import load_suite
from nightflow.seeding import generator

from .common import save
from .exposure_decomposition import suite_pairs, suite_parser

OPTIONS = EvalOptions(metrics=["psnr", "ssim"], gt_mean=True)
SAMPLES = 8


def _scores(out: torch.Tensor, hq: torch.Tensor, scale: int) -> dict[str, float]:
    return {k: float(v) for k, v in score_item(out, hq, OPTIONS, scale).items()}


def measure(spec: str, args) -> dict:
    """Per-pair scores of the mean path and of sample means, and their averages over the pairs."""
    model = nightflow.load(spec)
    restorer = model.inference_restorer
    rows: dict[str, list[dict[str, float]]] = {}
    for index, item in enumerate(suite_pairs(model.scale, args.data_root, args.suite)):
        lq, hq = item["lq"].unsqueeze(0), item["hq"].unsqueeze(0)
        rows.setdefault("mean path (T 0)", []).append(
            _scores(inference.restore(restorer, lq, tile=0), hq, model.scale)
        )
        for t in args.temperatures:
            draws = inference.iter_samples(
                restorer, lq, args.samples, t, generator=generator(0, index), tile=0
            )
            total = None
            for k, y in enumerate(draws, start=1):
                total = y.clone() if total is None else total.add_(y)
                if k in (4, args.samples):
                    label = f"mean of {k} samples (T {t:g})"
                    rows.setdefault(label, []).append(_scores(total / k, hq, model.scale))
    means = {
        label: {m: round(statistics.fmean(r[m] for r in scores), 4) for m in scores[0]}
        for label, scores in rows.items()
    }
    return {"spec": spec, "pairs": len(rows["mean path (T 0)"]), "samples": args.samples, "means": means}


def main(argv: list[str] | None = None) -> int:
    parser = suite_parser(__doc__)
    parser.add_argument(
        "--samples", type=int, default=SAMPLES, help=f"samples per temperature (default {SAMPLES})"
    )
    parser.add_argument(
        "--temperatures", type=float, nargs="+", default=[0.4, 0.6, 0.8], help="default 0.4 0.6 0.8"
    )
    args = parser.parse_args(argv)
    if args.samples < 4:
        parser.error("--samples must be at least 4")
    rows = []
    for spec in args.models:
        row = measure(spec, args)
        rows.append(row)
        for label, m in row["means"].items():
            print(
                f"{spec} {label:28s} PSNR {m['psnr']:.3f}  SSIM {m['ssim']:.4f}  GT-mean PSNR {m['psnr_gtmean']:.3f}"
            )
    save(f"sample_mean_{load_suite(args.suite).name}", {"models": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
