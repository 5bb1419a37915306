"""Non-invertible building blocks shared by every encoder and the learned baselines, one definition each.

- :mod:`.conv`: ``LayerNorm2d``, ``ResBlock`` (EDSR), ``ConvHead`` (conv3×3 → leaky ReLU → conv1×1).
- :mod:`.attention`: channel attention (global, recordable in the whole-image context), window attention
  (local, optionally guided), the gated feed-forward and the transformer block, CBAM's ``ChannelGate`` and
  ``SpatialGate``, ``GlobalContext``.
- :mod:`.lewin`: Uformer's LeWin block (guided shifted windows, relative-position bias, LeFF + ECA), as
  UPT-Flow's released local branch runs it.
- :mod:`.rrdb`: ESRGAN/LLFlow's ``ResidualDenseBlock`` and ``RRDB``.
- :mod:`.resample`: exact-size ``resize``, ``halve``, ``PixelShuffleUp`` and the other pixel-(un)shuffle steps.
- :mod:`.levels`: ``FeatureLevels``, the one adapter from an encoder's scales to the flow levels.

The flow's own subnets (zero-initialised output conv, ActNorm hidden layers) stay in :mod:`nightflow.flow`.
Modules here keep their attribute names: they are part of every bundled checkpoint's state_dict keys.
"""

from .attention import (
    CBAM,
    AttentionKind,
    ChannelAttention,
    ChannelGate,
    GatedFeedForward,
    GlobalContext,
    SpatialGate,
    TransformerBlock,
    WindowAttention,
)
from .conv import ConvHead, LayerNorm2d, ResBlock
from .levels import FeatureLevels, LevelSource
from .lewin import ECA, LeFF, LeWinBlock
from .resample import PixelShuffleUp, PixelShuffleUpsampler, ShuffleUp, UnshuffleDown, halve, resize
from .rrdb import RRDB, ResidualDenseBlock

__all__ = [
    "CBAM",
    "ECA",
    "RRDB",
    "AttentionKind",
    "ChannelAttention",
    "ChannelGate",
    "ConvHead",
    "FeatureLevels",
    "GatedFeedForward",
    "GlobalContext",
    "LayerNorm2d",
    "LeFF",
    "LeWinBlock",
    "LevelSource",
    "PixelShuffleUp",
    "PixelShuffleUpsampler",
    "ResBlock",
    "ResidualDenseBlock",
    "ShuffleUp",
    "SpatialGate",
    "TransformerBlock",
    "UnshuffleDown",
    "WindowAttention",
    "halve",
    "resize",
]
