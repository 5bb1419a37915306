"""What every architecture's converter shares: reading a checkpoint safely, the name/shape mapping, LU factors.

A converter builds a *plan*: for every tensor of the nightflow model it will produce, the released tensor it
comes from (name, the shape that tensor must have) and how it is transformed; plus the released tensors that are
dead (built by the official code, never used) and skipped by name. :func:`apply_plan` then walks the checkpoint
in its own order and refuses, with one line naming the tensor, the first one that is neither planned nor dead,
or whose shape does not fit; then any planned tensor the checkpoint lacks.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ..errors import WeightsError

Transform = Callable[[Tensor], dict[str, Tensor]]


class ConversionError(WeightsError):
    """A checkpoint that cannot be converted (pickled code, a tensor that does not fit): one line, exit 2."""


def where(path: str) -> str:
    """The ``path: `` prefix of a refusal (nothing when no file is named)."""
    return f"{path}: " if path else ""


def need(state: dict[str, Tensor], key: str, path: str, arch: str) -> Tensor:
    """``state[key]``, or a one-line refusal naming the missing tensor and the ``--arch`` it was read as."""
    if key not in state:
        raise ConversionError(f"{where(path)}the checkpoint lacks tensor {key}; is it an {arch} checkpoint?")
    return state[key]


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a PyTorch checkpoint, loaded with ``weights_only=True`` (never executing pickled code).

    Accepts a plain state dict, or one wrapped under ``state_dict`` / ``params`` / ``params_ema`` / ``model``
    / ``netG``; a leading ``module.`` (DataParallel) is stripped. Anything else is refused with one line."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError, ValueError, EOFError) as exc:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        if found:
            raise ConversionError(
                f"{path}: refused: torch.load(weights_only=True) cannot read it without running pickled code (it "
                f"needs the pickled object {found.group(1)}); only plain tensor state dicts are converted"
            ) from None
        lines = [ln for ln in re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).splitlines() if ln.strip()]
        raise ConversionError(
            f"{path}: refused: not a PyTorch checkpoint that torch.load(weights_only=True) can read "
            f"({(lines[-1].strip() if lines else type(exc).__name__)[:100]})"
        ) from None
    if isinstance(obj, dict):
        for key in ("state_dict", "params_ema", "params", "model", "netG"):
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, dict) or not obj:
        raise ConversionError(
            f"{path}: refused: the checkpoint holds a {type(obj).__name__}, not a state dict"
        )
    out: dict[str, Tensor] = {}
    for key, value in obj.items():
        if not isinstance(value, Tensor):
            raise ConversionError(
                f"{path}: refused: entry {key!r} is a {type(value).__name__}, not a tensor; pass the network's "
                "state dict"
            )
        out[key.removeprefix("module.")] = value
    return out


@dataclass
class Entry:
    """One released tensor: its name, the shape it must have, and the nightflow tensors made from it."""

    source: str
    shape: tuple[int, ...]
    transform: Transform
    note: str = "copy"
    # an integer buffer (BatchNorm's num_batches_tracked): copied as it is, not as float
    integer: bool = False


@dataclass
class Plan:
    """Every released tensor a converter reads (``entries``) or skips (``dead``: exact names or regexes)."""

    arch: str
    entries: list[Entry] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)  # regular expressions, matched in full
    described: str = ""  # the inferred configuration, for messages ("nf 32, nb 4, K 4")

    def copy(self, source: str, target: str, shape: Iterable[int]) -> None:
        self.entries.append(Entry(source, tuple(shape), lambda t, k=target: {k: t}))

    def copy_integer(self, source: str, target: str, shape: Iterable[int]) -> None:
        """An integer buffer (BatchNorm's ``num_batches_tracked``), copied with its dtype."""
        self.entries.append(Entry(source, tuple(shape), lambda t, k=target: {k: t}, "copy", integer=True))

    def reshape(self, source: str, target: str, shape: Iterable[int], to: Iterable[int]) -> None:
        to = tuple(to)
        self.entries.append(
            Entry(source, tuple(shape), lambda t, k=target: {k: t.reshape(to)}, f"reshape to {list(to)}")
        )

    def invconv(self, source: str, prefix: str, channels: int) -> None:
        """A plain C×C 1×1-conv weight W → nightflow's LU-factored InvConv1x1 under ``prefix``."""
        self.entries.append(
            Entry(source, (channels, channels), lambda t, p=prefix, s=source: lu_factors(t, p, s), "LU of W")
        )


def lu_factors(weight: Tensor, prefix: str, source: str = "") -> dict[str, Tensor]:
    """W = P·L·(U + diag(sign·exp(log_s))) (float64 LU, stored float32): InvConv1x1's perm, sign_s, lower,
    upper, log_s. A singular W is refused."""
    w = weight.double()
    p, lower, upper = torch.linalg.lu(w)
    s = torch.diagonal(upper)
    if bool((s == 0).any()) or not bool(torch.isfinite(s).all()):
        raise ConversionError(
            f"tensor {source or prefix}: the 1×1-conv weight is singular; it cannot be inverted"
        )
    return {
        f"{prefix}.perm": p.float(),
        f"{prefix}.sign_s": torch.sign(s).float(),
        f"{prefix}.lower": torch.tril(lower, -1).float(),
        f"{prefix}.upper": torch.triu(upper, 1).float(),
        f"{prefix}.log_s": torch.log(s.abs()).float(),
    }


def _shape(t: Tensor | tuple[int, ...]) -> list[int]:
    return list(t.shape) if isinstance(t, Tensor) else list(t)


def apply_plan(
    plan: Plan, state: dict[str, Tensor], expected: dict[str, Tensor], path: str | Path
) -> tuple[dict[str, Tensor], list[list], list[str]]:
    """(nightflow tensors, mapping rows [source, [targets], note], skipped dead names) or one-line refusal.

    ``expected``: the state dict of a freshly built nightflow model (buffers it keeps that the release lacks,
    LU masks and ActNorm flags, are taken from it; everything else must come from the checkpoint)."""
    where = f"{path}: " if path else ""
    by_source = {e.source: e for e in plan.entries}
    dead = [re.compile(p) for p in plan.dead]
    cfg = f" ({plan.described})" if plan.described else ""
    out: dict[str, Tensor] = {}
    rows: list[list] = []
    skipped: list[str] = []
    for name, tensor in state.items():
        entry = by_source.get(name)
        if entry is None:
            if any(d.fullmatch(name) for d in dead):
                skipped.append(name)
                continue
            raise ConversionError(
                f"{where}tensor {name} {_shape(tensor)} is not part of the released {plan.arch} network; "
                f"is this a {plan.arch} checkpoint?"
            )
        if tuple(tensor.shape) != entry.shape:
            raise ConversionError(
                f"{where}tensor {name} has shape {_shape(tensor)} but the {plan.arch} network inferred from the "
                f"checkpoint{cfg} needs {list(entry.shape)}"
            )
        if entry.integer:
            if tensor.is_floating_point() or tensor.is_complex():
                raise ConversionError(f"{where}tensor {name} is {tensor.dtype}, not an integer tensor")
            made = entry.transform(tensor)
        elif not tensor.is_floating_point():
            raise ConversionError(f"{where}tensor {name} is {tensor.dtype}, not a float tensor")
        else:
            made = entry.transform(tensor.float())
        for key, value in made.items():
            want = expected.get(key)
            if want is None or tuple(want.shape) != tuple(value.shape):
                raise ConversionError(
                    f"{where}tensor {name} maps to nightflow {key} {_shape(value)}, which the {plan.arch} config "
                    f"does not have with that shape{cfg}"
                )
            out[key] = value.to(want.dtype)
        rows.append([name, sorted(made), entry.note])
    missing = [e.source for e in plan.entries if e.source not in state]
    if missing:
        raise ConversionError(
            f"{where}the checkpoint lacks tensor {missing[0]} ({len(missing)} missing) that the {plan.arch} "
            f"network{cfg} needs; is it a {plan.arch} checkpoint?"
        )
    for key, value in expected.items():
        if key in out:
            continue
        if key.endswith(".initialized"):
            out[key] = torch.ones_like(value)  # ActNorm flags: the loaded values are the initialised ones
        elif key.endswith(".lower_mask"):
            out[key] = value.clone()
        else:
            raise ConversionError(
                f"{where}no released tensor maps to nightflow {key}; the converter is incomplete"
            )
    return out, rows, skipped
