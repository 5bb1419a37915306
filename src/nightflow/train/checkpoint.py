"""Run checkpoints: safetensors weights plus a state file, written atomically; keep the last N and the best.

Layout under RUN_DIR/checkpoints/:
  step_0001000/model.safetensors  inference weights (the EMA copy when EMA is on), for ``nightflow.load``
  step_0001000/state.json         optimiser, schedule, step, epoch, RNG states, config (+ raw weights if EMA):
  step_0001000/state.safetensors  the structure as JSON, its tensors in safetensors (no pickle anywhere)
  best/model.safetensors, best/best.json  weights and score of the best validation round so far

Why a directory per step renamed into place: a run killed while writing leaves at most a hidden temp
directory, never a half-written checkpoint that a resume would pick up. Why no pickle: a state file from
elsewhere must never be able to run code, so a damaged one is a one-line error, never advice to unpickle it.
Runs written before this format (``state.pt``) still resume, read with ``weights_only=True``.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..atomic import atomic_path, write_text_atomic
from ..errors import UserError

STEP_DIR = re.compile(r"^step_(\d{7,})$")
WEIGHTS = "model.safetensors"
STATE = "state.json"
STATE_TENSORS = "state.safetensors"
LEGACY_STATE = "state.pt"


def step_dir_name(step: int) -> str:
    return f"step_{step:07d}"


# ----------------------------------------------------------------------------------------------- RNG states
def capture_rng_state(generators: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    """Global torch/numpy/python (and CUDA) RNG states plus named generators, as weights_only-safe data."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "generators": {name: g.get_state() for name, g in (generators or {}).items()},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator] | None = None) -> None:
    """Inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    for name, g in (generators or {}).items():
        if name in state["generators"]:
            g.set_state(state["generators"][name])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------------------------- weights
def save_weights(model: nn.Module, path: Path, model_config: Any | None, metadata: dict[str, Any]) -> None:
    """Self-describing weights via ``nightflow.models.checkpoint.save_model`` given a ModelConfig;
    a plain atomic safetensors file otherwise (baselines and test stand-ins)."""
    if model_config is not None:
        from ..models.checkpoint import save_model

        save_model(model, path, model_config, metadata)
        return
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    meta = {"format": "pt", "nightflow": json.dumps(metadata, default=str)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file, keyed like ``model.state_dict()``."""
    return load_file(str(path))


# ----------------------------------------------------------------------------------------------- state files
def _encode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Plain-JSON skeleton of ``obj``; tensors move to ``tensors`` (tuples and non-string keys are tagged)."""
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, tensors) for k, v in obj.items()}
        return {"__dict__": [[_encode(k, tensors), _encode(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, tensors) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return {"__float__": repr(obj)}
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store a {type(obj).__name__} in a checkpoint state")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`_encode`."""
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__dict__" in obj:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["__dict__"]}
    if "__tuple__" in obj:
        return tuple(_decode(v, tensors) for v in obj["__tuple__"])
    if "__float__" in obj:
        return float(obj["__float__"])
    return {k: _decode(v, tensors) for k, v in obj.items()}


