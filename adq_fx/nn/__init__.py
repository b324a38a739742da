"""QAT layers (float subclasses) and converted lookup-table layers."""

from .lut import (
    LUT_MODULES,
    AdaptiveStepEncoder,
    LUTConv2d,
    LUTLinear,
    StepEncoder,
    ThresholdEncoder,
    encoder_for,
)
from .qat import QAT_MODULES, QATConv2d, QATLinear

__all__ = [
    "LUT_MODULES",
    "QAT_MODULES",
    "AdaptiveStepEncoder",
    "LUTConv2d",
    "LUTLinear",
    "QATConv2d",
    "QATLinear",
    "StepEncoder",
    "ThresholdEncoder",
    "encoder_for",
]
