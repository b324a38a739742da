"""Thin modules over :mod:`adq_fx.functional`: they hold parameters and state.

Importing a module registers its quantizer (adq_fx.registry).
"""

from __future__ import annotations

from torch import Tensor

from ..config import ActivationConfig, WeightConfig
from ..registry import entry_for_config
from .asq import ASQActivationQuantizer
from .base import ActivationQuantizer, WeightQuantizer
from .codebook import CodebookWeightQuantizer
from .lsq import LSQActivationQuantizer, LSQWeightQuantizer
from .post import POSTWeightQuantizer
from .thresholds import ThresholdActivationQuantizer
from .uniform import UniformWeightQuantizer


def build_weight_quantizer(config: WeightConfig, weight: Tensor) -> WeightQuantizer:
    """The weight quantizer a config asks for (adq_fx.registry), initialised from the pre-trained weight."""
    return entry_for_config(config).quantizer(config, weight)


def build_activation_quantizer(
    config: ActivationConfig, *, signed: bool, num_channels: int, channel_dim: int
) -> ActivationQuantizer:
    """The activation quantizer a config asks for, for an input of known sign and channel layout."""
    return entry_for_config(config).quantizer(
        config, signed=signed, num_channels=num_channels, channel_dim=channel_dim
    )


__all__ = [
    "ASQActivationQuantizer",
    "ActivationQuantizer",
    "CodebookWeightQuantizer",
    "LSQActivationQuantizer",
    "LSQWeightQuantizer",
    "POSTWeightQuantizer",
    "ThresholdActivationQuantizer",
    "UniformWeightQuantizer",
    "WeightQuantizer",
    "build_activation_quantizer",
    "build_weight_quantizer",
]
