"""Score a model or baseline on a dataset: per-image and mean PSNR/SSIM/LPIPS/NIQE, to JSON or CSV.

The model is a zoo name, a checkpoint path (weights file or run folder) or a classical baseline written
baseline:NAME (baseline:clahe+bicubic enhances then upscales; `nightflow models` and nightflow.baselines list
them). Flows are scored on the mean path (temperature 0) unless --temperature is given; then each image gets one
sample with noise seeded by (--seed, image index). Metric names pin their convention (see --metrics help);
--gt-mean adds brightness-rescaled columns (*_gtmean) next to the raw ones, never instead of them.

examples:
  nightflow eval --model lolisrflow-x2 --data RELLISUR --format rellisur --scale 2 --crop-lq 624
  nightflow eval --model baseline:clahe+bicubic --data RELLISUR --format rellisur --scale 4 --json clahe.json
  nightflow eval --model runs/x2/checkpoints/best --data pairs/ --format paired --scale 2 --metrics psnr,lpips
  nightflow eval --model llflow-small --data LOL --format lol --gt-mean --csv lol.csv
  nightflow eval --model lolisrflow-x1 --data DICM --format unpaired --metrics niqe
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from ._args import tile_size

FORMATS = ("rellisur", "lol", "lolv2", "lolblur", "paired", "unpaired", "synthetic")
DEFAULT_METRICS = "psnr,ssim"
DEFAULT_UNPAIRED_METRICS = "niqe"


def _metric_help() -> str:
    from ..metrics import list_metrics

    names = ", ".join(list_metrics())
    return f"comma-separated metric names (default: {DEFAULT_METRICS}; {DEFAULT_UNPAIRED_METRICS} for unpaired); one of {names}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="zoo name, checkpoint path, or baseline:NAME")
    parser.add_argument("--data", required=True, type=Path, help="dataset folder")
    parser.add_argument(
        "--format", choices=FORMATS, default="paired", help="dataset layout (default: paired)"
    )
    parser.add_argument("--split", default="test", help="train, val or test (default: test)")
    parser.add_argument(
        "--scale",
        type=int,
        choices=(1, 2, 4),
        default=None,
        help="the data's scale (default: the model's; 1 for baselines)",
    )
    parser.add_argument("--metrics", default=None, help=_metric_help())
    parser.add_argument(
        "--gt-mean", action="store_true", help="also report GT-mean rescaled scores (*_gtmean)"
    )
    parser.add_argument(
        "--gt-mean-variant",
        choices=("bt601", "llflow"),
        default="bt601",
        help="grey weights of the rescaling: bt601 (default) or llflow (its R/B-swapped weights)",
    )
    parser.add_argument(
        "--crop-border", type=int, default=0, help="pixels dropped at each edge before scoring"
    )
    parser.add_argument("--crop-lq", type=int, default=None, help="top-left LQ crop (RELLISUR practice: 624)")
    parser.add_argument(
        "--center-crop",
        type=int,
        default=None,
        help="score a centre crop of this many target pixels per side",
    )
    parser.add_argument("--lq-dir", default=None, help="paired/unpaired/lolblur: low-quality folder name")
    parser.add_argument("--hq-dir", default=None, help="paired/lolblur: ground-truth folder name")
    parser.add_argument("--subset", choices=("real", "synthetic"), default="real", help="lolv2 subset")
    parser.add_argument(
        "--temperature", type=float, default=0.0, help="0 = mean path (default); > 0 = one sample per image"
    )
    parser.add_argument(
        "--exposure",
        type=float,
        default=0.0,
        metavar="EV",
        help="shift of the model's own exposure estimate in EV (default 0; models with exposure control)",
    )
    parser.add_argument(
        "--ensemble",
        type=int,
        default=1,
        metavar="N",
        help="score the mean path averaged over N rotations and flips of each input, every second one moved by a "
        "pixel so that its block grid falls between the others' (1, 2, 4 or 8; default 1 = off; temperature 0 "
        "only), as `nightflow enhance --ensemble` makes it",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of sampled noise and synthetic data (default 0)"
    )
    parser.add_argument(
        "--tile", type=tile_size, default=None, help="tile side in input pixels, 0 = never, auto"
    )
    parser.add_argument("--limit", type=int, default=None, help="score only the first N images")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: auto")
    parser.add_argument("--json", type=Path, default=None, help="write per-image and mean results as JSON")
    parser.add_argument(
        "--csv", type=Path, default=None, help="write per-image results (+ a mean row) as CSV"
    )
    parser.add_argument(
        "--save", type=Path, default=None, help="also write the restored images to this folder"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing result files and images")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "image"


def _data_config(args: argparse.Namespace, scale: int):
    from ..config import from_dict
    from ..data.datasets import DataConfig

    raw = {
        "format": args.format,
        "root": str(args.data),
        "split": args.split,
        "scale": scale,
        "patch_size": args.center_crop,
        "crop_multiple": 1,
        "augment": False,
        "crop_lq": args.crop_lq,
        "lq_dir": args.lq_dir,
        "hq_dir": args.hq_dir,
        "subset": args.subset,
        "seed": args.seed,
    }
    return from_dict(DataConfig, raw)


def _print_summary(result, metric_info: dict[str, str]) -> None:
    print(
        f"model   {result.model['spec']} ({result.model['kind']}, ×{result.model['scale']}, "
        f"{result.model['params']:,} params)"
    )
    print(
        f"data    {result.data['format']} {result.data['root']} [{result.data['split']}], "
        f"{result.data['images']} image(s), temperature {result.options['temperature']:g}"
        + (f", self-ensemble of {ens}" if (ens := result.options.get("ensemble", 1)) != 1 else "")
    )
    width = max(len(c) for c in [*result.columns, "seconds/image"])
    for col in result.columns:
        base = col.removesuffix("_gtmean")
        note = metric_info.get(base, "")
        if col != base:
            note += f"; GT-mean rescaled ({result.options['gt_mean_variant']})"
        print(f"{col:<{width}}  {result.mean[col]:10.4f}   {note}")
    print(f"{'seconds/image':<{width}}  {result.mean['seconds_per_image']:10.4f}   on {result.device}")


def run(args: argparse.Namespace) -> int:
    import torch

    from .. import __version__
    from ..config import to_dict
    from ..data.datasets import build_dataset
    from ..data.io import write_image
    from ..errors import UserError
    from ..evaluation import EvalOptions, evaluate, resolve_model
    from ..evaluation.outputs import check_output, csv_text, write_json, write_text
    from ..inference import resolve_device
    from ..metrics import list_metrics

    if not args.data.is_dir():
        raise UserError(f"--data {args.data} is not a folder; give the dataset's folder")
    for out in (args.json, args.csv):
        if out is not None:
            check_output(out, args.overwrite)
    if args.save is not None and args.save.exists() and not args.save.is_dir():
        raise UserError(f"--save {args.save} is a file; give a folder for the restored images")
    metrics = args.metrics or (DEFAULT_UNPAIRED_METRICS if args.format == "unpaired" else DEFAULT_METRICS)
    options = EvalOptions(
        metrics=metrics.split(","),
        temperature=args.temperature,
        gt_mean=args.gt_mean,
        gt_mean_variant=args.gt_mean_variant,
        crop_border=args.crop_border,
        seed=args.seed,
        tile=args.tile,
        limit=args.limit,
        exposure=args.exposure,
        ensemble=args.ensemble,
    )
    device = resolve_device(args.device)
    model = resolve_model(args.model, args.scale, device)
    from ..pipeline import check_tile

    check_tile(args.tile, model.restorer, "--tile")  # whole-image methods (baselines) accept auto or 0 only
    cfg = _data_config(args, model.scale)
    dataset = build_dataset(cfg, train=False)
    records = getattr(dataset, "records", [])
    inputs = {Path(p).resolve() for r in records for p in (r.lq, r.hq) if p is not None}
    for out in (args.json, args.csv):
        if out is not None:
            check_output(out, args.overwrite, inputs)

    def save(index: int, item: dict, out: torch.Tensor) -> None:
        path = args.save / f"{index:04d}_{_safe_name(str(item.get('name', index)))}.png"
        if path.resolve() in inputs:
            raise UserError(f"--save would overwrite the input {path}; choose another folder")
        if args.overwrite or not path.exists():
            write_image(path, out[0], overwrite=args.overwrite)

    data_info = {
        k: v for k, v in to_dict(cfg).items() if k in ("format", "root", "split", "scale", "crop_lq")
    }
    data_info["center_crop"] = args.center_crop
    result = evaluate(
        model,
        dataset,
        options,
        data_info=data_info,
        device=device,
        progress=not args.quiet,
        on_output=save if args.save is not None else None,
    )
    info = list_metrics()
    _print_summary(result, info)
    if args.json is not None:
        payload = {"nightflow": __version__, **result.to_dict()}
        payload["metric_descriptions"] = {m: info[m] for m in options.metrics}
        write_json(args.json, payload, overwrite=args.overwrite)
        print(f"wrote {args.json}")
    if args.csv is not None:
        columns = ["index", "name", *result.columns, "seconds"]
        mean_row = {"name": "mean", **result.mean, "seconds": result.mean["seconds_per_image"]}
        write_text(args.csv, csv_text([*result.images, mean_row], columns), overwrite=args.overwrite)
        print(f"wrote {args.csv}")
    sys.stdout.flush()
    return 0
