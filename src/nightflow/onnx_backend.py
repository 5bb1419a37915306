"""Run an exported restore path (:mod:`nightflow.export`) with onnxruntime, through the same pipeline as PyTorch.

Why a restorer stand-in: :class:`OnnxRestorer` honours the restorer contract (:mod:`nightflow.models.base`:
``scale``, ``sizes``, ``tiling``, ``context(lq, exposure)``, ``restore(lq, temperature, noise, context=)``), so
tiling, blending, seeded samples, the uncertainty map and the API's image conversions are the very code the
PyTorch backend runs; the whole-image thumbnail is computed once per image by :func:`nightflow.context.thumbnail`
and handed to every tile, as in PyTorch.

Temperatures: a graph is exported at one temperature. A runner built from a zoo model or checkpoint exports the
temperatures it is asked for on first use (cached under ``$NIGHTFLOW_CACHE/onnx``, keyed by the weights' hash);
one built from a ``.onnx`` file runs that file's temperature only.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .context import thumbnail
from .errors import ConfigError, ModelNotFoundError, UserError, WeightsError
from .export import META_KEY
from .models.base import SAMPLE_TEMPERATURE, SizeSpec, TilingSpec, temperature_for


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise UserError("the onnx backend needs onnxruntime: pip install 'nightflow[onnx]'") from None
    return onnxruntime


@dataclass(frozen=True)
class OnnxContext:
    """The whole image's thumbnail and EV shift: all an exported graph needs of the global statistics."""

    thumb: Tensor
    exposure: Tensor

    @property
    def batch(self) -> int:
        return int(self.thumb.shape[0])

    def repeat(self, k: int) -> OnnxContext:
        return (
            self
            if k == 1
            else replace(self, thumb=self.thumb.repeat(k, 1, 1, 1), exposure=self.exposure.repeat(k))
        )

    def to(self, device: torch.device | str) -> OnnxContext:
        return self


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON description :func:`nightflow.export.export_onnx` stored in an ONNX file; WeightsError otherwise."""
    session = _session(Path(path))
    return _metadata(session, Path(path))


def _session(path: Path) -> Any:
    ort = _ort()
    if not path.is_file():
        raise ModelNotFoundError(f"ONNX file not found: {path}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())  # OMP_NUM_THREADS=1 means one here too
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for bad files
        raise WeightsError(
            f"{path}: not a readable ONNX model ({' '.join(str(exc).split())[:200]})"
        ) from None


def _metadata(session: Any, path: Path) -> dict[str, Any]:
    text = session.get_modelmeta().custom_metadata_map.get(META_KEY)
    try:
        meta = json.loads(text) if text else None
    except ValueError:
        meta = None
    if not isinstance(meta, dict) or not {"scale", "pad_multiple", "temperature"} <= set(meta):
        raise WeightsError(
            f"{path}: no nightflow metadata; export it with `nightflow export MODEL --onnx FILE`"
        )
    return meta


class OnnxRestorer(nn.Module):
    """onnxruntime sessions of one model, one per temperature, behind the restorer contract."""

    stochastic = True
    needs_target = False
    dtypes = (torch.float32,)
    precisions: tuple[str, ...] = ("fp32",)  # the exported graphs are float32

    def __init__(
        self,
        files: dict[float, Path],
        exporter: Callable[[float], Path] | None = None,
        sample_temperature: float | None = None,
    ) -> None:
        """``sample_temperature``: the model's default for samples (None: the one the files' metadata records;
        files from before that record: ``SAMPLE_TEMPERATURE``)."""
        super().__init__()
        if not files:
            raise ValueError("OnnxRestorer needs at least one ONNX file")
        self._exporter = exporter
        self._sessions: dict[float, Any] = {}
        self._meta: dict[float, dict[str, Any]] = {}
        self.files: dict[float, Path] = {}
        for path in files.values():
            self._add(Path(path))
        meta = next(iter(self.meta.values()))
        self.scale = int(meta["scale"])
        self.pad_multiple = int(meta["pad_multiple"])
        self.has_exposure = bool(meta.get("has_exposure", False))
        recorded = float(meta.get("sample_temperature", SAMPLE_TEMPERATURE))
        self.sample_temperature = recorded if sample_temperature is None else float(sample_temperature)
        self.sizes = SizeSpec(multiple=self.pad_multiple)
        # files from before the tiling metadata: the pad grid and the encoders' default margin
        self.tiling = TilingSpec(
            tileable=True,
            grid=int(meta.get("tile_grid", self.pad_multiple)),
            margin=int(meta.get("tile_margin", 12)),
            min_tile=int(meta.get("min_tile", self.pad_multiple)),
        )

    @property
    def meta(self) -> dict[float, dict[str, Any]]:
        return self._meta

    def _add(self, path: Path) -> None:
        session = _session(path)
        meta = _metadata(session, path)
        t = float(meta["temperature"])
        self._sessions[t], self.files[t], self._meta[t] = session, path, meta

    def _session_for(self, temperature: float) -> Any:
        t = float(temperature)
        if t not in self._sessions:
            if self._exporter is None:
                have = ", ".join(f"{k:g}" for k in sorted(self._sessions))
                raise UserError(
                    f"this ONNX file was exported at temperature {have}, not {t:g}; export one at {t:g} "
                    f"(nightflow export MODEL --onnx FILE --temperature {t:g}) or use --model NAME"
                )
            self._add(self._exporter(t))
        return self._sessions[t]

    def context(self, lq: Tensor, exposure: float = 0.0) -> OnnxContext:
        """Thumbnail of the whole (unpadded) images, as :meth:`Encoder.make_context` computes it."""
        if exposure and not self.has_exposure:
            raise ConfigError("this model has no exposure control (no exposure head); leave exposure at 0")
        n = lq.shape[0]
        return OnnxContext(thumbnail(lq).float(), torch.full((n,), float(exposure), dtype=torch.float32))

    def restore(
        self,
        lq: Tensor,
        temperature: float = 0.0,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
        context: OnnxContext | None = None,
        target: Tensor | None = None,
    ) -> Tensor:
        """N×3×sH×sW in [0, 1], like :meth:`FlowRestorer.restore`; pads to the grid and crops back
        (``target`` is accepted for the contract and never read)."""
        session = self._session_for(temperature)
        ctx = self.context(lq) if context is None else context
        n, _, h, w = lq.shape
        m, s = self.pad_multiple, self.scale
        ph, pw = (-h) % m, (-w) % m
        padded = F.pad(lq.float(), (0, pw, 0, ph), mode="replicate") if ph or pw else lq.float()
        feed = {"lq": padded, "thumb": ctx.thumb, "exposure": ctx.exposure}
        if temperature > 0:
            if noise is None:
                noise = torch.randn((n, 3, s * h, s * w), generator=generator)
            feed["noise"] = F.pad(noise.float(), (0, s * pw, 0, s * ph))
        wanted = {i.name for i in session.get_inputs()}
        arrays = {k: np.ascontiguousarray(v.detach().cpu().numpy()) for k, v in feed.items() if k in wanted}
        (out,) = session.run(["hq"], arrays)
        return torch.from_numpy(out)[:, :, : s * h, : s * w].clamp(0.0, 1.0)

    def sample(
        self,
        lq: Tensor,
        n: int = 4,
        temperature: float | None = None,
        generator: torch.Generator | None = None,
        context: OnnxContext | None = None,
    ) -> Tensor:
        """``n`` samples at ``temperature`` (None: :attr:`sample_temperature`), n×N×3×sH×sW (one graph run
        each)."""
        temperature = temperature_for(self, temperature)
        ctx = self.context(lq) if context is None else context
        return torch.stack(
            [self.restore(lq, temperature, generator=generator, context=ctx) for _ in range(n)]
        )


def cache_folder() -> Path:
    from .metrics.cache import cache_dir

    return cache_dir() / "onnx"


def load_onnx(name_or_path: str | Path, device: str = "cpu", opset: int | None = None):
    """A :class:`nightflow.api.Model` running on onnxruntime: from a ``.onnx`` file, or from a zoo name /
    checkpoint whose graphs are exported (and cached by weights hash) for each temperature asked for."""
    from .api import Model
    from .data.io import file_sha256
    from .export import DEFAULT_OPSET, export_onnx
    from .models.zoo import load_restorer

    if str(device) not in ("cpu", "auto"):
        raise UserError(f"the onnx backend runs on the CPU; use --device cpu (or auto), not {device}")
    _ort()
    path = Path(str(name_or_path)).expanduser()
    if path.suffix.lower() == ".onnx":
        restorer = OnnxRestorer({0.0: path})
        return Model(restorer, {"name": str(name_or_path), "path": str(path), "backend": "onnx"})
    torch_restorer, info = load_restorer(name_or_path, "cpu")
    weights = info.get("path")
    digest = file_sha256(weights) if weights and Path(weights).is_file() else None
    op = opset or DEFAULT_OPSET

    def exporter(t: float) -> Path:
        key = (digest or "unhashed")[:16]
        target = cache_folder() / f"{key}-t{t:g}-op{op}.onnx"
        if digest is None or not target.is_file():
            export_onnx(torch_restorer, target, t, op, {**info, "weights_sha256": digest})
        return target

    restorer = OnnxRestorer({0.0: exporter(0.0)}, exporter, torch_restorer.sample_temperature)
    return Model(restorer, {**info, "backend": "onnx"})
