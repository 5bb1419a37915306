"""Run checkpoints: safetensors weights plus a state file, written atomically; keep the last N and the best.

Layout under RUN_DIR/checkpoints/:
  step_0001000/model.safetensors  inference weights (the EMA copy when EMA is on), for ``nightflow.load``
  step_0001000/state.pt           optimiser, schedule, step, epoch, RNG states, config (+ raw weights if EMA)
  best/model.safetensors, best/best.json  weights and score of the best validation round so far

Why a directory per step renamed into place: a run killed while writing leaves at most a hidden temp
directory, never a half-written checkpoint that a resume would pick up.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..atomic import atomic_path, write_text_atomic
from ..errors import UserError

STEP_DIR = re.compile(r"^step_(\d{7,})$")
WEIGHTS = "model.safetensors"
STATE = "state.pt"


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


def _atomic_write_text(text: str, path: Path) -> None:
    write_text_atomic(path, text)


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
            if m and p.is_dir() and (p / WEIGHTS).is_file() and (p / STATE).is_file():
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
            torch.save(state, tmp / STATE)
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
        _atomic_write_text(
            json.dumps({"step": step, "metric": metric, "value": value}) + "\n", best / "best.json"
        )
        return best

    @staticmethod
    def load(step_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(inference weights, state) of one checkpoint directory, with a one-line error if it is damaged."""
        try:
            weights = read_weights(step_dir / WEIGHTS)
            state = torch.load(step_dir / STATE, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, ValueError, EOFError, SafetensorError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UserError(
                f"checkpoint {step_dir} is unreadable ({reason}); "
                "delete that folder to resume from an earlier one"
            ) from exc
        return weights, state
