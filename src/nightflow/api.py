"""The public Python API object returned by ``nightflow.load``: restore, sample and uncertainty on plain images.

Why a wrapper: users hold numpy arrays or PIL images (8-bit, 16-bit, float, grey, RGBA), while the library works
on N×3×H×W float tensors in [0, 1]. This module converts both ways, returning the same kind and dtype it was given,
validates the input with one-line ``ValueError`` reasons, and delegates the work to :mod:`nightflow.inference`
(tiling, seamless samples, streaming spread).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from . import inference
from .errors import ImageValueError, NonFiniteOutputError, SettingError


class ImageInputError(ImageValueError):
    """An image the API cannot work on (empty, 1×1, NaN, wrong channels or dtype): a ValueError with one line."""


# Sampling temperatures above this are far outside the latent's N(0, 1) support: the flow decodes saturated noise.
MAX_TEMPERATURE = 2.0
SEED_RANGE = (0, 2**64 - 1)  # what torch.Generator.manual_seed accepts, non-negative
# Smallest tile (LR px) for the flow models: twice the smallest default overlap, so every tile keeps a full
# blended overlap on each side; below it tiles are blended over nothing and the image turns blocky. A restorer
# can declare its own ``min_tile``; others without an encoder (test stand-ins) only need their pad grid.
MIN_TILE = 2 * inference.default_overlap(0)


MAX_EXPOSURE = 8.0  # EV either way: beyond that the gain only amplifies noise or clips everything


def check_exposure(exposure: float) -> float:
    """``exposure`` (EV relative to the model's estimate) as a float; non-finite or beyond ±8 EV → UserError."""
    try:
        value = float(exposure)
    except (TypeError, ValueError) as exc:
        raise SettingError(f"exposure must be a number of EV, got {exposure!r}") from exc
    if not math.isfinite(value) or abs(value) > MAX_EXPOSURE:
        raise SettingError(f"exposure must be a finite EV within ±{MAX_EXPOSURE:g}, got {exposure!r}")
    return value


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


def minimum_tile(restorer: torch.nn.Module) -> int:
    """The smallest tile side (LR px) ``restorer`` gives correct output with: its ``min_tile``, else MIN_TILE for
    encoder-based models, else its pad grid; always a multiple of ``pad_multiple``."""
    multiple = max(1, int(getattr(restorer, "pad_multiple", 1)))
    need = getattr(restorer, "min_tile", None)
    if need is None:
        need = MIN_TILE if hasattr(restorer, "encoder") else multiple
    return -(-max(int(need), multiple) // multiple) * multiple


def check_tile(tile: int | None, restorer: torch.nn.Module, name: str = "tile") -> int | None:
    """None (auto), 0 (never tile) or at least :func:`minimum_tile` pixels; anything else is refused."""
    if tile is None:
        return None
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)):
        raise SettingError(f"{name} must be None (auto), 0 (never tile) or a number of pixels, got {tile!r}")
    least = minimum_tile(restorer)
    if tile != 0 and not least <= tile:
        raise SettingError(
            f"{name} {tile} is too small: this model needs tiles of at least {least} px (or 0 = never tile, "
            "None/auto = by memory)"
        )
    return int(tile)


def check_finite(x: torch.Tensor, what: str = "the restored image") -> torch.Tensor:
    """Refuse NaN/inf model output: clamping would turn it into a black image that looks like a result."""
    if not bool(torch.isfinite(x).all()):
        raise NonFiniteOutputError(
            f"the model produced NaN/inf values for {what}; its weights may be corrupt (reload or re-train "
            "them); nothing was written"
        )
    return x


@dataclass(frozen=True)
class ImageKind:
    """How an input image was given, so the output can be handed back the same way."""

    dtype: np.dtype
    grey: bool
    keepdim: bool = False  # grey given as H×W×1
    pil_mode: str | None = None  # None: numpy


# PIL modes converted before use, and what they become.
_PIL_CONVERT = {"1": "L", "P": "RGB", "PA": "RGBA", "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB"}
_PIL_CONVERT.update({"RGBX": "RGB", "RGBa": "RGBA", "La": "LA"})


def _upright(img: Image.Image) -> Image.Image:
    """Apply EXIF orientation, as ``read_image`` does for files, so CLI and API see the same pixels."""
    try:
        if int(img.getexif().get(0x0112, 1)) in (2, 3, 4, 5, 6, 7, 8):
            return ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block must not make a good image unusable
        pass
    return img


