"""The public Python API object returned by ``nightflow.load``: restore, sample and uncertainty on plain images.

Why a wrapper: users hold numpy arrays or PIL images (8-bit, 16-bit, float, grey, RGBA), while the library works
on N×3×H×W float tensors in [0, 1]. :class:`Model` hands images to :mod:`nightflow.pipeline` (the CLI's and web
UI's pipeline too): one converter (:func:`nightflow.data.io.image_to_tensor`, the same kind and dtype back), one
seed rule (:mod:`nightflow.seeding`), tiling, seamless samples and a streaming spread
(:mod:`nightflow.inference`). It works with any restorer of the contract (:mod:`nightflow.models.base`): flows,
learned and classical baselines.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from . import inference, pipeline
from .data.io import ImageInputError, ImageKind, check_finite, image_to_tensor, tensor_to_image
from .models.base import Restorer, temperature_for
from .pipeline import (
    MAX_EXPOSURE,
    MAX_TEMPERATURE,
    SEED_RANGE,
    check_ensemble,
    check_exposure,
    check_max_memory,
    check_seed,
    check_temperature,
    check_tile,
    minimum_tile,
)
from .precision import resolve as resolve_precision

__all__ = [
    "MAX_EXPOSURE",
    "MAX_TEMPERATURE",
    "SEED_RANGE",
    "ImageInputError",
    "ImageKind",
    "Model",
    "check_ensemble",
    "check_exposure",
    "check_max_memory",
    "check_finite",
    "check_seed",
    "check_temperature",
    "check_tile",
    "image_to_tensor",
    "minimum_tile",
    "tensor_to_image",
]


def prefers_channels_last(restorer: torch.nn.Module) -> bool:
    """Whether ``restorer`` is a flow on the CPU whose encoder was measured faster in channels_last memory."""
    from .models.restorer import FlowRestorer

    if not isinstance(restorer, FlowRestorer):
        return False
    param = next(restorer.parameters(), None)
    return param is not None and param.device.type == "cpu" and restorer.channels_last_inference


class Model:
    """A restorer ready for use on images: ``restore``, ``sample``, ``uncertainty``; ``.restorer`` for research.

    ``info`` carries what the loader knows (name, checkpoint path, config, model card); ``device`` moves the
    restorer ("auto" picks CUDA when present; None leaves it where it is).
    """

    def __init__(
        self,
        restorer: torch.nn.Module,
        info: dict[str, Any] | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        if not isinstance(restorer, Restorer):
            raise TypeError(
                f"{type(restorer).__name__} does not implement the restorer contract (nightflow.models.base.Restorer)"
            )
        self.restorer = restorer
        self._folded: tuple[tuple, torch.nn.Module] | None = None  # (parameter versions, folded twin)
        self.info: dict[str, Any] = dict(info or {})
        if device is not None:
            self.to(device)
        self.restorer.eval()

    @property
    def scale(self) -> int:
        """Output size / input size (1, 2 or 4)."""
        return int(self.restorer.scale)

    @property
    def device(self) -> torch.device:
        return inference.module_device(self.restorer)

    @property
    def sample_temperature(self) -> float:
        """The temperature :meth:`sample` and :meth:`uncertainty` use when given none: measured on the weights."""
        return float(self.restorer.sample_temperature)

    def to(self, device: str | torch.device) -> Model:
        """Move the restorer to ``device`` ("auto", "cpu", "cuda", ...) and return self."""
        self.restorer.to(inference.resolve_device(device))
        return self

    @property
    def inference_restorer(self) -> torch.nn.Module:
        """The restorer that :meth:`restore`, :meth:`sample`, :meth:`uncertainty` and ``nightflow enhance`` run: a
        copy of :attr:`restorer` with ActNorm folded into the neighbouring convolutions (:mod:`nightflow.flow.fold`:
        the same output to float32 rounding, a few per cent faster), in eval mode. It is rebuilt whenever the
        restorer's parameters, device or dtype change, so :attr:`restorer` itself stays trainable; a restorer with
        nothing to fold (baselines, ONNX) is used as it is.

        On the CPU, a flow whose encoder was measured faster in channels_last memory
        (``FlowRestorer.channels_last_inference``: LoLiSRFlow 1.02-1.18×, LLFlow 1.27×, UPT-Flow 2.4×, SSFlow
        1.5×: ``docs/performance.md``) runs its twin in channels_last; the output is the same to float32 rounding
        (``tests/test_fold.py``)."""
        from .flow.fold import foldable, folded

        key = tuple((p._version, p.data_ptr(), p.dtype) for p in self.restorer.parameters())
        if self._folded is None or self._folded[0] != key:
            twin = folded(self.restorer) if foldable(self.restorer) else self.restorer
            if twin is not self.restorer and prefers_channels_last(twin):
                twin = twin.to(memory_format=torch.channels_last)
            self._folded = (key, twin)
        return self._folded[1]

    def compile(self, **options: Any) -> Model:
        """Opt-in ``torch.compile`` of the encoder and the coupling subnets (the convolutions) of the current
        :attr:`inference_restorer`. A later change of :attr:`restorer`'s parameters rebuilds that twin
        uncompiled; call this again after it.

        The first restore of each new tile shape compiles (on a 2-core CPU: 74 s for the bundled ×2, for
        1.26×: ``docs/performance.md``); ``options`` go to ``torch.compile``. Returns self."""
        from .encoders.base import Encoder
        from .flow.subnets import ConvSubnet

        for module in self.inference_restorer.modules():
            if isinstance(module, (Encoder, ConvSubnet)):
                module.compile(**options)
        return self

    def __repr__(self) -> str:
        name = self.info.get("name") or self.info.get("path") or type(self.restorer).__name__
        return f"nightflow.Model({name!s}, scale={self.scale}, device={self.device})"

    def _request(
        self,
        temperature: float | None,
        seed: int,
        tile: int | None,
        exposure: float,
        precision: str,
        max_memory: int | None,
        **what: Any,
    ):
        """The pipeline request for these settings; ``temperature`` None (samples and spreads only): the model's
        own sampling temperature (``Restorer.sample_temperature``, measured on its weights)."""
        temperature = temperature_for(self, temperature)
        return pipeline.Request(
            temperature=check_temperature(temperature),
            sample_temperature=check_temperature(temperature),
            seed=check_seed(seed),
            tile=check_tile(tile, self.restorer),
            exposure=check_exposure(exposure),
            precision=resolve_precision(precision, self.restorer, self.device),
            max_memory=check_max_memory(max_memory),
            **what,
        )

    def restore(
        self,
        img: Any,
        temperature: float = 0.0,
        tile: int | None = None,
        seed: int = 0,
        exposure: float = 0.0,
        precision: str = "auto",
        max_memory: int | None = None,
        ensemble: int = 1,
    ) -> Any:
        """Restored image, ``scale``× larger, of the same kind as ``img``.

        ``temperature`` 0 is the deterministic mean path; above 0 a sample seeded by ``seed`` (sample 0 of
        :meth:`sample` with that seed, and the CLI's main output). ``tile``: None picks a tile size by available
        memory, 0 never tiles, >0 is the tile side in input pixels (models that cannot be tiled accept None/0).
        ``exposure`` (EV) brightens (> 0) or darkens (< 0) relative to the model's own estimate (models with
        exposure control). ``precision``: "auto" (bf16 autocast where the hardware runs it natively and the
        model was measured within 1/255 of float32, else float32), "fp32" or "bf16" (:mod:`nightflow.precision`).
        ``max_memory``: bytes an automatic tile size may use (None: a share of the available memory).
        ``ensemble`` (1, 2, 4 or 8; temperature 0 only): average the mean path over that many rotations and
        flips of the input, every second one moved by a pixel so that its block grid falls between the others'
        (:mod:`nightflow.ensemble`), at that many times the cost; 4 holds most of the gain.
        """
        request = self._request(
            temperature,
            seed,
            tile,
            exposure,
            precision,
            max_memory,
            ensemble=check_ensemble(ensemble, check_temperature(temperature)),
        )
        (out,) = pipeline.run(self.inference_restorer, img, request)
        return out.value

    def sample(
        self,
        img: Any,
        n: int = 4,
        temperature: float | None = None,
        seed: int = 0,
        tile: int | None = None,
        exposure: float = 0.0,
        precision: str = "auto",
        max_memory: int | None = None,
    ) -> list[Any]:
        """``n`` different plausible restorations (same kind as ``img``); the same seed gives the same samples
        (deterministic models: ``n`` equal copies). ``temperature`` None: the model's own
        (``Model.sample_temperature``: the one measured best on its weights, its card says which)."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise pipeline.SettingError(f"n must be a whole number >= 1, got {n!r}")
        request = self._request(
            temperature, seed, tile, exposure, precision, max_memory, main=False, samples=tuple(range(int(n)))
        )
        return [out.value for out in pipeline.run(self.inference_restorer, img, request)]

    def uncertainty(
        self,
        img: Any,
        n: int = 8,
        temperature: float | None = None,
        seed: int = 0,
        tile: int | None = None,
        exposure: float = 0.0,
        precision: str = "auto",
        max_memory: int | None = None,
    ) -> np.ndarray:
        """Per-pixel spread across ``n`` samples (std over samples, mean over channels) as an sH×sW float32 array.

        Values are in image intensity units ([0, 1] scale); zero at temperature 0; ``temperature`` None: the
        model's own (:attr:`sample_temperature`). The samples are streamed, never held together.
        """
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
            raise pipeline.SettingError(f"uncertainty needs n >= 2 samples, got {n!r}")
        request = self._request(
            temperature, seed, tile, exposure, precision, max_memory, main=False, spread=int(n)
        )
        (out,) = pipeline.run(self.inference_restorer, img, request)
        return out.value
