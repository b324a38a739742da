"""N2UQ's weight quantizer (ADQ's baseline A): uniform levels, scale from mean |W|."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import functional as qf
from ..config import UniformWeightConfig
from ..registry import register_quantizer
from .base import WeightQuantizer


@register_quantizer(UniformWeightConfig)
class UniformWeightQuantizer(WeightQuantizer):
    """Nothing is learned: the scale follows the weights each step, the levels are fixed."""

    level_values: Tensor

    def __init__(self, config: UniformWeightConfig, weight: Tensor) -> None:
        super().__init__()
        self.config = config
        # Derived from the config, so not saved: a checkpoint holds nothing for this quantizer.
        levels = qf.uniform_levels(config.bits).to(weight.device)
        self.register_buffer("level_values", levels, persistent=False)

    def extra_repr(self) -> str:
        return f"bits={self.config.bits}, levels={self.level_values.numel()}"

    def levels(self) -> Tensor:
        return self.level_values

    def channel_scale(self, weight: Tensor) -> Tensor:
        return qf.mean_abs_scale(weight, self.config.bits)

    def codes(self, weight: Tensor) -> Tensor:
        normalised = qf.normalise(weight.detach().float(), self.channel_scale(weight))
        return qf.nearest_codes(normalised, self.level_values)

    def forward(self, weight: Tensor) -> Tensor:
        scale = self.channel_scale(weight)
        with torch.no_grad():
            codes = qf.nearest_codes(qf.normalise(weight.float(), scale), self.level_values)
            quantized = qf.denormalise(self.level_values[codes.long()], scale)
        # Plain STE (gradient 1 w.r.t. the weight, no clipping mask), as N2UQ.
        return qf.straight_through(weight, quantized.to(weight.dtype))
