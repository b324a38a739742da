"""QAT layers (float subclasses), converted lookup-table layers and their input encoders."""

from .encoders import AdaptiveStepEncoder, StepEncoder, ThresholdEncoder, encoder_for
from .lut import LUT_MODULES, LUTConv2d, LUTLinear
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
