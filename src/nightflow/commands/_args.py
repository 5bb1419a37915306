"""Argument types shared by several subcommands (so ``--tile`` means the same everywhere)."""

from __future__ import annotations

import argparse


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
