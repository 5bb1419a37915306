"""ModelConfig: everything needed to rebuild a FlowRestorer (also stored inside every weights file)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import ConfigError


@dataclass
class FlowSpec:
    """The user-settable part of the flow; conditioning and prior channels are derived from the encoder."""

    levels: int = 3
    steps: int | list[int] = 4
    hidden: int = 32
    split: bool = False
    coupling: Literal["affine", "cross"] = "affine"
    subnet: Literal["conv", "cbam"] = "conv"
    injector: bool = True
    transitions: int = 2
    scale_eps: float = 1e-4
    # lower bound of every coupling scale: bounds the inverse's expansion to 1/floor per layer, so decoding stays
    # finite and exact off the training distribution (0 = LLFlow's unbounded form; bundled flows use 0.25)
    scale_floor: float = 0.0


@dataclass
class ModelConfig:
    """A named restoration model: encoder + conditional flow + prior + training loss weights."""

    kind: Literal["flow"] = "flow"  # which builder in nightflow.models.MODEL_KINDS rebuilds this model
    name: str = "custom"
    description: str = ""
    task: str = "low-light enhancement + super-resolution"
    scale: int = 2
    encoder: str = "mpct"
    encoder_config: dict[str, Any] = field(default_factory=dict)
    flow: FlowSpec = field(default_factory=FlowSpec)
    # prior mean of the top latent: the squeezed predicted colour-ratio map (LLFlow/LoLiSRFlow), or zero (UPT-Flow)
    prior: Literal["color_map", "zero"] = "color_map"
    train_gt_ratio: float = 0.2  # probability of using the GT colour map as prior mean in training (LLFlow)
    l1_weight: float = 1.5  # γ of LoLiSRFlow: L1 of the reverse pass at the prior mean
    color_weight: float = 0.0  # optional L1 between predicted and GT colour-ratio maps
    exposure_weight: float = 0.1  # squared EV error of the exposure head (encoders with exposure: true)
    quant: int = 256  # dequantisation levels for the NLL (0 = none: continuous NLL, LLFlow's default)
    seed: int = 0  # initialisation seed

    def __post_init__(self) -> None:
        if self.scale not in (1, 2, 4):
            raise ConfigError(f"scale must be 1, 2 or 4, got {self.scale}")
        if not 0.0 <= self.train_gt_ratio <= 1.0:
            raise ConfigError(f"train_gt_ratio must be in [0, 1], got {self.train_gt_ratio}")
        if self.l1_weight < 0 or self.color_weight < 0 or self.exposure_weight < 0:
            raise ConfigError("l1_weight, color_weight and exposure_weight must be ≥ 0")
        if not 0.0 <= self.flow.scale_floor < 1.0:
            raise ConfigError(f"flow.scale_floor must be in [0, 1), got {self.flow.scale_floor}")
        if self.quant < 0:
            raise ConfigError(f"quant must be ≥ 0, got {self.quant}")
