"""Encoders: a float activation in, the uint8 codes a converted layer takes out.

Each replaces one trained activation quantizer in a converted model
(``ThresholdEncoder`` for learned thresholds, ``StepEncoder`` for LSQ,
``AdaptiveStepEncoder`` for ASQ) and is registered for it
(adq_fx.registry.register_encoder), so convert_adq finds it by the quantizer's type.
The search is the one training ran, so codes match bit for bit.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from .. import functional as qf
from ..kernels import pad_table, threshold_codes
from ..quantizers import (
    ActivationQuantizer,
    ASQActivationQuantizer,
    LSQActivationQuantizer,
    ThresholdActivationQuantizer,
)
from ..quantizers.asq import StepAdapter
from ..registry import entry_for_quantizer, register_encoder


def _rebuild_input_thresholds(module: ThresholdEncoder, _incompatible_keys: Any) -> None:
    module._build_input_thresholds()


@register_encoder(ThresholdActivationQuantizer)
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
        self._input_thresholds = (
            None
            if self.shift is not None
            else qf.input_space_thresholds(self.thresholds.contiguous(), self.beta1)
        )
        if self._input_thresholds is not None:
            self._padded_thresholds = pad_table(self._input_thresholds)

    @classmethod
    def from_quantizer(cls, quantizer: ThresholdActivationQuantizer) -> ThresholdEncoder:
        min_interval = quantizer.config.min_interval
        boundaries = qf.interleaved_boundaries(quantizer.start, quantizer.intervals, min_interval)
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
        shift = None if self.shift is None else qf.broadcast_channels(self.shift, x.dim(), self.channel_dim)
        # The same search as training, so codes match bit for bit.
        positions = qf.search_positions(qf.threshold_input(x, self.beta1, shift), self.boundaries)
        return qf.position_codes(positions).to(torch.uint8)


@register_encoder(LSQActivationQuantizer)
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
        return qf.lsq_codes(x.to(self.step.dtype), self.step, self.q_negative, self.q_positive).to(
            torch.uint8
        )


@register_encoder(ASQActivationQuantizer)
class AdaptiveStepEncoder(nn.Module):
    """ASQ: float activation -> (uint8 codes, each sample's step s·beta_n).

    The adapter is a small float network that ships with the model: the step of
    each sample depends on that sample, so the codes travel with their step.
    """

    step: Tensor

    def __init__(self, step: Tensor, adapter: StepAdapter, q_negative: int, q_positive: int) -> None:
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
        codes = qf.lsq_codes(x, sample_step, self.q_negative, self.q_positive)
        return codes.to(torch.uint8), sample_step


def encoder_for(quantizer: ActivationQuantizer) -> nn.Module:
    """The encoder registered for this quantizer's type, built from its trained state."""
    entry = entry_for_quantizer(type(quantizer))
    if entry.encoder is None:
        raise TypeError(
            f"{type(quantizer).__name__} has no converted form: decorate its encoder class "
            f"with adq_fx.registry.register_encoder({type(quantizer).__name__})."
        )
    return entry.encoder.from_quantizer(quantizer)
