"""Thin modules over :mod:`adq_fx.functional`: they hold parameters and state."""

from __future__ import annotations

from torch import Tensor

from ..config import (
    ActivationConfig,
    ActivationThresholdConfig,
    ASQActivationConfig,
    LSQActivationConfig,
    LSQWeightConfig,
    POSTWeightConfig,
    UniformWeightConfig,
    WeightCodebookConfig,
    WeightConfig,
)
from .asq import ASQActivationQuantizer
from .base import ActivationQuantizer, WeightQuantizer
from .codebook import CodebookWeightQuantizer
from .lsq import LSQActivationQuantizer, LSQWeightQuantizer
from .post import POSTWeightQuantizer
from .thresholds import ThresholdActivationQuantizer
from .uniform import UniformWeightQuantizer

WEIGHT_QUANTIZERS: dict[type, type[WeightQuantizer]] = {
    WeightCodebookConfig: CodebookWeightQuantizer,
    UniformWeightConfig: UniformWeightQuantizer,
    LSQWeightConfig: LSQWeightQuantizer,
    POSTWeightConfig: POSTWeightQuantizer,
}
ACTIVATION_QUANTIZERS: dict[type, type[ActivationQuantizer]] = {
    ActivationThresholdConfig: ThresholdActivationQuantizer,
    LSQActivationConfig: LSQActivationQuantizer,
    ASQActivationConfig: ASQActivationQuantizer,
}


def build_weight_quantizer(config: WeightConfig, weight: Tensor) -> WeightQuantizer:
    """The weight quantizer a config asks for, initialised from the pre-trained weight."""
    return WEIGHT_QUANTIZERS[type(config)](config, weight)


def build_activation_quantizer(
    config: ActivationConfig, *, signed: bool, num_channels: int, channel_dim: int
) -> ActivationQuantizer:
    """The activation quantizer a config asks for, for an input of known sign and channel layout."""
    return ACTIVATION_QUANTIZERS[type(config)](config, signed=signed, num_channels=num_channels,
                                               channel_dim=channel_dim)


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
