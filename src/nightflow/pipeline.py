"""One image → image pipeline for every front end: read → convert → restore / sample / spread → convert → write.

Why one: the CLI (`nightflow enhance`), the Python API (:class:`nightflow.api.Model`) and the web UI (which runs
the CLI's jobs) used to each turn images into tensors, seeds into noise and sample streams into spreads their own
way; now they all call this module, so the same image, model and settings give the same pixels everywhere:

- **convert**: :func:`nightflow.data.io.image_to_tensor` / :func:`~nightflow.data.io.tensor_to_image`, one
  policy (uint8/uint16/float [0, 1] in → the same kind out, grey stays grey, EXIF applied, NaN/inf refused);
- **seeds**: :func:`nightflow.seeding.generator` (``seed`` means the same noise in the CLI, API and UI);
- **restore / sample / spread**: :func:`stream` yields the main output, then draws samples *one at a time*
  (:func:`nightflow.inference.iter_samples`, the whole-image context computed once) and accumulates the spread
  as they come (:class:`nightflow.inference.SpreadAccumulator`), so n samples never sit in memory together;
- **files**: :func:`read` and :func:`enhance_file` (outputs as 8-bit or 16-bit arrays, heat-maps, the raw
  spread), used by the CLI, which keeps what is its own: output names, records and skip logic, ``--json``,
  progress and per-image error handling.

Settings are checked here once (:func:`check_temperature`, :func:`check_seed`, :func:`check_exposure`,
:func:`check_tile`) with one-line ``SettingError``s; the API re-exports them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import ensemble as ens
from . import inference, seeding
from .data import io
from .errors import SettingError
from .models.base import MAX_TEMPERATURE

MAX_EXPOSURE = 8.0  # EV either way: beyond that the gain only amplifies noise or clips everything
SEED_RANGE = (0, seeding.SEED_MAX)  # what torch.Generator.manual_seed accepts, non-negative

# ---------------------------------------------------------------------------------------------------- settings


def check_exposure(exposure: float) -> float:
    """``exposure`` (EV relative to the model's estimate) as a float; non-finite or beyond ±8 EV → SettingError."""
    try:
        value = float(exposure)
    except (TypeError, ValueError) as exc:
        raise SettingError(f"exposure must be a number of EV, got {exposure!r}") from exc
    if not math.isfinite(value) or abs(value) > MAX_EXPOSURE:
        raise SettingError(f"exposure must be a finite EV within ±{MAX_EXPOSURE:g}, got {exposure!r}")
    return value


def check_max_memory(max_memory: int | None) -> int | None:
    """None (a share of the available memory) or a whole number of bytes ≥ 1 MiB, else a SettingError."""
    if max_memory is None:
        return None
    if isinstance(max_memory, bool) or not isinstance(max_memory, (int, np.integer)) or max_memory < 1 << 20:
        raise SettingError(f"max_memory must be None or a number of bytes >= 1 MiB, got {max_memory!r}")
    return int(max_memory)


def check_temperature(temperature: float, name: str = "temperature") -> float:
    """A finite temperature in [0, MAX_TEMPERATURE] (NaN, inf or 1e6 would decode to a black or noise image)."""
    try:
        t = float(temperature)
    except (TypeError, ValueError):
        raise SettingError(f"{name} must be a number, got {temperature!r}") from None
    if not math.isfinite(t) or not 0.0 <= t <= MAX_TEMPERATURE:
        raise SettingError(f"{name} must be a finite number in [0, {MAX_TEMPERATURE}], got {temperature}")
    return t


def check_seed(seed: int, name: str = "seed") -> int:
    """A whole number in SEED_RANGE (larger ones overflow the generator)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise SettingError(f"{name} must be a whole number, got {seed!r}")
    lo, hi = SEED_RANGE
    if not lo <= int(seed) <= hi:
        raise SettingError(f"{name} must be in {lo}..{hi} (2**64 - 1), got {seed}")
    return int(seed)


def check_ensemble(ensemble: int, temperature: float = 0.0, name: str = "ensemble") -> int:
    """One of :data:`nightflow.ensemble.SIZES` (1 = none); above 1 only with a main output at temperature 0
    (the self-ensemble averages the mean path), else a one-line SettingError."""
    try:
        return ens.check(int(ensemble) if isinstance(ensemble, np.integer) else ensemble, temperature, name)
    except ValueError as exc:
        raise SettingError(str(exc)) from None


def minimum_tile(restorer: torch.nn.Module) -> int:
    """The smallest tile side (LR px) ``restorer`` gives correct output with: its ``tiling.min_tile``."""
    return int(restorer.tiling.min_tile)


def check_tile(tile: int | None, restorer: torch.nn.Module, name: str = "tile") -> int | None:
    """None (auto), 0 (never tile) or at least ``restorer.tiling.min_tile`` pixels; a restorer that is not
    tileable accepts only None/0 (it always runs whole). Anything else is a one-line SettingError."""
    if tile is None:
        return None
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)):
        raise SettingError(f"{name} must be None (auto), 0 (never tile) or a number of pixels, got {tile!r}")
    if tile and not restorer.tiling.tileable:
        raise SettingError(
            f"{name} {tile}: {type(restorer).__name__} works on the whole image (global statistics) and cannot "
            "be tiled; leave it at auto or 0"
        )
    least = minimum_tile(restorer)
    if tile != 0 and not least <= tile:
        raise SettingError(
            f"{name} {tile} is too small: this model needs tiles of at least {least} px (or 0 = never tile, "
            "None/auto = by memory)"
        )
    return int(tile)


# ---------------------------------------------------------------------------------------------------- streams


@dataclass(frozen=True)
class Request:
    """What to make of one image.

    ``main``: the main output at ``temperature`` (0 = the mean path, averaged over ``ensemble`` rotations and
    flips of the input when above 1; above 0 sample 0 of ``seed``). ``samples``:
    the indices of the samples to hand out, drawn at ``sample_temperature`` (None: the restorer's own, measured on
    its weights) from ``seed``; ``spread``: the number
    of samples (≥ 2) whose per-pixel spread to hand out (the samples handed out are the first of those).
    """

    main: bool = True
    temperature: float = 0.0
    samples: tuple[int, ...] = ()
    sample_temperature: float | None = None
    spread: int = 0
    seed: int = 0
    tile: int | None = None
    overlap: int | None = None
    exposure: float = 0.0
    progress: bool = False
    precision: str = "fp32"  # resolved ("fp32"/"bf16"): nightflow.precision.resolve
    max_memory: int | None = None  # bytes an automatic tile size may use (None: a share of what is available)
    ensemble: int = 1  # self-ensemble size of the main output (nightflow.ensemble; checked by check_ensemble)

    @property
    def draws(self) -> int:
        """How many samples the stream draws: all of the spread's, else up to the last sample handed out."""
        if self.spread:
            return max(self.spread, max(self.samples, default=-1) + 1)
        return max(self.samples, default=-1) + 1


@dataclass(frozen=True)
class Output:
    """One result: ``role`` "main", "sample" (``index``) or "spread"; ``value`` a tensor (N×3×sH×sW, or N×sH×sW
    for the spread) from :func:`stream`, an image of the input's kind (spread: sH×sW float32) from :func:`run`."""

    role: str
    index: int | None
    value: Any


def restore_tensor(
    restorer: torch.nn.Module,
    x: torch.Tensor,
    temperature: float = 0.0,
    seed: int = 0,
    ensemble: int = 1,
    **common: Any,
) -> torch.Tensor:
    """One restoration of ``x``: the mean path at temperature 0 (averaged over ``ensemble`` turned copies, see
    :mod:`nightflow.ensemble`), else the first sample of ``seed`` (noise for the whole image, drawn on the CPU,
    cropped per tile). ``common``: tile, overlap, progress, exposure, precision, max_memory."""
    if ensemble != 1:
        return inference.restore(restorer, x, 0.0, ensemble=check_ensemble(ensemble, temperature), **common)
    noise = None
    if temperature > 0 and restorer.stochastic:
        n, _, h, w = x.shape
        s = int(restorer.scale)
        noise = inference.draw_noise((n, 3, h * s, w * s), seeding.generator(seed)).to(x.device)
    return inference.restore(restorer, x, temperature, noise=noise, **common)


def stream(restorer: torch.nn.Module, x: torch.Tensor, request: Request) -> Iterator[Output]:
    """The outputs of ``request`` for the 1×3×H×W tensor ``x``, as tensors, one at a time: the main output,
    then the samples as they are drawn, then the spread (NaN/inf refused before anything is handed out)."""
    common = dict(
        tile=request.tile,
        overlap=request.overlap,
        progress=request.progress,
        exposure=request.exposure,
        precision=request.precision,
        max_memory=request.max_memory,
    )
    if request.main:
        y = restore_tensor(restorer, x, request.temperature, request.seed, request.ensemble, **common)
        yield Output("main", None, io.check_finite(y))
    n = request.draws
    if not n:
        return
    if request.spread and request.spread < 2:
        raise SettingError(f"the spread needs at least 2 samples, got {request.spread}")
    acc = inference.SpreadAccumulator() if request.spread else None
    wanted = set(request.samples)
    gen = seeding.generator(request.seed)
    for i, y in enumerate(
        inference.iter_samples(restorer, x, n, request.sample_temperature, generator=gen, **common)
    ):
        io.check_finite(y)
        if i in wanted:
            yield Output("sample", i, y)
        if acc is not None:
            acc.add(y)
    if acc is not None:
        yield Output("spread", None, io.check_finite(acc.spread(), "the uncertainty map"))


def run(restorer: torch.nn.Module, img: Any, request: Request) -> Iterator[Output]:
    """:func:`stream` on an image (numpy or PIL): outputs of the same kind as ``img``; the spread as an sH×sW
    float32 array (std over samples, mean over channels, in [0, 1] intensity units)."""
    x, kind = io.image_to_tensor(img)
    for out in stream(restorer, x, request):
        yield Output(out.role, out.index, _as_image(out, kind))


def _as_image(out: Output, kind: io.ImageKind) -> Any:
    if out.role == "spread":
        return out.value[0].detach().to("cpu", torch.float32).numpy()
    return io.tensor_to_image(out.value, kind)


# ---------------------------------------------------------------------------------------------------- files


def read(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """An image file as the pipeline reads it: its own dtype, upright, grey kept grey (one-line errors)."""
    return io.read_image(path, max_pixels=max_pixels, keep_grey=True)


def file_array(img: np.ndarray) -> np.ndarray:
    """What a restored image is written as: 8 bits stay 8 bits; 16-bit and float results become 16-bit."""
    if img.dtype == np.uint8 or img.dtype == np.uint16:
        return img
    return np.rint(np.clip(img, 0, 1) * 65535).astype(np.uint16)


def heat_map(spread: np.ndarray, scale_max: float | None = None) -> np.ndarray:
    """Colour-map an H×W spread (std in [0, 1] units) to an 8-bit RGB heat-map (inferno), 0 = black.

    Normalised by the 99.5th percentile (or ``scale_max``) so a few extreme pixels do not wash the map out.
    """
    import cv2

    top = float(np.percentile(spread, 99.5)) if scale_max is None else scale_max
    norm = np.zeros_like(spread) if top <= 0 else np.clip(spread / top, 0, 1)
    grey = np.rint(norm * 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(grey, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)


def raw_spread(spread: np.ndarray) -> np.ndarray:
    """The spread as a 16-bit grey image: value / 65535 = std in [0, 1] intensity units."""
    return np.rint(np.clip(spread, 0, 1) * 65535).astype(np.uint16)


def write(path: Path, arr: np.ndarray, text: dict[str, str] | None = None) -> Path:
    """Write one output atomically, replacing what is there (the caller decided what to redo); JPEG is 8-bit."""
    depth = 8 if path.suffix.lower() in (".jpg", ".jpeg") else None
    return io.write_image(path, arr, overwrite=True, text=text, bit_depth=depth)


@dataclass
class FileOutputs:
    """Where the outputs of one input go (None / missing: not wanted)."""

    main: Path | None = None
    samples: dict[int, Path] | None = None
    heat: Path | None = None
    raw: Path | None = None


def enhance_file(
    restorer: torch.nn.Module,
    src: Path,
    request: Request,
    outputs: FileOutputs,
    *,
    max_pixels: int | None = None,
    text: Callable[[Path], dict[str, str] | None] = lambda path: None,
    on_start: Callable[[torch.Tensor], None] | None = None,
) -> list[Path]:
    """Read ``src``, run ``request`` and write the wanted ``outputs`` as they come (each with ``text(path)``, a
    record kept in the file); returns the files written. ``request.main``/``samples``/``spread`` must ask for
    what ``outputs`` names. Unreadable or non-finite input is a one-line UserError naming ``src``."""
    img = read(src, max_pixels)
    try:
        x, kind = io.image_to_tensor(img)
    except io.ImageInputError as exc:
        raise io.ImageInputError(f"{src}: {exc}") from None
    if on_start is not None:
        on_start(x)
    written: list[Path] = []

    def save(path: Path, arr: np.ndarray) -> None:
        written.append(write(path, arr, text(path)))

    samples = outputs.samples or {}
    for out in stream(restorer, x, request):
        if out.role == "main" and outputs.main is not None:
            save(outputs.main, file_array(_as_image(out, kind)))
        elif out.role == "sample" and out.index in samples:
            save(samples[out.index], file_array(_as_image(out, kind)))
        elif out.role == "spread":
            spread = _as_image(out, kind)
            if outputs.heat is not None:
                save(outputs.heat, heat_map(spread))
            if outputs.raw is not None:
                save(outputs.raw, raw_spread(spread))
    return written
