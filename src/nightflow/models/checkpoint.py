"""Self-describing weights files: a safetensors file whose metadata holds the model's config as JSON.

Why: ``nightflow.load(path)`` must rebuild any model the trainer wrote without a separate config file, and a
bundled weights file must say what it is. Writes go to a temporary name and are renamed (atomic).

Loading trusts nothing in the file: the stored config is parsed strictly, the model is first built on the
``meta`` device (no memory) and every stored tensor's name, shape and dtype is checked against it, and every
float tensor is checked for NaN/inf, all before the real model is allocated. A tampered or corrupt file is one
``WeightsError`` line naming the tensor, never a traceback, a 40 GB allocation or a black image.
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
from ..errors import ConfigError, ModelNotFoundError, WeightsError

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
    """The safetensors metadata of ``path`` (one-line WeightsError if the file is not a readable weights file)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{path}: not a readable safetensors weights file ({_one_line(exc)})") from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def load_config(path: str | Path) -> Any:
    """The model config stored in a weights file (strict: a bad or tampered config is a WeightsError)."""
    from . import MODEL_KINDS

    meta = read_metadata(path)
    if CONFIG_KEY not in meta:
        raise WeightsError(
            f"{path}: weights file has no nightflow model config; was it written by nightflow?"
        )
    kind = meta.get(KIND_KEY, "flow")
    if kind not in MODEL_KINDS:
        raise WeightsError(
            f"{path}: unknown model kind '{kind}' (this nightflow knows {', '.join(MODEL_KINDS)})"
        )
    try:
        data = json.loads(meta[CONFIG_KEY])
    except ValueError as exc:
        raise WeightsError(
            f"{path}: the stored model config is not valid JSON ({exc}); the file is corrupt"
        ) from None
    if not isinstance(data, dict):
        raise WeightsError(f"{path}: the stored model config is not a mapping; the file is corrupt")
    try:
        return from_dict(MODEL_KINDS[kind][0], data)
    except (ConfigError, TypeError, ValueError) as exc:
        raise WeightsError(f"{path}: the stored model config is invalid ({_one_line(exc)})") from None


def _expected_tensors(config: Any) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Name → (shape, dtype) of the model ``config`` describes, built on the meta device (allocates nothing)."""
    from . import build_any

    with torch.device("meta"):
        model = build_any(config)
    return {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}


def _stored_tensors(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """Name → (shape, safetensors dtype name) from the file's header, without reading tensor data."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: (tuple(f.get_slice(k).get_shape()), str(f.get_slice(k).get_dtype())) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{path}: cannot read weights ({_one_line(exc)})") from None


_FLOAT_NAMES = {"F16", "BF16", "F32", "F64"}
_EXACT_NAMES = {torch.bool: "BOOL", torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8"}


def _dtype_ok(want: torch.dtype, stored: str) -> bool:
    """Float parameters may be stored in any float precision (cast on load); everything else exactly."""
    if want.is_floating_point:
        return stored in _FLOAT_NAMES
    return _EXACT_NAMES.get(want) == stored


def check_tensors(path: Path, config: Any) -> None:
    """Every stored tensor's name, shape and dtype against the config, before the real model is built."""
    try:
        expected = _expected_tensors(config)
    except Exception:  # a layer that cannot be built on "meta": the strict load after the real build checks
        return
    stored = _stored_tensors(path)
    missing = [k for k in expected if k not in stored]
    unexpected = [k for k in stored if k not in expected]
    if missing or unexpected:
        raise WeightsError(
            f"{path}: weights do not match the stored config ({len(missing)} missing, {len(unexpected)} unexpected "
            f"tensors, e.g. {(missing or unexpected)[0]}); the file is corrupt or from an incompatible version"
        )
    for name, (shape, dtype) in expected.items():
        got_shape, got_dtype = stored[name]
        if got_shape != shape:
            raise WeightsError(
                f"{path}: tensor {name} has shape {list(got_shape)} but the stored config needs {list(shape)}; "
                "the file is corrupt or its config was edited"
            )
        if not _dtype_ok(dtype, got_dtype):
            raise WeightsError(
                f"{path}: tensor {name} is stored as {got_dtype} but the model needs {str(dtype).removeprefix('torch.')}; "
                "the file is corrupt or was converted wrongly"
            )


def check_finite_tensors(path: str | Path, tensors: dict[str, torch.Tensor]) -> None:
    """One pass over the float tensors: NaN/inf weights would decode every image to black."""
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise WeightsError(
                f"{path}: tensor {name} holds {bad} NaN/inf value(s); the file is corrupt (re-copy or re-train it)"
            )


def load_model(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model stored in ``path`` and load its weights (ActNorm layers come back initialised).

    The file is validated completely (config, tensor names/shapes/dtypes, finiteness) before the model is built.
    """
    from . import build_any

    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"weights file not found: {path}")
    config = load_config(path)
    check_tensors(path, config)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{path}: cannot read weights ({_one_line(exc)})") from None
    check_finite_tensors(path, state)
    try:
        model = build_any(config)
    except (ValueError, TypeError, RuntimeError) as exc:  # e.g. a negative width in an edited config
        raise WeightsError(
            f"{path}: the stored model config cannot be built ({_one_line(exc)[:200]})"
        ) from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # a check above should have caught it; never a multi-line torch report
        raise WeightsError(
            f"{path}: weights do not match the stored config ({_one_line(exc)[:200]})"
        ) from None
    return model.to(device).eval()
