"""Would a fixed filter on a model's output raise its PSNR/SSIM? Chroma blur, luma blur and an unsharp mask.

Why: the ×2 misses issue 11's SSIM (0.649 against 0.70) and shows colour noise on dark scenes. If that noise, or a
uniform softness, were what SSIM punishes, a filter after the flow would close part of the gap for free. Each pair
of a suite is restored once (mean path, whole image), then scored after each filter in YCbCr (BT.601): a
Gaussian blur of the chroma, of the luma, of both, and an unsharp mask of the luma. Scores are the suites' (RGB PSNR
and SSIM, ``score_item``).

    python -m benchmarks.output_filters lolisrflow-x2
    python -m benchmarks.output_filters lolisrflow-x2 --suite benchmarks/suites/foreign.yaml

Writes results/output_filters_<suite name>.json.
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable

import torch

import nightflow
from nightflow import inference
from nightflow.data.degrade import blur, gaussian_kernel
from nightflow.evaluation.engine import EvalOptions, score_item
from nightflow.evaluation.suite import load_suite

from .common import save
from .exposure_decomposition import suite_pairs, suite_parser

OPTIONS = EvalOptions(metrics=["psnr", "ssim"])
_YCBCR = torch.tensor([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])


def to_ycbcr(rgb: torch.Tensor) -> torch.Tensor:
    """N×3×H×W RGB → Y, Cb, Cr (BT.601, full range, chroma centred on 0)."""
    return torch.einsum("ij,njhw->nihw", _YCBCR, rgb)


def to_rgb(ycbcr: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,njhw->nihw", torch.linalg.inv(_YCBCR), ycbcr)


def smooth(rgb: torch.Tensor, chroma_sigma: float = 0.0, luma_sigma: float = 0.0) -> torch.Tensor:
    """Gaussian blur of the chroma and/or the luma (σ in output pixels; 0 leaves that part as it is)."""
    y = to_ycbcr(rgb)
    luma = blur(y, gaussian_kernel(luma_sigma))[:, :1] if luma_sigma > 0 else y[:, :1]
    chroma = blur(y, gaussian_kernel(chroma_sigma))[:, 1:] if chroma_sigma > 0 else y[:, 1:]
    return to_rgb(torch.cat([luma, chroma], 1)).clamp(0, 1)


def unsharp(rgb: torch.Tensor, sigma: float, amount: float) -> torch.Tensor:
    """Luma unsharp mask: Y + amount·(Y − blur_σ(Y)); chroma untouched."""
    y = to_ycbcr(rgb)
    luma = y[:, :1] + amount * (y[:, :1] - blur(y, gaussian_kernel(sigma))[:, :1])
    return to_rgb(torch.cat([luma, y[:, 1:]], 1)).clamp(0, 1)


FILTERS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "output": lambda x: x,
    **{f"chroma blur σ {s:g}": (lambda x, s=s: smooth(x, chroma_sigma=s)) for s in (0.7, 1, 1.5, 2, 3)},
    **{f"luma blur σ {s:g}": (lambda x, s=s: smooth(x, luma_sigma=s)) for s in (0.5, 0.7)},
    "chroma σ 1.5 + luma σ 0.5": lambda x: smooth(x, chroma_sigma=1.5, luma_sigma=0.5),
    **{
        f"unsharp σ {s:g}, amount {a:g}": (lambda x, s=s, a=a: unsharp(x, s, a))
        for s in (1, 2)
        for a in (0.3, 0.6)
    },
}


def measure(spec: str, args) -> dict:
    """Mean PSNR/SSIM over the suite's pairs of the model's output after each filter."""
    model = nightflow.load(spec)
    scores: dict[str, list[dict[str, float]]] = {name: [] for name in FILTERS}
    for item in suite_pairs(model.scale, args.data_root, args.suite):
        lq, hq = item["lq"].unsqueeze(0), item["hq"].unsqueeze(0)
        out = inference.restore(model.inference_restorer, lq, tile=0).clamp(0, 1)
        for name, apply in FILTERS.items():
            row = score_item(apply(out), hq, OPTIONS, model.scale)
            scores[name].append({k: float(v) for k, v in row.items()})
    means = {
        name: {m: round(statistics.fmean(r[m] for r in rows), 4) for m in rows[0]}
        for name, rows in scores.items()
    }
    return {"spec": spec, "pairs": len(scores["output"]), "means": means}


def main(argv: list[str] | None = None) -> int:
    args = suite_parser(__doc__).parse_args(argv)
    rows = []
    for spec in args.models:
        row = measure(spec, args)
        rows.append(row)
        for name, m in row["means"].items():
            print(f"{spec} {name:28s} PSNR {m['psnr']:.3f}  SSIM {m['ssim']:.4f}")
    save(f"output_filters_{load_suite(args.suite).name}", {"models": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
