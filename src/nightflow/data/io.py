"""Image files in and out: PNG, JPEG, TIFF at 8 and 16 bits, with EXIF orientation, grey and alpha handling.

Why a module of its own: Pillow silently truncates 16-bit RGB PNG to 8 bits and most readers ignore EXIF
orientation, so every loader and command goes through these functions to get the exact pixels the user has.
Reading returns H×W×3 numpy arrays in the file's own dtype; ``image_to_tensor``/``to_tensor`` turn them
(and PIL images) into the library's float32 [0, 1] tensors and ``tensor_to_image`` back into the same kind: the
one converter of every front end, with one NaN and range policy (see the tensors section). Writing is atomic (temporary name, then ``os.replace``).

Reliability: the pixel count is read from the header and checked against a limit *before* anything is decoded
(a 118 KB PNG can ask for gigabytes); multi-page files say that only the first page is used; write failures
(full disk, read-only filesystem, a path below a file) are one-line ``OutputError``s; PNG outputs can carry a
text record of what produced them (``read_png_text``).
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import re
import struct
import threading
import warnings
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np
import tifffile
import torch
from PIL import Image

from ..atomic import atomic_path
from ..errors import ImageValueError, NonFiniteOutputError, OutputError, ResourceLimitError, UserError

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
WRITE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
_EXIF_ORIENTATION = 0x0112


class ImageReadError(UserError):
    """An image file is missing, empty, truncated, corrupt or not an image; the message names file and cause."""


class ImageTooLargeError(ImageReadError, ResourceLimitError):
    """An image whose header asks for more pixels than the limit; refused before decoding."""


class AlphaDroppedWarning(UserWarning):
    """An image had an alpha channel, which nightflow ignores (it restores RGB)."""


class MultiPageWarning(UserWarning):
    """A multi-page TIFF (or multi-frame image): only the first page is read."""


class _DecodeError(Exception):
    """Internal: a decoder found a problem; ``read_image`` adds the file name."""


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


# ---------------------------------------------------------------------------------------------------- limits

# Bytes of host memory per *input* pixel that enhancing one image needs outside the model (tiling bounds the
# model's share): the decoded file, its float tensor and padded copy (~48 B), plus per *output* pixel the
# float32 result, its numpy copy and the 8/16-bit array written (~36 B × scale²).
_BYTES_PER_INPUT_PIXEL = 48
_BYTES_PER_OUTPUT_PIXEL = 36
# Share of the machine's memory one image may take: the rest is for the model, tiles and other processes.
MEMORY_SHARE = 0.5
_PILLOW_LOCK = threading.Lock()


def machine_memory() -> int:
    """Total RAM in bytes (MemTotal), 8 GiB when it cannot be read: the pixel limit is sized from it."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 8 << 30


def default_max_pixels(scale: int = 1) -> int:
    """Largest input (pixels) whose decode, tensors and ×``scale`` output fit in half of this machine's RAM."""
    per_pixel = _BYTES_PER_INPUT_PIXEL + _BYTES_PER_OUTPUT_PIXEL * scale * scale
    return max(1_000_000, int(machine_memory() * MEMORY_SHARE / per_pixel))


def format_pixels(n: int) -> str:
    """'121.0 MP' (megapixels, for messages)."""
    return f"{n / 1e6:.1f} MP"


@contextmanager
def _pillow_unlimited() -> Iterator[None]:
    """Pillow's own bomb check (in ``Image.open``) off: ``check_pixels`` applied nightflow's documented limit.

    Held only around ``open``, never around decoding, so parallel readers are not serialised.
    """
    with _PILLOW_LOCK:
        old = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = old


@dataclass(frozen=True)
class ImageHeader:
    """What the header says, before any pixel is decoded: size as stored, pages, EXIF orientation."""

    height: int
    width: int
    pages: int = 1
    orientation: int = 1

    @property
    def pixels(self) -> int:
        return self.height * self.width

    @property
    def upright_size(self) -> tuple[int, int]:
        """(height, width) after EXIF rotation, as ``read_image`` returns it."""
        h, w = self.height, self.width
        return (w, h) if self.orientation in (5, 6, 7, 8) else (h, w)


