"""Argument types shared by several subcommands (so ``--tile`` means the same everywhere)."""

from __future__ import annotations

import argparse
import math
import re


def tile_size(value: str) -> int | None:
    """``--tile``: "auto" (None: tile only when the image does not fit in memory), 0 = never, else pixels."""
    if value == "auto":
        return None
    try:
        tile = int(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number of pixels, got '{value}'") from exc
    if tile < 0:
        raise argparse.ArgumentTypeError("tile size must be >= 0 (0 = never tile)")
    return tile


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def memory_size(value: str) -> int | None:
    """``--max-memory``: "auto" (None: a share of the memory available) or bytes, with K/M/G/T (binary) units,
    e.g. 2G, 1500M."""
    if value == "auto":
        return None
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(?:I?B)?\s*", value.upper())
    if not match:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a size such as 2G or 1500M, got '{value}'")
    size = float(match.group(1)) * _UNITS[match.group(2)]
    if not math.isfinite(size) or size < 1 << 20:
        raise argparse.ArgumentTypeError(f"--max-memory must be at least 1M, got '{value}'")
    return int(size)
