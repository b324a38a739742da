"""Thin modules over :mod:`adq_fx.functional`: they hold parameters and state."""

from .codebook import CodebookWeightQuantizer
from .thresholds import ThresholdActivationQuantizer

__all__ = ["CodebookWeightQuantizer", "ThresholdActivationQuantizer"]