def _probe_tiff(fh: BinaryIO) -> ImageHeader:
    with tifffile.TiffFile(fh) as tif:
        page = tif.pages[0]
        tag = page.tags.get("Orientation")
        pages = sum(1 for pg in tif.pages if not getattr(pg, "is_reduced", False))
        return ImageHeader(
            int(page.imagelength), int(page.imagewidth), pages, int(tag.value) if tag is not None else 1
        )


def _probe_pillow(fh: BinaryIO) -> ImageHeader:
    with _pillow_unlimited(), Image.open(fh) as im:
        w, h = im.size
        frames = 1 if im.format == "MPO" else int(getattr(im, "n_frames", 1) or 1)  # MPO: camera previews
        return ImageHeader(int(h), int(w), frames, _pillow_orientation(im))


def _probe_png(fh: BinaryIO, head: bytes) -> ImageHeader:
    # The size comes from IHDR itself, so a header-only or truncated PNG still reports its dimensions.
    if len(head) < 24 or head[12:16] != b"IHDR":
        raise _DecodeError("not a valid PNG (missing IHDR header)")
    width, height = struct.unpack(">II", head[16:24])
    try:
        fh.seek(0)
        rest = _probe_pillow(fh)
        return ImageHeader(int(height), int(width), rest.pages, rest.orientation)
    except Exception:  # a damaged chunk after IHDR is reported by the decoder, with the size check done
        return ImageHeader(int(height), int(width))


def probe(fh: BinaryIO) -> ImageHeader:
    """The header of an open image file (rewound first); ``_DecodeError`` when it is not a readable image."""
    fh.seek(0)
    head = fh.read(33)
    fh.seek(0)
    kind = _sniff(head)
    try:
        if kind == "png":
            return _probe_png(fh, head)
        if kind == "tiff":
            return _probe_tiff(fh)
        return _probe_pillow(fh)
    except _DecodeError:
        raise
    except Exception as exc:
        if kind == "tiff":
            raise _DecodeError(f"truncated or corrupt TIFF ({_one_line(exc)})") from exc
        raise _not_readable(kind) from exc


def _not_readable(kind: str) -> _DecodeError:
    """The cause for a file Pillow cannot open: damaged if its magic bytes say PNG/JPEG, else not an image."""
    if kind in ("png", "jpeg"):
        return _DecodeError(
            f"truncated or corrupt {kind.upper()} (it starts like one, but its data is unreadable)"
        )
    return _DecodeError("not a recognised image format (expected PNG, JPEG or TIFF)")


def check_pixels(p: Path, header: ImageHeader, max_pixels: int | None) -> None:
    """Refuse an image above ``max_pixels`` (None: the machine default; 0: no limit), naming its size."""
    limit = default_max_pixels() if max_pixels is None else int(max_pixels)
    if limit > 0 and header.pixels > limit:
        raise ImageTooLargeError(
            f"cannot read image {p}: {header.width}×{header.height} = {format_pixels(header.pixels)} is above "
            f"the limit of {format_pixels(limit)}; downscale it or raise --max-pixels"
        )


def _warn_pages(p: Path, header: ImageHeader) -> None:
    if header.pages > 1:
        warnings.warn(
            f"{p}: {header.pages} pages/frames, only the first is used (split the file to restore the others)",
            MultiPageWarning,
            stacklevel=3,
        )


# ---------------------------------------------------------------------------------------------------- reading


