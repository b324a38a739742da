"""ASQ activations (ASQ paper): an LSQ step scaled per sample by a small learned adapter."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from .. import functional as qf
from ..config import ASQActivationConfig
from ..registry import register_quantizer
from .lsq import FirstBatchStepQuantizer


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
            pooled = qf.pool_to_channels(x.float(), self.channel_dim)
            return self.layers(pooled).squeeze(1).clamp_min(1e-8)

    def sample_factor(self, x: Tensor) -> Tensor:
        """beta shaped (N, 1, ..., 1) to broadcast against x."""
        return self(x).view(-1, *([1] * (x.dim() - 1)))


@register_quantizer(ASQActivationConfig)
class ASQActivationQuantizer(FirstBatchStepQuantizer):
    """Per-tensor step (LSQ's init, see FirstBatchStepQuantizer) times the adapter's beta_n."""

    # adq_fx.optim.RECIPES
    parameter_kinds: ClassVar[dict[str, str]] = {"step": "steps", "adapter": "adapters"}

    def __init__(
        self, config: ASQActivationConfig, *, signed: bool, num_channels: int, channel_dim: int
    ) -> None:
        super().__init__(config, signed=signed, channel_dim=channel_dim)
        self.adapter = StepAdapter(num_channels, channel_dim, config.reduction)

    def forward(self, x: Tensor) -> Tensor:
        x = self.prepared_input(x)
        # LSQ with each sample's step s·beta_n; LSQ's gradient scale applies to s only, not beta.
        step = qf.scale_gradient(self.current_step(), self.step_grad_scale(x))
        sample_step = step * self.adapter.sample_factor(x)
        return qf.lsq_quantize(x, sample_step, self.q_negative, self.q_positive, 1.0)

    @torch.no_grad()
    def level_table(self) -> Tensor:
        """The integer levels Q_N..Q_P; the converted layer multiplies by each sample's step."""
        return torch.arange(
            self.q_negative, self.q_positive + 1, dtype=self.step.dtype, device=self.step.device
        )
