"""POST weights (ASQ paper): powers of √2 with a learned per-channel clip."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from .. import functional as qf
from ..config import POSTWeightConfig
from ..registry import register_quantizer
from .base import WeightQuantizer


@register_quantizer(POSTWeightConfig)
class POSTWeightQuantizer(WeightQuantizer):
    """Per-output-channel clip α, initialised at a high quantile of |W_c| (0.99 by default).

    Integer inference with a √2 base: even exponents are shifts, odd ones one
    multiply by √2, so a 2^b - 1 entry table (the converted layer's codebook)
    is all the arithmetic needs.
    """

    level_values: Tensor
    parameter_kinds: ClassVar[dict[str, str]] = {"clip": "clips"}  # adq_fx.optim.RECIPES

    def __init__(self, config: POSTWeightConfig, weight: Tensor) -> None:
        super().__init__()
        self.config = config
        magnitudes = weight.detach().float().abs().reshape(weight.shape[0], -1)
        clip = torch.quantile(magnitudes, config.clip_quantile, dim=1)
        self.clip = nn.Parameter(clip.clamp_min(1e-8).to(weight.device))
        levels = qf.post_levels(config.bits, config.base).to(weight.device)
        self.register_buffer("level_values", levels, persistent=False)

    def extra_repr(self) -> str:
        return f"bits={self.config.bits}, base={self.config.base:.4g}, levels={self.level_values.numel()}"

    def levels(self) -> Tensor:
        return self.level_values

    def channel_scale(self, weight: Tensor) -> Tensor:
        return qf.positive(self.clip).detach()

    def _clip(self, dims: int) -> Tensor:
        return qf.broadcast_channels(qf.positive(self.clip), dims, 0)

    def codes(self, weight: Tensor) -> Tensor:
        ratio = (weight.detach().float() / self._clip(weight.dim()).detach()).clamp(-1.0, 1.0)
        return qf.nearest_codes(ratio, self.level_values)

    def forward(self, weight: Tensor) -> Tensor:
        return qf.clipped_quantize(weight, self._clip(weight.dim()), self.level_values)
