"""Restore low-light photos: brighten, denoise and upscale with a conditional flow; sample and show uncertainty.

Inputs may be files, folders (--recursive for their subfolders) or glob patterns. Outputs are PNGs named
<stem>_x<S>.png (samples <stem>_x<S>_s00.png ..., spread heat-map <stem>_x<S>_uncertainty.png), written next to
each input in a nightflow_out/ folder unless -o is given (subfolders are mirrored under -o DIR). With one input,
-o FILE.png|.tif|.jpg writes that file (samples FILE_s00.png ..., FILE_uncertainty.png beside it); its extension
picks the format, 16-bit is kept in PNG and TIFF (JPEG is 8-bit). A name ending in / is always a folder. Inputs
are never overwritten. Every output records what made it (input and weights hashes, model, temperature, seed, samples,
exposure, ensemble): an existing output made the same way is kept, one made from another input or with other settings is
refused (exit 2) unless --overwrite. 8-bit inputs give 8-bit outputs, 16-bit (and float TIFF) inputs 16-bit
outputs; grey inputs give grey outputs. Images above --max-pixels are refused before they are decoded.

Without --model, each input gets the bundled LoLiSRFlow of --scale (default ×2): lolisrflow-x2 for lossless files
(PNG, TIFF) and lolisrflow-x2-jpeg, trained on JPEG-compressed dark photos, for JPEG files (told by their bytes, not
their name), with a note saying so. The JPEG variant scores higher on JPEGs of every quality measured, 95
included, and lower on lossless inputs (benchmarks/suites/jpeg-quality-x2.yaml, jpeg-variants.yaml). --model NAME
uses one model for every input.

examples:
  nightflow enhance dark.jpg                          # -> nightflow_out/dark_x2.png
  nightflow enhance dark.jpg -o bright.tif            # -> bright.tif (16-bit if dark.jpg was)
  nightflow enhance shots/ -o out --quiet --json      # scripts: a JSON summary on stdout, nothing else
  nightflow enhance dark.jpg --backend onnx --model x2.onnx -o out.png   # onnxruntime (nightflow export)
  nightflow enhance photos/ -o out --model run/best.safetensors
  nightflow enhance 'shots/*.png' --samples 4 --temperature 0.8 --uncertainty --seed 1
  nightflow enhance big.tif --tile 256 --device cuda
  nightflow enhance card/ --recursive -o out          # card/DCIM/100/IMG_0001.JPG -> out/DCIM/100/...
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..precision import PRECISIONS
from ._args import memory_size, tile_size

DEFAULT_SCALE = 2  # without --model and --scale: the bundled x2 models
OUT_FOLDER = "nightflow_out"
RECORD_KEY = "nightflow"  # PNG tEXt keyword of the JSON record of what made an output
# Inputs at least this large get a start and a finish line: one untiled piece can take a minute on a CPU.
ANNOUNCE_PIXELS = 1_000_000


def _non_negative(value: str) -> int:
    n = int(value)
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {n}")
    return n


def pixel_count(value: str) -> int:
    """``--max-pixels``: a pixel count ("50000000", "50M" = 50 megapixels); 0 = no limit."""
    text = value.strip().upper().removesuffix("P")
    factor = 1_000_000 if text.endswith("M") else 1
    try:
        n = float(text.removesuffix("M")) * factor
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a pixel count such as 50M or 50000000, got '{value}'"
        ) from None
    if not math.isfinite(n) or n < 0:
        raise argparse.ArgumentTypeError(f"expected a pixel count >= 0, got '{value}'")
    return int(n)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("inputs", nargs="+", metavar="IN", help="image files, folders or glob patterns")
    add(
        "-o",
        "--out",
        default=None,
        metavar="FILE|DIR",
        help=f"output file (one input; .png, .tif or .jpg) or folder (default: {OUT_FOLDER}/ next to each input)",
    )
    add(
        "--model",
        default=None,
        metavar="NAME|PATH",
        help="zoo name or checkpoint, used for every input (default: per input, lolisrflow-xS for lossless "
        "files and lolisrflow-xS-jpeg for JPEG files, S = --scale)",
    )
    add(
        "--scale",
        type=int,
        choices=(1, 2, 4),
        default=None,
        help=f"upscaling factor: picks the bundled models without --model (default {DEFAULT_SCALE}); with "
        "--model, refuses a model of another scale",
    )
    add(
        "--temperature",
        type=float,
        default=None,
        metavar="T",
        help="sampling temperature (default: 0 = deterministic main output; for --samples/--uncertainty the "
        "model's own, measured on its weights and named on its card: 0.6 for LoLiSRFlow, 0.4 for UPT-Flow); "
        "above 0 the main output is sample 0 of --seed",
    )
    add(
        "--exposure",
        type=float,
        default=0.0,
        metavar="EV",
        help="brighter (> 0) or darker (< 0) than the model's own exposure estimate, in EV (default 0)",
    )
    add(
        "--ensemble",
        type=int,
        default=1,
        metavar="N",
        help="self-ensemble: average the main output over N rotations and flips of the input, every second one "
        "moved by a pixel so that its block grid falls between the others' (1, 2, 4 or 8; default 1 = off): "
        "N times slower, less residual noise and a fainter block grid but a little smoother (higher PSNR and "
        "SSIM, LPIPS slightly worse); 4 gives most of what 8 does "
        '(docs/training.md, "Self-ensemble"). Only for the deterministic main output, not with --temperature '
        "above 0",
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
        "--max-memory",
        type=memory_size,
        default=None,
        metavar="SIZE",
        help="working memory an automatic tile size may use, e.g. 2G (measured per model on a small probe "
        "tile; default auto: a quarter of the available memory on a CPU, 60%% on a GPU)",
    )
    add(
        "--overlap",
        type=_non_negative,
        default=None,
        metavar="PX",
        help="tile overlap (default: tile/8, >= 16)",
    )
    add("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: auto (CUDA when present)")
    add(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="auto (default): bf16 autocast for the encoder and coupling nets where the CPU (AMX, AMD avx512_bf16) or GPU runs "
        "bf16 faster than fp32 and the model was measured within 1/255 of fp32, else fp32; fp32 or bf16 "
        "force one (the flow's invertible arithmetic is fp32 either way)",
    )
    add(
        "--backend",
        choices=("torch", "onnx"),
        default="torch",
        help="torch (default) or onnx: onnxruntime on the CPU, with --model FILE.onnx (nightflow export) or a "
        "model exported on first use into the cache (needs pip install 'nightflow[onnx]')",
    )
    add("--seed", type=int, default=0, metavar="S", help="seed for samples, 0..2**64-1 (default 0)")
    add(
        "--max-pixels",
        type=pixel_count,
        default=None,
        metavar="N",
        help="refuse larger inputs, read from the header before decoding (e.g. 50M; 0 = no limit; "
        "default: what half of this machine's memory holds at the model's scale)",
    )
    add("-r", "--recursive", action="store_true", help="also enhance images in subfolders of folder inputs")
    add("--overwrite", action="store_true", help="replace existing outputs")
    add("-q", "--quiet", action="store_true", help="print nothing but errors (no progress, notes or summary)")
    add(
        "--json",
        action="store_true",
        help="print a JSON summary of what was written, kept, refused and failed on stdout (the summary "
        "line goes to stderr)",
    )


# ---------------------------------------------------------------------------------------------------- -o


@dataclass(frozen=True)
class Target:
    """Where -o points: a folder (``folder``, None = nightflow_out/ next to each input) or one file."""

    folder: Path | None = None
    file: Path | None = None


def output_target(text: str | Path | None) -> Target:
    """-o as a folder or a file: a name ending in a separator or an existing folder is a folder; a name with a
    writable image extension is a file; any other extension is refused (it could be neither)."""
    from ..data.io import WRITE_EXTENSIONS
    from ..errors import UserError

    if text is None:
        return Target()
    raw = str(text)
    path = Path(raw)
    if raw.endswith(("/", os.sep)) or path.is_dir():
        return Target(folder=path)
    suffix = path.suffix.lower()
    if suffix in WRITE_EXTENSIONS:
        return Target(file=path)
    if path.exists():
        raise UserError(f"-o {path} is a file; give a folder for the outputs, or a .png/.tif/.jpg file name")
    if suffix:
        raise UserError(
            f"-o {path}: nightflow cannot write '{path.suffix}' files; use .png, .tif or .jpg (or end the "
            "name with / for a folder)"
        )
    return Target(folder=path)


def file_job(source: Source, target: Path, args: argparse.Namespace) -> Job:
    """The outputs of -o FILE: the file itself, samples and heat-maps beside it in the same format (the raw
    16-bit spread as PNG when the format is JPEG)."""
    base, ext = target.with_suffix(""), target.suffix
    digits = max(2, len(str(max(0, args.samples - 1))))
    job = Job(src=source.path, main=target)
    job.samples = [base.with_name(f"{base.name}_s{i:0{digits}d}{ext}") for i in range(args.samples)]
    if args.uncertainty:
        job.heat = base.with_name(f"{base.name}_uncertainty{ext}")
        if args.uncertainty_raw:
            raw_ext = ext if ext.lower() in (".png", ".tif", ".tiff") else ".png"
            job.raw = base.with_name(f"{base.name}_uncertainty16{raw_ext}")
    return job


# ---------------------------------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class Source:
    """One input file and its subfolder below the folder argument it came from ("." otherwise)."""

    path: Path
    rel: Path = Path(".")


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


def _is_output_path(path: Path, root: Path, out_dir: Path | None) -> bool:
    """Files nightflow wrote (in a nightflow_out/ folder or under -o) are never taken as inputs."""
    if OUT_FOLDER in path.relative_to(root).parts[:-1]:
        return True
    return out_dir is not None and path.resolve().is_relative_to(out_dir.resolve())


def _subfolders(folder: Path, out_dir: Path | None) -> list[Path]:
    skip = {out_dir.resolve()} if out_dir is not None else set()
    return [
        d
        for d in folder.iterdir()
        if d.is_dir() and not d.name.startswith(".") and d.name != OUT_FOLDER and d.resolve() not in skip
    ]


def _folder_sources(folder: Path, recursive: bool, out_dir: Path | None, quiet: bool = False) -> list[Source]:
    from ..data.io import list_images
    from ..errors import UserError

    subs = [] if recursive else _subfolders(folder, out_dir)
    hint = f" ({len(subs)} subfolder(s) not searched: add --recursive)" if subs else ""
    try:
        files = list_images(folder, recursive=recursive)
    except UserError as exc:
        raise UserError(f"{exc}{hint}") from None
    found = [
        Source(f, f.parent.relative_to(folder)) for f in files if not _is_output_path(f, folder, out_dir)
    ]
    if not found:
        raise UserError(f"no images in folder {folder} besides nightflow's own outputs{hint}")
    if subs and not quiet:
        print(
            f"nightflow enhance: note: {folder} has {len(subs)} subfolder(s) that were not searched; "
            "add --recursive to include them",
            file=sys.stderr,
        )
    return found


def expand_inputs(
    patterns: list[str], recursive: bool = False, out_dir: Path | None = None, quiet: bool = False
) -> list[Source]:
    """Files, folders and globs → unique image sources in the order given (a pattern matching nothing is a
    UserError from ``list_images``); folders list their subfolders only with ``recursive``, and say so."""
    from ..data.io import list_images

    seen: dict[Path, Source] = {}
    for pattern in patterns:
        if Path(pattern).is_dir():
            sources = _folder_sources(Path(pattern), recursive, out_dir, quiet)
        else:
            sources = [Source(Path(p)) for p in list_images(pattern)]
        for source in sources:
            seen.setdefault(source.path, source)
    return list(seen.values())


def output_folder(source: Source, out_dir: Path | None) -> Path:
    """-o (mirroring the input's subfolder), else nightflow_out/ next to the input."""
    if out_dir is None:
        return source.path.parent / OUT_FOLDER
    return out_dir / source.rel


def plan_jobs(
    inputs: list[Source],
    out_dir: Path | None,
    scale: int,
    args: argparse.Namespace,
    out_file: Path | None = None,
) -> list[Job]:
    """Output names per input (``out_file``: the one input's -o FILE); two inputs never share an output and no
    output is ever an input."""
    from ..errors import UserError

    if out_file is not None:
        if len(inputs) != 1:
            raise UserError(
                f"-o {out_file} names one file but {len(inputs)} images were given; use -o FOLDER for several"
            )
        job = file_job(inputs[0], out_file, args)
        resolved = {inputs[0].path.resolve()}
        for out in job.outputs():
            if out.resolve() in resolved:
                raise UserError(
                    f"-o {out} is a file that is also the input; inputs are never overwritten: choose another name"
                )
        return [job]
    stems: dict[tuple[Path, str], int] = {}
    for source in inputs:
        key = (output_folder(source, out_dir).resolve(), source.path.stem)
        stems[key] = stems.get(key, 0) + 1
    n_samples = args.samples
    digits = max(2, len(str(max(0, n_samples - 1))))
    jobs, taken = [], {}
    input_set = {s.path.resolve() for s in inputs}
    for source in inputs:
        src, folder = source.path, output_folder(source, out_dir)
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


# ---------------------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Settings:
    """What, besides the input, decides the pixels of an output: recorded in it, compared before skipping."""

    model: str
    weights_sha256: str | None
    scale: int
    main_temperature: float
    sample_temperature: float
    seed: int
    samples: int
    heat_samples: int
    exposure: float
    ensemble: int = 1
    backend: str = "torch"
    precision: str = "fp32"  # resolved: fp32 or bf16


# Keys of a record that must match for an existing output to count as done, per kind of output.
_COMMON = ("input_sha256", "model_id", "scale", "exposure", "role", "index", "backend", "precision")
COMPARED: dict[str, tuple[str, ...]] = {
    "main": (*_COMMON, "temperature", "seed", "ensemble", "ensemble_scheme"),
    "sample": (*_COMMON, "temperature", "seed"),
    "uncertainty": (*_COMMON, "temperature", "seed", "heat_samples"),
    "uncertainty16": (*_COMMON, "temperature", "seed", "heat_samples"),
}


def job_settings(model: Any, args: argparse.Namespace, weights_sha256: str | None) -> Settings:
    """The run's settings, as they will be recorded in every output."""
    n = args.samples if args.samples >= 2 else args.uncertainty_samples
    return Settings(
        model=str(model.info.get("name") or model.info.get("path") or type(model.restorer).__name__),
        weights_sha256=weights_sha256,
        scale=int(model.scale),
        main_temperature=float(args.temperature or 0.0),
        sample_temperature=sample_temperature(model, args),
        seed=int(args.seed),
        samples=int(args.samples),
        heat_samples=int(n),
        exposure=float(getattr(args, "exposure", 0.0) or 0.0),
        ensemble=int(getattr(args, "ensemble", 1) or 1),
        backend=str(getattr(args, "backend", "torch") or "torch"),
        precision=resolved_precision(model, args),
    )


def sample_temperature(model: Any, args: argparse.Namespace) -> float:
    """The temperature of --samples and --uncertainty: --temperature, else the model's own (measured on its
    weights: ``Restorer.sample_temperature``)."""
    from ..models.base import temperature_for

    return temperature_for(model, args.temperature)


def resolved_precision(model: Any, args: argparse.Namespace) -> str:
    """--precision for ``model``: auto → bf16 only where the device runs it natively and the model was measured
    within 1/255 of fp32 (:mod:`nightflow.precision`); bf16 with the ONNX backend is refused (float32 graphs)."""
    from ..errors import UserError
    from ..precision import resolve

    asked = str(getattr(args, "precision", "auto") or "auto")
    if getattr(args, "backend", "torch") == "onnx":
        if asked == "bf16":
            raise UserError("--precision bf16 needs --backend torch: the exported ONNX graphs are float32")
        return "fp32"
    return resolve(asked, model.restorer, model.device)


def output_records(job: Job, settings: Settings, input_sha256: str) -> dict[Path, dict[str, Any]]:
    """The record each output of ``job`` carries (a seed only matters above temperature 0, so it is None there)."""
    from .. import __version__, ensemble

    def record(role: str, index: int | None, temperature: float) -> dict[str, Any]:
        return {
            "nightflow": __version__,
            "role": role,
            "index": index,
            "input": job.src.name,
            "input_sha256": input_sha256,
            "model": settings.model,
            "weights_sha256": settings.weights_sha256,
            "model_id": settings.weights_sha256 or settings.model,
            "scale": settings.scale,
            "temperature": temperature,
            "seed": settings.seed if temperature > 0 else None,
            "samples": settings.samples,
            "heat_samples": settings.heat_samples if role.startswith("uncertainty") else None,
            "exposure": settings.exposure,
            "backend": None if settings.backend == "torch" else settings.backend,  # torch: as older records
            "precision": None
            if settings.precision == "fp32"
            else settings.precision,  # fp32: as older records
        }

    records = {job.main: record("main", None, settings.main_temperature)}
    # the self-ensemble changes only the main output; 1 (none) is recorded as None, as in older records
    records[job.main]["ensemble"] = settings.ensemble if settings.ensemble != 1 else None
    # and which members it averaged: an output of the first ensemble (no shifted members) is not this one
    records[job.main]["ensemble_scheme"] = ensemble.SCHEME if settings.ensemble != 1 else None
    for i, path in enumerate(job.samples):
        records[path] = record("sample", i, settings.sample_temperature)
    if job.heat is not None:
        records[job.heat] = record("uncertainty", None, settings.sample_temperature)
    if job.raw is not None:
        records[job.raw] = record("uncertainty16", None, settings.sample_temperature)
    return records


def read_record(path: Path) -> dict[str, Any] | None:
    """The record stored in an existing output, None when it has none (written by another tool or version)."""
    from ..data.io import read_image_text

    text = read_image_text(path).get(RECORD_KEY)
    try:
        record = json.loads(text) if text else None
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def record_difference(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """How ``old`` (on disk) differs from ``new`` in what decides the pixels, in words; None when it does not."""
    for key in COMPARED.get(str(new["role"]), _COMMON):
        if old.get(key) != new.get(key):
            if key == "input_sha256":
                return f"from another input ({old.get('input', '?')}, other content)"
            if key == "model_id":
                return f"with another model ({old.get('model', '?')})"
            return f"with {key.replace('_', ' ')} {old.get(key)} (now {new.get(key)})"
    return None


@dataclass
class Status:
    """What to do for one job: the outputs still to write, those kept, and why it is refused (if it is)."""

    todo: list[Path]
    kept: list[Path]
    unrecorded: list[Path]
    refused: str | None = None


def job_status(job: Job, records: dict[Path, dict[str, Any]], overwrite: bool) -> Status:
    """Done, partly done or refused: an existing output counts as done only if its record matches."""
    if overwrite:
        return Status(todo=job.outputs(), kept=[], unrecorded=[])
    status = Status(todo=[], kept=[], unrecorded=[])
    for path in job.outputs():
        if not path.exists():
            status.todo.append(path)
            continue
        old = read_record(path)
        if old is None:  # not ours to judge (another tool, an older nightflow): kept, and said so
            status.unrecorded.append(path)
            continue
        why = record_difference(old, records[path])
        if why is not None and status.refused is None:
            status.refused = (
                f"{path} exists and was made {why}; kept it: pass --overwrite to redo it or choose another -o"
            )
        status.kept.append(path)
    return status


# ---------------------------------------------------------------------------------------------------- work


def heat_map(spread, scale_max: float | None = None):
    """The pipeline's heat-map of an H×W spread (:func:`nightflow.pipeline.heat_map`)."""
    from ..pipeline import heat_map as pipeline_heat_map

    return pipeline_heat_map(spread, scale_max)


def _announce(job: Job, x, model, args: argparse.Namespace) -> float | None:
    """A start line for a large input (size, tiles), so a minute of one untiled piece is not silent."""
    from .. import inference

    h, w = x.shape[-2:]
    if h * w < ANNOUNCE_PIXELS or getattr(args, "quiet", False):
        return None
    s = model.scale
    count = inference.plan_for(
        model.inference_restorer,
        h,
        w,
        args.tile,
        args.overlap,
        device=model.device,
        max_memory=getattr(args, "max_memory", None),
        precision=resolved_precision(model, args),
    ).count
    how = f"{count} tiles" if count > 1 else "one piece (--tile 512 shows per-tile progress)"
    print(f"enhancing {job.src}: {w}×{h} → {w * s}×{h * s}, {how} ...", file=sys.stderr, flush=True)
    return time.perf_counter()


def request_for(job: Job, model: Any, args: argparse.Namespace, todo: list[Path] | None = None):
    """The pipeline request that makes the outputs of ``job`` still to do (``todo``; default: all of them) with
    ``model``, at its resolved precision (:func:`resolved_precision`) and sampling temperature
    (:func:`sample_temperature`)."""
    from ..pipeline import Request

    wanted = set(job.outputs() if todo is None else todo)
    need_heat = any(p in wanted for p in (job.heat, job.raw) if p is not None)
    n_heat = len(job.samples) if len(job.samples) >= 2 else args.uncertainty_samples
    return Request(
        main=job.main in wanted,
        temperature=args.temperature or 0.0,
        samples=tuple(i for i, p in enumerate(job.samples) if p in wanted),
        sample_temperature=sample_temperature(model, args),
        spread=n_heat if need_heat else 0,
        seed=args.seed,
        tile=args.tile,
        overlap=args.overlap,
        exposure=args.exposure,
        progress=not getattr(args, "quiet", False),
        precision=resolved_precision(model, args),
        max_memory=getattr(args, "max_memory", None),
        ensemble=int(getattr(args, "ensemble", 1) or 1),
    )


def process(
    job: Job,
    model,
    args: argparse.Namespace,
    todo: list[Path] | None = None,
    records: dict[Path, dict[str, Any]] | None = None,
) -> list[Path]:
    """Run one image through the pipeline (:func:`nightflow.pipeline.enhance_file`) and write the outputs in
    ``todo`` (default: all of them), each with its record; returns the files written. Nothing is written from
    NaN/inf values."""
    from ..data.io import default_max_pixels
    from ..pipeline import FileOutputs, enhance_file

    limit = default_max_pixels(model.scale) if args.max_pixels is None else args.max_pixels
    wanted = set(job.outputs() if todo is None else todo)
    records = records or {}
    outputs = FileOutputs(
        main=job.main if job.main in wanted else None,
        samples={i: p for i, p in enumerate(job.samples) if p in wanted},
        heat=job.heat if job.heat in wanted else None,
        raw=job.raw if job.raw in wanted else None,
    )
    started: list[float | None] = [None]

    def text(path: Path) -> dict[str, str] | None:
        return {RECORD_KEY: json.dumps(records[path])} if path in records else None

    def on_start(x) -> None:
        started[0] = _announce(job, x, model, args)

    written = enhance_file(
        model.inference_restorer,
        job.src,
        request_for(job, model, args, todo),
        outputs,
        max_pixels=limit,
        text=text,
        on_start=on_start,
    )
    if started[0] is not None:
        print(f"  done in {time.perf_counter() - started[0]:.1f} s", file=sys.stderr)
    return written


def _is_out_of_memory(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, MemoryError) or isinstance(exc, getattr(torch, "OutOfMemoryError", ())):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def run_one(job: Job, model, args: argparse.Namespace, status: Status, records: dict) -> list[Path]:
    """``process`` with per-image faults (I/O, memory) turned into one-line ``UserError``s naming the image;
    returns the files written."""
    from ..data.io import output_reason
    from ..errors import OutputError, ResourceLimitError, UserError

    try:
        return process(job, model, args, status.todo, records)
    except UserError:
        raise
    except OSError as exc:
        raise OutputError(f"{job.src}: {output_reason(exc)}") from None
    except (MemoryError, RuntimeError) as exc:
        if not _is_out_of_memory(exc):
            raise
        raise ResourceLimitError(
            f"{job.src}: out of memory; use smaller tiles (--tile 256), a lower --max-pixels, or --device cpu"
        ) from None


def check_settings(args: argparse.Namespace) -> None:
    """Everything checkable before loading anything: ranges of temperature, seed, exposure, sample counts."""
    from ..errors import UserError
    from ..pipeline import check_ensemble, check_exposure, check_seed, check_temperature

    if args.uncertainty and args.uncertainty_samples < 2 and args.samples < 2:
        raise UserError("--uncertainty needs at least 2 samples; raise --uncertainty-samples or --samples")
    if args.temperature is not None:
        check_temperature(args.temperature, "--temperature")
    check_seed(args.seed, "--seed")
    check_exposure(args.exposure)
    check_ensemble(args.ensemble, args.temperature or 0.0, "--ensemble")
    output_target(args.out)  # -o FILE with an extension we cannot write is refused here


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings (alpha dropped, extra TIFF pages) as one ``nightflow enhance: warning:`` line, not two."""
    from tqdm.auto import tqdm

    tqdm.write(f"nightflow enhance: warning: {message}", file=sys.stderr)


def _weights_hash(model) -> str | None:
    from ..data.io import file_sha256

    path = model.info.get("path")
    return file_sha256(path) if path and Path(path).is_file() else None


def _summary(written: int, done: int, kept: int, refused: int) -> str:
    """One line: what was written, kept (made the same way) and refused (made differently)."""
    parts = [f"wrote {written} file(s) for {done} image(s)"]
    if kept:
        parts.append(f"kept {kept} already done (use --overwrite to redo)")
    if refused:
        parts.append(f"refused {refused} whose outputs were made from another input or with other settings")
    return ", ".join(parts)


def _note_unrecorded(paths: list[Path], quiet: bool = False) -> None:
    for path in [] if quiet else paths:
        print(
            f"nightflow enhance: note: kept {path}: it has no nightflow record (another tool or an older "
            "nightflow made it), so it cannot be checked; --overwrite redoes it",
            file=sys.stderr,
        )


@dataclass
class Outcome:
    """What happened to one input, for --json: written, kept (already done), refused or failed."""

    input: Path
    outputs: list[Path]
    model: str = ""
    status: str = "failed"
    written: list[Path] = field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "input": str(self.input),
            "model": self.model,
            "status": self.status,
            "outputs": [str(p) for p in self.outputs],
            "written": [str(p) for p in self.written],
            "error": self.error,
        }


def json_summary(models: dict[str, Any], outcomes: list[Outcome]) -> str:
    """The --json document: the model (or "auto" when inputs got different ones: each entry names its own),
    then one entry per input, then counts."""
    counts = {k: sum(o.status == k for o in outcomes) for k in ("written", "kept", "refused", "failed")}
    first = next(iter(models.values()))
    doc = {
        "command": "enhance",
        "ok": counts["refused"] + counts["failed"] == 0,
        "model": (first.info.get("name") or first.info.get("path")) if len(models) == 1 else "auto",
        "scale": int(first.scale),
        "images": [o.as_dict() for o in outcomes],
        "files_written": sum(len(o.written) for o in outcomes),
        **counts,
    }
    return json.dumps(doc, indent=2)


def auto_pair(scale: int) -> tuple[str, str]:
    """The zoo names that --model's absence chooses between at ``scale``: (for lossless files, for JPEG files)."""
    return f"lolisrflow-x{scale}", f"lolisrflow-x{scale}-jpeg"


def auto_model(path: Path, scale: int) -> str:
    """The model for ``path`` when --model is not given: the bundled ×``scale`` LoLiSRFlow, or its JPEG variant
    for a JPEG file (trained on JPEG-compressed dark inputs, it restores them better at every quality measured:
    benchmarks/suites/jpeg-quality-x2.yaml)."""
    from ..data.io import is_jpeg

    lossless, jpeg = auto_pair(scale)
    return jpeg if is_jpeg(path) else lossless


def choose_models(inputs: list[Source], args: argparse.Namespace) -> dict[Path, str]:
    """Input path → the zoo name or checkpoint that restores it: --model for all, else :func:`auto_model`."""
    if args.model is not None:
        return {s.path: str(args.model) for s in inputs}
    scale = args.scale or DEFAULT_SCALE
    return {s.path: auto_model(s.path, scale) for s in inputs}


def _note_model_choice(choice: dict[Path, str], args: argparse.Namespace) -> None:
    """Say which inputs got the JPEG variant: a choice made from the file's kind is never a silent one."""
    if args.model is not None:
        return
    jpeg = [p for p, name in choice.items() if name.endswith("-jpeg")]
    others = [name for name in choice.values() if not name.endswith("-jpeg")]
    if not jpeg:
        return
    what = f"{jpeg[0].name} is a JPEG" if len(jpeg) == 1 else f"{len(jpeg)} inputs are JPEGs"
    rest = f", the {len(others)} other(s) {others[0]}" if others else ""
    print(
        f"nightflow enhance: note: {what}: restored with {choice[jpeg[0]]}, trained on JPEG-compressed dark "
        f"photos{rest}; --model NAME uses one model for every input",
        file=sys.stderr,
    )


def run(args: argparse.Namespace) -> int:
    """Check settings and output folders, load the model, then enhance each image; per-image faults are
    reported in one line each and the batch goes on (exit 2 at the end if any image failed or was refused)."""
    import warnings

    from tqdm.auto import tqdm

    import nightflow

    from ..data.io import ImageReadError, check_writable_folder, file_sha256
    from ..errors import StaleOutputError, UserError
    from ..pipeline import check_tile

    quiet, as_json = bool(getattr(args, "quiet", False)), bool(getattr(args, "json", False))
    check_settings(args)
    target = output_target(args.out)
    inputs = expand_inputs(args.inputs, args.recursive, target.folder, quiet)
    if target.file is not None:
        plan_jobs(inputs, None, 1, args, target.file)  # one input, not itself: refused before loading
        folders = [target.file.parent]
    else:
        folders = list(dict.fromkeys(output_folder(s, target.folder) for s in inputs))
    for folder in folders:
        check_writable_folder(folder)  # before any model work: an unwritable -o fails in seconds, not hours
    choice = choose_models(inputs, args)
    models = {}
    for name in dict.fromkeys(choice.values()):
        if getattr(args, "backend", "torch") == "onnx":
            from ..onnx_backend import load_onnx

            models[name] = load_onnx(name, device=args.device)
        else:
            models[name] = nightflow.load(name, device=args.device)
        if args.scale is not None and models[name].scale != args.scale:
            raise UserError(
                f"model '{name}' upscales x{models[name].scale} but --scale {args.scale} was asked; "
                f"pick a x{args.scale} model or drop --scale"
            )
        check_tile(args.tile, models[name].restorer, "--tile")
    if not quiet:
        _note_model_choice(choice, args)
    scale = next(iter(models.values())).scale  # one model, or the bundled pair of one scale
    jobs = plan_jobs(inputs, target.folder, scale, args, target.file)
    settings = {name: job_settings(m, args, _weights_hash(m)) for name, m in models.items()}
    failures: list[str] = []
    outcomes: list[Outcome] = []
    written = done = kept = refused = 0

    def fail(job: Job, exc: UserError) -> None:
        if len(jobs) == 1 and not as_json:
            raise exc
        failures.append(str(exc) if str(job.src) in str(exc) else f"{job.src}: {exc}")
        outcomes[-1].error = failures[-1]
        if len(jobs) > 1:
            tqdm.write(f"nightflow enhance: error: {failures[-1]}", file=sys.stderr)  # a line of its own

    with warnings.catch_warnings():
        warnings.simplefilter("ignore" if quiet else "once")
        warnings.showwarning = _show_warning
        bar = tqdm(jobs, desc="enhance", unit="img", disable=len(jobs) < 2 or quiet)
        for job in bar:
            model = models[choice[job.src]]
            outcome = Outcome(job.src, job.outputs(), model=settings[choice[job.src]].model)
            outcomes.append(outcome)
            try:
                try:
                    digest = file_sha256(job.src)
                except OSError as exc:
                    raise ImageReadError(f"cannot read image {job.src}: {exc.strerror or exc}") from None
                records = output_records(job, settings[choice[job.src]], digest)
                status = job_status(job, records, args.overwrite)
                if status.refused is not None:
                    refused += 1
                    outcome.status = "refused"
                    raise StaleOutputError(status.refused)
                _note_unrecorded(status.unrecorded, quiet)
                kept += not status.todo
                outcome.status = "kept"
                if status.todo:
                    outcome.status = "failed"
                    outcome.written = run_one(job, model, args, status, records)
                    outcome.status = "written"
                    written += len(outcome.written)
                    done += 1
            except UserError as exc:  # unreadable image, full disk, stale output...: report, go on
                fail(job, exc)
    line = _summary(written, done, kept, refused)
    if as_json:
        print(json_summary(models, outcomes))
        if not quiet:
            print(line, file=sys.stderr)
    elif not quiet:
        print(line)
    if failures:
        if len(jobs) == 1:
            raise UserError(failures[0])
        raise UserError(f"{len(failures)} of {len(jobs)} images failed (see above)")
    return 0
