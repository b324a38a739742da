"""QAT layers: subclasses of the float layers whose weight passes through a quantizer."""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import WeightConfig
from ..quantizers import WeightQuantizer, build_weight_quantizer


class QATConv2d(nn.Conv2d):
    """nn.Conv2d whose forward uses the quantized weight (ADQ or a baseline)."""

    weight_quantizer: WeightQuantizer

    @classmethod
    def from_float(cls, module: nn.Conv2d, config: WeightConfig) -> QATConv2d:
        # nn.Conv2d stores these as pairs (padding may be a string); its stubs say tuple[int, ...].
        kernel_size = cast("tuple[int, int]", module.kernel_size)
        stride = cast("tuple[int, int]", module.stride)
        padding = cast("str | tuple[int, int]", module.padding)
        dilation = cast("tuple[int, int]", module.dilation)
        with torch.device("meta"):  # skip a pointless random init of the weights
            qat = cls(
                module.in_channels,
                module.out_channels,
                kernel_size,
                stride=stride,
                padding=padding,
                dilation=dilation,
                groups=module.groups,
                bias=module.bias is not None,
                padding_mode=module.padding_mode,
            )
        qat.weight = module.weight
        qat.bias = module.bias
        qat.weight_quantizer = build_weight_quantizer(config, module.weight)
        qat.train(module.training)
        return qat

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.weight_quantizer(self.weight), self.bias)


class QATLinear(nn.Linear):
    """nn.Linear whose forward uses the quantized weight (ADQ or a baseline)."""

    weight_quantizer: WeightQuantizer

    @classmethod
    def from_float(cls, module: nn.Linear, config: WeightConfig) -> QATLinear:
        with torch.device("meta"):
            qat = cls(module.in_features, module.out_features, bias=module.bias is not None)
        qat.weight = module.weight
        qat.bias = module.bias
        qat.weight_quantizer = build_weight_quantizer(config, module.weight)
        qat.train(module.training)
        return qat

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight_quantizer(self.weight), self.bias)


QAT_MODULES: dict[type[nn.Module], type[QATConv2d] | type[QATLinear]] = {
    nn.Conv2d: QATConv2d,
    nn.Linear: QATLinear,
}
"""Float type -> QAT type, matched by exact type (a subclass may change forward)."""


def input_channel_dim(module: nn.Module) -> int:
    """Where the channels of this layer's input sit: dim 1 for conv, last for linear."""
    return 1 if isinstance(module, nn.Conv2d) else -1


def input_channels(module: nn.Conv2d | nn.Linear) -> int:
    return module.in_channels if isinstance(module, nn.Conv2d) else module.in_features
