"""The invertible flow core shared by every nightflow model; knows nothing of images, datasets or papers."""

from .actnorm import ActNorm
from .base import FlowLayer, FlowSequence
from .coupling import AffineInjector, ConditionalAffineCoupling, CrossCoupling
from .glow import ConditionalGlow, GlowConfig
from .invconv import InvConv1x1, count_free_params
from .likelihood import bits_per_dim, dequantize, llflow_bits_per_pixel, standard_normal_log_prob
from .reshape import Split, Squeeze, squeeze2d, unsqueeze2d
from .straddle import StraddleCoupling
from .subnets import ConvSubnet

__all__ = [
    "ActNorm",
    "AffineInjector",
    "ConditionalAffineCoupling",
    "ConditionalGlow",
    "ConvSubnet",
    "CrossCoupling",
    "FlowLayer",
    "FlowSequence",
    "GlowConfig",
    "InvConv1x1",
    "Split",
    "Squeeze",
    "StraddleCoupling",
    "bits_per_dim",
    "count_free_params",
    "dequantize",
    "llflow_bits_per_pixel",
    "squeeze2d",
    "standard_normal_log_prob",
    "unsqueeze2d",
]