def _from_pil(img: Image.Image) -> tuple[np.ndarray, str]:
    img = _upright(img)
    mode = img.mode
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    elif mode in _PIL_CONVERT:
        img = img.convert(_PIL_CONVERT[mode])
    arr = np.asarray(img)
    if img.mode.startswith("I;16"):
        arr = arr.astype(np.uint16)
        return arr, "I;16"
    if img.mode == "I":
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise ImageInputError(
                "32-bit integer PIL image outside 0..65535; convert it to 16-bit or 8-bit first"
            )
        return arr.astype(np.uint16), "I;16"
    out_mode = {"RGBA": "RGB", "LA": "L"}.get(img.mode, img.mode)
    return arr, out_mode


def image_to_tensor(img: Any) -> tuple[torch.Tensor, ImageKind]:
    """Validate ``img`` (numpy H×W / H×W×1 / H×W×3 / H×W×4, or PIL) and return a 1×3×H×W float tensor + its kind.

    Raises ImageInputError (a ValueError) with a one-line reason for empty or 1×1 images, NaN/inf, a wrong
    channel count or an unsupported dtype; warns when an alpha channel is dropped.
    """
    pil_mode = None
    if isinstance(img, Image.Image):
        arr, pil_mode = _from_pil(img)
    elif isinstance(img, np.ndarray):
        arr = img
    elif isinstance(img, torch.Tensor):
        raise ImageInputError(
            "expected a numpy array or PIL image, got a torch.Tensor; for tensors call "
            "nightflow.inference.restore(model.restorer, x)"
        )
    else:
        raise ImageInputError(f"expected a numpy array or PIL image, got {type(img).__name__}")

    keepdim = False
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr, keepdim = arr[..., 0], True
    if arr.ndim == 3 and arr.shape[-1] == 2:
        raise ImageInputError(
            f"image has 2 channels (shape {arr.shape}); give H×W (grey), H×W×3 (RGB) or H×W×4 (RGBA)"
        )
    if arr.ndim == 3 and arr.shape[-1] == 4:
        warnings.warn(
            "alpha channel dropped: nightflow restores the RGB channels only", UserWarning, stacklevel=3
        )
        arr = arr[..., :3]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] != 3):
        hint = ""
        if arr.ndim == 3 and arr.shape[0] in (1, 3, 4):
            hint = " (looks channels-first: use arr.transpose(1, 2, 0))"
        raise ImageInputError(
            f"wrong number of channels: shape {arr.shape}; give H×W (grey), H×W×3 (RGB) or H×W×4 (RGBA){hint}"
        )
    h, w = arr.shape[:2]
    if h == 0 or w == 0:
        raise ImageInputError(f"empty image (shape {arr.shape}); give an image of at least 2×2 pixels")
    if h < 2 or w < 2:
        raise ImageInputError(f"image is only {h}×{w} pixels; give an image of at least 2×2 pixels")

    dtype = arr.dtype
    if dtype == np.uint8:
        x = arr.astype(np.float32) / 255.0
    elif dtype == np.uint16:
        x = arr.astype(np.float32) / 65535.0
    elif np.issubdtype(dtype, np.floating):
        x = arr.astype(np.float32)
        if not np.isfinite(x).all():
            raise ImageInputError("image contains NaN or infinite values; clean or clip the array first")
        lo, hi = float(x.min()), float(x.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ImageInputError(
                f"float image values must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]; "
                "divide 8-bit data by 255 (16-bit by 65535)"
            )
        x = np.clip(x, 0.0, 1.0)
    else:
        raise ImageInputError(f"unsupported dtype {dtype}; give uint8, uint16 or float in [0, 1]")

    grey = x.ndim == 2
    if grey:
        x = np.repeat(x[..., None], 3, axis=-1)
    tensor = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]
    return tensor, ImageKind(dtype=np.dtype(dtype), grey=grey, keepdim=keepdim, pil_mode=pil_mode)


# ITU-R BT.601 luma, the weights PIL's convert("L") uses, so grey in → grey out matches what users expect.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def tensor_to_image(x: torch.Tensor, kind: ImageKind) -> Any:
    """Turn a 3×H×W or 1×3×H×W tensor in [0, 1] back into an image of ``kind`` (same dtype, grey-ness, PIL)."""
    if x.ndim == 4:
        if x.shape[0] != 1:
            raise ValueError(f"expected one image, got a batch of {x.shape[0]}")
        x = x[0]
    check_finite(x)
    arr = x.detach().to("cpu", torch.float32).clamp(0, 1).numpy().transpose(1, 2, 0)
    if kind.grey:
        arr = arr @ _LUMA
        if kind.keepdim:
            arr = arr[..., None]
    if kind.dtype == np.uint8:
        out = np.rint(arr * 255.0).astype(np.uint8)
    elif kind.dtype == np.uint16:
        out = np.rint(arr * 65535.0).astype(np.uint16)
    else:
        out = arr.astype(kind.dtype)
    if kind.pil_mode is None:
        return np.ascontiguousarray(out)
    if kind.pil_mode == "I;16":
        return Image.fromarray(np.ascontiguousarray(out.astype(np.uint16)))
    return Image.fromarray(np.ascontiguousarray(out), mode=None)


