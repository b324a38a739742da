"""N2UQ activation quantizer: learned thresholds, uniform outputs, generalised STE (eq. 1)."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor, nn

from .. import functional as qf
from ..config import ThresholdActivationConfig
from ..registry import register_quantizer
from ._distributed import all_reduce_mean_
from .base import ActivationQuantizer, as_float
from .first_batch import FirstBatchInit


@register_quantizer(ThresholdActivationConfig)
class ThresholdActivationQuantizer(FirstBatchInit, ActivationQuantizer):
    """Per-tensor thresholds (start, interval lengths, input and output scale).

    Init as N2UQ: start 0, all intervals 2/n, beta1 = beta2 = 1, i.e. a uniform
    quantizer on [0, 2]. A signed input gets a learnable per-channel shift b:
    y = LTQ(x + b) - b, b initialised to 1 so the thresholds first cover [-1, 1]
    and the layer's function is unchanged at init.

    The first batch seen (train or eval) may move that start, by
    ``config.init`` (ThresholdActivationConfig): "auto" keeps it where the
    data's 99th percentile of |x| is within a factor of its range and else
    stretches it over [0, q99] ([-q99, q99] signed); "first_batch" stretches it
    over LSQ's range r = 2·mean|x|·sqrt(n) ([-r/2, r/2] signed). A stretched
    start sets beta1 = 2/r, beta2 = r/2 (and b = r/2), so the output is in the
    input's units. Statistics are averaged over ranks under DDP, and the result
    is saved, so a loaded checkpoint keeps its scales. ``started_from`` says
    which start the first batch chose ("fixed" or "data"; None before it, or
    after a load).

    Whatever an optimizer does, the forward sees a valid quantizer: beta1 and
    beta2 are read as their magnitudes (functional.positive) and intervals are
    floored at ``min_interval``, so thresholds always increase; and the joint
    gradient of (start, intervals, beta1, beta2) is capped at
    ``max_relative_gradient`` times their norm, so no single step can throw
    them far from the data (functional.bound_relative_gradient). With ``grad_scale`` the
    gradients of start, intervals, beta1 and beta2 (sums over every element of
    the input) are scaled by LSQ's 1/sqrt(n · features per sample); the shift,
    a per-channel bias, is not scaled.
    """

    shift: nn.Parameter | None
    parameter_kinds: ClassVar[dict[str, str]] = dict.fromkeys(
        ("start", "intervals", "beta1", "beta2", "shift"), "thresholds"
    )  # adq_fx.optim.RECIPES

    def __init__(
        self, config: ThresholdActivationConfig, *, signed: bool, num_channels: int, channel_dim: int
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
        self.started_from: str | None = "fixed" if config.init == "uniform" else None
        if config.init != "uniform":
            self._track_first_batch()

    def initialize(self, x: Tensor) -> None:
        """Move N2UQ's start to the data's range where ``config.init`` says so (see the class doc)."""
        self.started_from = "fixed"
        if self.config.init == "first_batch":
            clip = 2 * x.float().abs().mean() * self.intervals.numel() ** 0.5
        else:  # auto: the 99th percentile of |x|, the whole range for a signed input
            magnitude = qf.magnitude_quantile(x.float(), 0.99)
            clip = magnitude * (2 if self.shift is not None else 1)
        all_reduce_mean_(clip)  # every rank takes the same decision from the same statistic
        if not (bool(clip > 0) and bool(torch.isfinite(clip))):
            return  # a batch without signal (all zero, or not finite) says nothing: keep N2UQ's start
        tolerance = self.config.AUTO_START_TOLERANCE
        if self.config.init == "auto" and 2 / tolerance <= float(clip) <= 2 * tolerance:
            return  # the fixed range [0, 2] already fits the data
        if self.shift is not None:  # shift by half the range, so the thresholds cover [-r/2, r/2]
            self.shift.fill_(float(clip / 2))
        self.beta1.copy_(2 / clip)
        self.beta2.copy_(clip / 2)
        self.started_from = "data"

    def broadcast_shift(self, dims: int) -> Tensor | None:
        """The per-channel shift shaped to broadcast against an input of ``dims`` dims."""
        return None if self.shift is None else qf.broadcast_channels(self.shift, dims, self.channel_dim)

    def scales(self) -> tuple[Tensor, Tensor]:
        """(beta1, beta2) as the forward uses them: |beta| floored, never zero or negative."""
        return qf.positive(self.beta1), qf.positive(self.beta2)

    def gradient_scale(self, x: Tensor) -> float:
        """LSQ's g = 1/sqrt(n · features per sample), or 1 without ``config.grad_scale``."""
        if not self.config.grad_scale:
            return 1.0
        per_sample = x.numel() // x.shape[0] if x.dim() > 1 and x.shape[0] else max(x.numel(), 1)
        return 1.0 / math.sqrt(self.intervals.numel() * max(per_sample, 1))

    def thresholds(self) -> Tensor:
        return qf.interval_thresholds(self.start, self.intervals, self.config.min_interval)

    def forward(self, x: Tensor) -> Tensor:
        x = as_float(x, self.beta1)
        self._initialize_once(x)
        g = self.gradient_scale(x)
        start: Tensor
        intervals: Tensor
        beta1: Tensor
        beta2: Tensor
        start, intervals, beta1, beta2 = self.start, self.intervals, self.beta1, self.beta2
        bound = self.config.max_relative_gradient
        if bound is not None and torch.is_grad_enabled():
            start, intervals, beta1, beta2 = qf.bound_relative_gradient(bound, start, intervals, beta1, beta2)
        beta1, beta2 = qf.positive(beta1), qf.positive(beta2)
        start, intervals, beta1, beta2 = (
            qf.scale_gradient(p, g) if g != 1.0 else p for p in (start, intervals, beta1, beta2)
        )
        return qf.threshold_quantize(
            x,
            start,
            intervals,
            beta1,
            beta2,
            self.broadcast_shift(x.dim()),
            self.config.min_interval,
        )

    @torch.no_grad()
    def level_table(self) -> Tensor:
        """beta2 * Δ * q (- shift_c): the same ops as the forward, so the values match bit for bit."""
        n = self.intervals.numel()
        codes = torch.arange(n + 1, device=self.beta2.device)
        shift = None if self.shift is None else self.shift.view(-1, 1)
        beta2 = self.scales()[1]
        return qf.threshold_output(qf.code_levels(codes, n, beta2.dtype), beta2, shift).detach()
