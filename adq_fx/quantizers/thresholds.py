"""N2UQ activation quantizer: learned thresholds, uniform outputs, generalised STE (eq. 1)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .. import functional as F
from ..config import ActivationThresholdConfig
from ._state import check_saved_layout


class ThresholdActivationQuantizer(nn.Module):
    """Per-tensor thresholds (start, interval lengths, input and output scale).

    Init as N2UQ: start 0, all intervals 2/n, beta1 = beta2 = 1, i.e. a uniform
    quantizer on [0, 2]. A signed input gets a learnable per-channel shift b:
    y = LTQ(x + b) - b, b initialised to 1 so the thresholds first cover [-1, 1]
    and the layer's function is unchanged at init.
    """

    shift: nn.Parameter | None

    def __init__(
        self, config: ActivationThresholdConfig, *, signed: bool, num_channels: int, channel_dim: int
    ) -> None:
        super().__init__()
        self.config = config
        self.signed = signed
        self.channel_dim = channel_dim
        n = config.num_levels - 1
        self.start = nn.Parameter(torch.zeros(()))
        self.intervals = nn.Parameter(torch.full((n,), 2.0 / n))
        self.beta1 = nn.Parameter(torch.ones(()))
        self.beta2 = nn.Parameter(torch.ones(()))
        self.shift = nn.Parameter(torch.ones(num_channels)) if signed else None

    def extra_repr(self) -> str:
        return f"bits={self.config.bits}, signed={self.signed}"

    def broadcast_shift(self, dims: int) -> Tensor | None:
        """The per-channel shift shaped to broadcast against an input of ``dims`` dims."""
        return None if self.shift is None else F.broadcast_channels(self.shift, dims, self.channel_dim)

    def thresholds(self) -> Tensor:
        return F.interval_thresholds(self.start, self.intervals, self.config.min_interval)

    def forward(self, x: Tensor) -> Tensor:
        x = x.to(self.beta1.dtype)  # bf16/fp16 under autocast: thresholds compare in full precision
        return F.threshold_quantize(
            x, self.start, self.intervals, self.beta1, self.beta2,
            self.broadcast_shift(x.dim()), self.config.min_interval,
        )

    # -- checkpoints ------------------------------------------------------
    def get_extra_state(self) -> dict[str, Any]:
        return {"method": "n2uq_thresholds", "bits": self.config.bits, "signed": self.signed}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        pass  # checked in _load_from_state_dict, where the module name is known

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        check_saved_layout(prefix, state_dict, self.get_extra_state())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