class Model:
    """A restorer ready for use on images: ``restore``, ``sample``, ``uncertainty``; ``.restorer`` for research.

    ``info`` carries what the loader knows (name, checkpoint path, config, model card); ``device`` moves the
    restorer ("auto" picks CUDA when present; None leaves it where it is).
    """

    def __init__(
        self,
        restorer: torch.nn.Module,
        info: dict[str, Any] | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        for attr in ("scale", "restore"):
            if not hasattr(restorer, attr):
                raise TypeError(f"restorer {type(restorer).__name__} lacks '{attr}' (not a FlowRestorer?)")
        self.restorer = restorer
        self.info: dict[str, Any] = dict(info or {})
        if device is not None:
            self.to(device)
        self.restorer.eval()

    @property
    def scale(self) -> int:
        """Output size / input size (1, 2 or 4)."""
        return int(self.restorer.scale)

    @property
    def device(self) -> torch.device:
        return inference.module_device(self.restorer)

    def to(self, device: str | torch.device) -> Model:
        """Move the restorer to ``device`` ("auto", "cpu", "cuda", ...) and return self."""
        self.restorer.to(inference.resolve_device(device))
        return self

    def __repr__(self) -> str:
        name = self.info.get("name") or self.info.get("path") or type(self.restorer).__name__
        return f"nightflow.Model({name!s}, scale={self.scale}, device={self.device})"

    def restore(
        self,
        img: Any,
        temperature: float = 0.0,
        tile: int | None = None,
        seed: int = 0,
        exposure: float = 0.0,
    ) -> Any:
        """Restored image, ``scale``× larger, of the same kind as ``img``.

        ``temperature`` 0 is the deterministic mean path; above 0 a sample seeded by ``seed``. ``tile``: None picks
        a tile size by available memory, 0 never tiles, >0 is the tile side in input pixels. ``exposure`` (EV)
        brightens (> 0) or darkens (< 0) relative to the model's own estimate (models with exposure control).
        """
        exposure = check_exposure(exposure)
        temperature = check_temperature(temperature)
        seed, tile = check_seed(seed), check_tile(tile, self.restorer)
        x, kind = image_to_tensor(img)
        noise = None
        if temperature > 0:
            n, _, h, w = x.shape
            noise = inference.draw_noise((n, 3, h * self.scale, w * self.scale), _generator(seed))
        y = inference.restore(self.restorer, x, temperature, noise=noise, tile=tile, exposure=exposure)
        return tensor_to_image(y, kind)

    def sample(
        self,
        img: Any,
        n: int = 4,
        temperature: float = 0.8,
        seed: int = 0,
        tile: int | None = None,
        exposure: float = 0.0,
    ) -> list[Any]:
        """``n`` different plausible restorations (same kind as ``img``); the same seed gives the same samples."""
        exposure = check_exposure(exposure)
        temperature = check_temperature(temperature)
        seed, tile = check_seed(seed), check_tile(tile, self.restorer)
        x, kind = image_to_tensor(img)
        samples = inference.iter_samples(
            self.restorer, x, n, temperature, generator=_generator(seed), tile=tile, exposure=exposure
        )
        return [tensor_to_image(y, kind) for y in samples]

    def uncertainty(
        self,
        img: Any,
        n: int = 8,
        temperature: float = 0.8,
        seed: int = 0,
        tile: int | None = None,
        exposure: float = 0.0,
    ) -> np.ndarray:
        """Per-pixel spread across ``n`` samples (std over samples, mean over channels) as an sH×sW float32 array.

        Values are in image intensity units ([0, 1] scale); zero at temperature 0.
        """
        exposure = check_exposure(exposure)
        temperature = check_temperature(temperature)
        seed, tile = check_seed(seed), check_tile(tile, self.restorer)
        x, _ = image_to_tensor(img)
        spread = inference.uncertainty(
            self.restorer, x, n, temperature, generator=_generator(seed), tile=tile, exposure=exposure
        )
        return check_finite(spread, "the uncertainty map")[0].numpy().astype(np.float32)


def _generator(seed: int) -> torch.Generator:
    """A CPU generator: noise is drawn on the CPU so one seed means the same samples on every device."""
    return torch.Generator().manual_seed(int(seed))