def save_state(state: dict[str, Any], folder: Path) -> None:
    """Write ``state`` as state.json + state.safetensors in ``folder`` (a temp dir renamed into place later)."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _encode(state, tensors)
    save_file(tensors, str(folder / STATE_TENSORS))
    (folder / STATE).write_text(json.dumps({"format": 1, "state": skeleton}), encoding="utf-8")


def load_state(folder: Path) -> dict[str, Any]:
    """Read the state of a checkpoint folder (the JSON + safetensors pair, else a legacy weights-only state.pt)."""
    if not (folder / STATE).is_file():
        return torch.load(folder / LEGACY_STATE, map_location="cpu", weights_only=True)
    doc = json.loads((folder / STATE).read_text(encoding="utf-8"))
    tensors = load_file(str(folder / STATE_TENSORS))
    state = _decode(doc["state"], tensors)
    if not isinstance(state, dict):
        raise ValueError("the state is not a mapping")
    return state


def _has_state(folder: Path) -> bool:
    return ((folder / STATE).is_file() and (folder / STATE_TENSORS).is_file()) or (
        folder / LEGACY_STATE
    ).is_file()


def _tensors_in(obj: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """(dotted path, tensor) for every tensor nested in ``obj``, to name the one that is damaged."""
    if isinstance(obj, torch.Tensor):
        yield prefix or "tensor", obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _tensors_in(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors_in(v, f"{prefix}[{i}]")


def first_non_finite(obj: Any) -> str | None:
    """The path of the first float tensor holding NaN/inf in ``obj``, or None when all are finite."""
    for name, t in _tensors_in(obj):
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return name
    return None


_REQUIRED_STATE = ("step", "optimizer", "schedule", "rng")


# ----------------------------------------------------------------------------------------------- manager
class CheckpointManager:
    """Writes, finds, prunes and reads one run's checkpoints (rank 0 writes, any rank reads)."""

    def __init__(self, run_dir: Path, keep_last: int) -> None:
        self.root = Path(run_dir) / "checkpoints"
        self.keep_last = keep_last

    def steps(self) -> list[int]:
        """Steps of the complete checkpoints present, ascending."""
        if not self.root.is_dir():
            return []
        found = []
        for p in self.root.iterdir():
            m = STEP_DIR.match(p.name)
            if m and p.is_dir() and (p / WEIGHTS).is_file() and _has_state(p):
                found.append(int(m.group(1)))
        return sorted(found)

    def latest(self) -> Path | None:
        steps = self.steps()
        return self.root / step_dir_name(steps[-1]) if steps else None

    def save(
        self,
        step: int,
        inference_model: nn.Module,
        state: dict[str, Any],
        model_config: Any | None,
        metadata: dict[str, Any],
    ) -> Path:
        """Write step_XXXXXXX/ via a temp directory renamed into place, then drop all but the last N."""
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.root / step_dir_name(step)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=self.root))
        try:
            save_weights(inference_model, tmp / WEIGHTS, model_config, metadata)
            save_state(state, tmp)
            if final.exists():  # a step re-done after a resume: replace the stale copy
                trash = self.root / f".{final.name}.old-{os.getpid()}"
                os.replace(final, trash)
                shutil.rmtree(trash, ignore_errors=True)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        self.prune()
        return final

    def prune(self) -> None:
        for step in self.steps()[: -self.keep_last]:
            shutil.rmtree(self.root / step_dir_name(step), ignore_errors=True)
        for p in self.root.iterdir():  # leftovers of writes interrupted by a kill
            if p.name.startswith(".step_") and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)

    def save_best(
        self, step: int, metric: str, value: float, model: nn.Module, model_config: Any | None, metadata: dict
    ) -> Path:
        """Replace checkpoints/best with the given weights and score (each file written atomically)."""
        best = self.root / "best"
        best.mkdir(parents=True, exist_ok=True)
        save_weights(model, best / WEIGHTS, model_config, metadata)
        write_text_atomic(
            best / "best.json", json.dumps({"step": step, "metric": metric, "value": value}) + "\n"
        )
        return best

    def read_best(self) -> dict[str, Any] | None:
        """The score recorded in best/best.json ({"step", "metric", "value"}), None if absent or unreadable."""
        path = self.root / "best" / "best.json"
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(info, dict) or not isinstance(info.get("value"), (int, float)):
            return None
        if not (self.root / "best" / WEIGHTS).is_file():
            return None
        return {"metric": info.get("metric", "psnr"), "value": float(info["value"]), "step": info.get("step")}

    @staticmethod
    def load(step_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(inference weights, state) of one checkpoint directory, with a one-line error if it is damaged.

        Damaged means unreadable, missing a part of the state, or holding NaN/inf in any tensor (resuming would
        silently train on, or export, garbage).
        """
        fix = "delete that folder to resume from an earlier one"
        try:
            weights = read_weights(step_dir / WEIGHTS)
        except Exception as exc:  # safetensors raises several kinds; never a traceback for a damaged file
            raise UserError(f"checkpoint {step_dir} is unreadable ({_reason(exc)}); {fix}") from None
        try:
            state = load_state(step_dir)
        except Exception as exc:  # includes UnpicklingError, whose text advises unsafe loading: never shown
            raise UserError(
                f"checkpoint {step_dir} has an unreadable state file ({_reason(exc)}); {fix}"
            ) from None
        missing = [k for k in _REQUIRED_STATE if k not in state]
        if missing:
            raise UserError(f"checkpoint {step_dir} has an incomplete state (no {', '.join(missing)}); {fix}")
        bad = first_non_finite(weights) or first_non_finite(state)
        if bad is not None:
            raise UserError(f"checkpoint {step_dir} holds NaN/inf values in {bad}; {fix}")
        return weights, state


def _reason(exc: BaseException) -> str:
    """A short cause for a damaged file; library texts that suggest unpickling untrusted data are dropped."""
    import pickle

    if isinstance(exc, (pickle.UnpicklingError, EOFError)):
        return "corrupt or truncated data"
    text = " ".join(str(exc).split())
    if not text or "weights_only" in text or "pickle" in text.lower():
        return type(exc).__name__
    return text[:160]
