"""Inference precision: float32 everywhere, or bf16 autocast for the encoder and the coupling subnets.

Why bf16 only where it is fast: the convolutions of the encoder and of the coupling/injector subnets are most of
the work, and on CPUs with AMX tiles (and on CUDA) bf16 runs them several times faster. AVX-512-bf16 without AMX
depends on the CPU: on a Xeon whose VM exposes avx512_bf16 but not AMX, oneDNN ran bf16 convolutions at about the
float32 rate and the autocast casts made the bundled ×2 0.7-0.8× as fast as float32; on an AMD EPYC with
avx512_bf16 (Zen 4) the same ×2 ran 1.7× faster and a training step 1.3× faster (``docs/performance.md``). Without
any bf16 units PyTorch emulates bf16 and the same model runs about 75× *slower* (AVX2-only EPYC). So ``auto`` reads
the CPU's flags and vendor: bf16 with AMX, or with avx512_bf16 on AMD; float32 everywhere else.

Why the flow stays exact: under autocast the invertible arithmetic is still float32 (the 1×1 convolutions disable
autocast, the affine maps, ActNorm and log-determinants are element-wise float32 ops that autocast does not
touch, and the coupling's scale and shift are cast to float32 before use: :mod:`nightflow.flow.coupling`).
Each layer inverts its own output to float32 rounding under autocast; a whole encode→decode round trip does not
(a 1e-5 change in a coupling's kept half can flip the bf16 rounding of its subnet's input), which is why the
likelihood and training keep their own ``train.amp`` switch and inference asks for a measured bound instead.

Why per model: ``auto`` also needs the model to be measured within 1/255 of float32 on its mean path
(``restorer.precisions``, pinned by ``tests/test_precision.py`` for every bundled model); SSFlow's filter-adaptive
convolutions are not (1.6/255), so ``auto`` keeps it in float32. ``bf16`` forces bf16 on any model and any
hardware; ``fp32`` forces float32.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch

from .errors import SettingError

PRECISIONS = ("auto", "fp32", "bf16")  # what users may ask for
RESOLVED = ("fp32", "bf16")  # what inference runs
# /proc/cpuinfo flags of CPUs on which oneDNN runs bf16 convolutions faster than float32: AMX tiles, on any vendor
FAST_BF16_FLAGS = frozenset({"amx_bf16"})
# avx512_bf16 without AMX: faster on AMD (Zen 4 EPYC: x2 inference 1.7x, a training step 1.3x), slower on the Intel
# Xeon VM measured (0.7-0.8x end to end with the casts), so it counts only with this vendor
FAST_BF16_VENDOR_FLAGS = {"AuthenticAMD": frozenset({"avx512_bf16"})}


@functools.cache
def _cpuinfo_field(name: str) -> str:
    """The value of the first ``name`` line of /proc/cpuinfo ("" where there is none or it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() == name:
                    return value.strip()
    except OSError:
        pass
    return ""


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where it cannot be read: not Linux)."""
    return frozenset(_cpuinfo_field("flags").split())


def cpu_vendor() -> str:
    """The CPU's vendor_id from /proc/cpuinfo ("GenuineIntel", "AuthenticAMD", ...; "" where it cannot be read)."""
    return _cpuinfo_field("vendor_id")


def fast_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` runs bf16 convolutions faster than float32: CUDA with bf16 support; CPUs with AMX; AMD
    CPUs with avx512_bf16 (measured; an Intel CPU with avx512_bf16 but no AMX was slower)."""
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        flags = cpu_flags()
        vendor_flags = FAST_BF16_VENDOR_FLAGS.get(cpu_vendor(), frozenset())
        return bool(FAST_BF16_FLAGS & flags) or bool(vendor_flags & flags)
    return False


def training_amp(amp: str, device: torch.device | str) -> str:
    """``train.amp`` as a run uses it: ``auto`` becomes ``bf16`` where :func:`fast_bf16` holds, else ``none``;
    any other value is returned as given (the trainer warns about, or falls back from, what the device lacks)."""
    if amp != "auto":
        return amp
    return "bf16" if fast_bf16(device) else "none"


def check_precision(value: str, name: str = "precision") -> str:
    """``value`` if it is one of :data:`PRECISIONS`, else a one-line SettingError."""
    if value not in PRECISIONS:
        raise SettingError(f"{name} must be one of {', '.join(PRECISIONS)}, got {value!r}")
    return value


def resolve(precision: str, restorer: torch.nn.Module, device: torch.device | str) -> str:
    """The precision inference runs for a request: ``fp32``/``bf16`` as asked; ``auto`` → ``bf16`` where the
    device has native bf16 *and* ``restorer.precisions`` lists it (measured within 1/255), else ``fp32``."""
    check_precision(precision)
    if precision != "auto":
        return precision
    return "bf16" if "bf16" in restorer.precisions and fast_bf16(device) else "fp32"


@contextlib.contextmanager
def autocast(precision: str, device: torch.device | str) -> Iterator[None]:
    """The autocast region of a resolved ``precision`` on ``device`` (a no-op for ``fp32``)."""
    if precision not in RESOLVED:
        raise ValueError(f"precision must be resolved to one of {RESOLVED} first, got {precision!r}")
    if precision == "fp32":
        yield
        return
    with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16):
        yield
