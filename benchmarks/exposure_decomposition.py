"""How much of a model's PSNR (and SSIM) gap is exposure? Each pair of the synthetic suite, restored at the exposure head's
estimate and at the target's (oracle) exposure, with the flow unchanged.

Why: the suite's ``_gtmean`` columns rescale the *output*, which also undoes what the flow did with a wrong
input gain (clipped highlights, the denoising strength it chose for that brightness). Restoring again with
``exposure = oracle − estimate`` (the API's ``exposure`` shift) asks the question a user with a perfect
``--exposure`` would: what this flow scores when only the estimate is fixed. The per-pair head error (EV, signed:
> 0 is too bright) shows whether the misses are a bias or scatter.

    python -m benchmarks.exposure_decomposition lolisrflow-x2 lolisrflow-x4 uptflow-tiny
    python -m benchmarks.exposure_decomposition runs/my-run --data-root /elsewhere/data
    python -m benchmarks.exposure_decomposition lolisrflow-x2 --suite benchmarks/suites/synthetic-jpeg.yaml

The pairs are the ``x<scale>`` dataset of benchmarks/suites/synthetic.yaml (or of ``--suite``), read from the suite
file (validation photos, seed 0, 10 pairs of 384 px centre crops). Writes results/exposure_decomposition.json
(results/exposure_decomposition_<suite name>.json for another suite), keeping the rows of models measured before (a
row of the same model is replaced), so one model can be measured again on its own.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

import nightflow
from nightflow import inference
from nightflow.context import oracle_log2_gain, thumbnail
from nightflow.data.datasets import build_dataset
from nightflow.evaluation.suite import data_config, data_root, load_suite
from nightflow.metrics.psnr import psnr
from nightflow.metrics.ssim import ssim

from .common import RESULTS, ROOT, kept_rows, merge_rows, save

SUITE = ROOT / "benchmarks" / "suites" / "synthetic.yaml"


def suite_pairs(scale: int, root_override: Path | None, suite_file: Path = SUITE) -> object:
    """The suite's dataset at ``scale``, built from the suite file as ``nightflow benchmark`` does."""
    suite = load_suite(suite_file)
    root = data_root(suite, suite_file, root_override)
    for index, entry in enumerate(suite.datasets):
        if entry.label == f"x{scale}":
            return build_dataset(data_config(entry, index, root), train=False)
    raise SystemExit(f"{suite_file} has no x{scale} dataset")


def decompose(spec: str, root_override: Path | None, suite_file: Path = SUITE) -> dict:
    """Per-pair head error and PSNR at the estimated and at the oracle exposure, with their means."""
    model = nightflow.load(spec)
    restorer = model.inference_restorer
    head = getattr(getattr(model.restorer, "encoder", None), "exposure_head", None)
    if head is None:
        raise SystemExit(f"{spec}: this model has no exposure head")
    pairs = []
    for item in suite_pairs(model.scale, root_override, suite_file):
        lq, hq = item["lq"].unsqueeze(0), item["hq"].unsqueeze(0)
        with torch.no_grad():
            estimate = float(head(thumbnail(lq)).float())
            oracle = float(oracle_log2_gain(lq, hq))
            at_estimate = inference.restore(restorer, lq, tile=0)
            at_oracle = inference.restore(restorer, lq, tile=0, exposure=oracle - estimate)
        pairs.append(
            {
                "name": item["name"],
                "head_error_ev": round(estimate - oracle, 3),
                "psnr": round(float(psnr(at_estimate, hq)), 3),
                "psnr_oracle_exposure": round(float(psnr(at_oracle, hq)), 3),
                "ssim": round(float(ssim(at_estimate, hq)), 4),
                "ssim_oracle_exposure": round(float(ssim(at_oracle, hq)), 4),
            }
        )
    return {
        "spec": spec,
        "pairs": pairs,
        "mean_abs_head_error_ev": round(statistics.fmean(abs(p["head_error_ev"]) for p in pairs), 3),
        "mean_head_error_ev": round(statistics.fmean(p["head_error_ev"] for p in pairs), 3),
        "psnr": round(statistics.fmean(p["psnr"] for p in pairs), 2),
        "psnr_oracle_exposure": round(statistics.fmean(p["psnr_oracle_exposure"] for p in pairs), 2),
        "ssim": round(statistics.fmean(p["ssim"] for p in pairs), 4),
        "ssim_oracle_exposure": round(statistics.fmean(p["ssim_oracle_exposure"] for p in pairs), 4),
    }


def suite_parser(doc: str | None) -> argparse.ArgumentParser:
    """The command line of the per-pair suite studies (this one, ``colour_fidelity``): models, --data-root, --suite."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="zoo names, weights files or run folders")
    parser.add_argument(
        "--data-root", type=Path, help="folder that holds the suite's data (default: the suite's)"
    )
    parser.add_argument(
        "--suite",
        type=Path,
        default=SUITE,
        help="suite whose x<scale> pairs to use (default: the synthetic suite)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = suite_parser(__doc__).parse_args(argv)
    rows = []
    for spec in args.models:
        row = decompose(spec, args.data_root, args.suite)
        rows.append(row)
        print(
            f"{spec}: PSNR {row['psnr']:.2f} at the head's exposure, {row['psnr_oracle_exposure']:.2f} at the "
            f"target's; SSIM {row['ssim']:.3f} / {row['ssim_oracle_exposure']:.3f}; head error mean {row['mean_head_error_ev']:+.2f} EV, mean |error| "
            f"{row['mean_abs_head_error_ev']:.2f} EV"
        )
    suite = load_suite(args.suite).name
    name = "exposure_decomposition" if suite == "synthetic" else f"exposure_decomposition_{suite}"
    save(name, {"models": merge_rows(kept_rows(RESULTS / f"{name}.json"), rows)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
