"""ONNX export of a flow's restore path: encoder + flow decode at a fixed temperature, dynamic height and width.

Why this graph and not the whole pipeline: the model's global statistics come from a 48×48 thumbnail of the
*whole* image (:func:`nightflow.context.thumbnail`), and tiles must all share it. So the graph takes the
thumbnail as an input — ``(lq, thumb[, exposure][, noise]) → hq`` — and the caller computes it once per image
with the same function PyTorch inference uses (:mod:`nightflow.onnx_backend` does, and tiles through
:mod:`nightflow.inference` exactly as the PyTorch backend does). ``lq`` must already be padded (replicate) to
the model's ``sizes.multiple``; ``noise`` (standard normal, image layout, s× the size of ``lq``) is an input only
when the temperature is above 0; ``exposure`` (EV shift of the model's estimate) only for models with an
exposure head. Everything the runner needs (scale, pad multiple, tiling grid, margin and minimum tile,
temperature, weights hash) is stored in the file's metadata.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import __version__, seeding
from .errors import SettingError, UserError

DEFAULT_OPSET = 17
MIN_OPSET = 16  # ScatterElements with reduction="add" (the histogram table) needs opset 16
MAX_OPSET = 20
META_KEY = "nightflow"  # metadata_props key holding the JSON description


class RestorePath(nn.Module):
    """The exported function: padded LR batch + whole-image thumbnail (+ EV shift) (+ noise) → HR in [0, 1]."""

    def __init__(self, restorer: nn.Module, temperature: float) -> None:
        super().__init__()
        self.restorer = restorer
        self.temperature = float(temperature)
        self.uses_exposure = bool(restorer.has_exposure)
        self.uses_noise = self.temperature > 0

    def forward(self, lq: Tensor, thumb: Tensor, *extra: Tensor) -> Tensor:
        """``extra``: ``exposure`` (N EV shifts) when the model has an exposure head, then ``noise`` when T > 0."""
        rest = list(extra)
        exposure = rest.pop(0) if self.uses_exposure else None
        noise = rest.pop(0) if self.uses_noise else None
        r = self.restorer
        encoder = r.encoder
        if exposure is not None:
            # the estimate plus the user's shift, given as the gain: what make_context does for a float shift
            ctx = encoder.make_context(lq, thumb=thumb, log2_gain=encoder.exposure_head(thumb) + exposure)
        else:
            ctx = encoder.make_context(lq, thumb=thumb)
        cond = r.condition(lq, ctx)
        if noise is None:
            noise = lq.new_zeros(lq.shape[0], 3, lq.shape[2] * r.scale, lq.shape[3] * r.scale)
        out = r.flow.sample(cond.features, r._prior(cond.color_map), self.temperature, noise=noise)
        return out.clamp(0.0, 1.0)


def check_exportable(restorer: nn.Module) -> None:
    """Only conditional flows (:class:`~nightflow.models.restorer.FlowRestorer`: encoder + flow) export;
    learned and classical baselines are refused with one line."""
    from .models.restorer import FlowRestorer

    if not isinstance(restorer, FlowRestorer):
        raise UserError(
            f"{type(restorer).__name__} is not a conditional flow; only flow models (nightflow models: "
            "lolisrflow-*, llflow*, uptflow*, ssflow-tiny) export to ONNX"
        )
    if not restorer.encoder.onnx_exportable:
        raise UserError(
            f"{type(restorer.encoder).__name__} pools each input at its own size (SSFlow's released 'image' "
            "pooling), which an ONNX graph with dynamic sizes cannot express; export a model with "
            "'pooling: context' (ssflow-tiny)"
        )


def check_opset(opset: int) -> int:
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise SettingError(f"--opset must be a whole number in {MIN_OPSET}..{MAX_OPSET}, got {opset!r}")
    return opset


def metadata(
    restorer: nn.Module, temperature: float, opset: int, info: dict[str, Any] | None
) -> dict[str, Any]:
    """What the ONNX runner must know about the graph (stored as JSON in the model's metadata)."""
    from .context import CONTEXT_SIZE

    info = info or {}
    tiling = restorer.tiling
    return {
        "nightflow": __version__,
        "model": info.get("name") or type(restorer).__name__,
        "weights_sha256": info.get("weights_sha256"),
        "scale": int(restorer.scale),
        "pad_multiple": int(restorer.sizes.multiple),
        "min_tile": int(tiling.min_tile),
        "tile_grid": int(tiling.grid),
        "tile_margin": int(tiling.margin),
        "temperature": float(temperature),
        "sample_temperature": float(restorer.sample_temperature),
        "has_exposure": bool(restorer.has_exposure),
        "context_size": CONTEXT_SIZE,
        "opset": opset,
    }


def export_onnx(
    restorer: nn.Module,
    path: str | Path,
    temperature: float = 0.0,
    opset: int = DEFAULT_OPSET,
    info: dict[str, Any] | None = None,
) -> Path:
    """Write the restore path of ``restorer`` at ``temperature`` to ``path`` (atomically) and return it."""
    from .atomic import atomic_path
    from .context import thumbnail
    from .pipeline import check_temperature

    check_exportable(restorer)
    temperature = check_temperature(temperature, "--temperature")
    opset = check_opset(opset)
    try:
        import onnx
    except ImportError:
        raise UserError("ONNX export needs the onnx package: pip install 'nightflow[onnx]'") from None
    restorer = restorer.to("cpu").eval()
    multiple = int(restorer.sizes.multiple)
    side = 2 * multiple * max(1, 32 // multiple)
    lq = torch.rand(1, 3, side, side, generator=seeding.generator(0)) * 0.3
    args: list[Tensor] = [lq, thumbnail(lq)]
    names = ["lq", "thumb"]
    axes: dict[str, dict[int, str]] = {"lq": {0: "n", 2: "h", 3: "w"}, "thumb": {0: "n"}}
    if restorer.has_exposure:
        args.append(torch.zeros(1))
        names.append("exposure")
        axes["exposure"] = {0: "n"}
    if temperature > 0:
        s = int(restorer.scale)
        args.append(torch.randn(1, 3, side * s, side * s, generator=seeding.generator(1)))
        names.append("noise")
        axes["noise"] = {0: "n", 2: "sh", 3: "sw"}
    axes["hq"] = {0: "n", 2: "sh", 3: "sw"}
    module = RestorePath(restorer, temperature).eval()
    target = Path(path)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python-side shape checks: expected
        module(*args)  # fills the 1×1-conv inverse caches, so the graph holds them as constants
        with atomic_path(target) as tmp:
            torch.onnx.export(
                module,
                tuple(args),
                str(tmp),
                dynamo=False,
                opset_version=opset,
                input_names=names,
                output_names=["hq"],
                dynamic_axes=axes,
                external_data=False,
            )
            graph = onnx.load(str(tmp))
            entry = graph.metadata_props.add()
            entry.key, entry.value = META_KEY, json.dumps(metadata(restorer, temperature, opset, info))
            onnx.save(graph, str(tmp))
    return target
