"""The evaluation loop shared by ``nightflow eval`` and ``nightflow benchmark``: restore, time, score.

Why one loop: every number in a table must come from the same steps: one image at a time (sizes differ),
the mean path (temperature 0) unless a temperature is stated, per-image noise drawn from (seed, index)
(:func:`nightflow.seeding.derive`) so a sampled score does not depend on order, restorers used only through their
contract (oracles get the target, whole-image methods are never tiled), restore time measured apart from metric time (after one untimed
warm-up, synchronised on GPUs), and GT-mean rescaled scores only on request and in their own ``*_gtmean``
columns.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import UserError
from .spec import ResolvedModel

OnOutput = Callable[[int, dict[str, Any], torch.Tensor], None]
WARMUP_SIDE = 32  # LR side of the untimed warm-up crop


@dataclass
class EvalOptions:
    """How to score: metric names (``nightflow.metrics.METRICS`` keys) and the conventions that go with them."""

    metrics: list[str] = field(default_factory=lambda: ["psnr", "ssim"])
    temperature: float = 0.0  # 0 = the mean path; > 0 = one sample per image, noise seeded by (seed, index)
    gt_mean: bool = False  # add *_gtmean columns (never replaces the raw ones)
    gt_mean_variant: str = "bt601"
    crop_border: int = 0
    seed: int = 0
    tile: int | None = None  # None = tile only when memory needs it, 0 = never, > 0 = tile side (LR pixels)
    limit: int | None = None  # score only the first N images
    exposure: float = 0.0  # EV relative to the model's own exposure estimate (models with exposure control)
    ensemble: int = 1  # self-ensemble of the mean path (nightflow.ensemble: 1, 2, 4 or 8; temperature 0 only)

    def __post_init__(self) -> None:
        from ..metrics import METRICS

        self.metrics = [m.strip().lower() for m in self.metrics if m.strip()]
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown or not self.metrics:
            bad = f"unknown metric '{unknown[0]}'" if unknown else "no metric named"
            raise UserError(f"{bad}; choose from {', '.join(METRICS)}")
        if self.temperature < 0 or not math.isfinite(self.temperature):
            raise UserError(f"temperature must be a number >= 0, got {self.temperature}")
        if self.crop_border < 0:
            raise UserError(f"crop border must be >= 0, got {self.crop_border}")
        if not math.isfinite(self.exposure) or abs(self.exposure) > 8:
            raise UserError(f"exposure must be a finite EV within ±8, got {self.exposure}")
        from ..ensemble import check

        try:
            check(self.ensemble, self.temperature)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        if self.limit is not None and self.limit < 1:
            raise UserError(f"limit must be >= 1, got {self.limit}")

    @property
    def full_reference(self) -> list[str]:
        from ..metrics import METRICS

        return [m for m in self.metrics if METRICS[m].full_reference]


@dataclass
class EvalResult:
    """Per-image rows and their means; ``to_dict`` is the JSON that ``nightflow eval --json`` writes."""

    model: dict[str, Any]
    data: dict[str, Any]
    options: dict[str, Any]
    device: str
    columns: list[str]
    images: list[dict[str, Any]]
    mean: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def image_seed(seed: int, index: int) -> int:
    """Seed of image ``index``'s noise: depends on (seed, index) only, never on the order of evaluation
    (:func:`nightflow.seeding.derive`, the one seed rule of the API, CLI, evaluation and validation)."""
    from ..seeding import derive

    return derive(seed, index)


def device_description(device: torch.device) -> str:
    """'cpu (2 threads)' or 'cuda:0 (NVIDIA H100 …)': the hardware behind a seconds-per-image figure."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return f"{device.type} ({torch.get_num_threads()} threads)"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def restore_item(
    restorer: torch.nn.Module,
    lq: torch.Tensor,
    opts: EvalOptions,
    index: int,
    hq: torch.Tensor | None = None,
    *,
    context: Any = None,
    name: str = "this model",
) -> torch.Tensor:
    """One restoration as every score sees it, through the contract only: the mean path (or at
    ``opts.temperature`` one sample with noise seeded by (seed, ``index``)), tiled as ``opts.tile`` says
    (restorers that are not tileable run whole), the target handed to oracles (``needs_target``)."""
    from .. import inference
    from ..seeding import generator

    if restorer.needs_target and hq is None:
        raise UserError(f"{name} is an oracle: it reads the ground truth, so it needs data with targets")
    noise = None
    if opts.temperature > 0 and restorer.stochastic:
        s = int(restorer.scale)
        shape = (lq.shape[0], 3, lq.shape[-2] * s, lq.shape[-1] * s)
        noise = inference.draw_noise(shape, generator(opts.seed, index)).to(lq.device)
    return inference.restore(
        restorer,
        lq,
        opts.temperature,
        noise=noise,
        tile=opts.tile,
        exposure=opts.exposure,
        context=context,
        target=hq if restorer.needs_target else None,
        ensemble=opts.ensemble,
    )


