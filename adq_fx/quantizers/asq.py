"""ASQ activations (ASQ paper): an LSQ step scaled per sample by a small learned adapter."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .. import functional as F
from ..config import ASQActivationConfig
from ._distributed import all_reduce_mean_
from .base import ActivationQuantizer, as_float


class StepAdapter(nn.Module):
    """x -> beta (N,): pool -> Linear -> ReLU -> Linear -> ReLU, beta clamped at 1e-8.

    The last Linear starts at weight N(0, 0.01), bias 1, so beta ≈ 1 at init and
    the quantizer starts as plain LSQ.
    """

    def __init__(self, channels: int, channel_dim: int, reduction: int) -> None:
        super().__init__()
        self.channel_dim = channel_dim
        hidden = channels // reduction
        layers: list[nn.Module] = [nn.Linear(channels, hidden), nn.ReLU()] if hidden >= 2 else []
        last = nn.Linear(hidden if hidden >= 2 else channels, 1)
        with torch.no_grad():
            last.weight.normal_(0.0, 0.01)
            last.bias.fill_(1.0)
        self.layers = nn.Sequential(*layers, last, nn.ReLU())

    def forward(self, x: Tensor) -> Tensor:
        # Full precision also under autocast: training and the converted model must agree exactly.
        with torch.autocast(x.device.type, enabled=False):
            pooled = F.pool_to_channels(x.float(), self.channel_dim)
            return self.layers(pooled).squeeze(1).clamp_min(1e-8)

    def sample_factor(self, x: Tensor) -> Tensor:
        """beta shaped (N, 1, ..., 1) to broadcast against x."""
        return self(x).view(-1, *([1] * (x.dim() - 1)))


class ASQActivationQuantizer(ActivationQuantizer):
    """Per-tensor step (LSQ init from the first batch, averaged over DDP ranks) times beta_n."""

    initialized: Tensor

    def __init__(
        self, config: ASQActivationConfig, *, signed: bool, num_channels: int, channel_dim: int
    ) -> None:
        super().__init__()
        self.config = config
        self.signed = signed
        self.channel_dim = channel_dim
        self.q_negative, self.q_positive = F.lsq_range(config.bits, signed=signed)
        self.step = nn.Parameter(torch.ones(()))
        self.adapter = StepAdapter(num_channels, channel_dim, config.reduction)
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self._ready = False  # a Python mirror of `initialized`: no host sync per step

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        step = F.lsq_initial_step(x, self.q_positive)
        all_reduce_mean_(step)
        self.step.copy_(step)
        self.initialized.fill_(True)
        self._ready = True

    def sample_step(self, x: Tensor) -> Tensor:
        """s · beta_n, shaped to broadcast against x: what the converted encoder also computes."""
        return self.step * self.adapter.sample_factor(x)

    def forward(self, x: Tensor) -> Tensor:
        x = as_float(x, self.step)
        if not self._ready:
            self.initialize(x)
        grad_scale = 1.0 / math.sqrt(self.q_positive * x.numel()) if self.config.grad_scale else 1.0
        out, _ = F.asq_quantize(x, self.step, self.adapter.sample_factor(x), self.q_negative,
                                self.q_positive, grad_scale)
        return out

    @torch.no_grad()
    def level_table(self) -> Tensor:
        """The integer levels Q_N..Q_P; the converted layer multiplies by each sample's step."""
        return torch.arange(self.q_negative, self.q_positive + 1, dtype=self.step.dtype,
                            device=self.step.device)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._ready = bool(self.initialized)
