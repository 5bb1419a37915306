"""Inference engine: padding, overlapping tiles with raised-cosine blending, sampling and uncertainty maps.

Why tiles: a conditional flow builds full-resolution feature maps, so a 4096×4096 output would need gigabytes.
Cutting the low-quality input into overlapping tiles bounds peak memory by the tile size; blending the tiles with
raised-cosine weights (a partition of unity) hides the seams a deep net's large receptive field would leave. The
outer quarter of every overlap is not used at all: within 3-4 LR pixels of its border a tile of the tiny
LoLiSRFlow configs differs from the whole-image result by up to ~25/255, and a plain ramp lets that through.

Limit (measured when this module was written): encoders with *global*
operations (histogram equalisation of the whole input, channel attention whose C×C map sums over all pixels)
see different statistics in a tile than in the whole image, and no blending can undo that. With random-init
weights the tiny LoLiSRFlow x2 output does not yet depend on them (tiled == untiled to 0/255 past the margin);
with its zero-initialised layers set to N(0, 0.02), a 96×128 input in 64-px tiles with 32-px overlap differed
by 0.35/255 mean, 27/255 max (8.7/255 max with the equalisation made local). Tiles as large as memory allows
keep it small; "auto" only tiles when the whole image does not fit.

Why one global noise tensor: a sample is ``restore(lq, temperature, noise)`` with standard normal noise in image
layout; cropping a single noise image at every tile position gives every tile the same latent values where tiles
overlap, so samples are as seamless as the mean path. Tile origins sit on the model's ``tiling.grid`` so the
flow's squeeze blocks line up across tiles.

Works with any restorer honouring the contract of :mod:`nightflow.models.base` and reads only its names:
``scale``, ``tiling`` (``tileable``, ``grid``, ``margin``), ``stochastic``, ``context(lq, exposure)`` and
``restore(lq, temperature=, noise=, context=, target=) -> N×3×(s·H)×(s·W)``. A restorer that is not tileable
(classical baselines: global statistics) always runs in one piece; asking it for tiles is a one-line error.
"""

from __future__ import annotations

import math
import os
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import ensemble
from .context import ImageContext
from .errors import ConfigError, SettingError, UserError
from .memory import (
    ASSUMED,
    ASSUMED_BYTES_PER_OUTPUT_PIXEL,
    MemoryModel,
    peak_rss_bytes,
    reset_peak_rss,
    rss_bytes,
    trim_heap,
)
from .models.base import temperature_for
from .precision import RESOLVED, autocast

# Bytes per output pixel assumed before anything is measured (nightflow.memory); small images that fit at this
# rate run whole without a probe, larger ones get a tile size from the memory the model is measured to use.
BYTES_PER_OUTPUT_PIXEL = ASSUMED_BYTES_PER_OUTPUT_PIXEL
# Fraction of the currently available memory that "auto" tiling allows itself (the CPU is shared with others).
MEMORY_FRACTION_CPU = 0.25
MEMORY_FRACTION_CUDA = 0.6
# Outputs at most this large that fit at the assumed rate skip the probe (it costs two small tiles).
PROBE_ABOVE_PIXELS = 1_000_000
# Output side (px) of the warm-up tile; the measured one is twice as wide (probes need not be valid blend tiles).
PROBE_OUTPUT_SIDE = 192
# Head-room on the measured per-pixel cost (allocator fragmentation, noise tensors of samples).
MEASURED_SAFETY = 1.25
# Smallest and largest tile side (LR pixels) that "auto" picks.
MIN_AUTO_TILE = 64
MAX_AUTO_TILE = 2048


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Map ``auto`` to CUDA when present (else CPU); refuse an unavailable CUDA with a one-line fix."""
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise UserError(f"unknown device '{device}'; use auto, cpu or cuda") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device '{device}' asked for but no CUDA GPU is available; use --device cpu or auto")
    return dev


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (CPU for a module with neither)."""
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


