"""Converted inference modules: integer codes, codebooks and scales, no float weights.

``ThresholdEncoder`` turns a float activation into uint8 codes with the learned
thresholds; ``LUTConv2d``/``LUTLinear`` take those codes, look weight codes up
in the layer's codebook and scale per output channel. Dequantisation uses the
same functions as training, so a converted model computes the same floats as
the trained one (an integer backend would accumulate codes x codebook entries
and apply the scales once per output channel; see docs/design.md).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as TF
from torch import Tensor, nn

from .. import functional as F
from ..quantizers import ThresholdActivationQuantizer
from ..quantizers._state import check_saved_layout
from .qat import QATConv2d, QATLinear


class ThresholdEncoder(nn.Module):
    """Float activation -> uint8 code, by the thresholds the quantizer learned."""

    beta1: Tensor
    boundaries: Tensor
    shift: Tensor | None

    def __init__(self, beta1: Tensor, boundaries: Tensor, shift: Tensor | None, channel_dim: int) -> None:
        super().__init__()
        self.channel_dim = channel_dim
        self.register_buffer("beta1", beta1.detach().clone())
        self.register_buffer("boundaries", boundaries.detach().clone())
        self.register_buffer("shift", None if shift is None else shift.detach().clone())

    @classmethod
    def from_quantizer(cls, quantizer: ThresholdActivationQuantizer) -> ThresholdEncoder:
        min_interval = quantizer.config.min_interval
        boundaries = F.interleaved_boundaries(quantizer.start, quantizer.intervals, min_interval)
        return cls(quantizer.beta1, boundaries, quantizer.shift, quantizer.channel_dim)

    @property
    def thresholds(self) -> Tensor:
        """The learned thresholds T_0..T_{n-1}."""
        return self.boundaries[0::2]

    @property
    def bits(self) -> int:
        return (self.thresholds.numel() + 1).bit_length() - 1

    def extra_repr(self) -> str:
        return f"bits={self.bits}, signed={self.shift is not None}"

    def forward(self, x: Tensor) -> Tensor:
        x = x.to(self.beta1.dtype)
        shift = None if self.shift is None else F.broadcast_channels(self.shift, x.dim(), self.channel_dim)
        # The same search as training (codes_and_intervals), so codes match bit for bit.
        codes, _ = F.codes_and_intervals(F.threshold_input(x, self.beta1, shift), self.boundaries)
        return codes.to(torch.uint8)


class _LUTLayer(nn.Module):
    """Shared state of LUT layers: weight codes, codebook, scales, activation decode."""

    weight_codes: Tensor
    codebook: Tensor
    weight_scale: Tensor
    bias: Tensor | None
    act_beta2: Tensor
    act_shift: Tensor | None

    def _init_from(self, qat: QATConv2d | QATLinear, act: ThresholdActivationQuantizer) -> None:
        quantizer = qat.weight_quantizer
        with torch.no_grad():
            codes = quantizer.codes(qat.weight)
        self.weight_config = quantizer.config
        self.activation_config = act.config
        self.weight_bits = quantizer.config.bits
        self.act_bits = act.config.bits
        self.num_intervals = act.intervals.numel()
        self.channel_dim = act.channel_dim
        self.register_buffer("weight_codes", codes.to(torch.uint8))
        self.register_buffer("codebook", quantizer.codebook.detach().clone())
        self.register_buffer("weight_scale", quantizer.scale.detach().clone())
        self.register_buffer("bias", None if qat.bias is None else qat.bias.detach().clone())
        self.register_buffer("act_beta2", act.beta2.detach().clone())
        self.register_buffer("act_shift", None if act.shift is None else act.shift.detach().clone())

    def dequantized_weight(self) -> Tensor:
        return F.denormalise(self.codebook[self.weight_codes.long()], self.weight_scale)

    def dequantized_input(self, codes: Tensor) -> Tensor:
        shift = self.act_shift
        if shift is not None:
            shift = F.broadcast_channels(shift, codes.dim(), self.channel_dim)
        levels = F.code_levels(codes, self.num_intervals, self.act_beta2.dtype)
        return F.threshold_output(levels, self.act_beta2, shift)

    def extra_repr(self) -> str:
        return (f"weight_bits={self.weight_bits}, act_bits={self.act_bits}, "
                f"codebook_levels={self.codebook.numel()}, out_channels={self.weight_scale.numel()}")

    def get_extra_state(self) -> dict[str, Any]:
        return {"method": "adq_lut", "weight_bits": self.weight_bits, "act_bits": self.act_bits,
                "signed": self.act_shift is not None}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        pass  # checked in _load_from_state_dict, where the module name is known

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        check_saved_layout(prefix, state_dict, self.get_extra_state())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class LUTConv2d(_LUTLayer):
    """Conv2d over activation codes with codebook-coded weights."""

    def __init__(self, qat: QATConv2d, act: ThresholdActivationQuantizer) -> None:
        super().__init__()
        self._init_from(qat, act)
        self.stride, self.padding, self.dilation = qat.stride, qat.padding, qat.dilation
        self.groups, self.padding_mode = qat.groups, qat.padding_mode
        self._reversed_padding = qat._reversed_padding_repeated_twice

    @classmethod
    def from_qat(cls, qat: QATConv2d, act: ThresholdActivationQuantizer) -> LUTConv2d:
        return cls(qat, act)

    def forward(self, codes: Tensor) -> Tensor:
        x, padding = self.dequantized_input(codes), self.padding
        if self.padding_mode != "zeros":
            x, padding = TF.pad(x, self._reversed_padding, mode=self.padding_mode), 0
        return TF.conv2d(x, self.dequantized_weight(), self.bias, self.stride, padding,
                         self.dilation, self.groups)


class LUTLinear(_LUTLayer):
    """Linear over activation codes with codebook-coded weights."""

    def __init__(self, qat: QATLinear, act: ThresholdActivationQuantizer) -> None:
        super().__init__()
        self._init_from(qat, act)

    @classmethod
    def from_qat(cls, qat: QATLinear, act: ThresholdActivationQuantizer) -> LUTLinear:
        return cls(qat, act)

    def forward(self, codes: Tensor) -> Tensor:
        return TF.linear(self.dequantized_input(codes), self.dequantized_weight(), self.bias)


LUT_MODULES: dict[type[nn.Module], type[LUTConv2d] | type[LUTLinear]] = {
    QATConv2d: LUTConv2d,
    QATLinear: LUTLinear,
}
"""QAT type -> LUT type, matched by exact type."""
