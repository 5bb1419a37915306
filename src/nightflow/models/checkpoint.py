"""Self-describing weights files: a safetensors file whose metadata holds the model's config as JSON.

Why: ``nightflow.load(path)`` must rebuild any model the trainer wrote without a separate config file, and a
bundled weights file must say what it is. Writes go to a temporary name and are renamed (atomic).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..atomic import atomic_path
from ..config import from_dict, to_dict
from ..errors import UserError

CONFIG_KEY = "nightflow_model_config"
KIND_KEY = "nightflow_model_kind"


def save_model(
    model: nn.Module, path: str | Path, config: Any, metadata: dict[str, Any] | None = None
) -> Path:
    """Write ``model``'s state dict and ``config`` (a ModelConfig or another registered model config) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    meta = {
        str(k): v if isinstance(v, str) else json.dumps(v, default=str) for k, v in (metadata or {}).items()
    }
    meta[CONFIG_KEY] = json.dumps(to_dict(config))
    meta[KIND_KEY] = model_kind(config)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def model_kind(config: Any) -> str:
    from . import MODEL_KINDS

    for kind, (cfg_cls, _) in MODEL_KINDS.items():
        if isinstance(config, cfg_cls):
            return kind
    raise TypeError(f"no model kind registered for config type {type(config).__name__}")


def read_metadata(path: str | Path) -> dict[str, str]:
    """The safetensors metadata of ``path`` (one-line UserError if the file is not a readable weights file)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable safetensors weights file ({exc})") from exc


def load_config(path: str | Path) -> Any:
    """The model config stored in a weights file."""
    from . import MODEL_KINDS

    meta = read_metadata(path)
    if CONFIG_KEY not in meta:
        raise UserError(f"{path}: weights file has no nightflow model config; was it written by nightflow?")
    kind = meta.get(KIND_KEY, "flow")
    if kind not in MODEL_KINDS:
        raise UserError(
            f"{path}: unknown model kind '{kind}' (this nightflow knows {', '.join(MODEL_KINDS)})"
        )
    return from_dict(MODEL_KINDS[kind][0], json.loads(meta[CONFIG_KEY]))


def load_model(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model stored in ``path`` and load its weights (ActNorm layers come back initialised)."""
    from . import MODEL_KINDS

    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights file not found: {path}")
    config = load_config(path)
    model = MODEL_KINDS[model_kind(config)][1](config)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise UserError(f"{path}: cannot read weights ({exc})") from exc
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UserError(
            f"{path}: weights do not match the stored config ({len(missing)} missing, {len(unexpected)} unexpected "
            f"tensors, e.g. {(missing or unexpected)[0]}); the file is corrupt or from an incompatible version"
        )
    return model.to(device).eval()
