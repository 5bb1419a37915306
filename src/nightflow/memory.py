"""Process memory, measured: resident set and its peak (CPU), and what a tile costs per output pixel.

Why the resident set: torch's CPU allocator does not report what it holds, and tracemalloc does not see it, so
the honest figure is the kernel's: ``VmRSS`` and the peak ``VmHWM`` of /proc/self/status, whose peak can be reset
by writing 5 to /proc/self/clear_refs (Linux ≥ 4.0). Freed heap memory is returned to the kernel first
(``malloc_trim``), so a measurement does not hide behind pages the allocator kept from earlier work.

Used by :func:`nightflow.inference.measure_memory` (the auto tiler's probe) and ``benchmarks/bench_memory.py``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import re
from dataclasses import dataclass

# Bytes of working memory per output pixel assumed where nothing was measured (no /proc, or a probe failed), and
# the bound below which small images skip the probe. Measured as untiled peak RSS growth / output pixels at
# 0.25 MP on CPU (benchmarks/bench_inference.py child): lolisrflow-x2-tiny 727, -x4-tiny 634, -x2-paper 1345,
# llflow-small 1075, llflow 2116; rounded up from the largest, so that it errs towards smaller tiles.
ASSUMED_BYTES_PER_OUTPUT_PIXEL = 3 * 1024


@dataclass(frozen=True)
class MemoryModel:
    """Peak working memory of restoring one batch of tiles: ``per_pixel`` bytes per output pixel (a probe counts
    any size-independent cost per pixel too, so large tiles are over- rather than under-estimated)."""

    per_pixel: float
    source: str  # "measured (peak RSS)", "measured (CUDA peak)" or "assumed"

    def need(self, output_pixels: float) -> float:
        return self.per_pixel * output_pixels


ASSUMED = MemoryModel(float(ASSUMED_BYTES_PER_OUTPUT_PIXEL), "assumed")


def _status_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def rss_bytes() -> int | None:
    """Resident set size of this process (None where /proc is not available)."""
    return _status_bytes("VmRSS")


def peak_rss_bytes() -> int | None:
    """Peak resident set size since the start or the last :func:`reset_peak_rss`."""
    return _status_bytes("VmHWM")


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS; False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if not name or not re.search(r"libc\.so", name):
        return None
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        return None
    return lib if hasattr(lib, "malloc_trim") else None  # glibc only


def trim_heap() -> bool:
    """Return freed heap memory to the kernel (glibc ``malloc_trim(0)``); False where there is no glibc."""
    lib = _libc()
    if lib is None:
        return False
    lib.malloc_trim(0)
    return True