def _sniff(data: bytes) -> str:
    """File kind from magic bytes (extensions lie: a .png may be a JPEG)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    return "other"


def is_jpeg(path: str | os.PathLike[str]) -> bool:
    """Whether a file holds a JPEG, from its magic bytes (a .png may be a JPEG); False for a file that cannot be
    read (reading it later reports why)."""
    try:
        with open(path, "rb") as fh:
            return _sniff(fh.read(4)) == "jpeg"
    except OSError:
        return False


def _png_bit_depth(data: bytes) -> int:
    # signature (8) + chunk length (4) + b"IHDR" (4) + width (4) + height (4) -> bit depth byte at offset 24
    if len(data) < 26 or data[12:16] != b"IHDR":
        raise _DecodeError("not a valid PNG (missing IHDR header)")
    return data[24]


def _pillow_orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # a broken EXIF block must not make a good image unreadable
        return 1


def _decode_pillow(data: bytes) -> tuple[np.ndarray, int]:
    try:
        with _pillow_unlimited():  # the pixel count was checked against nightflow's limit from the header
            im = Image.open(io.BytesIO(data))
    except Exception as exc:
        raise _not_readable(_sniff(data[:8])) from exc
    return _decode_opened(im)


def _decode_opened(im: Image.Image) -> tuple[np.ndarray, int]:
    with im:
        try:
            im.load()
        except Exception as exc:
            raise _DecodeError(f"truncated or corrupt image data ({_one_line(exc)})") from exc
        orientation = _pillow_orientation(im)
        arr = _pil_pixels(im)
    return arr, orientation


# PIL modes converted before their pixels are read, and what they become (P with transparency: RGBA).
_PIL_CONVERT = {"1": "L", "P": "RGB", "PA": "RGBA", "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB"}
_PIL_CONVERT.update({"RGBX": "RGB", "RGBa": "RGBA", "La": "LA"})


def _pil_pixels(im: Image.Image) -> np.ndarray:
    """The pixels of a loaded PIL image in their own dtype (uint8, uint16 for I;16/I, float32 for F), grey as
    H×W, alpha kept (``_to_rgb``/the converter drop it); ``_DecodeError`` for 32-bit integers beyond 16 bits."""
    mode = im.mode
    if mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    elif mode in _PIL_CONVERT:
        im = im.convert(_PIL_CONVERT[mode])
    arr = np.asarray(im)
    if mode.startswith("I;16"):
        arr = arr.astype(np.uint16)
    elif mode == "I":
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise _DecodeError("32-bit integer pixels are not supported (save as 16-bit or float TIFF)")
        arr = arr.astype(np.uint16)
    elif mode == "F":
        arr = arr.astype(np.float32)
    return arr


def _decode_png16(data: bytes) -> tuple[np.ndarray, int]:
    # Pillow verifies integrity (it raises on truncation) and gives EXIF; OpenCV gives the exact 16-bit pixels.
    _, orientation = _decode_pillow(data)
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise _DecodeError("corrupt 16-bit PNG data")
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = arr[:, :, ::-1]
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, [2, 1, 0, 3]]
    return arr, orientation


def _decode_tiff(data: bytes) -> tuple[np.ndarray, int]:
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages[0]
            arr = page.asarray()
            tag = page.tags.get("Orientation")
            orientation = int(tag.value) if tag is not None else 1
            photometric = int(page.photometric)
            planar_separate = int(page.planarconfig) == 2
            colormap = page.colormap
    except Exception as exc:
        raise _DecodeError(f"truncated or corrupt TIFF ({_one_line(exc)})") from exc
    if planar_separate and arr.ndim == 3:
        arr = np.moveaxis(arr, 0, -1)
    if photometric == 3 and colormap is not None:  # palette
        arr = np.moveaxis(np.asarray(colormap)[:, arr], 0, -1).astype(np.uint16)
    elif photometric not in (0, 1, 2):
        raise _DecodeError(f"TIFF photometric interpretation {photometric} is not supported (save as RGB)")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype.kind == "f":
        arr = arr.astype(np.float32)
    elif arr.dtype not in (np.uint8, np.uint16):
        raise _DecodeError(f"{arr.dtype} samples are not supported (use 8/16-bit unsigned or float)")
    if photometric == 0:  # min-is-white
        arr = (1.0 - arr) if arr.dtype.kind == "f" else np.iinfo(arr.dtype).max - arr
    return arr, orientation


def _to_rgb(arr: np.ndarray, path: Path, keep_grey: bool = False) -> np.ndarray:
    if arr.ndim == 2:
        return arr if keep_grey else np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3:
        raise _DecodeError(f"unexpected pixel array shape {arr.shape}")
    channels = arr.shape[2]
    if channels in (2, 4):
        warnings.warn(
            f"{path}: alpha channel dropped (nightflow restores RGB; flatten the image first if it matters)",
            AlphaDroppedWarning,
            stacklevel=3,
        )
        arr = arr[:, :, : channels - 1]
        channels -= 1
    if channels == 1:
        return arr[:, :, 0] if keep_grey else np.repeat(arr, 3, axis=2)
    if channels == 3:
        return arr
    raise _DecodeError(f"{channels} channels are not supported (expected grey or RGB)")


def apply_exif_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Rotate/flip an H×W(×C) array so it displays upright, for EXIF orientation values 1–8 (others: as is)."""
    if orientation == 2:
        return arr[:, ::-1]
    if orientation == 3:
        return arr[::-1, ::-1]
    if orientation == 4:
        return arr[::-1]
    if orientation == 5:
        return arr.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(arr, k=-1)
    if orientation == 7:
        return arr[::-1, ::-1].swapaxes(0, 1)
    if orientation == 8:
        return np.rot90(arr, k=1)
    return arr


