"""ModelConfig: everything needed to rebuild a FlowRestorer (also stored inside every weights file)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..config import check_literals
from ..encoders import DEFAULT_ENCODER, EncoderConfig, encoder_config_field, parse_encoder_config
from ..errors import ConfigError
from ..losses import LossSpec, check_losses, upgrade_loss_weights
from .base import MAX_TEMPERATURE, SAMPLE_TEMPERATURE


@dataclass
class FlowSpec:
    """The user-settable part of the flow; conditioning and prior channels are derived from the encoder."""

    levels: int = 3
    steps: int | list[int] = 4
    hidden: int = 32
    split: bool = False
    coupling: Literal["affine", "cross"] = "affine"
    subnet: Literal["conv", "cbam", "cbam-local", "cbam-released"] = (
        "conv"  # cbam-local: channel gate pools 15 px, not the map
    )
    injector: bool = True
    transitions: int = 2
    scale_eps: float = 1e-4
    # lower bound of every coupling scale: bounds the inverse's expansion to 1/floor per layer, so decoding stays
    # finite and exact off the training distribution (0 = LLFlow's unbounded form; bundled LoLiSRFlow 0.3, UPT-Flow 0.25)
    scale_floor: float = 0.0
    # StraddleCouplings per level (nightflow.flow.straddle): additive couplings on the level's squeeze
    # grid moved by one finer pixel, so the flow can smooth its own block edges; 0 = none (every bundled model so far)
    straddle: int | list[int] = 0
    # "end": after the level's steps; "start": before them, so decoding runs them after the level's own couplings
    straddle_at: Literal["start", "end"] = "end"

    def __post_init__(self) -> None:
        check_literals(self, "flow")  # coupling, subnet: as strict from Python as from YAML


@dataclass
class ModelConfig:
    """A named restoration model: encoder + conditional flow + prior + training loss weights."""

    kind: Literal["flow"] = "flow"  # which builder in nightflow.models.MODEL_KINDS rebuilds this model
    name: str = "custom"
    description: str = ""
    task: str = "low-light enhancement + super-resolution"
    scale: int = 2
    encoder: str = DEFAULT_ENCODER  # a name in nightflow.encoders.ENCODERS
    # the encoder's config dataclass, chosen by ``encoder`` and parsed strictly (None = that encoder's defaults)
    encoder_config: EncoderConfig | None = encoder_config_field()
    flow: FlowSpec = field(default_factory=FlowSpec)
    # prior mean of the top latent: the squeezed predicted colour-ratio map (LLFlow/LoLiSRFlow), or zero (UPT-Flow)
    prior: Literal["color_map", "zero"] = "color_map"
    train_gt_ratio: float = 0.2  # probability of using the GT colour map as prior mean in training (LLFlow)
    # training loss: registered terms (nightflow.losses) and weights; the default is LoLiSRFlow's NLL + γ·L1 of
    # the reverse pass at the prior mean (γ = 1.5) + the exposure head's squared EV error (skipped without a head)
    losses: list[LossSpec] = field(default_factory=lambda: flow_losses())
    quant: int = 256  # dequantisation levels for the NLL (0 = none: continuous NLL, LLFlow's default)
    seed: int = 0  # initialisation seed
    # LR px of every inner tile edge that tiled inference discards: how far a tile edge changes the output by more
    # than 1/255, measured on the trained model (scripts/measure_tiling.py); 0 = the encoder's default (12)
    tile_margin: int = 0
    # inference under bf16 autocast where the encoder allows it (``Encoder.bf16_inference``): set False for trained
    # weights whose mean path bf16 moves by more than 1/255 from float32 (tests/test_precision.py), so that
    # ``--precision auto`` keeps them in float32 even where their encoder is safe for other weights
    bf16_inference: bool = True
    # temperature of samples and uncertainty maps when the caller gives none: measured on the weights (the sweep's
    # lowest LPIPS, benchmarks/suites/temperature.yaml, confirmed on the foreign pairs, temperature-foreign.yaml)
    sample_temperature: float = SAMPLE_TEMPERATURE

    def __post_init__(self) -> None:
        check_literals(self)  # kind, prior: as strict from Python as from YAML
        self.encoder_config = parse_encoder_config(self.encoder, self.encoder_config, "encoder_config")
        if self.tile_margin < 0:
            raise ConfigError(f"tile_margin must be >= 0 LR px, got {self.tile_margin}")
        if not 0.0 < self.sample_temperature <= MAX_TEMPERATURE:  # NaN fails too
            raise ConfigError(
                f"sample_temperature must be in (0, {MAX_TEMPERATURE}], got {self.sample_temperature}"
            )
        if self.scale not in (1, 2, 4):
            raise ConfigError(f"scale must be 1, 2 or 4, got {self.scale}")
        if not 0.0 <= self.train_gt_ratio <= 1.0:
            raise ConfigError(f"train_gt_ratio must be in [0, 1], got {self.train_gt_ratio}")
        check_losses(self.losses, FLOW_OUTPUTS, "flow")
        selfsup = [spec.name for spec in self.losses if spec.name in SELF_SUPERVISED_X1]
        if selfsup and self.scale != 1:
            raise ConfigError(
                f"losses: the self-supervised terms {selfsup} restore at ×1 (the input is their reference); "
                f"this model is ×{self.scale}"
            )
        if not 0.0 <= self.flow.scale_floor < 1.0:
            raise ConfigError(f"flow.scale_floor must be in [0, 1), got {self.flow.scale_floor}")
        if self.quant < 0:
            raise ConfigError(f"quant must be ≥ 0, got {self.quant}")

    @staticmethod
    def upgrade_config(data, path=""):
        """Stored configs from before ``losses`` (``l1_weight``, ``color_weight``, ``exposure_weight``): the
        retired keys become the equivalent ``losses`` list (``nightflow.config.from_dict`` calls this)."""
        return upgrade_loss_weights(data, path, FLOW_LEGACY_LOSSES)


# what a FlowRestorer computes for its loss terms (nightflow.losses.ForwardOutputs fields)
FLOW_OUTPUTS = (
    "nll",
    "prediction",
    "target",
    "input",
    "color_map",
    "exposure_estimate",
    "log2_gain",
    "auto_log2_gain",
    "pseudo_nll",
    "pseudo_prediction",
    "pseudo_target",
    "pseudo_gap",
)
# terms whose reference is the input itself, so they hold at ×1 only (nightflow.losses.selfsup)
SELF_SUPERVISED_X1 = (
    "pseudo_nll",
    "pseudo_l1",
    "neighbour_consistency",
    "color_consistency",
    "exposure_control",
    "illumination_smoothness",
    "reblur",
)
# the retired weight keys → losses (term, key, default, kept at weight 0): what the hard-wired loss computed
FLOW_LEGACY_LOSSES = (
    ("nll", None, 1.0, True),
    ("l1", "l1_weight", 1.5, False),
    ("color_map_l1", "color_weight", 0.0, False),
    ("exposure", "exposure_weight", 0.1, True),
)


def flow_losses(l1: float = 1.5, color: float = 0.0, exposure: float = 0.1) -> list[LossSpec]:
    """A flow's loss list in the old terms: NLL + ``l1``·L1 of the mean path (+ ``color``·colour-map L1)
    + ``exposure``·squared EV error; a zero ``l1``/``color`` weight leaves the term out (no reverse pass)."""
    specs = [LossSpec("nll", 1.0)]
    specs += [LossSpec("l1", l1)] if l1 > 0 else []
    specs += [LossSpec("color_map_l1", color)] if color > 0 else []
    return specs + [LossSpec("exposure", exposure)]
