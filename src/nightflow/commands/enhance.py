"""Restore low-light photos: brighten, denoise and upscale with a conditional flow; sample and show uncertainty.

Inputs may be files, folders or glob patterns. Outputs are PNGs named <stem>_x<S>.png (samples
<stem>_x<S>_s00.png ..., spread heat-map <stem>_x<S>_uncertainty.png), written next to each input in a
nightflow_out/ folder unless -o is given. Existing outputs are kept unless --overwrite; inputs are never
overwritten. 8-bit inputs give 8-bit outputs, 16-bit (and float TIFF) inputs 16-bit outputs.

examples:
  nightflow enhance dark.jpg                          # -> nightflow_out/dark_x2.png
  nightflow enhance photos/ -o out --model run/best.safetensors
  nightflow enhance 'shots/*.png' --samples 4 --temperature 0.8 --uncertainty --seed 1
  nightflow enhance big.tif --tile 256 --device cuda
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ._args import tile_size

DEFAULT_MODEL = "lolisrflow-x2"  # the zoo's default x2 model
OUT_FOLDER = "nightflow_out"
SAMPLE_TEMPERATURE = 0.8  # used for --samples/--uncertainty when --temperature is not given


def _non_negative(value: str) -> int:
    n = int(value)
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {n}")
    return n


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("inputs", nargs="+", metavar="IN", help="image files, folders or glob patterns")
    add(
        "-o",
        "--out",
        type=Path,
        default=None,
        help=f"output folder (default: {OUT_FOLDER}/ next to each input)",
    )
    add(
        "--model",
        default=DEFAULT_MODEL,
        metavar="NAME|PATH",
        help=f"zoo name or checkpoint (default {DEFAULT_MODEL})",
    )
    add(
        "--scale",
        type=int,
        choices=(1, 2, 4),
        default=None,
        help="expected scale: refuse a model of another scale",
    )
    add(
        "--temperature",
        type=float,
        default=None,
        metavar="T",
        help=f"sampling temperature (default: 0 = deterministic main output; {SAMPLE_TEMPERATURE} for "
        "--samples/--uncertainty); above 0 the main output is sample 0 of --seed",
    )
    add("--samples", type=_non_negative, default=0, metavar="N", help="also write N samples (default 0)")
    add("--uncertainty", action="store_true", help="also write a per-pixel spread heat-map")
    add(
        "--uncertainty-samples",
        type=int,
        default=8,
        metavar="N",
        help="samples for the heat-map when --samples < 2 (default 8)",
    )
    add(
        "--uncertainty-raw",
        action="store_true",
        help="also write the raw spread as a 16-bit grey PNG (value/65535 = std in [0, 1] intensity units)",
    )
    add(
        "--tile",
        type=tile_size,
        default=None,
        metavar="PX",
        help="largest tile side in input pixels; 0 = never tile; auto (default) = tile only when memory is short",
    )
    add(
        "--overlap",
        type=_non_negative,
        default=None,
        metavar="PX",
        help="tile overlap (default: tile/8, >= 16)",
    )
    add("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: auto (CUDA when present)")
    add("--seed", type=int, default=0, metavar="S", help="seed for samples (default 0)")
    add("--overwrite", action="store_true", help="replace existing outputs")


@dataclass
class Job:
    """One input and the outputs it should produce."""

    src: Path
    main: Path
    samples: list[Path] = field(default_factory=list)
    heat: Path | None = None
    raw: Path | None = None

    def outputs(self) -> list[Path]:
        return [p for p in [self.main, *self.samples, self.heat, self.raw] if p is not None]


def expand_inputs(patterns: list[str]) -> list[Path]:
    """Files, folders and globs → unique image paths in the order given (a pattern matching nothing is a
    UserError from ``list_images``)."""
    from ..data.io import list_images

    seen: dict[Path, None] = {}
    for pattern in patterns:
        for path in list_images(pattern):
            seen.setdefault(Path(path), None)
    return list(seen)


def plan_jobs(inputs: list[Path], out_dir: Path | None, scale: int, args: argparse.Namespace) -> list[Job]:
    """Output names per input; two inputs never share an output and no output is ever an input."""
    from ..errors import UserError

    stems: dict[tuple[Path, str], int] = {}
    for src in inputs:
        key = ((out_dir or src.parent / OUT_FOLDER).resolve(), src.stem)
        stems[key] = stems.get(key, 0) + 1
    n_samples = args.samples
    digits = max(2, len(str(max(0, n_samples - 1))))
    jobs, taken = [], {}
    input_set = {p.resolve() for p in inputs}
    for src in inputs:
        folder = out_dir or src.parent / OUT_FOLDER
        stem = src.stem
        if stems[(folder.resolve(), stem)] > 1:  # a.png and a.jpg side by side
            stem = f"{src.stem}_{src.suffix.lstrip('.').lower()}"
        base = folder / f"{stem}_x{scale}"
        job = Job(src=src, main=base.with_name(base.name + ".png"))
        job.samples = [base.with_name(f"{base.name}_s{i:0{digits}d}.png") for i in range(n_samples)]
        if args.uncertainty:
            job.heat = base.with_name(base.name + "_uncertainty.png")
            if args.uncertainty_raw:
                job.raw = base.with_name(base.name + "_uncertainty16.png")
        for out in job.outputs():
            resolved = out.resolve()
            if resolved in input_set:
                raise UserError(f"output {out} would overwrite an input; choose another folder with -o")
            if resolved in taken:
                raise UserError(
                    f"inputs {taken[resolved]} and {src} would both write {out}; use separate -o folders"
                )
            taken[resolved] = src
        jobs.append(job)
    return jobs


def heat_map(spread, scale_max: float | None = None):
    """Colour-map an H×W spread (std in [0, 1] units) to an 8-bit RGB heat-map (inferno), 0 = black.

    Normalised by the 99.5th percentile (or ``scale_max``) so a few extreme pixels do not wash the map out.
    """
    import cv2
    import numpy as np

    top = float(np.percentile(spread, 99.5)) if scale_max is None else scale_max
    norm = np.zeros_like(spread) if top <= 0 else np.clip(spread / top, 0, 1)
    grey = np.rint(norm * 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(grey, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)


def _to_output_array(img):
    """Library images keep 8 bits; 16-bit and float inputs become 16-bit outputs."""
    import numpy as np

    if img.dtype == np.uint8 or img.dtype == np.uint16:
        return img
    return np.rint(np.clip(img, 0, 1) * 65535).astype(np.uint16)


def process(job: Job, model, args: argparse.Namespace) -> list[Path]:
    """Run one image through the model and write its outputs; returns the files written."""
    import numpy as np
    import torch

    from .. import inference
    from ..api import ImageInputError, image_to_tensor, tensor_to_image
    from ..data.io import read_image, write_image
    from ..errors import UserError

    img = read_image(job.src)
    try:
        x, kind = image_to_tensor(img)
    except ImageInputError as exc:
        raise UserError(f"{job.src}: {exc}") from None
    todo = {p for p in job.outputs() if args.overwrite or not p.exists()}
    written: list[Path] = []

    def save(path: Path, arr) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_image(path, arr, overwrite=args.overwrite)
        written.append(path)

    common = dict(tile=args.tile, overlap=args.overlap, progress=True)
    if job.main in todo:
        main_t = args.temperature or 0.0
        gen = torch.Generator().manual_seed(args.seed)
        y = next(inference.iter_samples(model.restorer, x, 1, main_t, generator=gen, **common))
        save(job.main, _to_output_array(tensor_to_image(y, kind)))
    sample_t = SAMPLE_TEMPERATURE if args.temperature is None else args.temperature
    need_samples = [p for p in job.samples if p in todo]
    need_heat = any(p in todo for p in (job.heat, job.raw) if p is not None)
    n = len(job.samples) if len(job.samples) >= 2 else args.uncertainty_samples
    if not need_heat:
        n = len(job.samples) if need_samples else 0
    if n:
        acc = inference.SpreadAccumulator()
        gen = torch.Generator().manual_seed(args.seed)
        stream = inference.iter_samples(model.restorer, x, n, sample_t, generator=gen, **common)
        for i, y in enumerate(stream):
            if i < len(job.samples) and job.samples[i] in todo:
                save(job.samples[i], _to_output_array(tensor_to_image(y, kind)))
            if need_heat:
                acc.add(y)
        if need_heat:
            spread = acc.spread()[0].numpy()
            if job.heat in todo:
                save(job.heat, heat_map(spread))
            if job.raw is not None and job.raw in todo:
                save(job.raw, np.rint(np.clip(spread, 0, 1) * 65535).astype(np.uint16))
    return written


def run(args: argparse.Namespace) -> int:
    import warnings

    from tqdm.auto import tqdm

    import nightflow

    from ..errors import UserError

    if args.uncertainty and args.uncertainty_samples < 2 and args.samples < 2:
        raise UserError("--uncertainty needs at least 2 samples; raise --uncertainty-samples or --samples")
    if args.temperature is not None and args.temperature < 0:
        raise UserError(f"--temperature must be >= 0, got {args.temperature}")
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        raise UserError(f"-o {args.out} is a file; give a folder for the outputs")
    inputs = expand_inputs(args.inputs)
    model = nightflow.load(args.model, device=args.device)
    if args.scale is not None and model.scale != args.scale:
        raise UserError(
            f"model '{args.model}' upscales x{model.scale} but --scale {args.scale} was asked; "
            f"pick a x{args.scale} model or drop --scale"
        )
    jobs = plan_jobs(inputs, args.out, model.scale, args)
    pending = [j for j in jobs if args.overwrite or not all(p.exists() for p in j.outputs())]
    skipped = len(jobs) - len(pending)
    failures: list[str] = []
    written = 0
    with warnings.catch_warnings():
        warnings.simplefilter("once")
        for job in tqdm(pending, desc="enhance", unit="img", disable=len(pending) < 2):
            try:
                written += len(process(job, model, args))
            except UserError as exc:  # unreadable image etc.: report, go on with the others
                if len(jobs) == 1:
                    raise
                failures.append(str(exc) if str(job.src) in str(exc) else f"{job.src}: {exc}")
                print(f"nightflow enhance: error: {failures[-1]}", file=sys.stderr)
    note = f", kept {skipped} already done (use --overwrite to redo)" if skipped else ""
    print(f"wrote {written} file(s) for {len(pending) - len(failures)} image(s){note}")
    if failures:
        raise UserError(f"{len(failures)} of {len(jobs)} images failed (see above)")
    return 0
