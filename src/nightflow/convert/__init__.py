"""Convert the authors' released checkpoints into nightflow weights files (``nightflow convert``).

One module per architecture (``llflow`` for ``llflow-small`` and ``llflow``, ``ssflow`` for SSFlow, ``uptflow``
for UPT-Flow) builds a plan: which released tensor becomes which
nightflow tensor (by name and shape), and which released tensors are dead weights skipped by name.
:func:`convert_checkpoint` reads the checkpoint with ``torch.load(weights_only=True)`` only, infers the
configuration from the tensors, applies the plan (one line naming the first tensor that does not fit), builds the
model, loads the tensors strictly and writes a self-describing safetensors file whose metadata records the
source's SHA-256 and the whole mapping. ``nightflow.load(OUT)`` and ``--model OUT`` then work everywhere.
Measured equivalence with the official code: ``docs/checkpoints.md``.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

from ._common import ConversionError, apply_plan, lu_factors, read_state_dict

# the architectures --arch accepts (each module also names its released repository and commit)
ARCHS = ("llflow-small", "llflow", "ssflow", "uptflow")


def _module(arch: str) -> ModuleType:
    if arch in ("llflow-small", "llflow"):
        from . import llflow

        return llflow
    if arch == "ssflow":
        from . import ssflow

        return ssflow
    if arch == "uptflow":
        from . import uptflow

        return uptflow
    raise ConversionError(f"unknown --arch {arch!r}; known: {', '.join(ARCHS)}")


def convert_state_dict(state, arch: str, source: str = "", config: Path | None = None):
    """(model, its ModelConfig, mapping rows, skipped dead names) from a released state dict."""
    from ..models import build_any

    mod = _module(arch)
    if config is not None and not mod.TAKES_CONFIG:
        raise ConversionError(
            f"--config {config}: not needed for --arch {arch} (everything is inferred from the tensors)"
        )
    cfg = mod.infer_config(state, arch, source, config)
    model = build_any(cfg)
    expected = model.state_dict()
    plan = mod.build_plan(cfg, expected, arch)
    tensors, rows, skipped = apply_plan(plan, state, expected, source)
    model.load_state_dict(tensors, strict=True)
    return model.eval(), cfg, rows, skipped


def convert_checkpoint(
    src: str | Path, arch: str, out: str | Path, config: Path | None = None
) -> tuple[Path, dict]:
    """Convert ``src`` (the authors' .pth) to nightflow weights at ``out``; returns (out, conversion record)."""
    from ..data.io import file_sha256
    from ..models.checkpoint import save_model

    src = Path(src)
    state = read_state_dict(src)
    model, cfg, rows, skipped = convert_state_dict(state, arch, str(src), config)
    mod = _module(arch)
    record = {
        "source": src.name,
        "source_sha256": file_sha256(src),
        "arch": arch,
        "official_code": f"{mod.REPO}@{mod.COMMIT}",
        "inferred": mod.describe(cfg),
        "tensors_mapped": len(rows),
        "dead_tensors_skipped": skipped,
        "mapping": rows,
    }
    meta = {"nightflow_conversion": json.dumps(record)}
    save_model(model, out, cfg, meta)
    return Path(out), record


__all__ = [
    "ARCHS",
    "ConversionError",
    "convert_checkpoint",
    "convert_state_dict",
    "lu_factors",
    "read_state_dict",
]