def _restore(
    model: ResolvedModel, lq: torch.Tensor, opts: EvalOptions, index: int, hq: torch.Tensor | None = None
) -> torch.Tensor:
    return restore_item(model.restorer, lq, opts, index, hq, name=model.spec)


def score_item(
    out: torch.Tensor, hq: torch.Tensor | None, opts: EvalOptions, scale: int, name: str = "image"
):
    """The scores of one restored image (``opts.metrics`` and their conventions): what ``nightflow eval``,
    ``nightflow benchmark`` and validation during training all report."""
    from ..metrics import compute_metrics

    if hq is not None and out.shape[-2:] != hq.shape[-2:]:
        raise UserError(
            f"{name}: the model's output is {out.shape[-1]}×{out.shape[-2]} but the target is "
            f"{hq.shape[-1]}×{hq.shape[-2]}; the data's scale does not match the model's ×{scale}"
        )
    return compute_metrics(
        out,
        hq,
        opts.metrics,
        crop_border=opts.crop_border,
        gt_mean=opts.gt_mean,
        gt_mean_variant=opts.gt_mean_variant,
        scale=scale,
    )


def _warm_up(
    model: ResolvedModel, lq: torch.Tensor, opts: EvalOptions, device: torch.device, hq: torch.Tensor | None
) -> None:
    crop = lq[..., :WARMUP_SIDE, :WARMUP_SIDE]
    s = model.scale
    target = None if hq is None else hq[..., : WARMUP_SIDE * s, : WARMUP_SIDE * s]
    with torch.inference_mode():
        _restore(model, crop, EvalOptions(metrics=opts.metrics, tile=0, exposure=opts.exposure), 0, target)
    _sync(device)


def _columns(opts: EvalOptions) -> list[str]:
    from ..metrics import METRICS

    cols = list(opts.metrics)
    if opts.gt_mean:
        cols += [f"{m}_gtmean" for m in opts.metrics if METRICS[m].full_reference and METRICS[m].gt_mean]
    return cols


def _means(rows: Sequence[dict[str, Any]], columns: list[str]) -> dict[str, float]:
    return {c: float(np.mean([r[c] for r in rows])) for c in columns} if rows else {}


def _score_all(
    model: ResolvedModel,
    dataset: Any,
    first: dict[str, Any],
    options: EvalOptions,
    columns: list[str],
    device: torch.device,
    bar: Any,
    on_output: OnOutput | None,
) -> list[dict[str, Any]]:
    """Restore and score every index of ``bar``; one row per image."""
    rows: list[dict[str, Any]] = []
    for i in bar:
        item = first if i == 0 else dataset[i]
        lq = item["lq"].unsqueeze(0).to(device)
        hq = item["hq"].unsqueeze(0).to(device) if "hq" in item else None
        if i == 0:
            _warm_up(model, lq, options, device, hq)
        _sync(device)
        start = time.perf_counter()
        with torch.inference_mode():
            out = _restore(model, lq, options, i, hq)
        _sync(device)
        seconds = time.perf_counter() - start
        name = str(item.get("name", i))
        scores = score_item(out, hq, options, model.scale, name)
        rows.append({"index": i, "name": name, **{c: scores[c] for c in columns}, "seconds": seconds})
        if on_output is not None:
            on_output(i, item, out)
        first_metric = options.metrics[0]
        bar.set_postfix({first_metric: f"{np.mean([r[first_metric] for r in rows]):.4g}"})
    return rows


def evaluate(
    model: ResolvedModel,
    dataset: Any,
    options: EvalOptions,
    *,
    data_info: dict[str, Any] | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    desc: str = "eval",
    on_output: OnOutput | None = None,
) -> EvalResult:
    """Score ``model`` on every item (``{"lq", "hq"?, "name"}``) of ``dataset``; per-image rows and means.

    ``on_output(index, item, output)`` sees every restored image (1×3×sH×sW, on ``device``), e.g. to save it.
    """
    device = torch.device(device)
    count = len(dataset) if options.limit is None else min(len(dataset), options.limit)
    if count == 0:
        raise UserError("the dataset is empty: no images to evaluate; check --data and --format")
    columns = _columns(options)
    first = dataset[0]
    if options.full_reference and "hq" not in first:
        raise UserError(
            f"metric '{options.full_reference[0]}' needs ground truth but the data has none; use --metrics niqe"
        )
    bar = tqdm(range(count), desc=desc, unit="img", disable=not progress, dynamic_ncols=True)
    try:
        rows = _score_all(model, dataset, first, options, columns, device, bar, on_output)
    finally:
        bar.close()
    mean = _means(rows, columns)
    mean["seconds_per_image"] = float(np.mean([r["seconds"] for r in rows]))
    opts = asdict(options)
    opts["tile"] = "auto" if options.tile is None else options.tile
    return EvalResult(
        model=model.describe(),
        data={**(data_info or {}), "images": count},
        options=opts,
        device=device_description(device),
        columns=columns,
        images=rows,
        mean=mean,
    )
