"""Converted inference modules: integer codes, codebooks and scales, no float weights.

An encoder (``ThresholdEncoder`` for learned thresholds, ``StepEncoder`` for
LSQ) turns a float activation into uint8 codes; ``LUTConv2d``/``LUTLinear``
take those codes, look the input codes up in the input level table and the
weight codes up in the layer's codebook, and scale per output channel. Dequantisation uses the
same functions as training, so a converted model computes the same floats as
the trained one (an integer backend would accumulate codes x codebook entries
and apply the scales once per output channel; see docs/design.md).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as TF
from torch import Tensor, nn

from .. import functional as F
from ..kernels import pad_table, threshold_codes
from ..quantizers import (
    ActivationQuantizer,
    ASQActivationQuantizer,
    LSQActivationQuantizer,
    ThresholdActivationQuantizer,
)
from ..quantizers._state import CheckedLayout
from .qat import QATConv2d, QATLinear


def _rebuild_input_thresholds(module: ThresholdEncoder, _incompatible_keys: Any) -> None:
    module._build_input_thresholds()


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
        self._build_input_thresholds()
        self.register_load_state_dict_post_hook(_rebuild_input_thresholds)

    def _build_input_thresholds(self) -> None:
        """Thresholds moved into the input's units, exactly (see functional.input_space_thresholds)."""
        self._input_thresholds = None if self.shift is not None else F.input_space_thresholds(
            self.thresholds.contiguous(), self.beta1)
        if self._input_thresholds is not None:
            self._padded_thresholds = pad_table(self._input_thresholds)

    @classmethod
    def from_quantizer(cls, quantizer: ThresholdActivationQuantizer) -> ThresholdEncoder:
        min_interval = quantizer.config.min_interval
        boundaries = F.interleaved_boundaries(quantizer.start, quantizer.intervals, min_interval)
        return cls(quantizer.scales()[0], boundaries, quantizer.shift, quantizer.channel_dim)

    @property
    def thresholds(self) -> Tensor:
        """The learned thresholds T_0..T_{n-1}."""
        return self.boundaries[1:-1:2]

    @property
    def bits(self) -> int:
        return (self.thresholds.numel() + 1).bit_length() - 1

    def extra_repr(self) -> str:
        return f"bits={self.bits}, signed={self.shift is not None}"

    def forward(self, x: Tensor) -> Tensor:
        x = x.to(self.beta1.dtype)
        if self._input_thresholds is not None:  # one search of x itself: no multiply, n boundaries
            return threshold_codes(x, self._input_thresholds, self._padded_thresholds)
        shift = None if self.shift is None else F.broadcast_channels(self.shift, x.dim(), self.channel_dim)
        # The same search as training, so codes match bit for bit.
        positions = F.search_positions(F.threshold_input(x, self.beta1, shift), self.boundaries)
        return F.position_codes(positions).to(torch.uint8)


class StepEncoder(nn.Module):
    """Float activation -> uint8 code by LSQ's step: round(clamp(x / s, Q_N, Q_P)) - Q_N."""

    step: Tensor

    def __init__(self, step: Tensor, q_negative: int, q_positive: int) -> None:
        super().__init__()
        self.q_negative, self.q_positive = q_negative, q_positive
        self.register_buffer("step", step.detach().clone())

    @classmethod
    def from_quantizer(cls, quantizer: LSQActivationQuantizer) -> StepEncoder:
        return cls(quantizer.current_step(), quantizer.q_negative, quantizer.q_positive)

    def extra_repr(self) -> str:
        return f"range=[{self.q_negative}, {self.q_positive}]"

    def forward(self, x: Tensor) -> Tensor:
        return F.lsq_codes(x.to(self.step.dtype), self.step, self.q_negative, self.q_positive).to(torch.uint8)


