"""What every weight and activation quantizer offers the passes, whatever its method.

Weight quantizers reconstruct a weight as ``scale[c] * levels[code]``: that one
form covers ADQ codebooks, N2UQ's uniform levels and LSQ's integer grid, so a
single lookup-table layer serves all of them. Activation quantizers map a float
to a code in 0..2^b-1 and back through a small table of output values.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from .checkpoint_layout import CheckedLayout


class WeightQuantizer(CheckedLayout):
    """Forward returns the quantized weight; ``codes``, ``levels`` and ``channel_scale`` give
    the (code, level table, per-output-channel scale) triple the converted layer stores."""

    config: Any
    parameter_kinds: ClassVar[dict[str, str]] = {}  # parameter name -> adq_fx.optim.RECIPES kind

    def codes(self, weight: Tensor) -> Tensor:
        raise NotImplementedError

    def levels(self) -> Tensor:
        raise NotImplementedError

    def channel_scale(self, weight: Tensor) -> Tensor:
        raise NotImplementedError

    def commitment(self, weight: Tensor) -> Tensor:
        """Eq. (3) for ADQ; methods without one contribute zero."""
        return weight.new_zeros(())

    def layout(self) -> dict[str, Any]:
        return {"method": self.config.method, "bits": self.config.bits, "levels": self.levels().numel()}


class ActivationQuantizer(CheckedLayout):
    """Forward returns the quantized activation; ``level_table`` gives the output value of each
    code, (2^b,) or (channels, 2^b) when a signed input has a per-channel shift."""

    config: Any
    signed: bool
    channel_dim: int
    parameter_kinds: ClassVar[dict[str, str]] = {}  # parameter name -> adq_fx.optim.RECIPES kind

    def level_table(self) -> Tensor:
        raise NotImplementedError

    def layout(self) -> dict[str, Any]:
        return {"method": self.config.method, "bits": self.config.bits, "signed": self.signed}

    def extra_repr(self) -> str:
        return f"bits={self.config.bits}, signed={self.signed}"


def as_float(x: Tensor, reference: Tensor) -> Tensor:
    """Quantizers compare in the dtype of their parameters (fp32), also under bf16 autocast."""
    return x if x.dtype == reference.dtype else x.to(reference.dtype)


__all__ = ["ActivationQuantizer", "WeightQuantizer", "as_float"]
