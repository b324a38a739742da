"""QAT layers: subclasses of the float layers whose weight passes through a quantizer."""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import WeightConfig
from ..quantizers import WeightQuantizer, build_weight_quantizer


class _QuantizedWeight:
    """What both QAT layers add to their float class: the float layer's tensors plus a weight
    quantizer, and the eq. (3) term of a training forward, kept for commitment_loss to take."""

    weight_quantizer: WeightQuantizer
    training: bool
    _commitment: Tensor | None = None

    def _adopt(self, module: nn.Conv2d | nn.Linear, config: WeightConfig) -> None:
        """Share the float layer's parameters (no copy) and build the quantizer from its weight."""
        layer = cast("nn.Conv2d | nn.Linear", self)
        layer.weight = module.weight
        layer.bias = module.bias
        self.weight_quantizer = build_weight_quantizer(config, module.weight)
        layer.train(module.training)

    def _quantized_weight(self, weight: Tensor) -> Tensor:
        quantized, commitment = self.weight_quantizer.quantize(weight)
        self._commitment = commitment if self.training else None
        return quantized

    def __getstate__(self) -> dict[str, Any]:
        """Copies and pickles leave the transient term behind (it holds this step's autograd graph)."""
        state = dict(self.__dict__)
        state.pop("_commitment", None)
        return state

    def take_commitment(self) -> Tensor | None:
        """This layer's eq. (3) term from its last training forward, once; None if there is none."""
        commitment, self._commitment = self._commitment, None
        return commitment


class QATConv2d(_QuantizedWeight, nn.Conv2d):
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
        qat._adopt(module, config)
        return qat

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self._quantized_weight(self.weight), self.bias)


class QATLinear(_QuantizedWeight, nn.Linear):
    """nn.Linear whose forward uses the quantized weight (ADQ or a baseline)."""

    weight_quantizer: WeightQuantizer

    @classmethod
    def from_float(cls, module: nn.Linear, config: WeightConfig) -> QATLinear:
        with torch.device("meta"):
            qat = cls(module.in_features, module.out_features, bias=module.bias is not None)
        qat._adopt(module, config)
        return qat

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self._quantized_weight(self.weight), self.bias)


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
