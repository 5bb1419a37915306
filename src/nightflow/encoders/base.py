"""The encoder contract: low-light LR image → one conditioning feature map per flow level + an HR colour map.

Why a shared base: FlowRestorer must be able to swap encoders without knowing which one it holds, so the
shapes (level l at HR/2^(l+1), finest first) and the size checks live in one place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..context import AttentionStore, ImageContext, histogram_lut, oracle_log2_gain, thumbnail
from ..errors import ConfigError
from ..maps import ImageValueError
from .exposure import ExposureHead

SCALES = (1, 2, 4)


@dataclass
class EncoderOutput:
    """Conditioning for the flow.

    ``features[l]`` is N×C_l×(sH/2^(l+1))×(sW/2^(l+1)), finest first; ``color_map`` is the predicted HR
    colour-ratio map N×3×sH×sW (positive, sums to 1 over channels; SSFlow's ``oatt_unet``: an unconstrained
    image, as released) or None. Either way it is the prior mean of the flow's top latent (squeezed).
    """

    features: list[torch.Tensor]
    color_map: torch.Tensor | None


class Encoder(nn.Module):
    """Base class: holds ``scale``, ``levels``, ``out_channels``, ``input_multiple``; checks input sizes; builds
    the whole-image context (:mod:`nightflow.context`) every encoder receives.

    Subclasses with exposure control create ``self.exposure_head``; those with global attention override
    :meth:`_context_pass` to record their attention maps on the thumbnail.
    """

    out_channels: list[int]
    supported_scales: tuple[int, ...] = SCALES  # SSFlow's U-Net is ×1 only
    input_multiple: int = 1
    # padding / tile-origin multiple under which features are shift-consistent (internal downsampling grid)
    grid_multiple: int = 1
    # LR px of a tile edge whose output differs from the whole image's beyond 1/255 (measured per encoder with
    # scripts/measure_tiling.py): tiled inference discards that much of every inner tile edge
    tile_margin: int = 12
    # False: the encoder pools each input on its own (global statistics not taken from the whole-image context),
    # so tiles cannot agree with the whole image and tiled inference is refused (SSFlow's released pooling)
    tileable: bool = True
    # False: some layer's shape arithmetic depends on the input size in a way an ONNX graph with dynamic sizes
    # cannot express (adaptive pooling of the map itself); export is refused with one line
    onnx_exportable: bool = True
    # True only where measured: the bundled weights' mean path under bf16 autocast stays within 1/255 of float32
    # (tests/test_precision.py), so `--precision auto` may use bf16 on hardware where bf16 is fast (AMX, AMD avx512_bf16, CUDA)
    bf16_inference: bool = False
    # True only where measured: inference on the CPU runs faster with the folded twin in channels_last (NHWC)
    # memory, output within float32 rounding (benchmarks/bench_optimizations.py, docs/performance.md)
    channels_last_inference: bool = False

    def __init__(self, scale: int, levels: int) -> None:
        super().__init__()
        if scale not in self.supported_scales:
            raise ConfigError(
                f"{type(self).__name__} supports scales {list(self.supported_scales)}, got {scale!r}; "
                "pick a supported scale"
            )
        if not isinstance(levels, int) or levels < 1:
            raise ConfigError(f"levels must be a positive integer, got {levels!r}")
        self.scale = scale
        self.levels = levels
        self.exposure_head: ExposureHead | None = None  # subclasses with exposure control set one

    @property
    def has_exposure(self) -> bool:
        """Whether this encoder applies an exposure gain (and so honours ``exposure`` shifts)."""
        return self.exposure_head is not None

    def make_context(
        self,
        lq: torch.Tensor,
        exposure: float = 0.0,
        *,
        thumb: torch.Tensor | None = None,
        log2_gain: torch.Tensor | None = None,
    ) -> ImageContext:
        """Context of the *whole* images ``lq`` (N×3×H×W), or of ready ``thumb`` nails (training items carry
        the thumbnail of the image they were cut from). ``log2_gain`` overrides the estimate (training: the
        oracle gain); ``exposure`` (EV) shifts whichever gain is used."""
        given_thumb = thumb
        if thumb is None:
            thumb = thumbnail(lq)
        thumb = thumb.float()
        estimate = gain = None
        if self.exposure_head is not None:
            estimate = self.exposure_head(thumb)
            gain = estimate if log2_gain is None else log2_gain.to(thumb).reshape(-1)
            if exposure:
                gain = gain + float(exposure)
        elif exposure:
            raise ConfigError(
                f"this model ({type(self).__name__} without an exposure head) has no exposure control; "
                "leave exposure at 0"
            )
        whole = lq if given_thumb is None else None  # lq is the whole image only when no thumbnail is given
        ctx = ImageContext(thumb=thumb, he_lut=self.he_table(whole, thumb), log2_gain=gain, estimate=estimate)
        store = AttentionStore()
        self._context_pass(ctx, store)
        ctx.attention = store.maps
        return ctx

    def he_table(self, lq: torch.Tensor | None, thumb: torch.Tensor) -> torch.Tensor:
        """The context's histogram-equalisation tables: of the thumbnail (``lq``: the whole images when the
        context is made from them, else None; an encoder may use them, as the released LLFlow's does)."""
        return histogram_lut(thumb)

    def batch_context(self, batch: dict) -> ImageContext:
        """Context of a training batch: the whole images' thumbnails (``ctx_thumb``) and oracle exposures
        (``log2_gain``) when the dataset provides them, else those of the crops themselves."""
        lq = batch["lq"]
        gain = batch.get("log2_gain")
        if gain is None and self.has_exposure and "hq" in batch:
            gain = oracle_log2_gain(lq, batch["hq"])
        return self.make_context(lq, thumb=batch.get("ctx_thumb"), log2_gain=gain)

    def _context_pass(self, ctx: ImageContext, store: AttentionStore) -> None:
        """Record global-attention maps on ``ctx.thumb`` (no global attention: nothing to record)."""

    def resolve_context(self, lq: torch.Tensor, context: ImageContext | None) -> ImageContext:
        """``context`` checked against the batch, or the context of ``lq`` itself when None."""
        if context is None:
            return self.make_context(lq)
        if context.batch != lq.shape[0]:
            raise ValueError(f"context is for {context.batch} images, the batch has {lq.shape[0]}")
        return context

    def level_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """Feature sizes per flow level for an LR input of ``height``×``width``."""
        hr_h, hr_w = self.scale * height, self.scale * width
        return [(hr_h >> (l + 1), hr_w >> (l + 1)) for l in range(self.levels)]

    def size_multiple(self) -> int:
        """The LR size multiple this encoder accepts: sH and sW must divide by 2^levels, H and W by
        ``input_multiple``."""
        return math.lcm(self.input_multiple, max(1, 2**self.levels // self.scale))

    def check_input(self, lq: torch.Tensor) -> None:
        """Raise ImageValueError (a ValueError) unless ``lq`` is N×3×H×W with sH, sW multiples of 2^levels."""
        if lq.dim() != 4 or lq.shape[1] != 3:
            raise ImageValueError(
                f"encoder input must be N×3×H×W, got shape {tuple(lq.shape)}; pass a batch of RGB images"
            )
        h, w = lq.shape[-2:]
        step = self.size_multiple()
        if h % step or w % step or h == 0 or w == 0:
            raise ImageValueError(
                f"encoder input {h}×{w} at ×{self.scale} with {self.levels} flow levels needs H and W to be "
                f"multiples of {step}; pad the input (FlowRestorer does this for you)"
            )