class AdaptiveStepEncoder(nn.Module):
    """ASQ: float activation -> (uint8 codes, each sample's step s·beta_n).

    The adapter is a small float network that ships with the model: the step of
    each sample depends on that sample, so the codes travel with their step.
    """

    step: Tensor

    def __init__(self, step: Tensor, adapter: nn.Module, q_negative: int, q_positive: int) -> None:
        super().__init__()
        self.q_negative, self.q_positive = q_negative, q_positive
        self.register_buffer("step", step.detach().clone())
        self.adapter = copy.deepcopy(adapter).eval().requires_grad_(False)

    @classmethod
    def from_quantizer(cls, quantizer: ASQActivationQuantizer) -> AdaptiveStepEncoder:
        return cls(quantizer.current_step(), quantizer.adapter, quantizer.q_negative, quantizer.q_positive)

    def extra_repr(self) -> str:
        return f"range=[{self.q_negative}, {self.q_positive}]"

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = x.to(self.step.dtype)
        sample_step = self.step * self.adapter.sample_factor(x)
        codes = F.lsq_codes(x, sample_step, self.q_negative, self.q_positive)
        return codes.to(torch.uint8), sample_step


ENCODERS: dict[type[ActivationQuantizer], Any] = {
    ThresholdActivationQuantizer: ThresholdEncoder.from_quantizer,
    LSQActivationQuantizer: StepEncoder.from_quantizer,
    ASQActivationQuantizer: AdaptiveStepEncoder.from_quantizer,
}
"""Activation quantizer type -> the encoder that replaces it in a converted model."""


def encoder_for(quantizer: ActivationQuantizer) -> nn.Module:
    return ENCODERS[type(quantizer)](quantizer)


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
        return F.denormalise(self.codebook[self.weight_codes.long()], self.weight_scale)

    def dequantized_input(self, codes: Tensor | tuple[Tensor, Tensor]) -> Tensor:
        if isinstance(codes, tuple):  # ASQ: integer levels times each sample's step
            codes, sample_step = codes
            return self.input_levels[codes.long()] * sample_step
        index = codes.long()
        if self.input_levels.dim() == 1:
            return self.input_levels[index]
        # Per-channel table (C, L): offset each channel's codes into the flattened table.
        channels, count = self.input_levels.shape
        offsets = F.broadcast_channels(torch.arange(channels, device=codes.device) * count, codes.dim(),
                                       self.channel_dim)
        return self.input_levels.reshape(-1)[index + offsets]

    def extra_repr(self) -> str:
        return (f"weight_bits={self.weight_bits}, act_bits={self.act_bits}, "
                f"codebook_levels={self.codebook.numel()}, out_channels={self.weight_scale.numel()}")

    def layout(self) -> dict[str, Any]:
        return {"method": "adq_lut", "weight_method": self.weight_config.method,
                "activation_method": self.activation_config.method, "weight_bits": self.weight_bits,
                "act_bits": self.act_bits, "signed": self.act_signed}



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
        x, padding = self.dequantized_input(codes), self.padding
        if self.padding_mode != "zeros":
            x, padding = TF.pad(x, self._reversed_padding, mode=self.padding_mode), 0
        return TF.conv2d(x, self.dequantized_weight(), self.bias, self.stride, padding,
                         self.dilation, self.groups)


class LUTLinear(_LUTLayer):
    """Linear over activation codes with codebook-coded weights."""

    def __init__(self, qat: QATLinear, act: ActivationQuantizer) -> None:
        super().__init__()
        self._init_from(qat, act)

    @classmethod
    def from_qat(cls, qat: QATLinear, act: ActivationQuantizer) -> LUTLinear:
        return cls(qat, act)

    def forward(self, codes: Tensor | tuple[Tensor, Tensor]) -> Tensor:
        return TF.linear(self.dequantized_input(codes), self.dequantized_weight(), self.bias)


LUT_MODULES: dict[type[nn.Module], type[LUTConv2d] | type[LUTLinear]] = {
    QATConv2d: LUTConv2d,
    QATLinear: LUTLinear,
}
"""QAT type -> LUT type, matched by exact type."""