def _read_bytes(p: Path) -> bytes:
    if not p.exists():
        raise ImageReadError(f"cannot read image {p}: file not found (check the path)")
    if p.is_dir():
        raise ImageReadError(f"cannot read image {p}: it is a folder, not an image file")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ImageReadError(f"cannot read image {p}: {_one_line(exc)}") from exc
    if not data:
        raise ImageReadError(f"cannot read image {p}: empty file (0 bytes); re-copy or remove it")
    return data


def read_image(
    path: str | os.PathLike[str], *, max_pixels: int | None = None, keep_grey: bool = False
) -> np.ndarray:
    """Read an image as H×W×3 RGB in its own dtype (uint8, uint16, or float32 for float TIFF), upright.

    Grey becomes RGB (``keep_grey``: H×W, so a grey photo can come back grey); an alpha channel is dropped
    with an ``AlphaDroppedWarning``; a multi-page file gives its first page with a ``MultiPageWarning``. An
    image above ``max_pixels`` (None: :func:`default_max_pixels`; 0: no limit) is refused from its header with
    ``ImageTooLargeError``. Any unreadable file raises ``ImageReadError`` naming the file and the cause.
    """
    p = Path(path)
    data = _read_bytes(p)
    kind = _sniff(data)
    try:
        header = probe(io.BytesIO(data))
    except _DecodeError as exc:
        raise ImageReadError(f"cannot read image {p}: {exc}; re-export or remove the file") from None
    check_pixels(p, header, max_pixels)
    _warn_pages(p, header)
    try:
        if kind == "tiff":
            arr, orientation = _decode_tiff(data)
        elif kind == "png" and _png_bit_depth(data) == 16:
            arr, orientation = _decode_png16(data)
        else:
            arr, orientation = _decode_pillow(data)
        arr = _to_rgb(arr, p, keep_grey)
    except _DecodeError as exc:
        raise ImageReadError(f"cannot read image {p}: {exc}; re-export or remove the file") from None
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageReadError(f"cannot read image {p}: image has zero width or height")
    return np.ascontiguousarray(apply_exif_orientation(arr, orientation))