@dataclass(frozen=True)
class TilePlan:
    """Where the tiles of one padded LR image start, in LR pixels; all tiles have the same size."""

    height: int  # padded LR height (a multiple of the model's pad multiple)
    width: int
    tile_h: int
    tile_w: int
    ys: tuple[int, ...]
    xs: tuple[int, ...]

    @property
    def count(self) -> int:
        return len(self.ys) * len(self.xs)

    def origins(self) -> list[tuple[int, int]]:
        return [(y, x) for y in self.ys for x in self.xs]


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _spread(length: int, size: int, count: int, multiple: int) -> tuple[int, ...]:
    """``count`` starts from 0 to ``length - size``, evenly spread and rounded to the ``multiple`` grid."""
    if count <= 1:
        return (0,)
    span = length - size
    return tuple(sorted({round(span * i / (count - 1) / multiple) * multiple for i in range(count)}))


def _axis_tiles(
    length: int, tile: int, overlap: int, multiple: int, least: int = 1
) -> tuple[int, tuple[int, ...]]:
    """(tile size, starts) along one axis: the fewest tiles of at most ``tile`` px that overlap by at least
    ``overlap``, then shrunk to the smallest common size that still does, so no work is wasted on overlap
    beyond what was asked (a 500-px side with 256-px tiles becomes 3 tiles of 188, not 3 of 256)."""
    if tile >= length:
        return length, (0,)
    count = math.ceil((length - overlap) / (tile - overlap))
    size = min(tile, _round_up(math.ceil((length + (count - 1) * overlap) / count), multiple))
    size = max(size, min(tile, _round_up(least, multiple)))  # never below the model's smallest tile
    while True:
        starts = _spread(length, size, count, multiple)
        tightest = min(a + size - b for a, b in zip(starts, starts[1:]))
        if tightest >= overlap or size >= tile:
            return size, starts
        size += multiple  # rounding to the grid ate into the overlap


