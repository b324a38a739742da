"""LSQ (Esser et al. 2020): learned step sizes for weights and activations."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor, nn

from .. import functional as qf
from ..config import ASQActivationConfig, LSQActivationConfig, LSQWeightConfig
from ..registry import register_quantizer
from ._distributed import all_reduce_mean_
from .base import ActivationQuantizer, WeightQuantizer, as_float
from .first_batch import FirstBatchInit


@register_quantizer(LSQWeightConfig)
class LSQWeightQuantizer(WeightQuantizer):
    """Per-output-channel step, initialised 2 mean|W_c| / sqrt(Q_P) from the pre-trained weights."""

    integer_levels: Tensor
    parameter_kinds: ClassVar[dict[str, str]] = {"step": "steps"}  # adq_fx.optim.RECIPES

    def __init__(self, config: LSQWeightConfig, weight: Tensor) -> None:
        super().__init__()
        self.config = config
        self.q_negative, self.q_positive = qf.lsq_range(config.bits, signed=True)
        dims = tuple(range(1, weight.dim()))
        self.step = nn.Parameter(qf.lsq_initial_step(weight, self.q_positive, dims).to(weight.device))
        per_channel = weight[0].numel()
        self.grad_scale = 1.0 / math.sqrt(self.q_positive * per_channel) if config.grad_scale else 1.0
        levels = torch.arange(self.q_negative, self.q_positive + 1, dtype=torch.float32, device=weight.device)
        self.register_buffer("integer_levels", levels, persistent=False)

    def extra_repr(self) -> str:
        return f"bits={self.config.bits}, range=[{self.q_negative}, {self.q_positive}]"

    def levels(self) -> Tensor:
        return self.integer_levels

    def channel_scale(self, weight: Tensor) -> Tensor:
        return qf.positive(self.step).detach()

    def _step(self, dims: int) -> Tensor:
        return qf.broadcast_channels(qf.positive(self.step), dims, 0)

    def codes(self, weight: Tensor) -> Tensor:
        return qf.lsq_codes(weight.float(), self._step(weight.dim()), self.q_negative, self.q_positive)

    def forward(self, weight: Tensor) -> Tensor:
        return qf.lsq_quantize(
            weight, self._step(weight.dim()), self.q_negative, self.q_positive, self.grad_scale
        )


class FirstBatchStepQuantizer(FirstBatchInit, ActivationQuantizer):
    """A per-tensor step initialised 2·mean|x|/sqrt(Q_P) from the first batch seen (train or eval).

    Under DDP the initial step is averaged over ranks so all ranks start equal.
    Whether it has been initialised is saved, so a loaded checkpoint is not
    re-initialised. Shared by LSQ and ASQ activations.
    """

    parameter_kinds: ClassVar[dict[str, str]] = {"step": "steps"}  # adq_fx.optim.RECIPES

    def __init__(
        self, config: LSQActivationConfig | ASQActivationConfig, *, signed: bool, channel_dim: int
    ) -> None:
        super().__init__()
        self.config = config
        self.signed = signed
        self.channel_dim = channel_dim
        self.q_negative, self.q_positive = qf.lsq_range(config.bits, signed=signed)
        self.step = nn.Parameter(torch.ones(()))
        self._track_first_batch()

    def initialize(self, x: Tensor) -> None:
        step = qf.lsq_initial_step(x, self.q_positive)
        all_reduce_mean_(step)
        self.step.copy_(step)

    def current_step(self) -> Tensor:
        """The step the forward uses: |step| floored, so no optimizer step can make it zero or negative."""
        return qf.positive(self.step)

    def prepared_input(self, x: Tensor) -> Tensor:
        """x in the step's dtype, after initialising the step on the first call."""
        x = as_float(x, self.step)
        self._initialize_once(x)
        return x

    def step_grad_scale(self, x: Tensor) -> float:
        return 1.0 / math.sqrt(self.q_positive * x.numel()) if self.config.grad_scale else 1.0


@register_quantizer(LSQActivationConfig)
class LSQActivationQuantizer(FirstBatchStepQuantizer):
    """LSQ activations: one learned step per tensor."""

    def __init__(
        self, config: LSQActivationConfig, *, signed: bool, num_channels: int, channel_dim: int
    ) -> None:
        super().__init__(config, signed=signed, channel_dim=channel_dim)

    def forward(self, x: Tensor) -> Tensor:
        x = self.prepared_input(x)
        step = self.current_step()
        return qf.lsq_quantize(x, step, self.q_negative, self.q_positive, self.step_grad_scale(x))

    @torch.no_grad()
    def level_table(self) -> Tensor:
        """(Q_N + code) * step: the forward's product, bit for bit."""
        levels = torch.arange(
            self.q_negative, self.q_positive + 1, dtype=self.step.dtype, device=self.step.device
        )
        return (levels * self.current_step()).detach()
