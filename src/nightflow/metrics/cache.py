"""Where the metric assets live, and the one error that says how to get them.

Why: LPIPS and NIQE read files that ``python -m nightflow.metrics.assets`` creates; this small module is all
they need at run time (the download and conversion code stays out of the import path).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import UserError

FIX = "run `make assets` or `python -m nightflow.metrics.assets`"
LPIPS_NETS = ("alex", "vgg")
CALIBRATION_IMAGES = ("I03", "I04", "I06", "I08", "I19")


def cache_dir() -> Path:
    """``$NIGHTFLOW_CACHE`` if set, else ``~/.cache/nightflow`` (not created here)."""
    env = os.environ.get("NIGHTFLOW_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "nightflow"


def metrics_dir() -> Path:
    """The folder that holds every metric asset."""
    return cache_dir() / "metrics"


def lpips_file(net: str) -> Path:
    return metrics_dir() / f"lpips_{net}_v0.1.safetensors"


def niqe_file() -> Path:
    return metrics_dir() / "niqe_pris_params.npz"


def calibration_file(kind: str, image: str) -> Path:
    """``kind`` = ``ref`` or ``dist``; ``image`` one of CALIBRATION_IMAGES."""
    return metrics_dir() / "calibration" / kind / f"{image}.bmp"


def expected_files() -> list[Path]:
    files = [lpips_file(n) for n in LPIPS_NETS] + [niqe_file()]
    files += [calibration_file(k, i) for k in ("ref", "dist") for i in CALIBRATION_IMAGES]
    return files


def require(path: Path) -> Path:
    """Return ``path`` if it exists, else raise the one-line UserError that says how to fetch it."""
    if not path.is_file():
        raise UserError(f"metric asset missing: {path}; {FIX}")
    return path