def plan_tiles(
    height: int, width: int, tile: int, overlap: int, multiple: int = 1, least: int = 1
) -> TilePlan:
    """Tile plan for a padded LR image of ``height``×``width`` (both multiples of ``multiple``).

    ``tile`` is the largest tile side allowed (it bounds memory); it and the starts are rounded to the
    ``multiple`` grid; no tile is shrunk below ``least`` (the model's ``tiling.min_tile``). ``tile <= 0`` means
    one piece.
    """
    if height % multiple or width % multiple:
        raise ValueError(f"padded size {height}x{width} is not a multiple of {multiple}")
    if tile <= 0:
        return TilePlan(height, width, height, width, (0,), (0,))
    tile = max(multiple, (tile // multiple) * multiple)
    overlap = max(0, min(overlap, tile - multiple))
    th, ys = _axis_tiles(height, tile, overlap, multiple, least)
    tw, xs = _axis_tiles(width, tile, overlap, multiple, least)
    return TilePlan(height, width, th, tw, ys, xs)


def _ramp(length: int, rising: bool, margin: int = 0) -> torch.Tensor:
    """Raised-cosine ramp over ``length`` pixels: 0 for the first ``margin``, sin² rising over the middle, 1 for
    the last ``margin``. A rising and a falling ramp over the same span sum to exactly 1, and neither tile's
    outermost ``margin`` pixels (where padding artefacts live) contribute at all.
    """
    margin = min(margin, (length - 1) // 2)
    mid = length - 2 * margin
    k = torch.arange(mid, dtype=torch.float64)
    ramp = torch.sin(0.5 * math.pi * (k + 0.5) / mid) ** 2
    r = torch.cat([torch.zeros(margin, dtype=torch.float64), ramp, torch.ones(margin, dtype=torch.float64)])
    return r if rising else r.flip(0)


def axis_weights(
    starts: Sequence[int], tile: int, length: int, scale: int, margin: int = 0
) -> list[torch.Tensor]:
    """Per-tile 1-D blending weights at output resolution, normalised so they sum to 1 at every position.

    Each tile ramps up over its overlap with the previous tile and down over its overlap with the next; image
    borders get no ramp. The outer ``margin`` LR pixels of every overlap (at most half of it) are given entirely
    to the neighbour whose interior they are: a tile's own border pixels are the least accurate (their receptive
    field reached past the tile). Normalising by the summed weights keeps the partition of unity exact even when
    rounding to the pad grid makes neighbouring overlaps differ.
    """
    size = tile * scale
    raw = []
    for i, start in enumerate(starts):
        w = torch.ones(size, dtype=torch.float64)
        if i > 0:
            lead = (starts[i - 1] + tile - start) * scale
            if lead > 0:
                w[:lead] *= _ramp(lead, rising=True, margin=margin * scale)
        if i + 1 < len(starts):
            trail = (start + tile - starts[i + 1]) * scale
            if trail > 0:
                w[size - trail :] *= _ramp(trail, rising=False, margin=margin * scale)
        raw.append(w)
    total = torch.zeros(length * scale, dtype=torch.float64)
    for start, w in zip(starts, raw):
        total[start * scale : start * scale + size] += w
    if margin > 0 and bool((total <= 1e-9).any()):  # crowded tiles zeroed a position out: plain ramps
        return axis_weights(starts, tile, length, scale, margin=0)
    return [(w / total[s * scale : s * scale + size]).float() for s, w in zip(starts, raw)]


# How far (LR pixels) a tile edge disturbs the output, measured for the bundled tiny LoLiSRFlow ×2 and ×4 by
# `scripts/measure_tiling.py` (a 64 px crop restored with the whole image's context against the whole image):
# the error falls to 2.8-3.1/255 at 8 px from the crop's edge, 0.6/255 at 12 px and 0.07-0.15/255 at 16 px.
# The encoders state it as their ``tile_margin`` (``restorer.tiling.margin``); this is the default of those.
TILE_MARGIN = 12


def default_overlap(tile: int, multiple: int = 1, margin: int = TILE_MARGIN) -> int:
    """Overlap (LR pixels) used when none is given: room for the discarded ``margin`` of both tiles plus an
    8 px blending ramp, an eighth of large tiles, at least one pad block."""
    return max(2 * margin + 8, multiple, tile // 8)


def tile_for(restorer: torch.nn.Module, tile: int | None) -> int | None:
    """``tile`` for ``restorer``: a restorer that is not tileable runs in one piece (auto → 0) and refuses
    an explicit tile side with a one-line ``SettingError``."""
    if restorer.tiling.tileable or not tile:
        return tile if restorer.tiling.tileable else 0
    raise SettingError(
        f"{type(restorer).__name__} works on the whole image (global statistics) and cannot be tiled; "
        "leave the tile size at auto or 0"
    )


def plan_for(
    restorer: torch.nn.Module,
    height: int,
    width: int,
    tile: int | None,
    overlap: int | None = None,
    batch: int = 1,
    device: torch.device | None = None,
    max_memory: int | None = None,
    precision: str = "fp32",
) -> TilePlan:
    """The tile plan ``restore`` uses for an unpadded LR image of ``height``×``width`` (for progress lines).

    ``tile`` None: the largest tile whose *measured* working memory (:func:`measure_memory`, once per model,
    device, batch and precision) fits ``max_memory`` bytes (default: a share of the available memory) beside
    the image buffers; small images that fit at the assumed rate run whole without measuring."""
    scale, multiple = int(restorer.scale), int(restorer.tiling.grid)
    hp, wp = _round_up(height, multiple), _round_up(width, multiple)
    tile = tile_for(restorer, tile)
    if tile is None:
        device = device or module_device(restorer)
        budget = memory_budget(device, max_memory) - image_buffers(batch, hp, wp, scale)
        memory = ASSUMED
        out_pixels = hp * wp * scale * scale
        if out_pixels > PROBE_ABOVE_PIXELS or ASSUMED.need(out_pixels * batch) > budget:
            memory = measure_memory(restorer, device, batch, precision)
        tile = auto_tile(scale, hp, wp, batch, device, multiple, memory=memory, budget=budget)
        if tile:  # never below the smallest tile that blends correctly, even when memory is that short
            tile = max(tile, int(restorer.tiling.min_tile))
    elif 0 < tile < restorer.tiling.min_tile:
        raise SettingError(
            f"tile {tile} is too small: this model needs tiles of at least {restorer.tiling.min_tile} px "
            "(or 0 = never tile, None = by memory)"
        )
    if overlap is None:
        overlap = default_overlap(tile, multiple, int(restorer.tiling.margin))
    return plan_tiles(hp, wp, tile, overlap, multiple, int(restorer.tiling.min_tile))


def available_memory(device: torch.device) -> int:
    """Bytes the process may still use on ``device`` (CUDA: free memory; CPU: MemAvailable)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 4 << 30


def memory_budget(device: torch.device, max_memory: int | None = None) -> float:
    """Bytes inference may use: ``max_memory`` when given, else a share of what ``device`` has available."""
    if max_memory is not None:
        if max_memory <= 0:
            raise SettingError(f"max_memory must be a positive number of bytes, got {max_memory}")
        return float(max_memory)
    fraction = MEMORY_FRACTION_CUDA if device.type == "cuda" else MEMORY_FRACTION_CPU
    return available_memory(device) * fraction


def image_buffers(batch: int, height: int, width: int, scale: int) -> int:
    """Bytes of the buffers that live through the whole restore whatever the tiles: the padded float32 input
    and the float32 output (plus its 8/16-bit copy when written out, at most as large again)."""
    return batch * 3 * 4 * (height * width + 2 * height * width * scale * scale)


def auto_tile(
    scale: int,
    height: int,
    width: int,
    batch: int,
    device: torch.device,
    multiple: int = 1,
    *,
    memory: MemoryModel = ASSUMED,
    budget: float | None = None,
) -> int:
    """Tile side in LR pixels whose working memory (``memory``) fits ``budget`` bytes (default: a share of
    the available memory), or 0 when the whole image fits in one piece."""
    if budget is None:
        budget = memory_budget(device)
    batch = max(1, batch)
    if memory.need(height * width * scale * scale * batch) <= budget:
        return 0
    out_pixels = max(0.0, budget) / (memory.per_pixel * batch)
    side = int(math.sqrt(out_pixels) / scale)
    side = min(MAX_AUTO_TILE, max(MIN_AUTO_TILE, side))
    return max(multiple, side // multiple * multiple)


# measured memory models, per restorer (weakly held) and (device type, batch, precision)
_MEASURED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def measure_memory(
    restorer: torch.nn.Module, device: torch.device, batch: int = 1, precision: str = "fp32"
) -> MemoryModel:
    """The working memory of ``restorer`` per output pixel on ``device``: the peak growth of restoring one probe
    tile of ``2·PROBE_OUTPUT_SIDE`` output px (after a warm-up tile half as wide), divided by its output pixels,
    ×``MEASURED_SAFETY`` (:class:`~nightflow.memory.MemoryModel`). Cached per model, device type, batch and precision. Where the peak cannot be measured (no
    /proc, no clear_refs) the assumed rate is returned, labelled ``assumed``."""
    key = (device.type, int(batch), precision)
    cached = _MEASURED.setdefault(restorer, {})
    if key not in cached:
        grid, scale = int(restorer.tiling.grid), int(restorer.scale)
        side = _round_up(max(PROBE_OUTPUT_SIDE // scale, int(restorer.sizes.min_size)), grid)
        # warm-up first: one-time allocations and allocator thresholds would otherwise count as the tile's
        _probe(restorer, side, batch, device, precision)
        grown = _probe(restorer, 2 * side, batch, device, precision)
        if grown is None:
            cached[key] = ASSUMED
        else:
            source = "measured (CUDA peak)" if device.type == "cuda" else "measured (peak RSS)"
            pixels = batch * (2 * side * scale) ** 2
            cached[key] = MemoryModel(max(grown, 1) / pixels * MEASURED_SAFETY, source)
    return cached[key]


def _probe(
    restorer: torch.nn.Module, side: int, batch: int, device: torch.device, precision: str
) -> int | None:
    """Peak memory growth (bytes) of restoring one batch of ``side``² LR tiles; None where unmeasurable."""
    g = torch.Generator().manual_seed(0)
    lq = (torch.rand(batch, 3, side, side, generator=g) * 0.25).to(device)
    with _EvalMode(restorer), autocast(precision, device):
        context = image_context(restorer, lq)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            restorer.restore(lq, context=context)
            torch.cuda.synchronize(device)
            return int(torch.cuda.max_memory_allocated(device) - base)
        trim_heap()
        base = rss_bytes()
        if base is None or not reset_peak_rss():
            return None
        restorer.restore(lq, context=context)
        peak = peak_rss_bytes()
    return None if peak is None else max(0, peak - base)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad the bottom/right of N×3×H×W to multiples of ``multiple`` by replicating edge pixels.

    The restorers' own rule (:func:`nightflow.models.sizes.pad_to_multiple`), so one-piece inference equals
    ``restorer.restore`` exactly.
    """
    from .models.sizes import pad_to_multiple as pad

    return pad(x, multiple)[0]


def _check_lq(lq: torch.Tensor) -> None:
    if lq.ndim != 4 or lq.shape[1] != 3:
        raise ValueError(f"expected an N×3×H×W tensor, got shape {tuple(lq.shape)}")
    if lq.shape[-1] < 1 or lq.shape[-2] < 1:
        raise ValueError(f"empty image of shape {tuple(lq.shape)}")


class _EvalMode:
    """Run a module in eval mode without grad, restoring its training flag afterwards."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module
        self.was_training = module.training
        self.no_grad = torch.inference_mode()

    def __enter__(self) -> None:
        self.module.eval()
        self.no_grad.__enter__()

    def __exit__(self, *exc: object) -> None:
        self.no_grad.__exit__(*exc)
        self.module.train(self.was_training)


def restore(
    restorer: torch.nn.Module,
    lq: torch.Tensor,
    temperature: float = 0.0,
    *,
    noise: torch.Tensor | None = None,
    tile: int | None = None,
    overlap: int | None = None,
    tile_batch: int = 1,
    progress: bool = False,
    exposure: float = 0.0,
    context: ImageContext | None = None,
    target: torch.Tensor | None = None,
    precision: str = "fp32",
    max_memory: int | None = None,
    ensemble: int = 1,
) -> torch.Tensor:
    """Restore ``lq`` (N×3×H×W in [0, 1]) to N×3×(s·H)×(s·W) in [0, 1], tiling when asked or when needed.

    ``tile``: None = pick by available memory, 0 = one piece, >0 = tile side in LR pixels. ``overlap`` is in LR
    pixels (default: :func:`default_overlap`). ``noise`` (N×3×sH×sW, standard normal) is scaled by
    ``temperature`` inside the restorer; without it a temperature > 0 is refused, because per-tile noise drawn by
    the restorer would not match across tiles. ``exposure`` (EV) shifts the model's exposure estimate. The
    whole image's global statistics (``context``, see :mod:`nightflow.context`) are computed once here unless
    given, and every tile uses them, so tiles agree with the whole-image result. ``target`` (N×3×sH×sW) is
    handed to restorers that read the ground truth (``needs_target``: oracles). ``precision`` ("fp32" or
    "bf16", resolved by :func:`nightflow.precision.resolve`) is the autocast of the context and tile passes; the
    blend is float32. ``max_memory`` (bytes) bounds what an automatic tile size may use (:func:`plan_for`).
    ``ensemble`` (1, 2, 4 or 8) averages the mean path over that many rotations and flips of the input, every
    second one moved by a pixel so that its block grid falls between the others' (:mod:`nightflow.ensemble`;
    each member computes the context of its turned input, so ``context`` must be None), at that many times the
    cost; it needs temperature 0 on a stochastic restorer.
    The result lives on ``lq``'s device; tiles run on the restorer's.
    """
    _check_lq(lq)
    if precision not in RESOLVED:
        raise ValueError(f"precision must be one of {RESOLVED} (resolve 'auto' first), got {precision!r}")
    if ensemble != 1:
        return _restore_ensemble(
            restorer,
            lq,
            temperature,
            ensemble,
            context,
            target,
            tile=tile,
            overlap=overlap,
            tile_batch=tile_batch,
            progress=progress,
            exposure=exposure,
            precision=precision,
            max_memory=max_memory,
        )
    scale = int(restorer.scale)
    multiple, margin = int(restorer.tiling.grid), int(restorer.tiling.margin)
    device = module_device(restorer)
    n, _, h, w = lq.shape
    stochastic = bool(restorer.stochastic) and temperature > 0
    if stochastic and noise is None:
        raise ValueError("temperature > 0 needs a noise tensor; use iter_samples()/sample() or pass noise")
    for name, extra in (("noise", noise), ("target", target)):
        if extra is not None and tuple(extra.shape) != (n, 3, h * scale, w * scale):
            raise ValueError(
                f"{name} must have shape {(n, 3, h * scale, w * scale)}, got {tuple(extra.shape)}"
            )

    padded = pad_to_multiple(lq, multiple)
    hp, wp = padded.shape[-2:]
    plan = plan_for(restorer, h, w, tile, overlap, n * tile_batch, device, max_memory, precision)
    pad_out = (0, (wp - w) * scale, 0, (hp - h) * scale)
    noise = (
        F.pad(noise, pad_out) if noise is not None and stochastic else None
    )  # zero noise = mean in the padding
    if target is not None and restorer.needs_target:
        target = F.pad(target, pad_out, mode="replicate") if any(pad_out) else target
    else:
        target = None

    if context is None:
        with _EvalMode(restorer), autocast(precision, device):
            context = image_context(restorer, lq.to(device), exposure)

    wy = axis_weights(plan.ys, plan.tile_h, hp, scale, margin=margin)
    wx = axis_weights(plan.xs, plan.tile_w, wp, scale, margin=margin)
    out = torch.zeros(n, 3, h * scale, w * scale, dtype=torch.float32, device=lq.device)
    th, tw = plan.tile_h, plan.tile_w
    jobs = [(iy, ix) for iy in range(len(plan.ys)) for ix in range(len(plan.xs))]
    bar = tqdm(total=len(jobs), desc="tiles", unit="tile", leave=False, disable=not progress or len(jobs) < 2)
    with _EvalMode(restorer):
        for b in range(0, len(jobs), max(1, tile_batch)):
            chunk = jobs[b : b + max(1, tile_batch)]
            lq_t = torch.cat(
                [
                    padded[:, :, plan.ys[iy] : plan.ys[iy] + th, plan.xs[ix] : plan.xs[ix] + tw]
                    for iy, ix in chunk
                ]
            )
            noise_t, target_t = (_out_tiles(t, plan, chunk, scale, device) for t in (noise, target))
            with autocast(precision, device):
                y_t = restorer.restore(
                    lq_t.to(device),
                    temperature=float(temperature),
                    noise=noise_t,
                    context=None if context is None else context.repeat(len(chunk)),
                    target=target_t,
                )
            y_t = y_t.to(out.device, torch.float32)
            for k, (iy, ix) in enumerate(chunk):
                _accumulate(
                    out, y_t[k * n : (k + 1) * n], plan.ys[iy] * scale, plan.xs[ix] * scale, wy[iy], wx[ix]
                )
            bar.update(len(chunk))
    bar.close()
    return out.clamp_(0.0, 1.0)


def _restore_ensemble(
    restorer: torch.nn.Module,
    lq: torch.Tensor,
    temperature: float,
    size: int,
    context: ImageContext | None,
    target: torch.Tensor | None,
    **common: object,
) -> torch.Tensor:
    """:func:`restore` averaged over ``size`` rotated, flipped and shifted copies of ``lq``
    (:func:`nightflow.ensemble.average`)."""
    ensemble.check(size, temperature if restorer.stochastic else 0.0)
    if context is not None:
        raise ValueError("the self-ensemble computes each orientation's own context; pass context=None")
    if common.get("max_memory") is not None:
        # the running sum is one more float32 output beside each member's: leave room for it in the bound
        n, _, h, w = lq.shape
        extra = n * 3 * 4 * h * w * int(restorer.scale) ** 2
        common["max_memory"] = max(1, int(common["max_memory"]) - extra)  # type: ignore[call-overload]
    device = module_device(restorer)
    precision = str(common.get("precision", "fp32"))
    exposure = float(common.get("exposure", 0.0))  # type: ignore[arg-type]
    bar = tqdm(total=size, desc="ensemble", unit="member", leave=False, disable=not common.get("progress"))

    def run(x: torch.Tensor, member_target: torch.Tensor | None, turned: torch.Tensor) -> torch.Tensor:
        # the statistics of the turned photo without the member's padding: members differ in geometry only
        with _EvalMode(restorer), autocast(precision, device):
            member_context = image_context(restorer, turned.to(device), exposure)
        y = restore(restorer, x, 0.0, target=member_target, context=member_context, **common)  # type: ignore[arg-type]
        bar.update(1)
        return y

    try:
        return ensemble.average(run, lq, size, target, int(restorer.scale)).clamp_(0.0, 1.0).contiguous()
    finally:
        bar.close()


def _out_tiles(
    full: torch.Tensor | None, plan: TilePlan, chunk: list[tuple[int, int]], scale: int, device: torch.device
) -> torch.Tensor | None:
    """The output-resolution crops of ``full`` (noise, target) at the tiles of ``chunk``, batched like them."""
    if full is None:
        return None
    th, tw = plan.tile_h * scale, plan.tile_w * scale
    crops = []
    for iy, ix in chunk:
        y0, x0 = plan.ys[iy] * scale, plan.xs[ix] * scale
        crops.append(full[:, :, y0 : y0 + th, x0 : x0 + tw])
    return torch.cat(crops).to(device)


def image_context(restorer: torch.nn.Module, lq: torch.Tensor, exposure: float = 0.0) -> ImageContext | None:
    """``restorer.context(lq, exposure)``: the whole-image context (None for models without global statistics,
    e.g. classical baselines); a non-zero ``exposure`` on a model without exposure control is a UserError."""
    try:
        return restorer.context(lq, exposure)
    except ConfigError as exc:
        raise UserError(str(exc)) from exc


def _accumulate(
    out: torch.Tensor, tile_out: torch.Tensor, y0: int, x0: int, wy: torch.Tensor, wx: torch.Tensor
) -> None:
    """Add ``tile_out`` weighted by wy⊗wx at (y0, x0), clipped to the unpadded output ``out``."""
    h, w = out.shape[-2:]
    y1, x1 = min(h, y0 + tile_out.shape[-2]), min(w, x0 + tile_out.shape[-1])
    if y1 <= y0 or x1 <= x0:
        return
    weight = wy[: y1 - y0, None].to(out.device) * wx[None, : x1 - x0].to(out.device)
    out[:, :, y0:y1, x0:x1].addcmul_(tile_out[:, :, : y1 - y0, : x1 - x0], weight)


def draw_noise(shape: Sequence[int], generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard normal noise on the generator's device (CPU by default), so a seed means the same on any GPU."""
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.randn(tuple(shape), generator=generator, device=device)


def iter_samples(
    restorer: torch.nn.Module,
    lq: torch.Tensor,
    n: int,
    temperature: float | None = None,
    *,
    generator: torch.Generator | None = None,
    tile: int | None = None,
    overlap: int | None = None,
    tile_batch: int = 1,
    progress: bool = False,
    exposure: float = 0.0,
    precision: str = "fp32",
    max_memory: int | None = None,
) -> Iterator[torch.Tensor]:
    """Yield ``n`` samples (each N×3×sH×sW) at ``temperature`` (None: the restorer's ``sample_temperature``)
    one at a time, so callers can write or reduce them as they come. The whole-image context is computed once
    for all samples."""
    if n < 1:
        raise ValueError(f"number of samples must be >= 1, got {n}")
    temperature = temperature_for(restorer, temperature)
    _check_lq(lq)
    scale = int(restorer.scale)
    shape = (lq.shape[0], 3, lq.shape[-2] * scale, lq.shape[-1] * scale)
    device = module_device(restorer)
    with _EvalMode(restorer), autocast(precision, device):
        context = image_context(restorer, lq.to(device), exposure)
    for _ in range(n):
        noise = (
            draw_noise(shape, generator).to(lq.device) if temperature > 0 and restorer.stochastic else None
        )
        yield restore(
            restorer,
            lq,
            temperature,
            noise=noise,
            tile=tile,
            overlap=overlap,
            tile_batch=tile_batch,
            progress=progress,
            context=context,
            precision=precision,
            max_memory=max_memory,
        )


def sample(
    restorer: torch.nn.Module,
    lq: torch.Tensor,
    n: int = 4,
    temperature: float | None = None,
    *,
    generator: torch.Generator | None = None,
    tile: int | None = None,
    overlap: int | None = None,
    exposure: float = 0.0,
    precision: str = "fp32",
) -> torch.Tensor:
    """``n`` samples stacked as n×N×3×sH×sW (tile-consistent: tiled and untiled samples agree)."""
    return torch.stack(
        list(
            iter_samples(
                restorer,
                lq,
                n,
                temperature,
                generator=generator,
                tile=tile,
                overlap=overlap,
                exposure=exposure,
                precision=precision,
            )
        )
    )


class SpreadAccumulator:
    """Running per-pixel mean and spread of samples (Welford), so the samples need not all be held at once.

    float32 is plenty for values in [0, 1] and halves the memory of two full-resolution buffers; identical
    samples give an exactly zero spread.
    """

    def __init__(self) -> None:
        self.count = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None

    def add(self, x: torch.Tensor) -> None:
        x = x.to(torch.float32)
        self.count += 1
        if self.mean is None or self.m2 is None:
            self.mean = x.clone()
            self.m2 = torch.zeros_like(x)
            return
        delta = x - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (x - self.mean)

    def spread(self) -> torch.Tensor:
        """Per-pixel sample standard deviation averaged over channels: N×3×H×W samples → N×H×W."""
        if self.m2 is None or self.count < 2:
            raise ValueError("the spread needs at least 2 samples")
        std = (self.m2 / (self.count - 1)).clamp_min(0).sqrt()
        return std.mean(dim=1).float()


def uncertainty(
    restorer: torch.nn.Module,
    lq: torch.Tensor,
    n: int = 8,
    temperature: float | None = None,
    *,
    generator: torch.Generator | None = None,
    tile: int | None = None,
    overlap: int | None = None,
    exposure: float = 0.0,
    precision: str = "fp32",
) -> torch.Tensor:
    """Per-pixel spread across ``n`` samples (std over samples, mean over channels) as N×sH×sW."""
    if n < 2:
        raise ValueError(f"uncertainty needs n >= 2 samples, got {n}")
    acc = SpreadAccumulator()
    samples = iter_samples(
        restorer,
        lq,
        n,
        temperature,
        generator=generator,
        tile=tile,
        overlap=overlap,
        exposure=exposure,
        precision=precision,
    )
    for y in samples:
        acc.add(y)
    return acc.spread()