def read_image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(height, width) of an image as ``read_image`` would return it, from the header only (cheap)."""
    return read_header(path).upright_size


def read_header(path: str | os.PathLike[str]) -> ImageHeader:
    """The header of an image file (size, pages, orientation) without decoding it; one-line ``ImageReadError``."""
    p = Path(path)
    if not p.is_file():
        raise ImageReadError(f"cannot read image {p}: file not found (check the path)")
    try:
        with open(p, "rb") as fh:
            return probe(fh)
    except (_DecodeError, OSError) as exc:
        raise ImageReadError(
            f"cannot read image {p}: {_one_line(exc)}; re-export or remove the file"
        ) from None


def check_images(paths: Iterable[str | os.PathLike[str]], max_pixels: int | None = 0) -> int:
    """Decode every file once and raise one ``ImageReadError`` naming the first bad one (and how many are bad).

    Why: a corrupt training photo must stop a run before step 1 with one line, not at the step that first
    draws it (inside a DataLoader worker, as a multi-line traceback). Returns the number of files checked.
    """
    bad: list[str] = []
    count = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in paths:
            count += 1
            try:
                read_image(path, max_pixels=max_pixels)
            except ImageReadError as exc:
                bad.append(str(exc))
    if bad:
        more = f" ({len(bad)} of {count} files are unreadable)" if len(bad) > 1 else ""
        raise ImageReadError(f"{bad[0]}{more}")
    return count


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks (records what an output was made from)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------------- tensors
#
# The one image <-> tensor converter of nightflow (CLI, Python API, web UI, datasets, metrics' callers), with one
# policy: uint8, uint16 or float in [0, 1] (1e-3 of slack, clipped) in; NaN/inf, other dtypes and floats outside
# [0, 1] are refused with a one-line ImageInputError (a ValueError and a UserError); the output is handed back as
# the same kind (dtype, grey-ness, H×W×1, PIL mode); EXIF orientation is applied to PIL images as read_image
# applies it to files; non-finite *output* is refused (NonFiniteOutputError), never written as black.

FLOAT_SLACK = 1e-3  # float inputs may overshoot [0, 1] by this much (rounding in the caller's pipeline)
# ITU-R BT.601 luma, the weights PIL's convert("L") uses, so grey in -> grey out matches what users expect.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


class ImageInputError(ImageValueError):
    """An image nightflow cannot work on (empty, too small, NaN, wrong channels or dtype): one line."""


@dataclass(frozen=True)
class ImageKind:
    """How an input image was given, so the output can be handed back the same way."""

    dtype: np.dtype
    grey: bool
    keepdim: bool = False  # grey given as H×W×1
    pil_mode: str | None = None  # None: numpy


def _from_pil(img: Image.Image) -> tuple[np.ndarray, str]:
    """Pixels of a PIL image, upright (its EXIF orientation applied, as ``read_image`` does for files), and the
    PIL mode its result is handed back in."""
    try:
        arr = _pil_pixels(img)
    except _DecodeError as exc:
        raise ImageInputError(f"{exc}; convert the PIL image to 16-bit or 8-bit first") from None
    arr = apply_exif_orientation(arr, _pillow_orientation(img))
    if arr.dtype == np.uint16:
        return arr, "I;16"
    if arr.dtype == np.float32 and arr.ndim == 2:
        return arr, "F"
    return arr, ("L" if arr.ndim == 2 or arr.shape[-1] == 2 else "RGB")


def image_to_tensor(img: object, *, min_size: int = 2) -> tuple[torch.Tensor, ImageKind]:
    """Validate ``img`` (numpy H×W / H×W×1 / H×W×3 / H×W×4, or PIL) and return a 1×3×H×W float32 tensor in
    [0, 1] and its :class:`ImageKind`.

    Raises :class:`ImageInputError` with a one-line reason for images below ``min_size`` pixels a side, NaN/inf,
    floats outside [0, 1], a wrong channel count or an unsupported dtype; warns (``AlphaDroppedWarning``) when
    an alpha channel is dropped.
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
    if arr.ndim == 3 and arr.shape[-1] == 2 and pil_mode == "L":  # PIL LA: grey + alpha
        warnings.warn(
            "alpha channel dropped: nightflow restores the grey channel only",
            AlphaDroppedWarning,
            stacklevel=3,
        )
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[-1] == 2:
        raise ImageInputError(
            f"image has 2 channels (shape {arr.shape}); give H×W (grey), H×W×3 (RGB) or H×W×4 (RGBA)"
        )
    if arr.ndim == 3 and arr.shape[-1] == 4:
        warnings.warn(
            "alpha channel dropped: nightflow restores the RGB channels only",
            AlphaDroppedWarning,
            stacklevel=3,
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
    if h < min_size or w < min_size:
        raise ImageInputError(
            f"image is only {h}×{w} pixels; give an image of at least {min_size}×{min_size} pixels"
        )

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
        if lo < -FLOAT_SLACK or hi > 1 + FLOAT_SLACK:
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


def check_finite(x: torch.Tensor, what: str = "the restored image") -> torch.Tensor:
    """Refuse NaN/inf model output: clamping would turn it into a black image that looks like a result."""
    if not bool(torch.isfinite(x).all()):
        raise NonFiniteOutputError(
            f"the model produced NaN/inf values for {what}; its weights may be corrupt (reload or re-train "
            "them); nothing was written"
        )
    return x


def _quantize(arr: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Float [0, 1] → ``dtype`` (uint8, uint16: rounded half to even; floats: cast)."""
    if dtype == np.uint8:
        return np.rint(arr * 255.0).astype(np.uint8)
    if dtype == np.uint16:
        return np.rint(arr * 65535.0).astype(np.uint16)
    if dtype.kind == "f":
        return arr.astype(dtype)
    raise ValueError(f"unsupported output dtype {dtype} (use uint8, uint16 or float32)")


def _hwc(x: torch.Tensor) -> np.ndarray:
    """3×H×W or 1×3×H×W tensor → H×W×3 float32 numpy in [0, 1]; NaN/inf refused."""
    if x.ndim == 4:
        if x.shape[0] != 1:
            raise ValueError(f"expected one image, got a batch of {x.shape[0]}")
        x = x[0]
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"expected a 3×H×W tensor, got shape {tuple(x.shape)}")
    check_finite(x)
    return x.detach().to("cpu", torch.float32).clamp(0, 1).numpy().transpose(1, 2, 0)


def tensor_to_image(x: torch.Tensor, kind: ImageKind) -> object:
    """Turn a 3×H×W or 1×3×H×W tensor in [0, 1] back into an image of ``kind`` (same dtype, grey-ness, PIL)."""
    arr = _hwc(x)
    if kind.grey:
        arr = arr @ _LUMA
        if kind.keepdim:
            arr = arr[..., None]
    out = np.ascontiguousarray(_quantize(arr, np.dtype(kind.dtype)))
    if kind.pil_mode is None:
        return out
    return Image.fromarray(out)


def to_tensor(arr: np.ndarray) -> torch.Tensor:
    """H×W×3 (or H×W) uint8/uint16/float array → 3×H×W float32 tensor in [0, 1]: :func:`image_to_tensor`'s
    policy (NaN/inf and floats outside [0, 1] refused) for one image of any size."""
    return image_to_tensor(np.asarray(arr), min_size=1)[0][0]


def from_tensor(t: torch.Tensor, dtype: type | np.dtype = np.uint8) -> np.ndarray:
    """3×H×W (or 1×3×H×W) float tensor in [0, 1] → H×W×3 array of ``dtype`` (uint8, uint16 or float32);
    NaN/inf refused (``NonFiniteOutputError``)."""
    return np.ascontiguousarray(_quantize(_hwc(t), np.dtype(dtype)))


# ---------------------------------------------------------------------------------------------------- writing


def _as_hwc(img: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(img, torch.Tensor):
        return from_tensor(img, np.float32)
    a = np.asarray(img)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 2:
        return a
    if a.ndim == 3 and a.shape[2] == 3:
        return a
    raise ValueError(f"expected an H×W×3 or H×W image, got shape {a.shape}")


def _convert_depth(a: np.ndarray, depth: int) -> np.ndarray:
    if depth == 32:
        if a.dtype == np.uint8:
            return a.astype(np.float32) / 255.0
        if a.dtype == np.uint16:
            return a.astype(np.float32) / 65535.0
        return a.astype(np.float32)
    if a.dtype.kind == "f":
        x = np.nan_to_num(a.astype(np.float64), nan=0.0).clip(0.0, 1.0)
        levels = 255.0 if depth == 8 else 65535.0
        return np.round(x * levels).astype(np.uint8 if depth == 8 else np.uint16)
    if a.dtype == np.uint8:
        return a if depth == 8 else a.astype(np.uint16) * 257
    if a.dtype == np.uint16:
        return a if depth == 16 else ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    raise ValueError(f"unsupported image dtype {a.dtype} (expected uint8, uint16 or float)")


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return (
        struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    )


def _with_png_text(png: bytes, text: dict[str, str]) -> bytes:
    """Insert tEXt chunks right after IHDR (keywords Latin-1, at most 79 bytes; values ASCII-safe)."""
    ihdr_end = 8 + 4 + 4 + 13 + 4
    chunks = b"".join(
        _png_chunk(b"tEXt", k.encode("latin-1")[:79] + b"\0" + v.encode("latin-1", "backslashreplace"))
        for k, v in text.items()
    )
    return png[:ihdr_end] + chunks + png[ihdr_end:]


def read_png_text(path: str | os.PathLike[str]) -> dict[str, str]:
    """tEXt chunks before the image data of a PNG ({} for other files or unreadable ones)."""
    out: dict[str, str] = {}
    try:
        with open(path, "rb") as fh:
            if fh.read(8) != b"\x89PNG\r\n\x1a\n":
                return out
            while True:
                head = fh.read(8)
                if len(head) < 8:
                    return out
                length, kind = struct.unpack(">I", head[:4])[0], head[4:]
                if kind in (b"IDAT", b"IEND") or length > 1 << 20:
                    return out
                body = fh.read(length)
                fh.read(4)  # CRC
                if kind == b"tEXt" and b"\0" in body:
                    key, _, value = body.partition(b"\0")
                    out[key.decode("latin-1")] = value.decode("latin-1")
    except OSError:
        return out


def _encode(a: np.ndarray, ext: str, jpeg_quality: int, text: dict[str, str] | None = None) -> bytes:
    """Encoded file bytes; ``text`` goes into PNG tEXt chunks, the TIFF ImageDescription or a JPEG comment."""
    if ext == ".png":
        bgr = a[:, :, ::-1] if a.ndim == 3 else a
        ok, buf = cv2.imencode(".png", np.ascontiguousarray(bgr))
        if not ok:
            raise OSError("PNG encoder failed")
        return _with_png_text(buf.tobytes(), text) if text else buf.tobytes()
    bio = io.BytesIO()
    note = _TEXT_MAGIC + json.dumps(text) if text else None
    if ext in (".tif", ".tiff"):
        extra = {"description": note, "metadata": None} if note else {}
        tifffile.imwrite(bio, a, photometric="rgb" if a.ndim == 3 else "minisblack", **extra)
    else:
        extra = {"comment": note.encode("utf-8")} if note else {}
        Image.fromarray(a).save(bio, format="JPEG", quality=jpeg_quality, subsampling=0, **extra)
    return bio.getvalue()


# TIFF descriptions and JPEG comments holding nightflow's text record start with this, then JSON of the dict
_TEXT_MAGIC = "nightflow-text:"


def read_image_text(path: str | os.PathLike[str]) -> dict[str, str]:
    """The text record ``write_image(text=)`` stored: PNG tEXt, TIFF ImageDescription or JPEG comment ({} when
    there is none or the file cannot be read), so outputs in every written format can be checked."""
    p = Path(path)
    ext = p.suffix.lower()
    if ext == ".png":
        return read_png_text(p)
    note = ""
    try:
        if ext in (".tif", ".tiff"):
            with tifffile.TiffFile(p) as tif:
                note = tif.pages[0].description or ""
        elif ext in (".jpg", ".jpeg"):
            with Image.open(p) as im:
                raw = im.info.get("comment", b"")
                note = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    except Exception:  # unreadable or not ours: no record
        return {}
    if not note.startswith(_TEXT_MAGIC):
        return {}
    try:
        data = json.loads(note[len(_TEXT_MAGIC) :])
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def write_image(
    path: str | os.PathLike[str],
    img: np.ndarray | torch.Tensor,
    *,
    bit_depth: int | None = None,
    overwrite: bool = False,
    jpeg_quality: int = 95,
    text: dict[str, str] | None = None,
) -> Path:
    """Write an image atomically (temporary name in the same folder, then ``os.replace``).

    ``img``: H×W×3 / H×W numpy (uint8, uint16, or float in [0, 1]) or a 3×H×W float tensor. ``bit_depth``:
    8 or 16 (PNG/TIFF; JPEG is 8 only) or 32 (float32 TIFF); default: 16 for uint16, else 8. An existing file
    is kept (``UserError``) unless ``overwrite``. ``text``: a record kept in the file (PNG tEXt, TIFF
    description or JPEG comment; ``read_image_text`` reads it back). A write that fails (full disk, read-only or unwritable folder) raises a one-line ``OutputError`` and leaves
    nothing behind.
    """
    p = Path(path)
    ext = p.suffix.lower()
    if ext not in WRITE_EXTENSIONS:
        raise UserError(f"cannot write {p}: unsupported extension '{ext}'; use .png, .tif or .jpg")
    if p.exists() and not overwrite:
        raise UserError(f"{p} already exists; pass --overwrite (overwrite=True) to replace it")
    a = _as_hwc(img)
    depth = bit_depth if bit_depth is not None else (16 if a.dtype == np.uint16 else 8)
    if depth not in (8, 16, 32):
        raise UserError(f"cannot write {p}: bit depth {depth} is not supported; use 8 or 16")
    if ext in (".jpg", ".jpeg") and depth != 8:
        raise UserError(f"cannot write {p}: JPEG is 8-bit only; use .png or .tif for {depth}-bit")
    if depth == 32 and ext not in (".tif", ".tiff"):
        raise UserError(f"cannot write {p}: 32-bit float needs .tif; use bit_depth 8 or 16 for {ext}")
    data = _encode(np.ascontiguousarray(_convert_depth(a, depth)), ext, jpeg_quality, text)
    try:
        with atomic_path(p) as tmp:
            _write_file(tmp, data)
    except OSError as exc:
        raise OutputError(f"cannot write {p}: {output_reason(exc)}") from None
    return p


def _write_file(path: Path, data: bytes) -> None:
    """Write and fsync one file (the single place bytes reach the disk, so tests can inject faults here)."""
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def output_reason(exc: OSError) -> str:
    """A one-line cause and fix for a failed write (the errno's text, then what to do about it)."""
    import errno

    hints = {
        errno.ENOSPC: "the disk is full; free space or choose another -o",
        errno.EDQUOT: "the disk quota is exceeded; free space or choose another -o",
        errno.EROFS: "the filesystem is read-only; choose another -o",
        errno.EACCES: "permission denied; choose a folder you can write to with -o",
        errno.EPERM: "permission denied; choose a folder you can write to with -o",
        errno.ENOTDIR: "a part of the path is a file, not a folder; choose another -o",
        errno.EEXIST: "a part of the path is a file, not a folder; choose another -o",
    }
    return hints.get(exc.errno or -1, _one_line(exc.strerror or exc))


# ---------------------------------------------------------------------------------------------------- listing


def natural_key(text: str) -> tuple:
    """Sort key that orders 'img2' before 'img10' (numbers compared as numbers, letters case-insensitively)."""
    parts = re.split(r"(\d+)", text)
    return tuple(int(s) if i % 2 else s.lower() for i, s in enumerate(parts)), text


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """A visible file with an image extension (case-insensitive); hidden/AppleDouble files are skipped."""
    p = Path(path)
    return p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()


def list_images(
    source: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], *, recursive: bool = False
) -> list[Path]:
    """Image files named by a file, a folder (``recursive`` for subfolders), a glob pattern, or a list of them.

    Sorted naturally, extensions matched case-insensitively. Nothing found raises ``UserError``.
    """
    if not isinstance(source, (str, os.PathLike)):
        out: list[Path] = []
        for item in source:
            out.extend(list_images(item, recursive=recursive))
        return out
    p = Path(source)
    text = str(source)
    if p.is_file():
        if p.suffix.lower() not in IMAGE_EXTENSIONS:
            raise UserError(
                f"{p}: '{p.suffix}' is not a supported image type ({', '.join(IMAGE_EXTENSIONS)})"
            )
        return [p]
    if p.is_dir():
        it = p.rglob("*") if recursive else p.iterdir()
        found = [
            f for f in it if is_image_file(f) and not any(s.startswith(".") for s in f.relative_to(p).parts)
        ]
        if not found:
            raise UserError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder {p}")
        return sorted(found, key=lambda f: natural_key(str(f)))
    if any(c in text for c in "*?["):
        found = [Path(f) for f in glob.glob(text, recursive=True) if is_image_file(f)]
        if not found:
            raise UserError(f"no images match the pattern {text}")
        return sorted(found, key=lambda f: natural_key(str(f)))
    raise UserError(f"{p}: no such file or folder (check the path)")


def check_writable_folder(folder: str | os.PathLike[str]) -> None:
    """Prove that ``folder`` can be created and written *without creating it*: a probe file in the folder, or in
    its nearest existing ancestor, is written and removed. One-line ``OutputError`` with the cause otherwise.

    Why: an unwritable -o, a path below a file or a read-only filesystem must fail before any model work, not
    after the first image has been computed.
    """
    target = Path(folder)
    probe_dir = target
    while not probe_dir.exists() and probe_dir != probe_dir.parent:
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise OutputError(f"cannot write to {target}: {probe_dir} is a file, not a folder; choose another -o")
    probe_file = probe_dir / f".nightflow-probe-{os.getpid()}-{threading.get_ident()}.tmp"
    try:
        _write_file(probe_file, b"")
    except OSError as exc:
        raise OutputError(f"cannot write to {target}: {output_reason(exc)}") from None
    finally:
        probe_file.unlink(missing_ok=True)
