"""Converted lookup-table layers: integer codes, codebooks and scales, no float weights.

An encoder (adq_fx.nn.encoders) turns a float activation into uint8 codes;
``LUTConv2d``/``LUTLinear`` look those codes up in the input level table, the
weight codes up in the layer's codebook, and scale per output channel. The
same functions as training dequantise, so this reference path computes the
floats the trained model computed; adq_fx.int8 runs the integer kernels.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import functional as qf
from ..quantizers import ActivationQuantizer
from ..quantizers.checkpoint_layout import CheckedLayout
from .qat import QATConv2d, QATLinear


class _LUTLayer(CheckedLayout):
    """Shared state of LUT layers: weight codes, level table and scales, input level table.

    The weight is ``weight_scale[c] * codebook[weight_codes]`` and the input
    ``input_levels[(c,) code]``: two table lookups, whichever method trained them.
    """

    weight_codes: Tensor
    codebook: Tensor
    weight_scale: Tensor
    bias: Tensor | None
    input_levels: Tensor

    def _init_from(self, qat: QATConv2d | QATLinear, act: ActivationQuantizer) -> None:
        quantizer = qat.weight_quantizer
        with torch.no_grad():
            codes = quantizer.codes(qat.weight)
            scale = quantizer.channel_scale(qat.weight)
        self.weight_config = quantizer.config
        self.activation_config = act.config
        self.weight_bits = quantizer.config.bits
        self.act_bits = act.config.bits
        self.act_signed = act.signed
        self.channel_dim = act.channel_dim
        self.register_buffer("weight_codes", codes.to(torch.uint8))
        self.register_buffer("codebook", quantizer.levels().detach().clone())
        self.register_buffer("weight_scale", scale.detach().clone())
        self.register_buffer("bias", None if qat.bias is None else qat.bias.detach().clone())
        self.register_buffer("input_levels", act.level_table().clone())

    def dequantized_weight(self) -> Tensor:
        return qf.denormalise(self.codebook[self.weight_codes.long()], self.weight_scale)

    def dequantized_input(self, codes: Tensor | tuple[Tensor, Tensor]) -> Tensor:
        if isinstance(codes, tuple):  # ASQ: integer levels times each sample's step
            codes, sample_step = codes
            return self.input_levels[codes.long()] * sample_step
        index = codes.long()
        if self.input_levels.dim() == 1:
            return self.input_levels[index]
        # Per-channel table (C, L): offset each channel's codes into the flattened table.
        channels, count = self.input_levels.shape
        offsets = qf.broadcast_channels(
            torch.arange(channels, device=codes.device) * count, codes.dim(), self.channel_dim
        )
        return self.input_levels.reshape(-1)[index + offsets]

    def extra_repr(self) -> str:
        return (
            f"weight_bits={self.weight_bits}, act_bits={self.act_bits}, "
            f"codebook_levels={self.codebook.numel()}, out_channels={self.weight_scale.numel()}"
        )

    def layout(self) -> dict[str, Any]:
        return {
            "method": "adq_lut",
            "weight_method": self.weight_config.method,
            "activation_method": self.activation_config.method,
            "weight_bits": self.weight_bits,
            "act_bits": self.act_bits,
            "signed": self.act_signed,
        }


class LUTConv2d(_LUTLayer):
    """Conv2d over activation codes with codebook-coded weights."""

    def __init__(self, qat: QATConv2d, act: ActivationQuantizer) -> None:
        super().__init__()
        self._init_from(qat, act)
        self.stride, self.padding, self.dilation = qat.stride, qat.padding, qat.dilation
        self.groups, self.padding_mode = qat.groups, qat.padding_mode
        self._reversed_padding = qat._reversed_padding_repeated_twice

    @classmethod
    def from_qat(cls, qat: QATConv2d, act: ActivationQuantizer) -> LUTConv2d:
        return cls(qat, act)

    def forward(self, codes: Tensor | tuple[Tensor, Tensor]) -> Tensor:
        padding: str | int | tuple[int, ...]
        x, padding = self.dequantized_input(codes), self.padding
        if self.padding_mode != "zeros":
            x, padding = F.pad(x, self._reversed_padding, mode=self.padding_mode), 0
        return F.conv2d(
            x, self.dequantized_weight(), self.bias, self.stride, padding, self.dilation, self.groups
        )


class LUTLinear(_LUTLayer):
    """Linear over activation codes with codebook-coded weights."""

    def __init__(self, qat: QATLinear, act: ActivationQuantizer) -> None:
        super().__init__()
        self._init_from(qat, act)

    @classmethod
    def from_qat(cls, qat: QATLinear, act: ActivationQuantizer) -> LUTLinear:
        return cls(qat, act)

    def forward(self, codes: Tensor | tuple[Tensor, Tensor]) -> Tensor:
        return F.linear(self.dequantized_input(codes), self.dequantized_weight(), self.bias)


LUT_MODULES: dict[type[nn.Module], type[LUTConv2d] | type[LUTLinear]] = {
    QATConv2d: LUTConv2d,
    QATLinear: LUTLinear,
}
"""QAT type -> LUT type, matched by exact type."""
